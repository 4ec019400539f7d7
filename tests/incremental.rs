//! The incremental maintainer: after any workload stops and the worker has caught up, the
//! table equals the view's definition (the oracle) row for row, in both directions.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::time::Duration;
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

async fn installed(spans: usize, seed: u64) -> TestDb {
    let db = TestDb::new().await;
    load_history(&db, spans, 24 * 8, seed).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    db
}

fn run_once(db: &TestDb) {
    db.cli_ok(&["run", "--once"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn install_fills_the_table_with_exactly_the_definition() {
    let db = installed(20_000, 10).await;
    assert_eq!(
        db.count("select count(*) from pg_tables where tablename = 'otel_trace_summaries'")
            .await,
        1
    );
    let expected = db.count("select count(distinct trace_id) from otel_traces where timestamp > now() - interval '7 days'").await;
    assert_eq!(
        db.count("select count(*) from otel_trace_summaries").await,
        expected
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
    // Install added the stamp column (set by the server), its index and the two triggers; the
    // state holds the window as the calendar interval given; install is idempotent.
    assert_eq!(
        db.count("select count(*) from pg_attribute where attrelid = 'otel_traces'::regclass and attname = 'trace_summarizer_xid' and not attisdropped")
            .await,
        1
    );
    assert_eq!(
        db.count("select count(*) from pg_indexes where indexname = 'otel_traces_trace_summarizer_xid_idx'")
            .await,
        1
    );
    assert_eq!(db.count("select count(*) from trace_summarizer.state where window_interval = interval '7 days' and mode = 'incremental'").await, 1);
    db.cli_ok(&["install", "--mode", "incremental"]);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_contract_indexes(&db).await;
    // Three triggers: AFTER DELETE, AFTER UPDATE, and one BEFORE INSERT whose WHEN clause lets
    // every row stamped by the default through: no function runs for an ordinary insert, only
    // for a row that carries another transaction's stamp (a copy).
    assert_eq!(
        db.count("select count(*) from pg_trigger where tgrelid = 'otel_traces'::regclass and not tgisinternal")
            .await,
        3
    );
    assert_eq!(
        db.count("select count(*) from pg_trigger where tgrelid = 'otel_traces'::regclass and (tgtype::int & 4) <> 0 and tgqual is not null")
            .await,
        1,
        "the insert trigger has no WHEN clause"
    );
    let calls = |sql: &'static str| {
        let client = &db.client;
        async move {
            client
                .batch_execute(&format!("begin; set local track_functions = 'pl'; {sql};"))
                .await
                .unwrap();
            let n: i64 = client
                .query_one(
                    "select coalesce(sum(pg_stat_get_xact_function_calls(p.oid)), 0)::bigint from pg_proc p
                     join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'trace_summarizer' and p.proname like 'stamp\\_%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            client.batch_execute("rollback").await.unwrap();
            n
        }
    };
    assert_eq!(
        calls("insert into otel_traces (\"timestamp\", trace_id, span_id) select now(), 'ins' || g, 's' from generate_series(1, 50) g").await,
        0,
        "a function ran for ordinary inserts"
    );
    assert_eq!(
        calls("insert into otel_traces select \"timestamp\" + interval '1 second', trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, end_time_unix_nano, service_name, service_version, service_instance, scope_name, scope_version, status_code, status_message, attributes, resource_attributes, events, links, created_at, trace_summarizer_xid from otel_traces limit 20").await,
        20,
        "copied rows were not restamped"
    );
    assert_eq!(
        db.count("select count(*) from pg_replication_slots where database = current_database()")
            .await,
        0
    );
    db.cli_ok(&["uninstall"]);
    assert_eq!(db.count("select count(*) from pg_class where relname in ('otel_trace_summaries', 'otel_traces_trace_summarizer_xid_idx')").await, 0);
    assert_eq!(
        db.count("select count(*) from pg_attribute where attrelid = 'otel_traces'::regclass and attname = 'trace_summarizer_xid' and not attisdropped")
            .await,
        0
    );
    assert_eq!(
        db.count("select count(*) from pg_trigger where tgrelid = 'otel_traces'::regclass")
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
async fn new_spans_and_new_traces_are_absorbed() {
    let db = installed(10_000, 11).await;
    let mut g = SpanGen::new(99);
    let mut spans = Vec::new();
    for _ in 0..200 {
        spans.extend(g.trace(Utc::now() - CD::seconds(30), 0));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    run_once(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_spans_of_old_traces_are_counted() {
    let db = installed(10_000, 12).await;
    // Spans for existing traces, with event times hours and days back (upstream's 5-minute
    // lookback misses exactly these).
    let old: Vec<(String, chrono::DateTime<Utc>)> = db
        .client
        .query("select trace_id, max(timestamp) from otel_traces where timestamp < now() - interval '2 days' and timestamp > now() - interval '6 days' group by trace_id limit 50", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!old.is_empty());
    let mut g = SpanGen::new(5);
    let mut late = Vec::new();
    for (trace_id, ts) in &old {
        for mut s in g.trace(*ts - CD::minutes(3), 2) {
            s.trace_id = trace_id.clone();
            late.push(s);
        }
    }
    insert_spans(&db.client, &db.target, &late).await.unwrap();
    run_once(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_that_commits_late_is_not_skipped() {
    let db = installed(5_000, 13).await;
    let mut g = SpanGen::new(6);
    // A: begins now and writes at once, commits after several cycles.
    let a = connect(&db.url).await;
    a.batch_execute("begin").await.unwrap();
    insert_spans(&a, &db.target, &g.trace(Utc::now() - CD::seconds(5), 20))
        .await
        .unwrap();
    // B: begins now but writes only later (no xid yet while the cycles run).
    let b = connect(&db.url).await;
    b.batch_execute("begin; select 1").await.unwrap();
    for i in 0..4 {
        // Other ingest commits meanwhile, and cycles pass it.
        insert_spans(
            &db.client,
            &db.target,
            &g.trace(Utc::now() - CD::seconds(1), 5),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        run_once(&db);
        if i == 1 {
            insert_spans(&b, &db.target, &g.trace(Utc::now() - CD::seconds(2), 7))
                .await
                .unwrap();
        }
    }
    // The position moved on while both were open, but must still find their rows.
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    run_once(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_edge_recomputes_and_removes_traces() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let mut g = SpanGen::new(7);
    // Trace 1 crosses the edge: one span about to leave, others recent.
    let mut crossing = g.trace(now - CD::seconds(20), 5);
    crossing[0].timestamp = now - CD::seconds(112);
    // Trace 2 leaves entirely.
    let leaving = g.trace(now - CD::seconds(115), 4);
    let mut spans = crossing.clone();
    spans.extend(leaving.clone());
    spans.extend(g.trace(now - CD::seconds(10), 6));
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    db.cli_ok(&["install", "--mode", "incremental", "--window", "2m"]);
    assert_eq!(db.oracle_diff("2 minutes").await, 0);
    let count_before: i64 = db
        .client
        .query_one(
            "select span_count from otel_trace_summaries where trace_id = $1",
            &[&crossing[0].trace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count_before, 5);
    // Wait until both have crossed (real time), but not the third trace.
    tokio::time::sleep(Duration::from_secs(12)).await;
    run_once(&db);
    assert_eq!(db.oracle_diff("2 minutes").await, 0);
    let after: i64 = db
        .client
        .query_one(
            "select span_count from otel_trace_summaries where trace_id = $1",
            &[&crossing[0].trace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 4, "the span that left the window still counts");
    let gone = db
        .count(&format!(
            "select count(*) from otel_trace_summaries where trace_id = '{}'",
            leaving[0].trace_id
        ))
        .await;
    assert_eq!(
        gone, 0,
        "a trace whose last span left the window is still listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_are_reflected() {
    let db = installed(20_000, 14).await;
    // Upstream keeps spans 3 days, shorter than the 7-day window.
    let deleted = db
        .client
        .execute(
            "delete from otel_traces where timestamp < now() - interval '3 days'",
            &[],
        )
        .await
        .unwrap();
    assert!(deleted > 0);
    run_once(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_deletes_and_updates_anywhere_are_reflected_by_the_next_cycle() {
    let db = installed(10_000, 15).await;
    run_once(&db);
    // Delete whole traces and single spans in the middle of the window, and update others:
    // no full refresh, the next cycle recomputes exactly the traces they touched.
    db.client
        .batch_execute(
            "delete from otel_traces where trace_id in (select trace_id from otel_traces where timestamp > now() - interval '1 day' limit 20);
             delete from otel_traces where (timestamp, trace_id, span_id) in (select timestamp, trace_id, span_id from otel_traces where timestamp > now() - interval '3 days' order by span_id limit 30);
             update otel_traces set status_code = 2, service_name = 'patched' where (timestamp, trace_id, span_id) in (select timestamp, trace_id, span_id from otel_traces order by span_id desc limit 25);",
        )
        .await
        .unwrap();
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("full refresh"), "{log}");
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_data_is_summarized_exactly() {
    let db = installed(2_000, 16).await;
    let now = Utc::now();
    let mut g = SpanGen::new(8);
    let mut spans = Vec::new();
    // NULL parents only, no root, several roots.
    let mut t = g.trace(now - CD::seconds(30), 4);
    for s in t.iter_mut() {
        s.parent_span_id = None;
    }
    spans.extend(t);
    let mut t = g.trace(now - CD::seconds(30), 4);
    for s in t.iter_mut() {
        s.parent_span_id = Some("ffff".into());
    }
    spans.extend(t);
    let mut t = g.trace(now - CD::seconds(30), 6);
    for (i, s) in t.iter_mut().enumerate() {
        if i % 2 == 0 {
            s.parent_span_id = Some(String::new());
        }
    }
    spans.extend(t);
    // NULL service_name and status_code, NULL and 0 nanosecond times.
    let mut t = g.trace(now - CD::seconds(30), 5);
    for (i, s) in t.iter_mut().enumerate() {
        s.service_name = None;
        s.status_code = None;
        s.start_time_unix_nano = if i % 2 == 0 { None } else { Some(0) };
        s.end_time_unix_nano = None;
    }
    spans.extend(t);
    // End before start (duration clamps at 0), and huge values.
    let mut t = g.trace(now - CD::seconds(30), 2);
    t[0].start_time_unix_nano = Some(2_000_000_000_000_000_000);
    t[0].end_time_unix_nano = Some(1_000);
    t[1].start_time_unix_nano = Some(1_234_567_890_123_456_789);
    t[1].end_time_unix_nano = Some(1_234_567_890_123_456_790);
    spans.extend(t);
    // Timestamps in the future.
    spans.extend(g.trace(now + CD::hours(3), 3));
    // Quotes, backslashes, newlines, non-ASCII.
    let mut t = g.trace(now - CD::seconds(30), 4);
    let odd = [
        "it's \"quoted\"",
        "back\\slash\\",
        "new\nline\r\n",
        "naïve café ☕ 日本語",
    ];
    for (s, text) in t.iter_mut().zip(odd) {
        s.name = Some(text.into());
        s.service_name = Some(text.into());
        s.status_message = Some(text.into());
        s.parent_span_id = Some(String::new());
    }
    spans.extend(t);
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    // One trace with 20,000 spans.
    let big = g.trace(now - CD::minutes(5), 20_000);
    trace_summarizer::lab::spangen::copy_spans(&db.client, &db.target, &big)
        .await
        .unwrap();
    run_once(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    let n: i64 = db
        .client
        .query_one(
            "select span_count from otel_trace_summaries where trace_id = $1",
            &[&big[0].trace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_any_instant_loses_and_duplicates_nothing() {
    let db = installed(20_000, 17).await;
    let url = db.url.clone();
    let target = db.target.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let ingest = tokio::spawn(async move {
        let client = connect(&url).await;
        let mut g = SpanGen::new(77);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut batch = Vec::new();
            for _ in 0..20 {
                batch.extend(g.trace(Utc::now() - CD::seconds(3), 0));
            }
            insert_spans(&client, &target, &batch).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let mut rng_delay = 150u64;
    for _ in 0..5 {
        let mut child = worker(&db.url, &["--interval", "100ms"]);
        tokio::time::sleep(Duration::from_millis(rng_delay)).await;
        rng_delay = rng_delay * 7 % 1700 + 200;
        child.stop(libc::SIGKILL);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ingest.await.unwrap();
    run_once(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    // No duplicate trace rows (the unique index would refuse them, but check anyway).
    assert_eq!(
        db.count("select count(*) - count(distinct trace_id) from otel_trace_summaries")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cycle_reads_only_the_new_rows_through_indexes() {
    let db = installed(30_000, 18).await;
    run_once(&db);
    // Let earlier sessions (install's aggregation and index build) flush their statistics.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = db
        .count(
            "select coalesce(seq_scan, 0) from pg_stat_user_tables where relname = 'otel_traces'",
        )
        .await;
    let mut g = SpanGen::new(9);
    let mut spans = Vec::new();
    for _ in 0..20 {
        spans.extend(g.trace(Utc::now() - CD::seconds(2), 5));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    run_once(&db);
    db.client
        .batch_execute("select pg_stat_force_next_flush()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The worker's cycles never scan otel_traces sequentially.
    let after = db
        .count(
            "select coalesce(seq_scan, 0) from pg_stat_user_tables where relname = 'otel_traces'",
        )
        .await;
    assert_eq!(
        after - before,
        0,
        "a cycle scanned otel_traces sequentially"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}
