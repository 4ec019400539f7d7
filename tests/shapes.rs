//! The shapes `otel_traces` takes in production, and the ways rows leave it besides a plain
//! delete: a natively partitioned table (as pg_partman keeps it) with partitions attached,
//! detached, dropped and truncated, sub-partitions, retention deletes racing late spans and
//! manual fixes on a plain table, a window change under readers and ingest, a calendar window
//! across a DST change, and a TimescaleDB hypertable with compressed chunks (skipped where
//! TimescaleDB is absent). Every test ends with the table equal to the view's definition (the
//! oracle), row for row, in both directions. Workers and `run --once` get there without a full
//! refresh and with the continuous audit off, so the incremental path alone made it exact.
mod common;
use chrono::{DateTime, Duration as CD, Utc};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;
use trace_summarizer::lab::spangen::{copy_spans, insert_spans, SpanGen};

/// The stamp index install puts on otel_traces.
const STAMP_INDEX: &str = "otel_traces_trace_summarizer_xid_idx";

/// A worker polling every 100 ms, with the continuous audit off: it could otherwise repair a
/// difference the incremental path left, and hide it.
const WORKER_ARGS: &[&str] = &["--interval", "100ms", "--audit-period", "0"];

/// Columns a writer names (everything but created_at and the stamp).
const SPAN_COLUMNS: &str = "\"timestamp\", trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message";

/// Loads about `n` spans over the last `hours` with past created_at values, leaving out the
/// hour on either side of each `now() - <days> days` edge in `avoid_days`: a comparison made
/// shortly after a step must not race a span crossing the window edge.
async fn load_spans(db: &TestDb, n: usize, hours: i64, seed: u64, avoid_days: &[i64]) {
    let now = Utc::now();
    let band = CD::hours(1);
    let spans: Vec<_> = SpanGen::new(seed)
        .history(n, now - CD::hours(hours), now, now)
        .into_iter()
        .filter(|s| {
            avoid_days.iter().all(|d| {
                let edge = now - CD::days(*d);
                s.timestamp < edge - band || s.timestamp > edge + band
            })
        })
        .collect();
    copy_spans(&db.client, &db.target, &spans)
        .await
        .expect("load spans");
    db.client
        .batch_execute("analyze otel_traces")
        .await
        .unwrap();
}

/// Gives `n` traces whose spans all lie between 6 and 2 days ago a copy of each span (as a
/// child) `shift_hours` later, so those traces straddle two days, hence two partitions.
async fn spread_traces(client: &Client, n: i64, shift_hours: i64) -> u64 {
    client
        .execute(
            &format!(
                "insert into otel_traces ({SPAN_COLUMNS})
                 select \"timestamp\" + make_interval(hours => {shift_hours}), trace_id, span_id || 'b', span_id, name, kind,
                        start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message
                 from otel_traces
                 where trace_id in (select trace_id from otel_traces group by trace_id
                                    having min(\"timestamp\") > now() - interval '6 days'
                                       and max(\"timestamp\") < now() - interval '2 days'
                                    order by trace_id limit {n})"
            ),
            &[],
        )
        .await
        .expect("spread traces over two days")
}

/// `YYYYMMDD` of `current_date + offset`: the suffix of the harness's daily partitions.
async fn day(client: &Client, offset: i32) -> String {
    client
        .query_one(
            "select to_char(current_date + $1::int, 'YYYYMMDD')",
            &[&offset],
        )
        .await
        .unwrap()
        .get(0)
}

/// `current_date + offset` as a literal for partition bounds.
async fn date(client: &Client, offset: i32) -> String {
    client
        .query_one("select (current_date + $1::int)::text", &[&offset])
        .await
        .unwrap()
        .get(0)
}

/// The stamp index is valid on the parent and attached at every level of the partition tree:
/// the index's own tree has one member per relation of the table's tree.
async fn stamp_index_covers_every_partition(db: &TestDb) {
    let row = db
        .client
        .query_one(
            &format!(
                "select (select count(*) from pg_partition_tree('otel_traces')),
                        (select count(*) from pg_partition_tree('{STAMP_INDEX}')),
                        (select indisvalid from pg_index where indexrelid = '{STAMP_INDEX}'::regclass)"
            ),
            &[],
        )
        .await
        .expect("the stamp index exists on the partitioned otel_traces");
    let (tables, indexes, valid): (i64, i64, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        tables, indexes,
        "the stamp index is not attached to every partition"
    );
    assert!(valid, "the stamp index on the parent is not valid");
}

/// `run --once` with the continuous audit off (so only the incremental mechanisms can make the
/// table exact), which must succeed without a full refresh; returns its log.
fn run_once_incrementally(db: &TestDb) -> String {
    let out = db.cli(&["run", "--once", "--audit-period", "0"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run --once failed:\n{log}");
    assert!(
        !log.contains("full refresh"),
        "run --once fell back to a full refresh:\n{log}"
    );
    log
}

/// Background ingest: a few new traces every 50 ms, as upstream's writer inserts them.
struct Ingest {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Ingest {
    fn start(db: &TestDb, seed: u64) -> Ingest {
        let (url, target) = (db.url.clone(), db.target.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let client = connect(&url).await;
            let mut g = SpanGen::new(seed);
            let (mut rows, mut errors) = (0u64, Vec::new());
            while !stop2.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                for _ in 0..5 {
                    batch.extend(g.trace(Utc::now() - CD::seconds(2), 0));
                }
                match insert_spans(&client, &target, &batch).await {
                    Ok(n) => rows += n,
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (rows, errors)
        });
        Ingest { stop, task }
    }

    /// Stops ingest; requires that every insert succeeded and some did.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (rows, errors) = self.task.await.unwrap();
        assert!(errors.is_empty(), "ingest failed: {errors:?}");
        assert!(rows > 0, "ingest wrote nothing");
        rows
    }
}

/// Waits until the worker has caught up: zero rows differ from the oracle.
async fn caught_up(db: &TestDb, window: &str) {
    eventually(
        Duration::from_secs(40),
        "the worker catches up with the definition",
        || async { db.oracle_diff(window).await == 0 },
    )
    .await;
}

/// Like [`caught_up`], but a timeout fails with the rows that differ and the worker's log.
async fn caught_up_or_report(db: &TestDb, window: &str, w: &Proc) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db.oracle_diff(window).await != 0 {
        if std::time::Instant::now() > deadline {
            panic!(
                "the worker did not catch up with the definition in 60 s; differing rows:\n{}\nworker log:\n{}",
                db.oracle_diff_rows(window).await,
                w.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a trace inserted now is summarized: every step since has a position past the
/// rows committed before it.
async fn wait_for_a_step(db: &TestDb, seed: u64) {
    let marker = SpanGen::new(seed).trace(Utc::now() - CD::seconds(1), 3);
    insert_spans(&db.client, &db.target, &marker).await.unwrap();
    let id = marker[0].trace_id.clone();
    eventually(
        Duration::from_secs(20),
        "the worker summarizes a new trace",
        || {
            let id = id.clone();
            async move {
                db.count(&format!(
                    "select count(*) from otel_trace_summaries where trace_id = '{id}'"
                ))
                .await
                    == 1
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_attached_and_detached_under_ingest_stay_exact() {
    let db = TestDb::partitioned(8).await;
    load_spans(&db, 20_000, 24 * 8, 101, &[7]).await;
    spread_traces(&db.client, 200, 25).await;
    // Before this version install failed here: "cannot create index on partitioned table
    // concurrently".
    db.cli_ok(&["install", "--mode", "incremental"]);
    stamp_index_covers_every_partition(&db).await;
    assert_eq!(db.oracle_diff("7 days").await, 0);

    let mut w = worker(&db.url, WORKER_ARGS);
    let ingest = Ingest::start(&db, 102);

    // A premade table for a range no partition covers yet (the day after tomorrow; the default
    // partition holds nothing there), created as pg_partman does, filled while detached: spans
    // of 40 summarized traces moved into that day, and 30 traces of its own.
    let (future, future_from, future_to) = (
        day(&db.client, 2).await,
        date(&db.client, 2).await,
        date(&db.client, 3).await,
    );
    let premade = format!("otel_traces_p{future}");
    db.client
        .batch_execute(&format!(
            "create table {premade} (like otel_traces including all);
             insert into {premade} ({SPAN_COLUMNS})
             select (current_date + 2)::timestamptz + (\"timestamp\" - date_trunc('day', \"timestamp\")),
                    trace_id || suffix, span_id || 'f', parent_span_id, name, kind, start_time_unix_nano,
                    end_time_unix_nano, service_name, status_code, status_message
             from otel_traces
             join (select trace_id as t, case when row_number() over (order by trace_id) <= 40 then '' else 'f' end as suffix
                   from otel_trace_summaries where span_count > 1 order by trace_id limit 70) picked on picked.t = trace_id
             where \"timestamp\" > now() - interval '7 days';"
        ))
        .await
        .expect("fill a premade partition");
    let premade_traces = db
        .count(&format!("select count(distinct trace_id) from {premade}"))
        .await;
    assert_eq!(premade_traces, 70);
    // The worker moves past the transaction that filled it, so tailing will never read those
    // rows: only the attach can bring them in.
    wait_for_a_step(&db, 103).await;
    db.client
        .batch_execute(&format!(
            "alter table otel_traces attach partition {premade} for values from ('{future_from}') to ('{future_to}')"
        ))
        .await
        .expect("attach the premade partition");
    stamp_index_covers_every_partition(&db).await;

    // A middle partition detached (its rows leave otel_traces but stay in the table).
    let middle = format!("otel_traces_p{}", day(&db.client, -3).await);
    db.client
        .batch_execute(&format!(
            "alter table otel_traces detach partition {middle}"
        ))
        .await
        .expect("detach a middle partition");
    assert!(db.count(&format!("select count(*) from {middle}")).await > 0);
    wait_for_a_step(&db, 104).await;

    ingest.stop().await;
    caught_up(&db, "7 days").await;
    assert_eq!(
        db.count(&format!(
            "select count(*) from otel_trace_summaries where \"timestamp\" >= '{future_from}'"
        ))
        .await,
        70,
        "the traces of the attached partition are not all summarized up to its spans"
    );
    let log = w.log_text();
    assert!(!log.contains("full refresh"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_oldest_partitions_and_truncating_middle_ones_is_exact() {
    let db = TestDb::partitioned(8).await;
    load_spans(&db, 20_000, 24 * 8, 111, &[7]).await;
    spread_traces(&db.client, 300, 25).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    assert_eq!(db.oracle_diff("7 days").await, 0);

    // Retention as pg_partman does it: the oldest partition goes, one day at a time. The first
    // lies wholly before the window, the second straddles its edge, the third is inside.
    for offset in [-8, -7, -6] {
        let oldest = format!("otel_traces_p{}", day(&db.client, offset).await);
        db.client
            .batch_execute(&format!("drop table {oldest}"))
            .await
            .unwrap();
        run_once_incrementally(&db);
        assert_eq!(db.oracle_diff("7 days").await, 0, "after dropping {oldest}");
    }
    assert_eq!(
        db.count(
            "select count(*) from otel_trace_summaries where \"timestamp\" < current_date - 5"
        )
        .await,
        0
    );

    // A middle partition truncated.
    let middle = format!("otel_traces_p{}", day(&db.client, -3).await);
    let before = db.count("select count(*) from otel_trace_summaries").await;
    db.client
        .batch_execute(&format!("truncate {middle}"))
        .await
        .unwrap();
    run_once_incrementally(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after truncating {middle}"
    );
    assert!(db.count("select count(*) from otel_trace_summaries").await < before);

    // Another truncated, then refilled in the same interval: new spans of traces that had
    // spans there, and of new traces.
    let refilled = format!("otel_traces_p{}", day(&db.client, -2).await);
    let spans_of: Vec<String> = db
        .client
        .query(
            &format!("select distinct trace_id from {refilled} order by trace_id limit 25"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.client
        .batch_execute(&format!("truncate {refilled}"))
        .await
        .unwrap();
    let at: DateTime<Utc> = db
        .client
        .query_one(
            "select (current_date - 2)::timestamptz + interval '12 hours'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut g = SpanGen::new(112);
    let mut spans = Vec::new();
    for id in &spans_of {
        for mut s in g.trace(at, 3) {
            s.trace_id = id.clone();
            spans.push(s);
        }
    }
    for _ in 0..20 {
        spans.extend(g.trace(at + CD::hours(1), 0));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    run_once_incrementally(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after truncating and refilling {refilled}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sub_partitions_are_indexed_absorbed_and_dropped_exactly() {
    let db = TestDb::partitioned(8).await;
    // Two days ago is itself partitioned by hash of trace_id into two sub-partitions.
    let (sub, from, to) = (
        format!("otel_traces_p{}", day(&db.client, -2).await),
        date(&db.client, -2).await,
        date(&db.client, -1).await,
    );
    db.client
        .batch_execute(&format!(
            "drop table {sub};
             create table {sub} partition of otel_traces for values from ('{from}') to ('{to}') partition by hash (trace_id);
             create table {sub}_h0 partition of {sub} for values with (modulus 2, remainder 0);
             create table {sub}_h1 partition of {sub} for values with (modulus 2, remainder 1);"
        ))
        .await
        .expect("sub-partition a day");
    load_spans(&db, 20_000, 24 * 8, 121, &[7]).await;
    spread_traces(&db.client, 300, 25).await;
    for leaf in ["h0", "h1"] {
        assert!(
            db.count(&format!("select count(*) from {sub}_{leaf}"))
                .await
                > 0,
            "{sub}_{leaf} holds no spans"
        );
    }
    db.cli_ok(&["install", "--mode", "incremental"]);
    stamp_index_covers_every_partition(&db).await;
    assert_eq!(db.oracle_diff("7 days").await, 0);

    // New spans in the sub-partitioned day: late spans of its traces, and new traces.
    let at: DateTime<Utc> = db
        .client
        .query_one(
            &format!("select '{from}'::timestamptz + interval '10 hours'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ids: Vec<String> = db
        .client
        .query(
            &format!("select distinct trace_id from {sub} order by trace_id limit 40"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut g = SpanGen::new(122);
    let mut spans = Vec::new();
    for id in &ids {
        for mut s in g.trace(at, 2) {
            s.trace_id = id.clone();
            spans.push(s);
        }
    }
    for _ in 0..30 {
        spans.extend(g.trace(at + CD::minutes(30), 0));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    run_once_incrementally(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after new spans in {sub}"
    );

    // One sub-partition dropped: its traces lose those spans (some vanish, some straddling
    // traces keep their other day).
    let before = db.count("select count(*) from otel_trace_summaries").await;
    db.client
        .batch_execute(&format!("drop table {sub}_h1"))
        .await
        .unwrap();
    run_once_incrementally(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after dropping {sub}_h1");
    assert!(db.count("select count(*) from otel_trace_summaries").await < before);
}

/// A plain table with 8 days of spans, installed and caught up.
async fn plain_installed(seed: u64) -> TestDb {
    let db = TestDb::new().await;
    load_spans(&db, 20_000, 24 * 8, seed, &[7]).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    run_once_incrementally(&db);
    db
}

const RETENTION: &str = "delete from otel_traces where \"timestamp\" < now() - interval '3 days'";

#[tokio::test(flavor = "multi_thread")]
async fn a_late_span_below_the_retention_cut_then_retention_in_the_same_interval_is_exact() {
    let db = plain_installed(131).await;
    // Late spans 6 days back (below the 3-day retention cut, inside the 7-day window): for
    // recent traces, for traces between the late span and the cut, and for new traces.
    let late_at = Utc::now() - CD::days(6);
    let mut g = SpanGen::new(132);
    let mut spans = Vec::new();
    for (from, to) in [("1 day", "2 hours"), ("5 days", "4 days")] {
        let ids: Vec<String> = db
            .client
            .query(
                &format!(
                    "select trace_id from otel_trace_summaries
                     where \"timestamp\" between now() - interval '{from}' and now() - interval '{to}'
                     order by trace_id limit 30"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids.len(), 30);
        for id in ids {
            for mut s in g.trace(late_at, 2) {
                s.trace_id = id.clone();
                spans.push(s);
            }
        }
    }
    for _ in 0..20 {
        spans.extend(g.trace(late_at, 0));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    let deleted = db.client.execute(RETENTION, &[]).await.unwrap();
    assert!(deleted > 0);
    run_once_incrementally(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_eq!(
        db.count("select count(*) from otel_trace_summaries where \"timestamp\" < now() - interval '3 days'")
            .await,
        0,
        "traces whose spans all fell to retention are still listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_delete_beside_a_retention_delete_is_reflected() {
    let db = plain_installed(141).await;
    let gone: Vec<String> = db
        .client
        .query(
            "select trace_id from otel_trace_summaries where \"timestamp\" > now() - interval '1 day'
             order by trace_id limit 10",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.client
        .execute("delete from otel_traces where trace_id = any($1)", &[&gone])
        .await
        .unwrap();
    // Single spans of other recent traces too.
    db.client
        .batch_execute(
            "delete from otel_traces where (\"timestamp\", trace_id, span_id) in
               (select \"timestamp\", trace_id, span_id from otel_traces
                where \"timestamp\" > now() - interval '2 days' order by span_id limit 40)",
        )
        .await
        .unwrap();
    db.client.execute(RETENTION, &[]).await.unwrap();
    run_once_incrementally(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_eq!(
        db.client
            .query_one(
                "select count(*) from otel_trace_summaries where trace_id = any($1)",
                &[&gone],
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "a deleted trace is still listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_of_status_service_and_timestamp_are_reflected() {
    let db = plain_installed(151).await;
    db.client
        .batch_execute(
            "-- status and service of root and child spans
             update otel_traces set status_code = case when status_code = 1 then 2 else 1 end
              where (\"timestamp\", trace_id, span_id) in
                    (select \"timestamp\", trace_id, span_id from otel_traces
                     where \"timestamp\" > now() - interval '6 days' order by span_id limit 60);
             update otel_traces set service_name = 'renamed-' || coalesce(service_name, 'none')
              where (\"timestamp\", trace_id, span_id) in
                    (select \"timestamp\", trace_id, span_id from otel_traces
                     where \"timestamp\" > now() - interval '6 days' order by span_id desc limit 60);
             -- spans moved out of the window (whole traces and single spans)
             update otel_traces set \"timestamp\" = \"timestamp\" - interval '8 days'
              where trace_id in (select trace_id from otel_traces where \"timestamp\" > now() - interval '3 days'
                                 order by trace_id limit 15);
             update otel_traces set \"timestamp\" = \"timestamp\" - interval '8 days'
              where (\"timestamp\", trace_id, span_id) in
                    (select \"timestamp\", trace_id, span_id from otel_traces
                     where \"timestamp\" > now() - interval '5 days' order by md5(span_id) limit 30);
             -- spans moved into the window from before it, and later within it
             update otel_traces set \"timestamp\" = \"timestamp\" + interval '2 days'
              where \"timestamp\" < now() - interval '7 days 2 hours'
                and trace_id in (select trace_id from otel_traces where \"timestamp\" < now() - interval '7 days 2 hours'
                                 order by trace_id limit 15);
             update otel_traces set \"timestamp\" = \"timestamp\" + interval '1 day'
              where (\"timestamp\", trace_id, span_id) in
                    (select \"timestamp\", trace_id, span_id from otel_traces
                     where \"timestamp\" between now() - interval '6 days' and now() - interval '2 days'
                     order by md5(span_id) desc limit 30);",
        )
        .await
        .expect("update spans");
    run_once_incrementally(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_change_under_ingest_waits_for_a_reader_and_stays_exact() {
    let db = TestDb::new().await;
    load_spans(&db, 20_000, 24 * 8, 161, &[7, 6]).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    let mut w = worker(&db.url, WORKER_ARGS);
    let ingest = Ingest::start(&db, 162);
    let stop_readers = Arc::new(AtomicBool::new(false));
    let readers = reader_loop(db.url.clone(), stop_readers.clone());
    wait_for_a_step(&db, 163).await;

    // A reader holds the relation in an open transaction.
    let holder = connect(&db.url).await;
    holder
        .batch_execute("begin; select count(*) from otel_trace_summaries")
        .await
        .unwrap();
    let held = std::time::Instant::now();
    let mut cmd = bin();
    cmd.env("DATABASE_URL", &db.url)
        .env("TRACE_SUMMARIZER_SCHEMA", &db.target.schema)
        .args(["install", "--mode", "incremental", "--window", "6d"]);
    let install = Proc::spawn(cmd);
    eventually(
        Duration::from_secs(30),
        "install waits for the reader to switch",
        || async { install.log_text().contains("retrying the switch") },
    )
    .await;
    // Hold about 8 s in all, then let go.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(held.elapsed())).await;
    holder
        .batch_execute("commit")
        .await
        .expect("the reader's transaction survives");
    let (install, status) = tokio::task::spawn_blocking(move || {
        let mut install = install;
        let status = install.wait();
        (install, status)
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "install --window 6d failed:\n{}",
        install.log_text()
    );

    let st: serde_json::Value =
        serde_json::from_str(&db.cli_ok(&["status", "--json"])).expect("status --json");
    assert_eq!(st["window_seconds"].as_f64(), Some(6.0 * 86_400.0), "{st}");
    ingest.stop().await;
    caught_up(&db, "6 days").await;
    stop_readers.store(true, Ordering::Relaxed);
    let Reads {
        reads,
        errors,
        empty,
        ..
    } = readers.await.unwrap();
    assert!(errors.is_empty(), "readers saw errors: {errors:?}");
    assert_eq!(empty, 0, "readers saw an empty relation");
    assert!(reads > 10, "readers ran {reads} times");
    let log = w.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    w.stop(libc::SIGTERM);
}

/// How many of `traces` are summarized with a newest span at or before `now() - ago`.
async fn summarized_before(client: &Client, traces: &[String], ago: &str) -> i64 {
    client
        .query_one(
            &format!(
                "select count(*) from otel_trace_summaries
                 where trace_id = any($1) and \"timestamp\" <= now() - interval '{ago}'"
            ),
            &[&traces],
        )
        .await
        .unwrap()
        .get(0)
}

/// Rows that differ between the table and the oracle evaluated in `client`'s session.
async fn diff_in_session(client: &Client, window: &str) -> i64 {
    client
        .query_one(
            &format!(
                "with oracle as ({oracle}), actual as (select * from otel_trace_summaries)
                 select (select count(*) from (select * from actual except all select * from oracle) a)
                      + (select count(*) from (select * from oracle except all select * from actual) b)",
                oracle = oracle_sql("public", window)
            ),
            &[],
        )
        .await
        .expect("oracle query")
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_window_follows_the_databases_time_zone_across_dst() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "alter database {} set timezone = 'Europe/Berlin'",
            db.name
        ))
        .await
        .unwrap();
    // The setting applies to new sessions.
    let berlin = connect(&db.url).await;
    let tz: String = berlin.query_one("show timezone", &[]).await.unwrap().get(0);
    assert_eq!(tz, "Europe/Berlin");
    let row = berlin
        .query_one(
            "select now() - interval '30 days', now() - interval '720 hours'",
            &[],
        )
        .await
        .unwrap();
    let (calendar_edge, hours_edge): (DateTime<Utc>, DateTime<Utc>) = (row.get(0), row.get(1));
    // On 2026-11-22 the edge lies before the end of summer time (2026-10-25): 30 Berlin days
    // are 721 hours.
    if hours_edge - calendar_edge != CD::hours(1) {
        eprintln!(
            "no DST change inside the last 30 days in Berlin today ({}): the band between the edges is empty",
            Utc::now().date_naive()
        );
    }

    // History well inside the window, and one trace per minute 1 to 50 minutes inside the
    // calendar edge (all before now() - 720 hours when the band is one hour wide), others as
    // far outside it, and one trace on both sides.
    load_spans(&db, 5_000, 24 * 29, 171, &[]).await;
    let mut g = SpanGen::new(172);
    let mut spans = Vec::new();
    let mut inside = Vec::new();
    for minute in 1..=50 {
        let t = g.trace(calendar_edge + CD::minutes(minute), 3);
        inside.push(t[0].trace_id.clone());
        spans.extend(t);
        spans.extend(g.trace(calendar_edge - CD::minutes(minute), 2));
    }
    let mut both = g.trace(calendar_edge + CD::minutes(20), 2);
    both[1].timestamp = calendar_edge - CD::minutes(20);
    inside.push(both[0].trace_id.clone());
    spans.extend(both);
    insert_spans(&db.client, &db.target, &spans).await.unwrap();

    db.cli_ok(&["install", "--mode", "incremental", "--window", "30d"]);
    assert_eq!(diff_in_session(&berlin, "30 days").await, 0);
    let expected_in_band = if hours_edge - calendar_edge == CD::hours(1) {
        51
    } else {
        0
    };
    assert_eq!(
        summarized_before(&berlin, &inside, "720 hours").await,
        expected_in_band,
        "traces between the calendar edge and now() - 720 hours are not counted"
    );
    // A 720-hour window (a UTC session) would miss them: the comparison is not vacuous.
    let utc = connect(&db.url).await;
    utc.batch_execute("set timezone = 'UTC'").await.unwrap();
    if expected_in_band > 0 {
        assert!(diff_in_session(&utc, "30 days").await >= 51);
    }

    // The worker computes the same edge: new spans, and late spans for the edge traces.
    let mut more = Vec::new();
    for _ in 0..30 {
        more.extend(g.trace(Utc::now() - CD::seconds(5), 0));
    }
    for id in inside.iter().take(10) {
        for mut s in g.trace(calendar_edge + CD::minutes(55), 1) {
            s.trace_id = id.clone();
            more.push(s);
        }
    }
    insert_spans(&db.client, &db.target, &more).await.unwrap();
    run_once_incrementally(&db);
    assert_eq!(diff_in_session(&berlin, "30 days").await, 0);
    assert_eq!(
        summarized_before(&berlin, &inside, "720 hours").await,
        expected_in_band
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hypertable_with_compressed_chunks_stays_exact() {
    let Some(db) = TestDb::hypertable().await else {
        return;
    };
    load_spans(&db, 20_000, 24 * 7, 181, &[7]).await;
    db.client
        .batch_execute(
            "alter table otel_traces set (timescaledb.compress, timescaledb.compress_orderby = '\"timestamp\" desc');
             select compress_chunk(c) from show_chunks('otel_traces', older_than => now() - interval '3 days') c;",
        )
        .await
        .expect("compress the chunks older than 3 days");
    let compressed = || async {
        db.count(
            "select count(*) from timescaledb_information.chunks
             where hypertable_name = 'otel_traces' and is_compressed",
        )
        .await
    };
    assert!(compressed().await >= 3);
    db.cli_ok(&["install", "--mode", "incremental"]);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after install");

    // Late spans into compressed chunks: of summarized traces, and new traces.
    let mut g = SpanGen::new(182);
    let ids: Vec<(String, DateTime<Utc>)> = db
        .client
        .query(
            "select trace_id, \"timestamp\" from otel_trace_summaries
             where \"timestamp\" between now() - interval '6 days' and now() - interval '4 days'
             order by trace_id limit 40",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(ids.len(), 40);
    let mut late = Vec::new();
    for (id, at) in &ids {
        for mut s in g.trace(*at - CD::hours(3), 2) {
            s.trace_id = id.clone();
            late.push(s);
        }
    }
    for _ in 0..20 {
        late.extend(g.trace(Utc::now() - CD::days(5), 0));
    }
    insert_spans(&db.client, &db.target, &late).await.unwrap();
    run_once_incrementally(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after late spans into compressed chunks"
    );

    // Deletes in a compressed chunk: whole traces, and a time slice.
    db.client
        .batch_execute(
            "delete from otel_traces where trace_id in
               (select trace_id from otel_traces where \"timestamp\" between now() - interval '5 days' and now() - interval '4 days'
                order by trace_id limit 20);
             delete from otel_traces where \"timestamp\" between now() - interval '6 days' and now() - interval '6 days' + interval '20 minutes';",
        )
        .await
        .expect("delete from a compressed chunk");
    run_once_incrementally(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after deletes in a compressed chunk"
    );

    // New spans.
    let mut fresh = Vec::new();
    for _ in 0..50 {
        fresh.extend(g.trace(Utc::now() - CD::seconds(10), 0));
    }
    insert_spans(&db.client, &db.target, &fresh).await.unwrap();
    run_once_incrementally(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after new spans");

    // Retention drops chunks inside the window.
    db.client
        .batch_execute("select drop_chunks('otel_traces', older_than => now() - interval '5 days')")
        .await
        .unwrap();
    run_once_incrementally(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after drop_chunks");

    // Another chunk compressed (a rewrite that loses no row).
    let before = compressed().await;
    db.client
        .batch_execute(
            "select compress_chunk(c, if_not_compressed => true)
             from show_chunks('otel_traces', older_than => now() - interval '2 days') c",
        )
        .await
        .unwrap();
    assert!(compressed().await > before);
    run_once_incrementally(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after compressing another chunk"
    );

    // All of it again under a running worker and ingest.
    let mut w = worker(&db.url, WORKER_ARGS);
    let ingest = Ingest::start(&db, 183);
    wait_for_a_step(&db, 184).await;
    let mut late = Vec::new();
    for _ in 0..20 {
        late.extend(g.trace(Utc::now() - CD::days(3) - CD::hours(6), 0));
    }
    insert_spans(&db.client, &db.target, &late).await.unwrap();
    db.client
        .batch_execute(
            "delete from otel_traces where trace_id in
               (select trace_id from otel_traces where \"timestamp\" between now() - interval '4 days' and now() - interval '3 days'
                order by trace_id limit 20);
             select compress_chunk(c, if_not_compressed => true)
               from show_chunks('otel_traces', older_than => now() - interval '1 day') c;",
        )
        .await
        .unwrap();
    wait_for_a_step(&db, 185).await;
    db.client
        .batch_execute("select drop_chunks('otel_traces', older_than => now() - interval '4 days')")
        .await
        .unwrap();
    wait_for_a_step(&db, 186).await;
    ingest.stop().await;
    caught_up_or_report(&db, "7 days", &w).await;
    let log = w.log_text();
    assert!(!log.contains("full refresh"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    w.stop(libc::SIGTERM);
}
