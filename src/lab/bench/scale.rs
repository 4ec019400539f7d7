//! One scale, step by step, in a fresh database: load (and two copies of the spans: a plain
//! table and a never-analyzed one), the view and its refreshes, install and full rebuilds,
//! single steps, the never-analyzed and big-trace cases, the audit, ingest throughput,
//! freshness and failover under the running worker, then a final catch-up, an equality check of
//! table against view, and the read queries.

use super::audit_cost::{self, AuditRuns};
use super::cases::{self, BigTraceRuns, NeverAnalyzedRuns};
use super::env::{database_name, Env};
use super::failover::{self, FailoverRuns};
use super::freshness::{self, FreshnessRun};
use super::ingest::{self, IngestRuns};
use super::load::{self, Loaded, NeverAnalyzedLoad};
use super::queries::{self, QueryResult};
use super::refresh::{self, CycleRuns, Memory, MV};
use super::stats::{count, median, say, secs};
use super::worker_thread;
use super::Settings;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::db::sqltext;
use crate::error::{DbContext, Result};
use crate::lab::spangen::SpanGen;
use std::time::Duration;

/// Spans per trace in the loaded data (from the view's span_count right after it was created).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceShape {
    pub mean: f64,
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub max: i64,
}

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
    pub rebuild: Vec<f64>,
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
}

impl ScaleResult {
    pub fn refresh_concurrently_s(&self) -> f64 {
        median(&self.refresh_concurrently)
    }
    pub fn refresh_concurrently_mem_s(&self) -> f64 {
        median(&self.refresh_concurrently_mem)
    }
    pub fn rebuild_s(&self) -> f64 {
        median(&self.rebuild)
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
    let db = database_name(spans);
    say(format!("scale {} spans: database {db}", count(spans)));
    let opts = env.create_db(&db).await?;
    let result = measure(&opts, s, spans).await;
    let dropped = env.drop_db(&db).await;
    let r = result?;
    dropped?;
    Ok(r)
}

fn schema(name: &str) -> Target {
    Target {
        schema: name.into(),
    }
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
    let shape = client
        .query_one(
            &format!(
                "select count(*), avg(span_count)::float8,
                        percentile_disc(0.5) within group (order by span_count),
                        percentile_disc(0.9) within group (order by span_count),
                        percentile_disc(0.99) within group (order by span_count),
                        max(span_count)
                 from {}",
                target.rel(MV)
            ),
            &[],
        )
        .await
        .ctx("reading the shape of the traces")?;
    r.traces_loaded = shape.get(0);
    r.shape = TraceShape {
        mean: shape.get::<_, Option<f64>>(1).unwrap_or(f64::NAN),
        p50: shape.get::<_, Option<i64>>(2).unwrap_or(0),
        p90: shape.get::<_, Option<i64>>(3).unwrap_or(0),
        p99: shape.get::<_, Option<i64>>(4).unwrap_or(0),
        max: shape.get::<_, Option<i64>>(5).unwrap_or(0),
    };
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
    r.never_load = load::never_analyzed_copy(&mut never_client, &target, &never, &s.window).await?;
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

    say("full refresh: REFRESH MATERIALIZED VIEW CONCURRENTLY (server defaults, as pg_cron runs it, and with rebuild's memory), plain REFRESH, and rebuild of the table, interleaved");
    for i in 0..repeat {
        let (mut c, mut cm, mut p, mut b) = (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
        // Rotate which goes first, so none always runs on the caches the others warmed.
        for k in 0..4 {
            match (i + k) % 4 {
                0 => c = refresh::refresh(&client, &target, true, Memory::ServerDefaults).await?,
                1 => cm = refresh::refresh(&client, &target, true, Memory::LikeRebuild).await?,
                2 => p = refresh::refresh(&client, &target, false, Memory::LikeRebuild).await?,
                _ => b = refresh::rebuild(&mut client, &target).await?,
            }
        }
        say(format!(
            "  run {}/{repeat}: refresh concurrently {} (with rebuild's memory {}), plain refresh {}, rebuild {}",
            i + 1,
            secs(c),
            secs(cm),
            secs(p),
            secs(b)
        ));
        r.refresh_concurrently.push(c);
        r.refresh_concurrently_mem.push(cm);
        r.refresh_plain.push(p);
        r.rebuild.push(b);
    }

    say("single steps absorbing new traces");
    r.cycles = refresh::cycles(&mut client, &target, &mut gen, &s.cycle_sizes, repeat).await?;

    say(format!(
        "a step absorbing {} new spans on the analyzed table and on the never-analyzed one, interleaved",
        count(s.never_analyzed_spans as u64)
    ));
    r.never_analyzed = cases::never_analyzed(
        (&mut client, &target),
        (&mut never_client, &never),
        &mut gen,
        s.never_analyzed_spans,
        s.pairs,
    )
    .await?;
    drop(never_client);
    let mut admin = opts.connect().await?;
    crate::install::uninstall(&mut admin, &never).await?;
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
    r.big_trace = cases::big_trace(
        &mut client,
        &target,
        &mut gen,
        s.big_trace_spans,
        s.big_trace_new,
        s.pairs,
    )
    .await?;

    say("the audit: consecutive slices at the default period and at 1h");
    refresh::cycle_once(&mut client, &target).await?;
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
    refresh::cycle_once(&mut client, &target).await?;
    refresh::refresh(&client, &target, true, Memory::LikeRebuild).await?;
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
    let table = client
        .query_one(
            "select n_live_tup, n_dead_tup, last_autovacuum is not null from pg_stat_user_tables
             where relid = 'public.otel_trace_summaries'::regclass",
            &[],
        )
        .await
        .ctx("reading the table's activity counters")?;
    r.table_live = table.get(0);
    r.table_dead = table.get(1);
    r.table_autovacuumed = table.get(2);
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
