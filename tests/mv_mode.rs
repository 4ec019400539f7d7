//! The seed's system (`install --mode mv`): each scenario of seeds/002 against a real server.
mod common;
use common::*;
use std::time::{Duration, Instant};

const COLUMNS: [(&str, &str); 14] = [
    ("trace_id", "text"),
    ("timestamp", "timestamp with time zone"),
    ("root_span_id", "text"),
    ("root_span_name", "text"),
    ("root_service_name", "text"),
    ("root_span_kind", "integer"),
    ("start_time_unix_nano", "bigint"),
    ("end_time_unix_nano", "bigint"),
    ("duration_ms", "double precision"),
    ("status_code", "integer"),
    ("status_message", "text"),
    ("service_set", "text[]"),
    ("span_count", "bigint"),
    ("error_count", "bigint"),
];

pub async fn assert_contract_columns(db: &TestDb) {
    let rows = db
        .client
        .query(
            "select a.attname::text, format_type(a.atttypid, a.atttypmod) from pg_attribute a
             where a.attrelid = (quote_ident($1) || '.otel_trace_summaries')::regclass and a.attnum > 0 and not a.attisdropped
             order by a.attnum",
            &[&db.target.schema],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(String, String)> = COLUMNS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn mv_install_counts_distinct_traces_in_the_window_and_matches_the_definition() {
    let db = TestDb::new().await;
    load_history(&db, 20_000, 24 * 9, 1).await; // 9 days: some traces fall outside the window
    let out = db.cli(&["install", "--mode", "mv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = db.count("select count(*) from otel_trace_summaries").await;
    let expected = db.count("select count(distinct trace_id) from otel_traces where timestamp > now() - interval '7 days'").await;
    assert!(count > 0);
    assert_eq!(count, expected);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_contract_columns(&db).await;
    let kind = db
        .count("select count(*) from pg_matviews where matviewname = 'otel_trace_summaries'")
        .await;
    assert_eq!(kind, 1);
    let comment: Option<String> = db
        .client
        .query_one(
            "select obj_description('otel_trace_summaries'::regclass, 'pg_class')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(comment.unwrap().contains("refreshed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mv_has_the_unique_index_and_the_seed_queries_use_index_scans() {
    let db = TestDb::new().await;
    load_history(&db, 60_000, 3, 2).await; // dense recent data: ~1/3 of the traces in the last hour
    db.cli_ok(&["install", "--mode", "mv"]);
    let unique = db
        .count("select count(*) from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = 'idx_trace_summaries_trace_id' and i.indisunique")
        .await;
    assert_eq!(unique, 1);
    db.client
        .batch_execute("analyze otel_trace_summaries")
        .await
        .unwrap();
    let plan = |sql: &'static str| {
        let client = &db.client;
        async move {
            let rows = client.query(&format!("explain {sql}"), &[]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let p = plan("SELECT * FROM otel_trace_summaries WHERE timestamp > NOW() - INTERVAL '1 hour' ORDER BY timestamp DESC LIMIT 100").await;
    assert!(
        p.contains("Index Scan using idx_trace_summaries_timestamp"),
        "{p}"
    );
    let p = plan("SELECT * FROM otel_trace_summaries WHERE root_service_name = 'my-service' ORDER BY timestamp DESC LIMIT 100").await;
    assert!(p.contains("idx_trace_summaries_service_timestamp"), "{p}");
    // The index names are the contract's.
    assert_contract_indexes(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mv_install_schedules_the_cron_job_idempotently_and_uninstall_removes_everything() {
    let _guard = cron_lock().await;
    let Some(db) = TestDb::in_cron_database("cronmv").await else {
        skip("pg_cron is not installed beside the test server (CI installs it)");
        return;
    };
    load_history(&db, 2_000, 24, 3).await;
    db.cli_ok(&["install", "--mode", "mv"]);
    db.cli_ok(&["install", "--mode", "mv"]); // twice: nothing duplicated
    let rows = db.client.query("select schedule, command, jobname from cron.job where command like '%otel_trace_summaries%'", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "*/2 * * * *");
    assert_eq!(
        rows[0].get::<_, String>(1),
        "REFRESH MATERIALIZED VIEW CONCURRENTLY cronmv.otel_trace_summaries"
    );
    // One job per schema: the seed's name in public, with the schema appended elsewhere.
    assert_eq!(
        rows[0].get::<_, String>(2),
        "refresh_otel_trace_summaries:cronmv"
    );
    let status = db.cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["mode"], "mv");
    assert_eq!(json["cron_job"]["active"], true);
    db.cli_ok(&["uninstall"]);
    assert_eq!(db.count("select count(*) from cron.job").await, 0);
    assert_eq!(
        db.count("select count(*) from pg_class where relname = 'otel_trace_summaries'")
            .await,
        0
    );
    assert_eq!(
        db.count("select count(*) from pg_namespace where nspname = 'trace_summarizer'")
            .await,
        0
    );
    db.client
        .batch_execute("drop schema cronmv cascade")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pg_cron_install_gives_a_notice_and_no_job() {
    let db = TestDb::new().await; // not the pg_cron database
    load_history(&db, 1_000, 24, 4).await;
    let out = db.cli(&["install", "--mode", "mv"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOTICE") && err.contains("trace-summarizer rebuild"),
        "{err}"
    );
    assert_eq!(
        db.count("select count(*) from pg_extension where extname = 'pg_cron'")
            .await,
        0
    );
    assert!(db.count("select count(*) from otel_trace_summaries").await > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mv_install_is_all_or_nothing() {
    let db = TestDb::new().await;
    load_history(&db, 1_000, 24, 5).await;
    // A bad cron schedule makes the last step fail where pg_cron exists; a missing reader role
    // fails before anything is made everywhere.
    let out = db.cli(&["install", "--mode", "mv", "--reader-role", "no_such_role"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        db.count("select count(*) from pg_class where relname like 'otel_trace_summaries%'")
            .await,
        0
    );
    assert_eq!(
        db.count("select count(*) from pg_namespace where nspname = 'trace_summarizer'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_refresh_does_not_block_readers() {
    let db = TestDb::new().await;
    load_history(&db, 150_000, 24 * 6, 6).await;
    db.cli_ok(&["install", "--mode", "mv"]);
    // More data so the refresh takes a while.
    load_history(&db, 100_000, 24, 7).await;
    let url = db.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = tokio::spawn(async move {
        let client = connect(&url).await;
        let mut longest = Duration::ZERO;
        let mut reads = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            client
                .query(
                    "select * from otel_trace_summaries order by timestamp desc limit 10",
                    &[],
                )
                .await
                .unwrap();
            longest = longest.max(t.elapsed());
            reads += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (longest, reads)
    });
    let started = Instant::now();
    let out = db.cli_ok(&["rebuild"]);
    let refresh = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (longest, reads) = reader.await.unwrap();
    assert!(out.contains("refreshed materialized view"), "{out}");
    assert!(
        reads > 5,
        "the reader loop ran only {reads} times during a {refresh:?} refresh"
    );
    assert!(
        longest < Duration::from_millis(500),
        "a read waited {longest:?} during the refresh ({refresh:?})"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}
