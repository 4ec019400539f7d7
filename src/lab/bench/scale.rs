//! One scale, step by step, in a fresh database: load, the view and its refreshes, install
//! and full rebuilds, single cycles, ingest cost, freshness under the running worker, then a
//! final catch-up, an equality check of table against view, and the read queries.

use super::env::{database_name, Env};
use super::freshness::{self, FreshnessRun};
use super::ingest::{self, IngestRuns};
use super::load::{self, Loaded};
use super::queries::{self, QueryResult};
use super::refresh::{self, CycleRuns, MV};
use super::stats::{count, median, say, secs};
use super::worker_thread;
use super::Settings;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::db::sqltext;
use crate::error::{DbContext, Result};
use crate::lab::spangen::SpanGen;
use std::time::Duration;

/// Everything measured at one scale.
#[derive(Debug, Clone, Default)]
pub struct ScaleResult {
    pub spans: u64,
    pub loaded: Loaded,
    /// Traces in the loaded data (rows of the view right after it was created).
    pub traces_loaded: i64,
    pub traces_in_window: i64,
    pub spans_in_window: i64,
    pub traces_bytes: i64,
    pub table_bytes: i64,
    pub view_bytes: i64,
    pub create_mv_s: f64,
    pub install_s: f64,
    pub refresh_concurrently: Vec<f64>,
    pub refresh_plain: Vec<f64>,
    pub rebuild: Vec<f64>,
    pub cycles: Vec<CycleRuns>,
    pub ingest: IngestRuns,
    pub freshness: Vec<FreshnessRun>,
    pub queries: Vec<QueryResult>,
    /// Rows compared (away from the window edge) and rows that differ.
    pub compared: i64,
    pub differing: i64,
}

impl ScaleResult {
    pub fn refresh_concurrently_s(&self) -> f64 {
        median(&self.refresh_concurrently)
    }
    pub fn rebuild_s(&self) -> f64 {
        median(&self.rebuild)
    }
    /// The highest target rate whose p99 freshness stayed under 2 s with the generator keeping up.
    pub fn best_rate(&self) -> Option<&FreshnessRun> {
        self.freshness
            .iter()
            .filter(|f| f.p99() < 2000.0)
            .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
    }
}

/// Runs one scale in its own database and drops it afterwards, whatever happened.
pub async fn run(env: &Env, s: &Settings, spans: u64) -> Result<ScaleResult> {
    let db = database_name(spans);
    say(format!("scale {} spans: database {db}", count(spans)));
    let opts = env.create_db(&db).await?;
    let result = measure(&opts, s, spans).await;
    let dropped = env.drop_db(&db).await;
    let r = result?;
    dropped?;
    Ok(r)
}

async fn measure(opts: &ConnectOptions, s: &Settings, spans: u64) -> Result<ScaleResult> {
    let target = Target {
        schema: "public".into(),
    };
    let mut client = opts.connect().await?;
    let ingest_client = opts.connect().await?;
    let mut gen = SpanGen::new(spans.wrapping_mul(7919).wrapping_add(1));
    let mut r = ScaleResult {
        spans,
        ..Default::default()
    };
    let repeat = s.repeat;

    say(format!(
        "loading {} spans over the last 7 days",
        count(spans)
    ));
    r.loaded = load::load(&client, &target, spans, spans).await?;

    say("creating the materialized view bench_mv (the seed's definition and indexes)");
    r.create_mv_s = refresh::create_mv(&client, &target, &s.window).await?;
    r.traces_loaded = client
        .query_one(&format!("select count(*) from {}", target.rel(MV)), &[])
        .await
        .ctx("counting the view's rows")?
        .get(0);
    say(format!(
        "  created in {} ({} traces)",
        secs(r.create_mv_s),
        count(r.traces_loaded.max(0) as u64)
    ));

    r.ingest = IngestRuns {
        spans: s.ingest_spans,
        batch: s.ingest_batch,
        ..Default::default()
    };
    for i in 0..repeat {
        let t = ingest::timed_inserts(
            &ingest_client,
            &target,
            &mut gen,
            s.ingest_spans,
            s.ingest_batch,
        )
        .await?;
        say(format!("  ingest of {} spans, view mode (no created_at index, no worker): {} (run {}/{repeat})", count(s.ingest_spans as u64), secs(t), i + 1));
        r.ingest.view_mode.push(t);
    }

    say("installing otel_trace_summaries in incremental mode");
    r.install_s = refresh::install_incremental(&mut client, &target, &s.window).await?;
    say(format!("  installed in {}", secs(r.install_s)));

    say("full refresh: REFRESH MATERIALIZED VIEW CONCURRENTLY, plain REFRESH, and rebuild of the table, interleaved");
    for i in 0..repeat {
        let c = refresh::refresh(&client, &target, true).await?;
        let p = refresh::refresh(&client, &target, false).await?;
        let b = refresh::rebuild(&mut client, &target).await?;
        say(format!(
            "  run {}/{repeat}: refresh concurrently {}, plain refresh {}, rebuild {}",
            i + 1,
            secs(c),
            secs(p),
            secs(b)
        ));
        r.refresh_concurrently.push(c);
        r.refresh_plain.push(p);
        r.rebuild.push(b);
    }

    say("single incremental cycles");
    r.cycles = refresh::cycles(&mut client, &target, &mut gen, &s.cycle_sizes, repeat).await?;

    say("ingest cost with the worker stopped and running, interleaved");
    for i in 0..repeat {
        let stopped = ingest::timed_inserts(
            &ingest_client,
            &target,
            &mut gen,
            s.ingest_spans,
            s.ingest_batch,
        )
        .await?;
        let mut worker = worker_thread::start(opts.clone(), s.worker_interval)?;
        freshness::wait_caught_up(
            &ingest_client,
            &target,
            &mut gen,
            &mut worker,
            Duration::from_secs(300),
        )
        .await?;
        let running = ingest::timed_inserts(
            &ingest_client,
            &target,
            &mut gen,
            s.ingest_spans,
            s.ingest_batch,
        )
        .await;
        worker.stop().await?;
        let running = running?;
        say(format!(
            "  run {}/{repeat}: worker stopped {}, worker running {}",
            i + 1,
            secs(stopped),
            secs(running)
        ));
        r.ingest.worker_stopped.push(stopped);
        r.ingest.worker_running.push(running);
    }

    say(format!(
        "freshness under sustained ingest, {} per rate, worker interval {} ms",
        humantime::format_duration(s.freshness),
        s.worker_interval.as_millis()
    ));
    let mut worker = worker_thread::start(opts.clone(), s.worker_interval)?;
    for (i, &rate) in s.rates.iter().enumerate() {
        let waited = freshness::wait_caught_up(
            &ingest_client,
            &target,
            &mut gen,
            &mut worker,
            Duration::from_secs(300),
        )
        .await;
        let run = match waited {
            Ok(_) => {
                freshness::measure(
                    opts,
                    &target,
                    rate,
                    s.freshness,
                    spans ^ (i as u64 + 1) << 40,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match run {
            Ok(run) => r.freshness.push(run),
            Err(e) => {
                let _ = worker.stop().await;
                return Err(e);
            }
        }
    }
    worker.check()?;
    worker.stop().await?;

    say("catching up, refreshing bench_mv, comparing table and view");
    refresh::cycle_once(&mut client, &target).await?;
    refresh::refresh(&client, &target, true).await?;
    refresh::cycle_once(&mut client, &target).await?;
    compare(&client, &target, &s.window, &mut r).await?;
    say(format!(
        "  {} rows compared, {} differ",
        r.compared, r.differing
    ));

    say(format!(
        "read queries, {} runs each on the view and on the table",
        s.query_runs
    ));
    r.queries = queries::run(&client, &target.rel(MV), &target.summaries(), s.query_runs).await?;

    let sizes = client
        .query_one(
            "select (select count(*) from otel_trace_summaries), (select sum(span_count)::bigint from otel_trace_summaries),
                    pg_total_relation_size('otel_traces'), pg_total_relation_size('otel_trace_summaries'),
                    pg_total_relation_size('bench_mv')",
            &[],
        )
        .await
        .ctx("reading relation sizes")?;
    r.traces_in_window = sizes.get(0);
    r.spans_in_window = sizes.get::<_, Option<i64>>(1).unwrap_or(0);
    r.traces_bytes = sizes.get(2);
    r.table_bytes = sizes.get(3);
    r.view_bytes = sizes.get(4);
    Ok(r)
}

/// Table and view compared row for row, leaving out traces within 10 minutes of the window
/// edge (the two were brought up to date a refresh's duration apart, and traces cross the edge
/// continuously).
async fn compare(
    client: &tokio_postgres::Client,
    target: &Target,
    window: &crate::definition::Window,
    r: &mut ScaleResult,
) -> Result<()> {
    let cols = sqltext::column_list(None);
    let w = window.literal();
    let keep = format!("\"timestamp\" > now() - {w} + interval '10 minutes'");
    let (t, v) = (target.summaries(), target.rel(MV));
    let row = client
        .query_one(
            &format!(
                "select (select count(*) from {t} where {keep}),
                        (select count(*) from (select {cols} from {t} where {keep} except all select {cols} from {v} where {keep}) a)
                      + (select count(*) from (select {cols} from {v} where {keep} except all select {cols} from {t} where {keep}) b)"
            ),
            &[],
        )
        .await
        .ctx("comparing the table with the view")?;
    r.compared = row.get(0);
    r.differing = row.get(1);
    Ok(())
}
