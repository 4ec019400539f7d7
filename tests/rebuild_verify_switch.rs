//! Full refresh (`rebuild`), the automatic fallbacks, `verify`, and switching a live
//! deployment from the seed's view to the table and back.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

async fn installed(spans: usize, seed: u64) -> TestDb {
    let db = TestDb::new().await;
    load_history(&db, spans, 24 * 8, seed).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    db
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_equals_the_definition_and_never_blocks_readers() {
    let db = installed(120_000, 20).await;
    // Damage the table by hand: wrong values, a missing row, a row that should not exist.
    db.client
        .batch_execute(
            "update otel_trace_summaries set span_count = span_count + 1 where trace_id in (select trace_id from otel_trace_summaries limit 10);
             delete from otel_trace_summaries where trace_id in (select trace_id from otel_trace_summaries limit 5);
             insert into otel_trace_summaries (trace_id, timestamp, span_count, error_count) values ('bogus', now(), 1, 0);",
        )
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = reader_loop(db.url.clone(), stop.clone());
    let out = db.cli_ok(&["rebuild"]);
    stop.store(true, Ordering::Relaxed);
    let Reads {
        longest,
        reads,
        errors,
        ..
    } = reader.await.unwrap();
    // Few rows differ: only those are written, in place.
    assert!(
        out.contains("inserted,") && out.contains("updated,") && !out.contains("swapped"),
        "{out}"
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(reads > 3, "reader ran {reads} times");
    assert!(
        longest < Duration::from_millis(300),
        "a read waited {longest:?} during rebuild"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);

    // More than a fifth of the rows differ: the owner's rebuild builds the table beside and
    // swaps it in, still without blocking readers.
    db.client
        .batch_execute("delete from otel_trace_summaries where trace_id in (select trace_id from otel_trace_summaries order by md5(trace_id) limit (select count(*) / 2 from otel_trace_summaries))")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = reader_loop(db.url.clone(), stop.clone());
    let out = db.cli_ok(&["rebuild"]);
    stop.store(true, Ordering::Relaxed);
    let Reads {
        longest,
        reads,
        errors,
        ..
    } = reader.await.unwrap();
    assert!(
        out.contains("built beside the table and swapped in"),
        "{out}"
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(reads > 3, "reader ran {reads} times");
    assert!(
        longest < Duration::from_millis(300),
        "a read waited {longest:?} during rebuild"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_contract_indexes(&db).await;

    // A role that may only write rows rebuilds in place, touching only what differs.
    let role = format!("writer_{}", db.name);
    db.client
        .batch_execute(&format!(
            "create role {role} login;
             grant select on otel_traces to {role};
             grant select, insert, update, delete on otel_trace_summaries to {role};
             grant usage on schema trace_summarizer to {role};
             grant select, insert, update, delete on all tables in schema trace_summarizer to {role};
             update otel_trace_summaries set span_count = span_count + 1 where trace_id in (select trace_id from otel_trace_summaries limit 4);"
        ))
        .await
        .unwrap();
    let url = db.url.replace("postgres@", &format!("{role}@"));
    let out = bin()
        .env("DATABASE_URL", &url)
        .args(["rebuild"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rebuild done: 0 inserted, 4 updated, 0 deleted"),
        "{text}"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_and_worker_together_lose_no_update() {
    let db = installed(30_000, 21).await;
    let mut worker = common::worker(&db.url, &["--interval", "100ms"]);
    let url = db.url.clone();
    let target = db.target.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let ingest = tokio::spawn(async move {
        let client = connect(&url).await;
        let mut g = SpanGen::new(3);
        while !stop2.load(Ordering::Relaxed) {
            let mut batch = Vec::new();
            for _ in 0..10 {
                batch.extend(g.trace(Utc::now() - CD::seconds(2), 0));
            }
            insert_spans(&client, &target, &batch).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for _ in 0..3 {
        db.cli_ok(&["rebuild"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    ingest.await.unwrap();
    // The running worker catches up by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if db.oracle_diff("7 days").await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not converge after concurrent rebuilds"
        );
    }
    assert!(worker.stop(libc::SIGTERM).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_corrupt_or_foreign_state_falls_back_to_a_full_refresh() {
    let db = installed(5_000, 22).await;
    let cases = [
        (
            "update trace_summarizer.state set pos_xmax = null",
            "state_missing",
        ),
        (
            "update trace_summarizer.state set version = 999",
            "state_version",
        ),
        // A position from another server's xid space (a restored or cloned database).
        (
            "update trace_summarizer.state set pos_xmax = pos_xmax + 1000000000",
            "foreign_state",
        ),
        // Both relations are others (a restore): foreign state.
        (
            "update trace_summarizer.state set source_oid = 1, relation_oid = 2",
            "foreign_state",
        ),
        // Only otel_traces is another table (replaced under its name).
        (
            "update trace_summarizer.state set source_oid = 1",
            "source_replaced",
        ),
        // What install put on otel_traces changed since the summaries were exact.
        (
            "update trace_summarizer.state set capture_version = 'something else'",
            "capture_changed",
        ),
    ];
    for (damage, reason) in cases {
        db.client.batch_execute(damage).await.unwrap();
        db.client.batch_execute("update otel_trace_summaries set error_count = error_count + 7 where trace_id in (select trace_id from otel_trace_summaries limit 3)").await.unwrap();
        let out = db.cli(&["run", "--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(reason),
            "expected fallback {reason}: {}",
            stderr(&out)
        );
        assert_eq!(db.oracle_diff("7 days").await, 0, "after {reason}");
    }
    // State row gone entirely: run says what to do instead of guessing.
    db.client
        .batch_execute("delete from trace_summarizer.state")
        .await
        .unwrap();
    let out = db.cli(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("install"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_larger_than_a_full_refresh_falls_back() {
    let db = installed(5_000, 23).await;
    // A bulk load in one transaction, larger than a tenth of the table (and than 100k spans).
    let mut g = SpanGen::new(4);
    let mut spans = Vec::new();
    while spans.len() < 110_000 {
        spans.extend(g.trace(Utc::now() - CD::minutes(5), 0));
    }
    // One COPY: one transaction, which is never split, and larger than a refresh costs.
    trace_summarizer::lab::spangen::copy_spans(&db.client, &db.target, &spans)
        .await
        .unwrap();
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("backlog"), "{}", stderr(&out));
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_tampering_reports_columns_and_repair_fixes_it() {
    let db = installed(10_000, 24).await;
    assert!(String::from_utf8_lossy(&db.cli(&["verify"]).stdout).contains("verify ok"));
    let victim: String = db
        .client
        .query_one(
            "select trace_id from otel_trace_summaries order by trace_id limit 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.client.execute("update otel_trace_summaries set span_count = span_count + 1, duration_ms = -1 where trace_id = $1", &[&victim]).await.unwrap();
    db.client.batch_execute("delete from otel_trace_summaries where trace_id = (select trace_id from otel_trace_summaries order by trace_id desc limit 1)").await.unwrap();
    let out = db.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 differing"), "{text}");
    assert!(
        text.contains(&format!("{victim} differs duration_ms,span_count")),
        "{text}"
    );
    assert!(text.contains("missing"), "{text}");
    // Drift asks the worker for a full refresh.
    assert_eq!(
        db.count(
            "select count(*) from trace_summarizer.state where rebuild_reason = 'verify_drift'"
        )
        .await,
        1
    );
    // --sample and --since check subsets; --since 1h does not see a victim from days ago.
    assert!(db
        .cli(&["verify", "--sample", "50"])
        .status
        .code()
        .is_some());
    let out = db.cli(&["verify", "--repair"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("repaired 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(db.cli(&["verify"]).status.code(), Some(0));
    assert_eq!(db.cli(&["verify", "--since", "1h"]).status.code(), Some(0));
    // The worker's fallback for verify drift runs and clears the flag.
    let out = db.cli(&["run", "--once"]);
    assert!(stderr(&out).contains("verify_drift"), "{}", stderr(&out));
    assert_eq!(
        db.count("select count(*) from trace_summarizer.state where rebuild_reason is not null")
            .await,
        0
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_works_in_mv_mode() {
    let db = TestDb::new().await;
    load_history(&db, 5_000, 24, 25).await;
    db.cli_ok(&["install", "--mode", "mv"]);
    let out = db.cli(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

async fn grants(db: &TestDb) -> Vec<String> {
    db.client
        .query(
            &format!(
                "select grantee::regrole::text || ':' || privilege_type from pg_class c, aclexplode(c.relacl) a
                 where c.oid = '{}.otel_trace_summaries'::regclass and grantee <> c.relowner order by 1",
                db.target.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_from_the_view_to_the_table_and_back_keeps_grants_data_and_readers() {
    let _guard = cron_lock().await;
    let Some(db) = TestDb::in_cron_database("switchy").await else {
        skip("pg_cron is not installed beside the test server (CI installs it)");
        return;
    };
    db.client.batch_execute("do $$ begin if not exists (select from pg_roles where rolname = 'spire') then create role spire; end if; if not exists (select from pg_roles where rolname = 'dashboards') then create role dashboards; end if; end $$").await.unwrap();
    load_history(&db, 60_000, 24 * 8, 26).await;
    // The seed's system, as upstream's migration left it: view, cron job, grants, comment.
    db.cli_ok(&["install", "--mode", "mv"]);
    db.client.batch_execute("grant select on switchy.otel_trace_summaries to dashboards; comment on materialized view switchy.otel_trace_summaries is 'upstream trace summaries'").await.unwrap();
    let before = grants(&db).await;
    assert!(
        before.contains(&"spire:SELECT".to_string())
            && before.contains(&"dashboards:SELECT".to_string()),
        "{before:?}"
    );
    assert_eq!(db.count("select count(*) from cron.job").await, 1);

    // A slow reader holds a lock on the view while the switch starts.
    let slow = connect(&db.url).await;
    slow.batch_execute("begin; select count(*) from switchy.otel_trace_summaries")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}&options=-csearch_path%3Dswitchy", db.url);
    let reader = reader_loop(url.clone(), stop.clone());
    let mut cmd = bin();
    cmd.env("DATABASE_URL", &db.url).args([
        "install",
        "--mode",
        "incremental",
        "--schema",
        "switchy",
    ]);
    let mut switch = Proc::spawn(cmd);
    // The switch waits for the slow reader's lock, retrying under a short lock_timeout.
    eventually(
        Duration::from_secs(60),
        "the switch retries behind the reader",
        || async { switch.log_text().contains("retrying the switch") },
    )
    .await;
    slow.batch_execute("commit").await.unwrap();
    let status = switch.wait();
    assert!(status.success(), "{}", switch.log_text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let Reads {
        longest,
        reads,
        errors,
        empty,
    } = reader.await.unwrap();
    assert!(
        errors.is_empty(),
        "readers saw errors during the switch: {errors:?}"
    );
    assert_eq!(empty, 0, "a reader saw an empty relation");
    assert!(reads > 10);
    assert!(
        longest < Duration::from_millis(800),
        "a reader waited {longest:?} behind the switch"
    );
    assert_eq!(db.count("select count(*) from pg_tables where schemaname = 'switchy' and tablename = 'otel_trace_summaries'").await, 1);
    assert_eq!(grants(&db).await, before, "grants were not carried over");
    let comment: Option<String> = db
        .client
        .query_one(
            "select obj_description('switchy.otel_trace_summaries'::regclass, 'pg_class')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("upstream trace summaries"));
    assert_eq!(
        db.count("select count(*) from cron.job").await,
        0,
        "the cron job would fail against a table"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);

    // And back to the view, under readers again.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = reader_loop(url, stop.clone());
    db.cli_ok(&["install", "--mode", "mv"]);
    stop.store(true, Ordering::Relaxed);
    let Reads {
        longest,
        errors,
        empty,
        ..
    } = reader.await.unwrap();
    assert!(errors.is_empty() && empty == 0, "{errors:?} {empty}");
    assert!(longest < Duration::from_millis(800), "{longest:?}");
    assert_eq!(db.count("select count(*) from pg_matviews where schemaname = 'switchy' and matviewname = 'otel_trace_summaries'").await, 1);
    assert_eq!(grants(&db).await, before);
    assert_eq!(db.count("select count(*) from cron.job").await, 1);
    assert_eq!(
        db.count("select count(*) from pg_indexes where indexname = 'otel_traces_created_at_idx'")
            .await,
        0
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
    db.cli_ok(&["uninstall"]);
    assert_eq!(db.count("select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'switchy' and c.relname like 'otel_trace_summaries%'").await, 0);
    db.client
        .batch_execute("drop schema switchy cascade")
        .await
        .unwrap();
}
