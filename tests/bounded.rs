//! Bounded cost under any condition: steps that keep their access paths on a never-analyzed
//! table, full refreshes that are never forgotten and have their own time limit, large changes
//! absorbed in bounded steps, new spans merged without rereading their trace, no needless full
//! refresh, manual commands beside a running worker, and a lag metric that means what it says.
//! Time targets belong to `bench`; these tests check behaviour a user would notice.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use trace_summarizer::lab::spangen::{copy_spans, insert_spans, SpanGen};

async fn installed(spans: usize, seed: u64) -> TestDb {
    let db = TestDb::new().await;
    load_history(&db, spans, 24 * 8, seed).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    db
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sequential scans of `rel`, and rows read from it (sequentially or fetched through indexes).
/// Every worker is a separate process whose statistics reach the server when its backend exits,
/// a moment after the client is gone: wait until no session of ours is left in this database and
/// the counters stand still.
async fn rows_read(db: &TestDb, rel: &str) -> (i64, i64) {
    eventually(Duration::from_secs(20), "the worker's sessions have ended", || async {
        db.count("select count(*) from pg_stat_activity where datname = current_database() and application_name like 'trace-summarizer%'")
            .await
            == 0
    })
    .await;
    let read = || async {
        db.client
            .batch_execute("select pg_stat_clear_snapshot()")
            .await
            .unwrap();
        let row = db
            .client
            .query_one(
                "select coalesce(sum(seq_scan), 0)::bigint, coalesce(sum(coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)), 0)::bigint
                 from pg_stat_user_tables where relname = $1 and schemaname = 'public'",
                &[&rel],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    let mut last = read().await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = read().await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn a_never_analyzed_otel_traces_keeps_cycles_on_index_lookups() {
    // A fresh table that autovacuum never reaches and nobody analyzes, as every new partition or
    // chunk is until autovacuum gets to it.
    let db = TestDb::new().await;
    db.client
        .batch_execute("alter table otel_traces set (autovacuum_enabled = off)")
        .await
        .unwrap();
    let mut g = SpanGen::new(41);
    let now = Utc::now();
    let spans = g.history(60_000, now - CD::days(6), now - CD::hours(1), now);
    copy_spans(&db.client, &db.target, &spans).await.unwrap();
    db.cli_ok(&["install", "--mode", "incremental"]);
    // Index builds set reltuples; a brand-new partition or chunk has -1 (never vacuumed).
    db.client
        .batch_execute(
            "update pg_class set reltuples = -1, relpages = 0 where oid = 'otel_traces'::regclass",
        )
        .await
        .unwrap();
    let never_analyzed: bool = db
        .client
        .query_one(
            "select reltuples < 0 and not exists (select 1 from pg_statistic where starelid = 'otel_traces'::regclass)
             from pg_class where oid = 'otel_traces'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        never_analyzed,
        "the test needs an otel_traces without statistics"
    );
    // Many new traces for the size of the table (a burst, a backlog after an outage), and late
    // spans for old ones: left to itself the planner would hash-join them with a sequential
    // scan of the whole summaries table.
    let mut fresh = Vec::new();
    for _ in 0..15_000 {
        fresh.extend(g.trace(Utc::now() - CD::seconds(5), 2));
    }
    for s in spans.iter().step_by(97).take(300) {
        let mut late = g.trace(s.timestamp - CD::minutes(1), 1);
        late[0].trace_id = s.trace_id.clone();
        fresh.extend(late);
    }
    insert_spans(&db.client, &db.target, &fresh).await.unwrap();
    let (traces_before, _) = rows_read(&db, "otel_traces").await;
    let (summaries_before, _) = rows_read(&db, "otel_trace_summaries").await;
    db.run_once();
    let (traces_after, _) = rows_read(&db, "otel_traces").await;
    let (summaries_after, _) = rows_read(&db, "otel_trace_summaries").await;
    assert_eq!(
        traces_after - traces_before,
        0,
        "a cycle scanned otel_traces sequentially"
    );
    assert_eq!(
        summaries_after - summaries_before,
        0,
        "a cycle scanned otel_trace_summaries sequentially (a join that does not follow the new data)"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_spans_join_a_huge_trace_without_rereading_it() {
    let db = installed(2_000, 42).await;
    let mut g = SpanGen::new(43);
    let big = g.trace(Utc::now() - CD::minutes(30), 20_000);
    copy_spans(&db.client, &db.target, &big).await.unwrap();
    db.run_once();
    // 100 more spans of the same trace: merged into its summary, not recomputed from 20k spans.
    let mut more = g.trace(Utc::now() - CD::minutes(1), 100);
    for s in more.iter_mut() {
        s.trace_id = big[0].trace_id.clone();
    }
    insert_spans(&db.client, &db.target, &more).await.unwrap();
    let (_, before) = rows_read(&db, "otel_traces").await;
    let out = db.cli(&["run", "--once", "--audit-period", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, after) = rows_read(&db, "otel_traces").await;
    assert!(
        after - before < 1_000,
        "the cycle read {} rows of otel_traces for 100 new spans (the trace has 20,100): {}",
        after - before,
        stderr(&out)
    );
    let n: i64 = db
        .client
        .query_one(
            "select span_count from otel_trace_summaries where trace_id = $1",
            &[&big[0].trace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20_100);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_changes_are_absorbed_in_bounded_steps() {
    let db = installed(20_000, 44).await;
    let mut g = SpanGen::new(45);
    // Ten ingest transactions of 100 spans, and a delete touching 60 traces.
    for _ in 0..10 {
        let mut batch = Vec::new();
        while batch.len() < 100 {
            batch.extend(g.trace(Utc::now() - CD::seconds(3), 0));
        }
        insert_spans(&db.client, &db.target, &batch).await.unwrap();
    }
    db.client
        .batch_execute("delete from otel_traces where trace_id in (select distinct trace_id from otel_traces where timestamp > now() - interval '2 days' limit 60)")
        .await
        .unwrap();
    let out = db.cli(&[
        "run",
        "--once",
        "--max-spans-per-step",
        "250",
        "--max-traces-per-step",
        "20",
    ]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let bounded = |b: &str| {
        log.lines()
            .filter(|l| l.contains("step bounded") && l.contains(&format!("bound=\"{b}\"")))
            .count()
    };
    assert!(bounded("spans") >= 3, "{log}");
    assert!(bounded("recompute") >= 2, "{log}");
    assert!(!log.contains("full refresh"), "{log}");
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_full_refresh_stays_pending_until_one_commits() {
    let db = installed(30_000, 46).await;
    // What an upgrade of the tool does (another format version), plus damage only a full
    // refresh repairs: rows deleted by hand and a bulk load that carried old stamps.
    db.client
        .batch_execute(
            "update trace_summarizer.state set version = 1;
             delete from otel_trace_summaries where trace_id in (select trace_id from otel_trace_summaries limit 500);",
        )
        .await
        .unwrap();
    // The refresh hits its time limit: nothing may look done afterwards.
    let out = db.cli(&["run", "--once", "--rebuild-timeout", "1ms"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("state_version"), "{}", stderr(&out));
    assert_eq!(
        db.count("select count(*) from trace_summarizer.state where version = 1")
            .await,
        1,
        "a failed refresh must leave the fallback pending"
    );
    assert!(db.oracle_diff("7 days").await > 0);
    // kill -9 in the middle of the refresh: still pending.
    let mut w = worker(&db.url, &["--interval", "100ms"]);
    eventually(
        Duration::from_secs(20),
        "the worker starts the full refresh",
        || async { w.log_text().contains("falling back to a full refresh") },
    )
    .await;
    w.stop(libc::SIGKILL);
    if db
        .count("select count(*) from trace_summarizer.state where version = 1")
        .await
        == 1
    {
        assert!(db.oracle_diff("7 days").await > 0);
    }
    // The next worker completes it, even with a step timeout far below the refresh's duration.
    let out = db.cli(&["run", "--once", "--statement-timeout", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.count(&format!("select count(*) from trace_summarizer.state where version = {} and rebuild_reason is null", trace_summarizer::state::FORMAT_VERSION))
            .await,
        1
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_and_a_statistics_reset_cause_no_full_refresh() {
    let db = installed(20_000, 47).await;
    let w = worker(&db.url, &["--interval", "100ms"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), "the worker leads", || async {
        http_get(port, "/metrics").is_some_and(|(_, b)| {
            metric_sum(&b, "trace_summarizer_leader{schema=\"public\"}") == 1.0
        })
    })
    .await;
    db.client
        .batch_execute(
            "delete from otel_traces where timestamp < now() - interval '3 days';
             select pg_stat_reset();",
        )
        .await
        .unwrap();
    let mut g = SpanGen::new(48);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 5))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the worker catches up", || async {
        db.oracle_diff("7 days").await == 0
    })
    .await;
    let body = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        metric_sum(&body, "trace_summarizer_fallbacks_total"),
        0.0,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_of_the_server_causes_no_full_refresh() {
    // This test crashes its own server, so it does not share the binary's cluster.
    let Some(OwnServer {
        cluster,
        url,
        client,
        target,
    }) = OwnServer::start("crash").await
    else {
        return;
    };
    let mut g = SpanGen::new(49);
    insert_spans(&client, &target, &g.trace(Utc::now() - CD::minutes(1), 20))
        .await
        .unwrap();
    let run = |args: &[&str]| {
        let out = bin().env("DATABASE_URL", &url).args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    run(&["install"]);
    drop(client);
    cluster.crash_restart().unwrap();
    let client = connect(&url).await;
    insert_spans(&client, &target, &g.trace(Utc::now(), 7))
        .await
        .unwrap();
    let log = run(&["run", "--once"]);
    assert!(!log.contains("full refresh"), "{log}");
    assert!(log.contains("cycle done"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_commands_beside_a_running_worker_never_fail() {
    let db = installed(20_000, 50).await;
    let w = worker(&db.url, &["--interval", "20ms"]);
    w.http_port(Duration::from_secs(20)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (url, target, stop) = (db.url.clone(), db.target.clone(), stop.clone());
        tokio::spawn(async move {
            let client = connect(&url).await;
            let mut g = SpanGen::new(51);
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                for _ in 0..10 {
                    batch.extend(g.trace(Utc::now() - CD::seconds(2), 0));
                }
                insert_spans(&client, &target, &batch).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for round in 0..2 {
        for args in [
            vec!["rebuild"],
            vec!["verify"],
            vec!["install", "--mode", "incremental"],
            vec!["verify", "--since", "1h"],
        ] {
            let out = db.cli(&args);
            assert!(
                out.status.code() == Some(0),
                "round {round}: {args:?} failed beside the worker: {}",
                stderr(&out)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    ingest.await.unwrap();
    eventually(Duration::from_secs(30), "the worker catches up", || async {
        db.oracle_diff("7 days").await == 0
    })
    .await;
    assert!(!w.log_text().contains("ERROR"), "{}", w.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lag_metric_grows_while_spans_wait_and_falls_when_they_are_summarized() {
    let db = installed(2_000, 52).await;
    let w = worker(&db.url, &["--interval", "100ms"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    let lag = || {
        http_get(port, "/metrics")
            .map(|(_, b)| metric_sum(&b, "trace_summarizer_lag_seconds{schema=\"public\"}"))
            .unwrap_or(f64::NAN)
    };
    eventually(
        Duration::from_secs(20),
        "the worker is caught up",
        || async { lag() < 2.0 },
    )
    .await;
    // Hold the work lock, as a long manual command would: the worker cannot summarize.
    let holder = connect(&db.url).await;
    holder
        .batch_execute(
            "select pg_advisory_lock(hashtextextended('trace-summarizer-work:public', 0))",
        )
        .await
        .unwrap();
    let mut g = SpanGen::new(53);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 4))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let waiting = lag();
    assert!(
        waiting >= 3.0,
        "spans waited 4 s, but the lag says {waiting} s"
    );
    holder
        .batch_execute("select pg_advisory_unlock_all()")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the lag falls once summarized",
        || async { lag() < 2.0 },
    )
    .await;
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_swaps_in_a_table_with_the_same_grants_comment_and_index_names() {
    let db = installed(5_000, 54).await;
    let role = format!("viewer_{}", db.name);
    db.client
        .batch_execute(&format!(
            "create role {role};
             grant select on otel_trace_summaries to {role};
             comment on table otel_trace_summaries is 'our traces tab';"
        ))
        .await
        .unwrap();
    let oid_before = db
        .count("select 'otel_trace_summaries'::regclass::oid::bigint")
        .await;
    // Every row differs: the rebuild builds the table beside and swaps it in (few differing
    // rows are written in place).
    db.client
        .batch_execute("update otel_trace_summaries set span_count = span_count + 1")
        .await
        .unwrap();
    let out = db.cli_ok(&["rebuild"]);
    assert!(out.contains("swapped in"), "{out}");
    assert_ne!(
        db.count("select 'otel_trace_summaries'::regclass::oid::bigint")
            .await,
        oid_before,
        "the table was not replaced"
    );
    assert_eq!(
        db.count(&format!(
            "select count(*) from information_schema.role_table_grants where grantee = '{role}' and table_name = 'otel_trace_summaries' and privilege_type = 'SELECT'"
        ))
        .await,
        1
    );
    let comment: Option<String> = db
        .client
        .query_one(
            "select obj_description('otel_trace_summaries'::regclass, 'pg_class')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("our traces tab"));
    assert_contract_indexes(&db).await;
    // The worker continues from the position the rebuild stored.
    let mut g = SpanGen::new(55);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 6))
        .await
        .unwrap();
    db.run_once();
    assert_eq!(db.oracle_diff("7 days").await, 0);
}
