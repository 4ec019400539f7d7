//! One randomized workload that interleaves every hard case: normal batches; late spans;
//! transactions that stay open across cycles (written at once or late); writers that stamp
//! `created_at` themselves (early, or from a clock 30 s behind); prepared transactions that
//! commit or roll back across cycles; retention deletes and deletes and updates of single
//! spans in any order; window-edge crossings; partitions detached, re-attached, truncated and
//! dropped (on a partitioned `otel_traces`); data surgery: spans put back from a backup table with
//! `INSERT ... SELECT *`, a `TRUNCATE` and reload, updates that move spans to another partition
//! and trace, a partition detached, edited and attached again in one transaction, a `COPY` round
//! trip; worker restarts (clean and kill -9); on a TimescaleDB hypertable (skipped without
//! TimescaleDB), its older chunks compressed, late spans into compressed chunks, chunks
//! compressed and recompressed (before or after a step read their new spans), decompressed, and
//! dropped by retention. Then zero rows may differ from the definition. The seed is printed; set
//! RANDOMIZED_SEED to replay a run.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use trace_summarizer::lab::spangen::{insert_spans, Span, SpanGen};

fn seed() -> u64 {
    std::env::var("RANDOMIZED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
}

/// Inserts spans with `created_at` set by the writer (as upstream's writer does).
async fn insert_stamped(
    c: &tokio_postgres::Client,
    spans: &[Span],
    created_at: chrono::DateTime<Utc>,
) {
    for s in spans {
        c.execute(
            "insert into otel_traces (\"timestamp\", trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) on conflict do nothing",
            &[&s.timestamp, &s.trace_id, &s.span_id, &s.parent_span_id, &s.name, &s.kind, &s.start_time_unix_nano, &s.end_time_unix_nano, &s.service_name, &s.status_code, &s.status_message, &created_at],
        )
        .await
        .unwrap();
    }
}

/// Prepared transactions of this run, finished at the end even if the test fails midway (a
/// prepared transaction left behind would hold its locks in the shared cluster).
struct Prepared {
    url: String,
    gids: Vec<String>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.gids.is_empty() {
            return;
        }
        let (url, gids) = (self.url.clone(), std::mem::take(&mut self.gids));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = connect(&url).await;
                for gid in gids {
                    let _ = c.batch_execute(&format!("rollback prepared '{gid}'")).await;
                }
            });
        })
        .join()
        .ok();
    }
}

/// The kind of otel_traces the workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    /// Native daily partitions.
    Partitioned,
    /// A TimescaleDB hypertable of daily chunks, the older ones compressed.
    Hypertable,
}

async fn run(shape: Shape) {
    let seed = seed();
    eprintln!("RANDOMIZED_SEED={seed} (shape: {shape:?})");
    let (partitioned, hypertable) = (shape == Shape::Partitioned, shape == Shape::Hypertable);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = SpanGen::new(seed);
    let db = match shape {
        Shape::Plain => TestDb::new().await,
        Shape::Partitioned => TestDb::partitioned(9).await,
        Shape::Hypertable => match TestDb::hypertable().await {
            Some(db) => db,
            None => return,
        },
    };
    load_history(&db, 15_000, 24 * 8, seed).await;
    if hypertable {
        db.client
            .batch_execute(
                "alter table otel_traces set (timescaledb.compress, timescaledb.compress_segmentby = 'service_name',
                                              timescaledb.compress_orderby = '\"timestamp\" desc');
                 select count(compress_chunk(c)) from show_chunks('otel_traces', older_than => now() - interval '3 days') c;",
            )
            .await
            .expect("compress the older chunks");
    }
    db.cli_ok(&["install", "--mode", "incremental"]);

    let mut open: Vec<(tokio_postgres::Client, u32)> = Vec::new(); // (connection, steps left)
    let mut prepared = Prepared {
        url: db.url.clone(),
        gids: Vec::new(),
    };
    let mut prepared_left: Vec<(String, u32)> = Vec::new();
    let mut detached: Vec<(String, String)> = Vec::new(); // (table, "for values" bound)
    let mut worker: Option<Proc> = None;
    let mut last_edge_insert = std::time::Instant::now();
    let mut known: Vec<String> = db
        .client
        .query(
            "select trace_id from otel_traces tablesample system (5) limit 200",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for step in 0..45 {
        let action = rng.random_range(0..145);
        let now = Utc::now();
        match action {
            0..=24 => {
                // A normal batch of new traces.
                let mut spans = Vec::new();
                for _ in 0..rng.random_range(1..30) {
                    spans.extend(g.trace(now - CD::seconds(rng.random_range(0..10)), 0));
                }
                known.extend(spans.iter().take(3).map(|s| s.trace_id.clone()));
                insert_spans(&db.client, &db.target, &spans).await.unwrap();
            }
            25..=36 => {
                // Late spans for known traces, minutes to days back (some beyond the window).
                let mut spans = Vec::new();
                for _ in 0..rng.random_range(1..10) {
                    let trace_id = known[rng.random_range(0..known.len())].clone();
                    let back = CD::seconds(rng.random_range(60..(9 * 86_400)));
                    for mut s in g.trace(now - back, rng.random_range(1..4)) {
                        s.trace_id = trace_id.clone();
                        spans.push(s);
                    }
                }
                insert_spans(&db.client, &db.target, &spans).await.unwrap();
            }
            37..=44 => {
                // A transaction that stays open for a few steps; it writes now or later.
                let c = connect(&db.url).await;
                c.batch_execute("begin; select 1").await.unwrap();
                if rng.random_bool(0.5) {
                    insert_spans(&c, &db.target, &g.trace(now - CD::seconds(1), 0))
                        .await
                        .unwrap();
                }
                open.push((c, rng.random_range(1..6)));
            }
            45..=52 => {
                // A writer that stamps created_at itself: early, or from a clock 30 s behind; its
                // transaction may stay open across cycles.
                let c = connect(&db.url).await;
                let stamp = now
                    - CD::milliseconds(rng.random_range(0..3_000))
                    - if rng.random_bool(0.5) {
                        CD::seconds(30)
                    } else {
                        CD::zero()
                    };
                let spans = g.trace(now - CD::seconds(2), 0);
                known.push(spans[0].trace_id.clone());
                c.batch_execute("begin").await.unwrap();
                insert_stamped(&c, &spans, stamp).await;
                open.push((c, rng.random_range(0..4)));
            }
            53..=57 => {
                // A prepared transaction, finished a few steps later.
                let c = connect(&db.url).await;
                let gid = format!("rand_{}_{step}", db.name);
                c.batch_execute("begin").await.unwrap();
                insert_spans(&c, &db.target, &g.trace(now - CD::seconds(1), 0))
                    .await
                    .unwrap();
                c.batch_execute(&format!("prepare transaction '{gid}'"))
                    .await
                    .unwrap();
                prepared.gids.push(gid.clone());
                prepared_left.push((gid, rng.random_range(1..5)));
            }
            58..=64 => {
                // Spans just inside the window edge: they cross it during the run.
                let mut spans = Vec::new();
                for _ in 0..rng.random_range(1..5) {
                    let mut t =
                        g.trace(now - CD::days(7) + CD::seconds(rng.random_range(2..15)), 0);
                    if rng.random_bool(0.5) {
                        // ...in a trace that also has recent spans.
                        let id = t[0].trace_id.clone();
                        t.extend(g.trace(now - CD::seconds(5), 2).into_iter().map(|mut s| {
                            s.trace_id = id.clone();
                            s
                        }));
                    }
                    spans.extend(t);
                }
                insert_spans(&db.client, &db.target, &spans).await.unwrap();
                last_edge_insert = std::time::Instant::now();
            }
            65..=70 => {
                // Retention by DELETE: drop the oldest spans, in batches.
                let keep_days = rng.random_range(3..8);
                db.client
                    .execute(&format!("delete from otel_traces where ctid in (select ctid from otel_traces where timestamp < now() - interval '{keep_days} days' limit 2000)"), &[])
                    .await
                    .unwrap_or(0);
                db.client
                    .execute(&format!("delete from otel_traces where timestamp < now() - interval '{keep_days} days'"), &[])
                    .await
                    .unwrap();
            }
            71..=76 => {
                // Deletes and updates of single spans anywhere, and of whole recent traces.
                let n = rng.random_range(1..20);
                db.client
                    .batch_execute(&format!(
                        "delete from otel_traces where (timestamp, trace_id, span_id) in
                           (select timestamp, trace_id, span_id from otel_traces order by md5(span_id || '{step}') limit {n});
                         update otel_traces set status_code = {code}, name = 'renamed'
                          where (timestamp, trace_id, span_id) in
                           (select timestamp, trace_id, span_id from otel_traces order by md5(span_id || 'u{step}') limit {n});
                         delete from otel_traces where trace_id in
                           (select trace_id from otel_traces where timestamp > now() - interval '1 hour' order by md5(trace_id || '{step}') limit 2);",
                        code = rng.random_range(0..3)
                    ))
                    .await
                    .unwrap();
            }
            77..=86 if partitioned => {
                // Partition DDL: detach a middle day, re-attach a detached one, truncate or drop one.
                let days = rng.random_range(1..9);
                let d = (now - CD::days(days)).format("%Y%m%d").to_string();
                let table = format!("otel_traces_p{d}");
                let exists = db
                    .count(&format!(
                        "select count(*) from pg_inherits where inhrelid = to_regclass('{table}')"
                    ))
                    .await
                    == 1;
                match (rng.random_range(0..4), exists, detached.pop()) {
                    (0, true, back) => {
                        let bound: String = db
                            .client
                            .query_one(&format!("select pg_get_expr(relpartbound, oid) from pg_class where oid = '{table}'::regclass"), &[])
                            .await
                            .unwrap()
                            .get(0);
                        detached.extend(back);
                        if ddl(
                            &db.client,
                            &format!("alter table otel_traces detach partition {table}"),
                        )
                        .await
                        {
                            detached.push((table, bound));
                        }
                    }
                    (1, _, Some((t, bound))) => {
                        if !ddl(
                            &db.client,
                            &format!("alter table otel_traces attach partition {t} {bound}"),
                        )
                        .await
                        {
                            detached.push((t, bound));
                        }
                    }
                    (2, true, back) => {
                        detached.extend(back);
                        ddl(&db.client, &format!("truncate {table}")).await;
                    }
                    (_, true, back) => {
                        detached.extend(back);
                        ddl(&db.client, &format!("drop table {table}")).await;
                    }
                    (_, _, back) => detached.extend(back),
                }
            }
            77..=86 if hypertable => {
                // Chunk commands: compress the chunks older than a few days (recompressing
                // those that late spans made partial: their rows move into new compressed
                // batches with no trigger and no new relfilenode), decompress one, or retention.
                let days = rng.random_range(1..7);
                let sql = match rng.random_range(0..4) {
                    0 | 1 => format!(
                        "select count(compress_chunk(c, if_not_compressed => true))
                         from show_chunks('otel_traces', older_than => now() - interval '{days} days') c"
                    ),
                    2 => format!(
                        "select count(decompress_chunk(c, if_compressed => true))
                         from (select c from show_chunks('otel_traces', older_than => now() - interval '{days} days') c
                               order by c desc limit 1) x"
                    ),
                    _ => "select count(*) from drop_chunks('otel_traces', older_than => now() - interval '8 days')"
                        .to_string(),
                };
                if let Err(e) = db
                    .client
                    .batch_execute(&format!(
                        "begin; set local lock_timeout = '1s'; {sql}; commit"
                    ))
                    .await
                {
                    // An operator's chunk command that fails changes nothing.
                    db.client.batch_execute("rollback").await.unwrap();
                    eprintln!("{sql}: {e}, skipped");
                }
            }
            120..=124 => {
                // Spans put back from a backup table with every column (the stamp included):
                // deleted, then inserted again with INSERT ... SELECT *, at once or in this step.
                let n = rng.random_range(5..60);
                let table = format!("backup_{step}");
                db.client
                    .batch_execute(&format!(
                        "create table {table} as select * from otel_traces order by md5(span_id || '{step}') limit {n};
                         delete from otel_traces where (\"timestamp\", trace_id, span_id) in (select \"timestamp\", trace_id, span_id from {table});"
                    ))
                    .await
                    .unwrap();
                if rng.random_bool(0.5) {
                    db.cli_ok(&["run", "--once"]);
                }
                db.client
                    .batch_execute(&format!(
                        "insert into otel_traces select * from {table} on conflict do nothing; drop table {table};"
                    ))
                    .await
                    .unwrap();
            }
            // Not on the hypertable: there this TRUNCATE crashed the test server once
            // (RANDOMIZED_SEED=1796329455 at 2c00de9, a backend lost mid-statement), which is
            // not investigated yet; tests/surgery.rs truncates and reloads a chunk.
            125..=128 if !hypertable => {
                // A TRUNCATE and reload of the rows to keep, in one transaction: of the whole
                // table, or of one day's partition.
                let target = if partitioned {
                    let d = (now - CD::days(rng.random_range(0..8))).format("%Y%m%d");
                    format!("otel_traces_p{d}")
                } else {
                    "otel_traces".to_string()
                };
                let exists = db
                    .count(&format!(
                        "select count(*) from pg_class where oid = to_regclass('{target}')"
                    ))
                    .await
                    == 1;
                if exists {
                    ddl(
                        &db.client,
                        &format!(
                            "create temp table keep_{step} as select * from {target} where span_id > '3';
                             truncate {target};
                             insert into otel_traces select * from keep_{step};"
                        ),
                    )
                    .await;
                }
            }
            129..=132 => {
                // An UPDATE that moves spans by a day (to another partition), some to another
                // trace, some from beyond the window into it.
                let n = rng.random_range(1..15);
                db.client
                    .batch_execute(&format!(
                        "update otel_traces set \"timestamp\" = \"timestamp\" + interval '1 day',
                                trace_id = case when span_id < '8' then trace_id || 'v' else trace_id end
                         where (\"timestamp\", trace_id, span_id) in
                           (select \"timestamp\", trace_id, span_id from otel_traces
                            where \"timestamp\" < now() - interval '1 day 1 hour'
                            order by md5(span_id || 'm{step}') limit {n})"
                    ))
                    .await
                    // A moved span may meet one with the same key on its new day.
                    .unwrap_or_else(|e| eprintln!("moving spans: {e}"));
            }
            133..=136 if partitioned => {
                // A partition detached, edited and attached again, in one transaction.
                let days = rng.random_range(1..8);
                let table = format!("otel_traces_p{}", (now - CD::days(days)).format("%Y%m%d"));
                let bound: Option<String> = db
                    .client
                    .query_opt(&format!("select pg_get_expr(relpartbound, oid) from pg_class where oid = to_regclass('{table}') and relispartition"), &[])
                    .await
                    .unwrap()
                    .map(|r| r.get(0));
                if let Some(bound) = bound {
                    ddl(
                        &db.client,
                        &format!(
                            "alter table otel_traces detach partition {table};
                             delete from {table} where span_id < '2';
                             update {table} set status_code = 2 where span_id > 'e';
                             alter table otel_traces attach partition {table} {bound};"
                        ),
                    )
                    .await;
                }
            }
            137..=144 => {
                // A COPY round trip: COPY TO (every column), delete, COPY FROM.
                let n = rng.random_range(5..50);
                let sql = format!("copy (select * from otel_traces order by md5(span_id || 'c{step}') limit {n}) to stdout");
                let stream = db.client.copy_out(sql.as_str()).await.unwrap();
                futures_util::pin_mut!(stream);
                let mut data = Vec::new();
                while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                    data.extend_from_slice(&chunk.unwrap());
                }
                db.client
                    .batch_execute(&format!(
                        "delete from otel_traces where (\"timestamp\", trace_id, span_id) in
                           (select \"timestamp\", trace_id, span_id from otel_traces order by md5(span_id || 'c{step}') limit {n})"
                    ))
                    .await
                    .unwrap();
                let sink = db
                    .client
                    .copy_in("copy otel_traces from stdin")
                    .await
                    .unwrap();
                futures_util::pin_mut!(sink);
                futures_util::SinkExt::send(&mut sink, bytes::Bytes::from(data))
                    .await
                    .unwrap();
                sink.finish().await.unwrap();
            }
            87..=100 => {
                // A catch-up run.
                db.cli_ok(&["run", "--once"]);
            }
            101..=110 => {
                // Start a background worker (or kill -9 the running one).
                match worker.take() {
                    Some(mut child) => {
                        child.stop(libc::SIGKILL);
                    }
                    None => worker = Some(common::worker(&db.url, &["--interval", "100ms"])),
                }
            }
            _ => {
                // A clean restart of the background worker.
                if let Some(mut child) = worker.take() {
                    child.stop(libc::SIGTERM);
                }
            }
        }
        // Age the open transactions; commit (or roll back) the ones whose time has come.
        let mut still = Vec::new();
        for (c, left) in open.drain(..) {
            if left <= 1 {
                if rng.random_bool(0.85) {
                    insert_spans(&c, &db.target, &g.trace(Utc::now() - CD::seconds(2), 0))
                        .await
                        .unwrap();
                    c.batch_execute("commit").await.unwrap();
                } else {
                    c.batch_execute("rollback").await.unwrap();
                }
            } else {
                still.push((c, left - 1));
            }
        }
        open = still;
        let mut still = Vec::new();
        for (gid, left) in prepared_left.drain(..) {
            if left <= 1 {
                let how = if rng.random_bool(0.8) {
                    "commit"
                } else {
                    "rollback"
                };
                db.client
                    .batch_execute(&format!("{how} prepared '{gid}'"))
                    .await
                    .unwrap();
                prepared.gids.retain(|g| g != &gid);
            } else {
                still.push((gid, left - 1));
            }
        }
        prepared_left = still;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        if step % 10 == 9 {
            eprintln!(
                "step {step}: {} open, {} prepared, worker running: {}",
                open.len(),
                prepared_left.len(),
                worker.is_some()
            );
        }
    }
    for (c, _) in open.drain(..) {
        c.batch_execute("commit").await.unwrap();
    }
    for (gid, _) in prepared_left.drain(..) {
        db.client
            .batch_execute(&format!("commit prepared '{gid}'"))
            .await
            .unwrap();
        prepared.gids.retain(|g| g != &gid);
    }
    if let Some(mut child) = worker.take() {
        child.stop(libc::SIGKILL);
    }
    // Let every edge span cross the edge, so the comparison instant is not racing a crossing.
    let since = last_edge_insert.elapsed();
    if since < Duration::from_secs(17) {
        tokio::time::sleep(Duration::from_secs(17) - since).await;
    }
    db.cli_ok(&["run", "--once"]);
    let diff = db.oracle_diff("7 days").await;
    assert_eq!(
        diff, 0,
        "{diff} rows differ from the definition (RANDOMIZED_SEED={seed}, shape: {shape:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_randomized_interleaving_converges_to_the_definition() {
    run(Shape::Plain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_randomized_interleaving_on_partitions_converges_to_the_definition() {
    run(Shape::Partitioned).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_randomized_interleaving_on_a_compressed_hypertable_converges_to_the_definition() {
    run(Shape::Hypertable).await;
}

/// Runs partition DDL as an operator would, giving up after a 1 s lock wait: the workload's own
/// open and prepared transactions may hold locks on otel_traces that only a later step releases,
/// so waiting without a limit would wait for ever. A day whose late spans went to the default
/// partition while it was detached cannot be re-attached; it stays detached. Returns whether it
/// ran.
async fn ddl(client: &tokio_postgres::Client, sql: &str) -> bool {
    match client
        .batch_execute(&format!(
            "begin; set local lock_timeout = '1s'; {sql}; commit"
        ))
        .await
    {
        Ok(()) => true,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            client.batch_execute("rollback").await.unwrap();
            eprintln!("{sql}: lock wait over 1 s (an open or prepared transaction of the workload), skipped");
            false
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) => {
            // Re-attaching a day whose late spans went to the default partition meanwhile.
            client.batch_execute("rollback").await.unwrap();
            eprintln!("{sql}: {e}, skipped");
            false
        }
        Err(e) => panic!("{sql}: {e:?}"),
    }
}
