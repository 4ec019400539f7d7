//! Tailing finds every committed span exactly, whoever wrote it and whatever it put in
//! `created_at`: writers that stamp `created_at` themselves, early and from a clock 30 s behind,
//! in concurrent sessions; a bulk load of days-old `created_at` values in one transaction that
//! commits late, and COPY with explicit `created_at`; a prepared transaction committed cycles
//! later; a database restored from a dump (`foreign_state`) and stamps copied from a server whose
//! ids are ahead, which move the stamp space (no row is rewritten) and are never counted twice; the continuous audit repairing
//! damaged, deleted and invented summaries; and a worker role with only the documented grants,
//! no `pg_read_all_stats` and no access to `pg_stat_activity`. Each ends compared with the oracle
//! in both directions.
mod common;
use chrono::{DateTime, Duration as CD, Utc};
use common::*;
use rand::{Rng, SeedableRng};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::GenericClient;
use trace_summarizer::db::source::Target;
use trace_summarizer::lab::spangen::{copy_spans, insert_spans, Span, SpanGen};

async fn installed(spans: usize, seed: u64) -> TestDb {
    let db = TestDb::new().await;
    load_history(&db, spans, 48, seed).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    db
}

/// `run --once` against `url`, which must exit 0 within `limit`: a run that never catches up
/// fails the test instead of hanging it. Returns its log.
fn run_once_at(url: &str, schema: &str, limit: Duration) -> String {
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut child = bin()
        .env("DATABASE_URL", url)
        .env("TRACE_SUMMARIZER_SCHEMA", schema)
        .args(["run", "--once"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().expect("the log file"))
        .spawn()
        .expect("start trace-summarizer");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run --once") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            panic!(
                "run --once did not finish within {limit:?}; the last lines of its log:\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(
        status.success(),
        "run --once failed ({:?}):\n{text}",
        status.code()
    );
    text
}

/// `run --once` on `db` from inside the runtime (it blocks this thread while tasks run on
/// others).
fn run_once_now(db: &TestDb) -> String {
    tokio::task::block_in_place(|| run_once_at(&db.url, &db.target.schema, RUN_ONCE_LIMIT))
}

/// Far more than any `run --once` here needs on a loaded 2-core machine.
const RUN_ONCE_LIMIT: Duration = Duration::from_secs(60);

/// A step that only tails must not need a full refresh.
fn assert_no_fallback(log: &str) {
    assert!(
        !log.contains("falling back to a full refresh"),
        "an incremental step fell back to a full refresh:\n{log}"
    );
}

/// Inserts spans with the `created_at` each carries (as upstream's writer does, with
/// `ON CONFLICT DO NOTHING`).
async fn insert_stamped<C: GenericClient>(client: &C, target: &Target, spans: &[Span]) -> u64 {
    let sql = format!(
        "insert into {} (\"timestamp\", trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message, created_at)
         select * from unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int8[], $8::int8[], $9::text[], $10::int4[], $11::text[], $12::timestamptz[])
         on conflict do nothing",
        target.traces()
    );
    let ts: Vec<DateTime<Utc>> = spans.iter().map(|s| s.timestamp).collect();
    let trace: Vec<String> = spans.iter().map(|s| s.trace_id.clone()).collect();
    let span: Vec<String> = spans.iter().map(|s| s.span_id.clone()).collect();
    let parent: Vec<Option<String>> = spans.iter().map(|s| s.parent_span_id.clone()).collect();
    let name: Vec<Option<String>> = spans.iter().map(|s| s.name.clone()).collect();
    let kind: Vec<Option<i32>> = spans.iter().map(|s| s.kind).collect();
    let st: Vec<Option<i64>> = spans.iter().map(|s| s.start_time_unix_nano).collect();
    let en: Vec<Option<i64>> = spans.iter().map(|s| s.end_time_unix_nano).collect();
    let svc: Vec<Option<String>> = spans.iter().map(|s| s.service_name.clone()).collect();
    let code: Vec<Option<i32>> = spans.iter().map(|s| s.status_code).collect();
    let msg: Vec<Option<String>> = spans.iter().map(|s| s.status_message.clone()).collect();
    let created: Vec<DateTime<Utc>> = spans
        .iter()
        .map(|s| s.created_at.expect("a stamped span"))
        .collect();
    client
        .execute(
            &sql,
            &[
                &ts, &trace, &span, &parent, &name, &kind, &st, &en, &svc, &code, &msg, &created,
            ],
        )
        .await
        .expect("insert stamped spans")
}

/// Traces with spans between `from` and `to` ago: (trace_id, newest span timestamp).
async fn traces_between(db: &TestDb, from: &str, to: &str, n: i64) -> Vec<(String, DateTime<Utc>)> {
    db.client
        .query(
            &format!(
                "select trace_id, max(\"timestamp\") from otel_traces
                 where \"timestamp\" < now() - interval '{from}' and \"timestamp\" > now() - interval '{to}'
                 group by trace_id order by trace_id limit {n}"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `n` new spans for an existing trace, a few minutes before its newest span.
fn late_spans(g: &mut SpanGen, trace_id: &str, newest: DateTime<Utc>, n: usize) -> Vec<Span> {
    g.trace(newest - CD::minutes(3), n)
        .into_iter()
        .map(|mut s| {
            s.trace_id = trace_id.to_string();
            s
        })
        .collect()
}

/// Waits until the worker's stored position covers every transaction that had committed when
/// this is called (a snapshot boundary beyond a transaction id assigned now).
async fn wait_position_passes_now(db: &TestDb, timeout: Duration) {
    let xid: i64 = db
        .client
        .query_one("select pg_current_xact_id()::text::bigint", &[])
        .await
        .unwrap()
        .get(0);
    let sql = format!(
        "select count(*) from trace_summarizer.state where target_schema = '{}' and pos_xmax > {xid}",
        db.target.schema
    );
    eventually(
        timeout,
        "the worker's position passes every committed writer",
        || {
            let sql = sql.clone();
            async move { db.count(&sql).await == 1 }
        },
    )
    .await;
}

/// One application writer: it stamps `created_at` from its own clock, `skew` behind the
/// database's, while it builds a batch, then waits up to 3 s (for a pooled connection) before
/// its transaction starts, and holds the transaction open a little. Returns the spans written.
async fn app_writer(
    url: String,
    target: Target,
    seed: u64,
    skew: CD,
    old: Vec<(String, DateTime<Utc>)>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let client = connect(&url).await;
    let mut g = SpanGen::new(seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut written = 0;
    while !stop.load(Ordering::Relaxed) {
        let app_now = Utc::now() - skew;
        let mut batch = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            batch.extend(g.trace(app_now + skew - CD::seconds(rng.random_range(0..20)), 0));
        }
        if !old.is_empty() && rng.random_bool(0.5) {
            let (trace_id, newest) = &old[rng.random_range(0..old.len())];
            batch.extend(late_spans(
                &mut g,
                trace_id,
                *newest,
                rng.random_range(1..4),
            ));
        }
        for s in &mut batch {
            s.created_at = Some(app_now);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
        client.batch_execute("begin").await.unwrap();
        written += insert_stamped(&client, &target, &batch).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        client.batch_execute("commit").await.unwrap();
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn app_stamped_created_at_early_and_from_a_slow_clock_is_absorbed_exactly() {
    let db = installed(5_000, 101).await;
    let old = traces_between(&db, "2 hours", "40 hours", 200).await;
    assert!(!old.is_empty());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(app_writer(
                db.url.clone(),
                db.target.clone(),
                1_000 + i,
                CD::seconds(30),
                old.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Phase 1: `run --once` calls interleaved with the writers.
    let phase = Instant::now();
    let mut cycles = 0;
    while phase.elapsed() < Duration::from_secs(8) || cycles < 4 {
        assert_no_fallback(&run_once_now(&db));
        cycles += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Phase 2: a background worker, cycling every 200 ms while the writers go on.
    let mut w = worker(&db.url, &["--interval", "200ms"]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for h in writers {
        written += h.await.expect("a writer failed");
    }
    assert!(written > 0, "the writers wrote nothing");
    let stamped_late = db
        .count("select count(*) from otel_traces where created_at < now() - interval '29 seconds' and \"timestamp\" > now() - interval '1 minute'")
        .await;
    assert!(
        stamped_late > 0,
        "no span carries an app-stamped created_at"
    );

    wait_position_passes_now(&db, Duration::from_secs(30)).await;
    assert_eq!(db.oracle_diff("7 days").await, 0, "{}", w.log_text());
    assert_no_fallback(&w.log_text());
    w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_load_of_historical_created_at_that_commits_late_and_copy_with_created_at_are_absorbed(
) {
    let db = installed(5_000, 102).await;
    let now = Utc::now();
    let mut g = SpanGen::new(202);
    // The bulk load: days-old event times and days-old created_at values, plus spans of
    // existing traces, in one transaction that stays open across several cycles.
    let bulk = connect(&db.url).await;
    bulk.batch_execute("begin").await.unwrap();
    let history = g.history(
        4_000,
        now - CD::days(6),
        now - CD::days(1),
        now - CD::days(1),
    );
    assert!(history
        .iter()
        .all(|s| s.created_at.is_some_and(|c| c <= now - CD::days(1))));
    copy_spans(&bulk, &db.target, &history).await.unwrap();
    let mut late = Vec::new();
    for (trace_id, newest) in traces_between(&db, "1 hour", "2 days", 60).await {
        for mut s in late_spans(&mut g, &trace_id, newest, 2) {
            s.created_at = Some(newest - CD::days(3));
            late.push(s);
        }
    }
    assert!(!late.is_empty());
    insert_stamped(&bulk, &db.target, &late).await;
    for _ in 0..3 {
        // Other ingest commits meanwhile, and cycles pass it.
        insert_spans(
            &db.client,
            &db.target,
            &g.trace(Utc::now() - CD::seconds(1), 6),
        )
        .await
        .unwrap();
        assert_no_fallback(&run_once_now(&db));
        assert_eq!(db.oracle_diff("7 days").await, 0);
    }
    bulk.batch_execute("commit").await.unwrap();
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(db.oracle_diff("7 days").await, 0, "the late bulk load");

    // COPY with explicit created_at values: days old, and ahead of the database's clock.
    let mut copied = g.history(2_000, now - CD::days(5), now - CD::hours(1), now);
    for (i, s) in copied.iter_mut().enumerate() {
        if i % 3 == 0 {
            s.created_at = Some(now + CD::minutes(10));
        }
    }
    copy_spans(&db.client, &db.target, &copied).await.unwrap();
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(db.oracle_diff("7 days").await, 0, "COPY with created_at");
}

/// A prepared transaction of the shared cluster: rolled back when dropped unless it was
/// committed, so a failing test never leaves one holding locks.
struct PreparedTransaction {
    url: String,
    gid: String,
}

impl PreparedTransaction {
    /// Prepares the transaction open on `client` under a gid unique to this test.
    async fn prepare(client: &tokio_postgres::Client, db: &TestDb, tag: &str) -> Self {
        let guard = PreparedTransaction {
            url: db.url.clone(),
            gid: format!("tailing_{tag}_{}", db.name),
        };
        client
            .batch_execute(&format!("prepare transaction '{}'", guard.gid))
            .await
            .expect("prepare transaction");
        guard
    }

    async fn commit(&self, client: &tokio_postgres::Client) {
        client
            .batch_execute(&format!("commit prepared '{}'", self.gid))
            .await
            .expect("commit prepared");
    }
}

impl Drop for PreparedTransaction {
    fn drop(&mut self) {
        let (url, gid) = (self.url.clone(), self.gid.clone());
        // Its own thread and runtime: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                let left: i64 = match client
                    .query_one(
                        "select count(*) from pg_prepared_xacts where gid = $1",
                        &[&gid],
                    )
                    .await
                {
                    Ok(r) => r.get(0),
                    Err(_) => return,
                };
                if left > 0 {
                    let _ = client
                        .batch_execute(&format!("rollback prepared '{gid}'"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_transaction_committed_cycles_later_is_summarized() {
    let db = installed(5_000, 103).await;
    let mut g = SpanGen::new(303);
    let p = connect(&db.url).await;
    p.batch_execute("begin").await.unwrap();
    let mut prepared = Vec::new();
    for _ in 0..10 {
        prepared.extend(g.trace(Utc::now() - CD::seconds(20), 0));
    }
    for (trace_id, newest) in traces_between(&db, "1 hour", "30 hours", 20).await {
        prepared.extend(late_spans(&mut g, &trace_id, newest, 3));
    }
    for s in &mut prepared {
        // Stamped by the application, a minute before it got round to preparing.
        s.created_at = Some(Utc::now() - CD::minutes(1));
    }
    let expected = insert_stamped(&p, &db.target, &prepared).await;
    assert!(expected > 0);
    let xact = PreparedTransaction::prepare(&p, &db, "late").await;
    drop(p);

    for _ in 0..3 {
        insert_spans(
            &db.client,
            &db.target,
            &g.trace(Utc::now() - CD::seconds(1), 5),
        )
        .await
        .unwrap();
        assert_no_fallback(&run_once_now(&db));
        // Not committed yet: the oracle does not see its rows either.
        assert_eq!(db.oracle_diff("7 days").await, 0);
    }
    xact.commit(&db.client).await;
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "the prepared transaction's rows"
    );
    let first_trace = &prepared[0].trace_id;
    let listed = db
        .count(&format!(
            "select count(*) from otel_trace_summaries where trace_id = '{first_trace}'"
        ))
        .await;
    assert_eq!(
        listed, 1,
        "a trace written by the prepared transaction is missing"
    );
}

/// Why a restore may be impossible here (a server the suite did not start).
fn restore_skip_reason() -> Option<&'static str> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .map(|_| "TEST_DATABASE_URL is set")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_database_falls_back_to_foreign_state_and_then_tails_exactly() {
    if let Some(reason) = missing_tools(&["pg_dump", "pg_restore"]) {
        skip(&reason);
        return;
    }
    let db = installed(5_000, 104).await;
    let mut g = SpanGen::new(404);
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::seconds(5), 20),
    )
    .await
    .unwrap();
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(db.oracle_diff("7 days").await, 0);

    let bindir = match trace_summarizer::lab::cluster::find_bindir() {
        Ok(b) => b,
        Err(e) if restore_skip_reason().is_some() => {
            eprintln!("skipping: no pg_dump for the server at TEST_DATABASE_URL ({e})");
            return;
        }
        Err(e) => panic!("PostgreSQL binaries: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("db.dump");
    let out = Command::new(bindir.join("pg_dump"))
        .arg("--format=custom")
        .arg(format!("--file={}", dump.display()))
        .arg(format!("--dbname={}", db.url))
        .output()
        .expect("run pg_dump");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if restore_skip_reason().is_some() {
            eprintln!("skipping: pg_dump cannot reach the server at TEST_DATABASE_URL: {err}");
            return;
        }
        panic!("pg_dump failed: {err}");
    }
    let name = format!("{}_restored", db.name);
    let admin = connect(&server().url("postgres")).await;
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .expect("create the database to restore into");
    let url = server().url(&name);
    let out = Command::new(bindir.join("pg_restore"))
        .arg("--exit-on-error")
        .arg(format!("--dbname={url}"))
        .arg(&dump)
        .output()
        .expect("run pg_restore");
    assert!(
        out.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = TestDb {
        name,
        client: connect(&url).await,
        url,
        target: db.target.clone(),
    };
    let oids = restored
        .count("select count(*) from trace_summarizer.state s where s.source_oid is distinct from 'otel_traces'::regclass::oid")
        .await;
    assert_eq!(
        oids, 1,
        "the restored otel_traces kept its oid; the test proves nothing"
    );
    // Ingest goes on in the restored database before its first cycle.
    insert_spans(
        &restored.client,
        &restored.target,
        &g.trace(Utc::now() - CD::seconds(2), 12),
    )
    .await
    .unwrap();

    let log = run_once_now(&restored);
    assert!(
        log.contains("foreign_state"),
        "the restored database's first cycle did not report foreign_state:\n{log}"
    );
    assert_eq!(
        restored.oracle_diff("7 days").await,
        0,
        "after the fallback"
    );

    // New spans in the restored database: new traces and late spans of restored traces.
    let mut spans = Vec::new();
    for _ in 0..20 {
        spans.extend(g.trace(Utc::now() - CD::seconds(3), 0));
    }
    for (trace_id, newest) in traces_between(&restored, "1 hour", "30 hours", 30).await {
        spans.extend(late_spans(&mut g, &trace_id, newest, 2));
    }
    insert_spans(&restored.client, &restored.target, &spans)
        .await
        .unwrap();
    assert_no_fallback(&run_once_now(&restored));
    assert_eq!(
        restored.oracle_diff("7 days").await,
        0,
        "new spans after the restore"
    );

    // The original database is untouched by all this.
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::seconds(1), 8),
    )
    .await
    .unwrap();
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn stamps_from_a_server_ahead_move_the_stamp_space_without_rewriting_and_never_count_twice() {
    let db = installed(5_000, 105).await;
    let mut g = SpanGen::new(505);
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::seconds(5), 10),
    )
    .await
    .unwrap();
    assert_no_fallback(&run_once_now(&db));
    // As a restore from a server whose ids are ahead leaves them (the data is loaded before the
    // triggers exist): rows carrying stamps far ahead, and a few hundred ids ahead (this server's
    // ids pass those soon after). Here the stamp trigger is off while they are copied.
    let current: i64 = db
        .client
        .query_one("select txid_current()", &[])
        .await
        .unwrap()
        .get(0);
    let trigger: String = db
        .client
        .query_one(
            "select tgname::text from pg_trigger where tgrelid = 'otel_traces'::regclass and tgname like '%_stamps'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut far = Vec::new();
    let mut near = Vec::new();
    for i in 0..20 {
        let t = g.trace(Utc::now() - CD::hours(2) - CD::minutes(i), 4);
        if i % 2 == 0 {
            far.extend(t)
        } else {
            near.extend(t)
        }
    }
    db.client
        .batch_execute(&format!(
            "alter table otel_traces disable trigger {trigger}"
        ))
        .await
        .unwrap();
    insert_spans(&db.client, &db.target, &far).await.unwrap();
    insert_spans(&db.client, &db.target, &near).await.unwrap();
    let far_ids: Vec<String> = far.iter().map(|s| s.trace_id.clone()).collect();
    let near_ids: Vec<String> = near.iter().map(|s| s.trace_id.clone()).collect();
    db.client
        .execute("alter table otel_traces disable trigger all", &[])
        .await
        .unwrap();
    db.client
        .execute(
            &format!(
                "update otel_traces set trace_summarizer_xid = {} where trace_id = any($1)",
                current + 1_000_000
            ),
            &[&far_ids],
        )
        .await
        .unwrap();
    db.client
        .execute(
            &format!(
                "update otel_traces set trace_summarizer_xid = {} where trace_id = any($1)",
                current + 500
            ),
            &[&near_ids],
        )
        .await
        .unwrap();
    db.client
        .batch_execute("alter table otel_traces enable trigger all")
        .await
        .unwrap();
    // Statistics reach the shared counters within a second of a session going idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let updates_before = db
        .count("select n_tup_upd + n_tup_hot_upd from pg_stat_user_tables where relname = 'otel_traces'")
        .await;
    let size_before = db.count("select pg_table_size('otel_traces')").await;

    let log = run_once_now(&db);
    assert!(
        log.contains("moving the stamp space"),
        "stamps ahead of this server did not move the stamp space:\n{log}"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0, "after the fallback");
    assert_eq!(
        db.count(&format!(
            "select count(*) from otel_traces where trace_summarizer_xid >= {}",
            current + 500
        ))
        .await,
        far.len() as i64 + near.len() as i64,
        "the restored stamps were rewritten"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        db.count("select n_tup_upd + n_tup_hot_upd from pg_stat_user_tables where relname = 'otel_traces'").await,
        updates_before,
        "a span row was updated"
    );
    assert_eq!(
        db.count("select pg_table_size('otel_traces')").await,
        size_before
    );

    // This server's ids pass the near stamps.
    loop {
        let xid: i64 = db
            .client
            .query_one("select txid_current()", &[])
            .await
            .unwrap()
            .get(0);
        if xid > current + 600 {
            break;
        }
    }
    // New spans for the same traces: their rows are merged once, the copied ones not again.
    let mut spans = Vec::new();
    for trace_id in far_ids.iter().chain(&near_ids).take(40) {
        let newest: DateTime<Utc> = db
            .client
            .query_one(
                "select max(\"timestamp\") from otel_traces where trace_id = $1",
                &[trace_id],
            )
            .await
            .unwrap()
            .get(0);
        spans.extend(late_spans(&mut g, trace_id, newest, 2));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "a copied row counted twice"
    );
    assert_no_fallback(&run_once_now(&db));
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_continuous_audit_repairs_damaged_deleted_and_invented_summaries() {
    let db = installed(5_000, 106).await;
    let mut w = worker(&db.url, &["--interval", "100ms", "--audit-period", "10s"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "the worker is ready and leads",
        || async move {
            http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
                && http_get(port, "/metrics").is_some_and(|(_, b)| {
                    metric(&b, "trace_summarizer_leader{schema=\"public\"}") == Some(1.0)
                })
        },
    )
    .await;
    assert_eq!(db.oracle_diff("7 days").await, 0);

    // Damage spread over the trace_ids: changed columns, deleted rows, an invented row.
    let changed = db
        .client
        .execute(
            "update otel_trace_summaries set span_count = span_count + 1
             where trace_id in (select trace_id from otel_trace_summaries order by md5(trace_id) limit 5)",
            &[],
        )
        .await
        .unwrap();
    let changed_more = db
        .client
        .execute(
            "update otel_trace_summaries set root_service_name = 'damaged', duration_ms = duration_ms + 1
             where trace_id in (select trace_id from otel_trace_summaries order by md5(trace_id) desc limit 3)",
            &[],
        )
        .await
        .unwrap();
    let deleted = db
        .client
        .execute(
            "delete from otel_trace_summaries
             where trace_id in (select trace_id from otel_trace_summaries order by md5(trace_id || 'x') limit 4)",
            &[],
        )
        .await
        .unwrap();
    let invented = db
        .client
        .execute(
            "insert into otel_trace_summaries values
             ('7777777777777777777777777777777f', now() - interval '1 minute', 'abcdef0123456789', 'invented',
              'nowhere', 1, 1, 2000001, 2, 1, null, array['nowhere'], 1, 0)",
            &[],
        )
        .await
        .unwrap();
    let damaged = (changed + changed_more + deleted + invented) as f64;
    assert_eq!(damaged, 13.0);
    assert!(db.oracle_diff("7 days").await > 0);

    eventually(
        Duration::from_secs(40),
        "the audit repairs every damaged summary",
        || async { db.oracle_diff("7 days").await == 0 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the audit counts what it repaired",
        || async move {
            http_get(port, "/metrics").is_some_and(|(_, b)| {
                metric(
                    &b,
                    "trace_summarizer_audit_mismatches_total{schema=\"public\"}",
                )
                .is_some_and(|n| n >= damaged)
            })
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "status shows a finished audit pass",
        || async {
            let out = db.cli(&["status", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .map(|j| !j["audit"]["last_pass_at"].is_null())
                .unwrap_or(false)
        },
    )
    .await;
    assert_eq!(db.oracle_diff("7 days").await, 0);
    let log = w.log_text();
    assert!(
        log.contains("the audit found summaries that differ"),
        "{log}"
    );
    w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_role_with_only_the_documented_grants_runs_exactly_without_pg_stat_activity() {
    let db = installed(5_000, 107).await;
    let worker_role = format!("w_{}", db.name);
    let ingest_role = format!("i_{}", db.name);
    let dbname = &db.name;
    db.client
        .batch_execute(&format!(
            "create role {worker_role} login password 'tailing-test';
             create role {ingest_role} login password 'tailing-test';
             grant connect, temporary on database {dbname} to {worker_role};
             grant usage on schema public to {worker_role};
             grant select on public.otel_traces to {worker_role};
             grant select, insert, update, delete on public.otel_trace_summaries to {worker_role};
             grant usage on schema trace_summarizer to {worker_role};
             grant select, insert, update, delete on all tables in schema trace_summarizer to {worker_role};
             grant connect on database {dbname} to {ingest_role};
             grant usage on schema public to {ingest_role};
             grant insert on public.otel_traces to {ingest_role};
             -- Nobody in this database may read other sessions' activity: a read fails loudly.
             revoke select on pg_catalog.pg_stat_activity from public;
             revoke execute on function pg_catalog.pg_stat_get_activity(integer) from public;"
        ))
        .await
        .expect("create the roles");
    assert_eq!(
        db.count(&format!(
            "select count(*) from pg_roles where rolname = '{worker_role}'
               and not rolsuper and not pg_has_role('{worker_role}', 'pg_read_all_stats', 'member')
               and not pg_has_role('{worker_role}', 'pg_monitor', 'member')"
        ))
        .await,
        1
    );
    let worker_url = url_as(&db.url, &worker_role);
    let ingest_url = url_as(&db.url, &ingest_role);
    let probe = connect(&worker_url).await;
    assert!(
        probe
            .query_one("select count(*) from pg_stat_activity", &[])
            .await
            .is_err(),
        "the worker role can still read pg_stat_activity; the test proves nothing"
    );
    drop(probe);

    // Concurrent ingest by another role: two transactions stay open across the cycle, one of
    // them stamping created_at itself, and another commits meanwhile.
    let mut g = SpanGen::new(707);
    let a = connect(&ingest_url).await;
    a.batch_execute("begin").await.unwrap();
    insert_spans(&a, &db.target, &g.trace(Utc::now() - CD::seconds(4), 15))
        .await
        .unwrap();
    let b = connect(&ingest_url).await;
    b.batch_execute("begin").await.unwrap();
    let mut stamped = g.trace(Utc::now() - CD::seconds(2), 9);
    for s in &mut stamped {
        s.created_at = Some(Utc::now() - CD::seconds(40));
    }
    insert_stamped(&b, &db.target, &stamped).await;
    let c = connect(&ingest_url).await;
    insert_spans(&c, &db.target, &g.trace(Utc::now() - CD::seconds(1), 7))
        .await
        .unwrap();

    let run_as_worker = || {
        let log = run_once_at(&worker_url, &db.target.schema, RUN_ONCE_LIMIT);
        assert!(!log.contains("permission denied"), "{log}");
        assert_no_fallback(&log);
        log
    };
    tokio::task::block_in_place(run_as_worker);
    assert_eq!(db.oracle_diff("7 days").await, 0, "with ingest open");
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    tokio::task::block_in_place(run_as_worker);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after the open ingest committed"
    );
    drop((a, b, c));

    // The roles are the cluster's; leave none behind.
    db.client
        .batch_execute(&format!(
            "drop owned by {worker_role}, {ingest_role}; drop role {worker_role}; drop role {ingest_role};"
        ))
        .await
        .expect("drop the roles");
}
