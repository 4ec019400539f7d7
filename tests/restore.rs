//! A restored database costs no rewrite of `otel_traces`. A live installation of over 1M spans,
//! with ingest and a worker running, is dumped with PostgreSQL 15's `pg_dump` as plain SQL and
//! restored with `psql` (upstream's major-version path) into a fresh PostgreSQL 15 cluster and a
//! fresh PostgreSQL 18 cluster (`TRACE_SUMMARIZER_PG18_BINDIR`, else `/opt/pg/18/bin`, else
//! the cache of `scripts/pg-major.sh 18`; skipped, saying so, when none has one). The source's
//! transaction ids are pushed far ahead first, so the restored stamps lie ahead of the new
//! server's ids. On each, the worker's first `run --once` falls back to a full refresh, moves the
//! stamp space and leaves the table equal to the oracle, while no span row is updated and the
//! table grows by at most 5%; later spans are tailed exactly. The figures (dump size, restore
//! time, first step against a single-connection `rebuild` on the same server, growth) are printed.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trace_summarizer::lab::cluster::{Cluster, ClusterOptions};
use trace_summarizer::lab::spangen::{copy_spans, insert_spans, SpanGen};

/// Spans loaded before the dump (in batches, to bound the test's memory).
const SPANS: usize = 1_000_000;
const BATCH: usize = 100_000;

/// Transaction ids the source burns before loading: its stamps then lie far ahead of a fresh
/// cluster's ids, as those of a server that has run for a while do.
const BURNED_XIDS: i64 = 200_000;

/// Inserts a small trace every 20 ms until stopped (ingest that goes on during the dump).
fn ingest(url: String, stop: Arc<AtomicBool>, seed: u64) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let client = connect(&url).await;
        let target = trace_summarizer::db::source::Target::new("public");
        let mut g = SpanGen::new(seed);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let spans = g.trace(Utc::now() - CD::seconds(1), 0);
            n += insert_spans(&client, &target, &spans).await.unwrap() as usize;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    })
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the CLI against `db` and returns (its stderr, how long it took).
fn timed_cli(db: &TestDb, args: &[&str]) -> (String, Duration) {
    let t = Instant::now();
    let out = db.cli(args);
    let took = t.elapsed();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "trace-summarizer {args:?} failed: {log}"
    );
    (log, took)
}

/// Updated span rows since the restore (the statistics of `otel_traces`), after waiting for the
/// sessions' statistics to be flushed.
async fn updated_rows(db: &TestDb) -> i64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    db.count(
        "select (n_tup_upd + n_tup_hot_upd)::bigint from pg_stat_user_tables
         where relid = 'otel_traces'::regclass",
    )
    .await
}

async fn table_size(db: &TestDb) -> i64 {
    db.count("select pg_table_size('otel_traces')").await
}

/// Restores `dump` with `psql` (from `tools`) into a fresh cluster of `bindir`, then proves the
/// worker's first step exact, with no span rewritten, and prints the figures.
async fn restore_into(label: &str, bindir: &Path, tools: &Path, dump: &Path, name: &str) {
    let cluster = Cluster::start(&ClusterOptions {
        bindir: Some(bindir.to_path_buf()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("start a PostgreSQL cluster from {}: {e}", bindir.display()));
    let major = cluster.major().unwrap();
    let admin = connect(&cluster.url("postgres")).await;
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .unwrap();
    let url = cluster.url(name);
    let t = Instant::now();
    run(
        Command::new(tools.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-f"])
            .arg(dump),
        &format!("psql restoring the dump into PostgreSQL {major}"),
    );
    let restore_time = t.elapsed();
    let db = TestDb {
        name: name.to_string(),
        client: connect(&url).await,
        url,
        target: trace_summarizer::db::source::Target::new("public"),
    };
    let row = db
        .client
        .query_one(
            "select max(trace_summarizer_xid), txid_current(), count(*) from otel_traces",
            &[],
        )
        .await
        .unwrap();
    let (highest, next, spans): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(
        highest > next,
        "{label}: the restored stamps ({highest}) do not lie ahead of the new server's ids ({next}): the test proves nothing"
    );
    let size_restored = table_size(&db).await;
    assert_eq!(
        updated_rows(&db).await,
        0,
        "{label}: the restore updated rows"
    );
    // The statistics are flushed and counted (else "0 updated" would prove nothing).
    let inserted = db
        .count("select n_tup_ins from pg_stat_user_tables where relid = 'otel_traces'::regclass")
        .await;
    assert!(
        inserted >= spans,
        "{label}: statistics count {inserted} inserts of {spans} spans"
    );

    // Ingest goes on in the restored database before the worker's first step.
    let mut g = SpanGen::new(7_701);
    let mut fresh = Vec::new();
    for _ in 0..20 {
        fresh.extend(g.trace(Utc::now() - CD::seconds(2), 0));
    }
    insert_spans(&db.client, &db.target, &fresh).await.unwrap();

    let (log, first_step) = timed_cli(&db, &["run", "--once"]);
    assert!(
        log.contains("foreign_state"),
        "{label}: the first step did not fall back with foreign_state:\n{log}"
    );
    let offset = db
        .count("select stamp_offset from trace_summarizer.state where target_schema = 'public'")
        .await;
    assert!(
        log.contains("moving the stamp space") && offset > 0,
        "{label}: the stamp space did not move (offset {offset}):\n{log}"
    );
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "{label}: after the first step"
    );
    let size_caught_up = table_size(&db).await;
    assert_eq!(
        updated_rows(&db).await,
        0,
        "{label}: a span row was updated after the restore"
    );
    let growth = (size_caught_up - size_restored) as f64 / size_restored as f64;
    assert!(
        growth <= 0.05,
        "{label}: otel_traces grew by {:.1}% ({size_restored} to {size_caught_up} bytes)",
        growth * 100.0
    );

    // New spans after the move are stamped above every restored one: tailed once, exactly.
    let mut more = Vec::new();
    for _ in 0..30 {
        more.extend(g.trace(Utc::now() - CD::seconds(1), 0));
    }
    insert_spans(&db.client, &db.target, &more).await.unwrap();
    let (log, _) = timed_cli(&db, &["run", "--once"]);
    assert!(
        !log.contains("falling back to a full refresh"),
        "{label}: a step after the move fell back:\n{log}"
    );
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "{label}: new spans after the move"
    );

    let (_, rebuild) = timed_cli(&db, &["rebuild", "--jobs", "1"]);
    assert_eq!(db.oracle_diff("7 days").await, 0, "{label}: after rebuild");
    assert_eq!(
        updated_rows(&db).await,
        0,
        "{label}: rows updated at the end"
    );
    eprintln!(
        "{label} (PostgreSQL {major}): {spans} spans restored in {:.1} s; first step {:.1} s, rebuild {:.1} s (ratio {:.2}); otel_traces {:.1} MB to {:.1} MB ({:+.2}%); stamp offset {offset}; 0 rows updated",
        restore_time.as_secs_f64(),
        first_step.as_secs_f64(),
        rebuild.as_secs_f64(),
        first_step.as_secs_f64() / rebuild.as_secs_f64(),
        size_restored as f64 / 1e6,
        size_caught_up as f64 / 1e6,
        growth * 100.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_dump_moves_the_stamp_space_and_rewrites_no_span() {
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        skip("TEST_DATABASE_URL is set: this test dumps its own cluster and starts others");
        return;
    }
    if let Some(reason) = missing_tools(&["pg_dump", "psql"]) {
        skip(&reason);
        return;
    }
    let started = Instant::now();
    let tools = server().cluster.unwrap().bindir().to_path_buf();
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "do $$ begin for i in 1..{BURNED_XIDS} loop perform txid_current(); commit; end loop; end $$"
        ))
        .await
        .expect("burn transaction ids on the source");
    let now = Utc::now();
    for i in 0..SPANS / BATCH {
        let spans = SpanGen::new(7_000 + i as u64).history(BATCH, now - CD::hours(48), now, now);
        copy_spans(&db.client, &db.target, &spans).await.unwrap();
    }
    db.client
        .batch_execute("analyze otel_traces")
        .await
        .unwrap();
    db.cli_ok(&["install", "--mode", "incremental"]);
    let loaded = started.elapsed();

    // A live installation: ingest and a worker, during the dump too.
    let mut w = worker(&db.url, &["--interval", "100ms"]);
    let stop = Arc::new(AtomicBool::new(false));
    let ingesting = ingest(db.url.clone(), stop.clone(), 7_500);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.sql");
    let t = Instant::now();
    run(
        Command::new(tools.join("pg_dump"))
            .arg("--format=plain")
            .arg(format!("--file={}", dump.display()))
            .arg(format!("--dbname={}", db.url)),
        "pg_dump",
    );
    let dump_time = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let ingested = ingesting.await.unwrap();
    w.stop(libc::SIGTERM);
    let dump_size = std::fs::metadata(&dump).unwrap().len();
    eprintln!(
        "source: {SPANS} spans loaded and installed in {:.1} s; {ingested} spans ingested live; dump {:.1} MB in {:.1} s",
        loaded.as_secs_f64(),
        dump_size as f64 / 1e6,
        dump_time.as_secs_f64()
    );

    // The test's own binaries for (a), PostgreSQL 18's for (b); psql is always the source's.
    restore_into("(a) same major", &tools, &tools, &dump, &db.name).await;
    match trace_summarizer::lab::cluster::major_bindir(18) {
        Some(bindir) => restore_into("(b) PostgreSQL 18", &bindir, &tools, &dump, &db.name).await,
        None => skip(
            "part (b): no PostgreSQL 18 server binaries (set TRACE_SUMMARIZER_PG18_BINDIR, or run scripts/pg-major.sh 18)",
        ),
    }
    eprintln!(
        "restore test: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}
