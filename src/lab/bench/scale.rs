//! One scale, step by step, in a fresh database: load (and two copies of the spans: a plain
//! table and a never-analyzed one), the view and its refreshes, install and full rebuilds,
//! single steps, the never-analyzed and big-trace cases, the audit, ingest throughput,
//! freshness and failover under the running worker, then a final catch-up, an equality check of
//! table against view, and the read queries.
//!
//! Each measure is a `measure` function in its own module; this file only runs them in order,
//! sets up what they share (the databases' sessions, the copies, the worker) and keeps what they
//! return in `ScaleResult`, which the report and the chart read.

use super::audit_cost::{self, AuditRuns};
use super::big_trace::{self, BigTraceRuns};
use super::capacity::{self, CapacityRuns};
use super::compare::{self, CompareRuns};
use super::config::Settings;
use super::env::{database_name, Env};
use super::equality;
use super::failover::{self, FailoverRuns};
use super::freshness::{self, FreshnessRun};
use super::idle::{self, IdleRun};
use super::ingest::{self, IngestRuns};
use super::load::{self, Loaded, TraceShape};
use super::meter::Meter;
use super::never_analyzed::{self, NeverAnalyzedLoad, NeverAnalyzedRuns};
use super::queries::{self, QueryResult};
use super::refresh::{self, MV};
use super::stats::{count, median, say, secs};
use super::steps::{self, CycleRuns};
use super::worker_thread;
use crate::cli::BenchParts;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
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
    pub shape: TraceShape,
    pub traces_in_window: i64,
    pub spans_in_window: i64,
    pub traces_bytes: i64,
    pub table_bytes: i64,
    pub view_bytes: i64,
    pub create_mv_s: f64,
    pub install_s: f64,
    pub plain_copy_s: f64,
    pub never_load: NeverAnalyzedLoad,
    /// REFRESH CONCURRENTLY as the seed's pg_cron job runs it (the server's default memory).
    pub refresh_concurrently: Vec<f64>,
    /// REFRESH CONCURRENTLY with the memory `rebuild` gives itself.
    pub refresh_concurrently_mem: Vec<f64>,
    pub refresh_plain: Vec<f64>,
    /// `rebuild --jobs 1` and `rebuild --jobs 2`.
    pub rebuild_1: Vec<f64>,
    pub rebuild_2: Vec<f64>,
    pub cycles: Vec<CycleRuns>,
    pub never_analyzed: NeverAnalyzedRuns,
    pub big_trace: BigTraceRuns,
    /// At the default period (24h), then at 1h.
    pub audit: Vec<AuditRuns>,
    pub ingest: IngestRuns,
    pub freshness: Vec<FreshnessRun>,
    pub failover: FailoverRuns,
    pub queries: Vec<QueryResult>,
    /// Rows compared (away from the window edge) and rows that differ.
    pub compared: i64,
    pub differing: i64,
    /// The table's live and dead rows when the reads ran, and whether autovacuum had been there.
    pub table_live: i64,
    pub table_dead: i64,
    pub table_autovacuumed: bool,
    /// Things the worker did that a reader of the figures should know (full refreshes).
    pub events: Vec<String>,
    /// The comparison of MV, Job and the product, when it ran.
    pub comparison: Option<Comparison>,
}

/// The comparison at one scale, in a database of its own: the three systems per rate, the
/// product idle, the capacity runs; whatever failed, with why.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub compare: CompareRuns,
    pub idle: Option<std::result::Result<IdleRun, String>>,
    pub capacity: CapacityRuns,
    pub capacity_error: Option<String>,
    /// Why the comparison stopped before its end (setup failed), if it did.
    pub error: Option<String>,
}

impl ScaleResult {
    pub fn refresh_concurrently_s(&self) -> f64 {
        median(&self.refresh_concurrently)
    }
    pub fn refresh_concurrently_mem_s(&self) -> f64 {
        median(&self.refresh_concurrently_mem)
    }
    /// The median `rebuild --jobs <jobs>` (1 or 2).
    pub fn rebuild_s(&self, jobs: u32) -> f64 {
        median(if jobs == 1 {
            &self.rebuild_1
        } else {
            &self.rebuild_2
        })
    }
    /// The median step absorbing `n` new spans, if measured.
    pub fn step_s(&self, n: usize) -> Option<f64> {
        self.cycles
            .iter()
            .find(|c| c.new_spans == n)
            .map(|c| median(&c.seconds))
    }
    /// The freshness run at `rate`, if measured.
    pub fn freshness_at(&self, rate: u32) -> Option<&FreshnessRun> {
        self.freshness.iter().find(|f| f.rate == rate)
    }
}

/// Runs one scale in its own database and drops it afterwards, whatever happened.
pub async fn run(env: &Env, s: &Settings, spans: u64) -> Result<ScaleResult> {
    let mut r = if s.parts == BenchParts::Comparison {
        ScaleResult {
            spans,
            ..Default::default()
        }
    } else {
        let db = database_name(spans);
        say(format!("scale {} spans: database {db}", count(spans)));
        let opts = env.create_db(&db).await?;
        let result = measure(&opts, s, spans).await;
        let dropped = env.drop_db(&db).await;
        let r = result?;
        dropped?;
        r
    };
    if s.parts != BenchParts::Classic {
        r.comparison = Some(comparison(env, s, spans).await);
    }
    Ok(r)
}

/// Runs `f` with a time limit; an error or the limit becomes a reason.
async fn limited<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.chain()),
        Err(_) => Err(format!(
            "stopped at its time limit of {}",
            humantime::format_duration(limit)
        )),
    }
}

/// The comparison in a database of its own, dropped afterwards; it never fails the bench:
/// what failed is recorded with why.
async fn comparison(env: &Env, s: &Settings, spans: u64) -> Comparison {
    let db = format!("{}_compare", database_name(spans));
    say(format!(
        "scale {} spans: the comparison of MV, Job and trace-summarizer, database {db}",
        count(spans)
    ));
    let mut out = Comparison::default();
    match env.create_db(&db).await {
        Ok(opts) => {
            if let Err(e) = compare_in(&opts, s, spans, &mut out).await {
                say(format!("  the comparison stopped: {}", e.chain()));
                out.error = Some(e.chain());
            }
        }
        Err(e) => out.error = Some(e.chain()),
    }
    if let Err(e) = env.drop_db(&db).await {
        say(format!("  could not drop {db}: {}", e.chain()));
    }
    out
}

async fn compare_in(
    opts: &ConnectOptions,
    s: &Settings,
    spans: u64,
    out: &mut Comparison,
) -> Result<()> {
    let c = &s.compare;
    let target = schema("public");
    let mean = s.spans_per_trace;
    let seed = spans.wrapping_mul(104_729).wrapping_add(17);
    let (setup, late) = compare::setup(opts, &target, c, spans, mean).await?;
    out.compare.setup = setup;
    let meter = Meter::connect(opts).await?;
    out.compare.setup.cpu_readable = meter.reads_cpu();
    out.compare.setup.statements_available = meter.has_statements();

    say(format!(
        "  the product idle (--audit-period 0, no new spans), {}",
        humantime::format_duration(c.idle)
    ));
    out.idle = Some(
        limited(
            c.cell_limit,
            idle::measure(
                opts,
                &target,
                &meter,
                c.idle,
                SpanGen::with_mean_spans(seed ^ 1, mean),
            ),
        )
        .await,
    );

    let bench = compare::Bench {
        opts,
        target: &target,
        settings: c,
        meter: &meter,
        late: std::sync::Arc::new(late),
        mean,
        seed,
        job_synced: std::sync::Mutex::new(out.compare.setup.job_exact_since),
    };
    out.compare.rates = compare::measure(&bench).await;

    // The machine's ceiling: at the largest scale only (it depends little on the table's size).
    if Some(&spans) != s.scales.iter().max() {
        return Ok(());
    }
    say(format!(
        "  capacity: {} writers as fast as they can, {} each, with the product running, then plain",
        c.capacity_writers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        humantime::format_duration(c.capacity_run)
    ));
    match limited(
        c.cell_limit,
        capacity::with_product(
            opts,
            &target,
            &c.capacity_writers,
            c.capacity_run,
            mean,
            seed ^ 2,
        ),
    )
    .await
    {
        Ok(runs) => out.capacity.with_product = runs,
        Err(e) => out.capacity_error = Some(format!("with the product: {e}")),
    }
    let mut admin = opts.connect().await?;
    crate::install::uninstall(&mut admin, &target, None).await?;
    match limited(
        c.cell_limit,
        capacity::plain(
            opts,
            &target,
            &c.capacity_writers,
            c.capacity_run,
            mean,
            seed ^ 3,
        ),
    )
    .await
    {
        Ok(runs) => out.capacity.plain = runs,
        Err(e) => {
            let prev = out.capacity_error.take();
            out.capacity_error =
                Some(prev.map(|p| format!("{p}; ")).unwrap_or_default() + &format!("plain: {e}"));
        }
    }
    Ok(())
}

fn schema(name: &str) -> Target {
    Target::new(name)
}

async fn measure(opts: &ConnectOptions, s: &Settings, spans: u64) -> Result<ScaleResult> {
    let target = schema("public");
    let plain = schema("plain");
    let never = schema("never_analyzed");
    let mut client = opts.connect().await?;
    let mut never_client = opts.connect().await?;
    let ingest_client = opts.connect().await?;
    let mean = s.spans_per_trace;
    let seed = spans.wrapping_mul(7919).wrapping_add(1);
    let mut gen = SpanGen::with_mean_spans(seed, mean);
    let mut r = ScaleResult {
        spans,
        ..Default::default()
    };
    let repeat = s.repeat;

    say(format!(
        "loading {} spans over the last 7 days, {mean} spans per trace on average",
        count(spans)
    ));
    r.loaded = load::load(&client, &target, spans, spans, mean).await?;

    say("creating the materialized view bench_mv (the seed's definition and indexes)");
    r.create_mv_s = refresh::create_mv(&client, &target, &s.window).await?;
    (r.traces_loaded, r.shape) = load::trace_shape(&client, &target.rel(MV)).await?;
    say(format!(
        "  created in {} ({} traces; spans per trace: mean {:.1}, median {}, p99 {}, max {})",
        secs(r.create_mv_s),
        count(r.traces_loaded.max(0) as u64),
        r.shape.mean,
        r.shape.p50,
        r.shape.p99,
        r.shape.max
    ));

    say("copying the spans into a never-analyzed table (schema never_analyzed: autovacuum off, installed while empty, loaded, full refresh, counters reset)");
    r.never_load = never_analyzed::copy(&mut never_client, &target, &never, &s.window).await?;
    say(format!(
        "  inserted in {}, absorbed by a full refresh in {}; reltuples {}, {} pg_statistic rows, never analyzed: {}",
        secs(r.never_load.insert_s),
        secs(r.never_load.rebuild_s),
        r.never_load.stats.reltuples,
        r.never_load.stats.stat_rows,
        r.never_load.stats.never_analyzed()
    ));

    say("installing otel_trace_summaries in incremental mode");
    r.install_s = refresh::install_incremental(&mut client, &target, &s.window).await?;
    say(format!("  installed in {}", secs(r.install_s)));

    say("full refresh: REFRESH MATERIALIZED VIEW CONCURRENTLY (server defaults, as pg_cron runs it, and with rebuild's memory), plain REFRESH, and rebuild of the table on one connection and on two, interleaved");
    let full = refresh::measure(&mut client, opts, &target, repeat).await?;
    r.refresh_concurrently = full.concurrently;
    r.refresh_concurrently_mem = full.concurrently_mem;
    r.refresh_plain = full.plain;
    r.rebuild_1 = full.rebuild_1;
    r.rebuild_2 = full.rebuild_2;

    say("single steps absorbing new traces");
    r.cycles = steps::measure(&mut client, &target, &mut gen, &s.cycle_sizes, repeat).await?;

    say(format!(
        "a step absorbing {} new spans on the analyzed table and on the never-analyzed one, interleaved",
        count(s.never_analyzed_spans as u64)
    ));
    r.never_analyzed = never_analyzed::measure(
        (&mut client, &target),
        (&mut never_client, &never),
        &mut gen,
        s.never_analyzed_spans,
        s.pairs,
    )
    .await?;
    drop(never_client);
    let mut admin = opts.connect().await?;
    crate::install::uninstall(&mut admin, &never, None).await?;
    admin
        .batch_execute("drop schema never_analyzed cascade")
        .await
        .ctx("dropping the never-analyzed copy")?;

    say(format!(
        "a step absorbing {} new spans of a {}-span trace against {} spans of a new trace, interleaved",
        s.big_trace_new,
        count(s.big_trace_spans as u64),
        s.big_trace_new
    ));
    r.big_trace = big_trace::measure(
        &mut client,
        &target,
        &mut gen,
        s.big_trace_spans,
        s.big_trace_new,
        s.pairs,
    )
    .await?;

    say("the audit: consecutive slices at the default period and at 1h");
    steps::cycle_once(&mut client, &target).await?;
    for period in [24 * 3600, 3600] {
        r.audit.push(
            audit_cost::measure(
                &mut client,
                &target,
                Duration::from_secs(period),
                s.audit_slices,
            )
            .await?,
        );
    }

    // The plain copy is made now, of every span otel_traces holds now, so that the two tables
    // are of one size when their inserts are compared.
    say("copying the spans into a plain table (schema plain: nothing installed), for the ingest comparison");
    r.plain_copy_s = load::plain_copy(&client, &target, &plain).await?;
    say(format!("  copied in {}", secs(r.plain_copy_s)));
    say("ingest throughput with the product (worker running) and without it (plain table, no worker), interleaved");
    let rebuilds = last_rebuild(&client, &target).await?;
    r.ingest = ingest::measure(
        opts,
        &mut client,
        &ingest_client,
        &target,
        &plain,
        &s.worker,
        &mut gen,
        s.ingest_spans,
        s.ingest_batch,
        s.ingest_rounds,
    )
    .await?;
    admin
        .batch_execute("drop schema plain cascade")
        .await
        .ctx("dropping the plain copy")?;
    note_rebuilds(&client, &target, &rebuilds, "the ingest rounds", &mut r).await?;
    let rebuilds = last_rebuild(&client, &target).await?;

    say(format!(
        "freshness under sustained ingest, {} per rate, the worker's default settings (interval {} ms)",
        humantime::format_duration(s.freshness),
        s.worker.interval.as_millis()
    ));
    let mut worker = worker_thread::start(opts.clone(), s.worker.clone())?;
    for (i, &rate) in s.rates.iter().enumerate() {
        let waited = worker_thread::wait_caught_up(
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
                    SpanGen::with_mean_spans(spans ^ ((i as u64 + 1) << 40), mean),
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
    note_rebuilds(&client, &target, &rebuilds, "the freshness runs", &mut r).await?;
    let rebuilds = last_rebuild(&client, &target).await?;

    say(format!(
        "failover: SIGKILL of the leader with a standby running, {} times, under {} spans/s of ingest",
        s.failovers,
        count(failover::INGEST_RATE as u64)
    ));
    r.failover = failover::measure(
        opts,
        &target,
        &s.worker,
        SpanGen::with_mean_spans(seed ^ (1 << 50), mean),
        SpanGen::with_mean_spans(seed ^ (1 << 51), mean),
        s.failovers,
    )
    .await?;
    note_rebuilds(&client, &target, &rebuilds, "the failovers", &mut r).await?;

    say("catching up, refreshing bench_mv, comparing table and view");
    (r.compared, r.differing) = equality::measure(&mut client, &target, &s.window).await?;
    say(format!(
        "  {} rows compared, {} differ",
        r.compared, r.differing
    ));

    say(format!(
        "read queries, {} runs each on the view and on the table",
        s.query_runs
    ));
    let table = queries::table_activity(&client).await?;
    r.table_live = table.live;
    r.table_dead = table.dead;
    r.table_autovacuumed = table.autovacuumed;
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

/// The installation's last full refresh (when and why).
type RebuildMark = (Option<chrono::DateTime<chrono::Utc>>, Option<String>);

async fn last_rebuild(client: &tokio_postgres::Client, target: &Target) -> Result<RebuildMark> {
    let st = crate::state::load(client, &target.schema).await?;
    Ok(st
        .map(|st| (st.last_rebuild.at, st.last_rebuild.reason))
        .unwrap_or((None, None)))
}

/// Notes a full refresh the worker ran during `phase` (a fallback the figures include).
async fn note_rebuilds(
    client: &tokio_postgres::Client,
    target: &Target,
    before: &RebuildMark,
    phase: &str,
    r: &mut ScaleResult,
) -> Result<()> {
    let now = last_rebuild(client, target).await?;
    if now.0 != before.0 {
        let event = format!(
            "during {phase}, the worker fell back to a full refresh (last reason: {})",
            now.1.as_deref().unwrap_or("unknown")
        );
        say(format!("  note: {event}"));
        r.events.push(event);
    }
    Ok(())
}
