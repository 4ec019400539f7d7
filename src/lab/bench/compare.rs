//! The comparison of three systems that keep the summaries, in a database of their own with one
//! definition (window 3 days, error rule `error`: what `install --window 3d --error-rule error`
//! installs), under the same live ingest:
//!
//! - **MV**: the seed's materialized view (`bench_mv`, the definition's query and indexes),
//!   refreshed `CONCURRENTLY` every period (2 minutes) by the bench, as pg_cron would;
//! - **Job**: upstream's job as `job.rs` models it, every period;
//! - **the product**: `trace-summarizer run` with default settings, a separate process.
//!
//! `setup` loads the spans over the window, creates the view, installs the product, creates
//! and backfills the job's table, and samples the spans late spans join. `measure` then runs,
//! per rate: a baseline (the same ingest with no maintenance), then a cell per system. In a
//! cell only that system runs; it is first made current (unmeasured: the view refreshed, the
//! job's table synced and one run, the product started and caught up), then ingest runs:
//!
//! - MV and Job: their run one period after the start; the cell ends when it ends;
//! - the product: the cell's fixed time.
//!
//! The database's cost is the cluster's CPU and WAL over the cell (`meter.rs`) less the
//! baseline's (CPU per second, WAL per span inserted), extrapolated to an hour. Freshness: for
//! the product, polled (`stream::Poller`); for MV and Job, from the run log: a batch committed
//! before a run's statement started is visible when that run committed, and a batch committed
//! after the cell's run started is visible when the next scheduled run (a period after it,
//! taking as long) would commit: these are counted as estimated. A late span whose timestamp
//! lies beyond the Job's look-back when its next run starts is missed. At the end of a cell the
//! ingest stops, the system finishes its next refresh, run or steps, and its rows are compared
//! with the definition in one snapshot (`rows_wrong`). Each cell has a hard time limit; a cell
//! that fails or runs out of time is recorded as such and the next one runs.

use super::config::CompareSettings;
use super::job::{self, JobRun};
use super::load::{self, Loaded};
use super::meter::{self, Meter, Statement};
use super::product_process::{self, ProductProcess};
use super::refresh::{self, Memory, MV};
use super::stats::{count, ms, percentile, say, secs};
use super::stream::{self, LatePool, Poller};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::db::sqltext::column_list;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use crate::lab::spangen::SpanGen;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The three systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    View,
    Job,
    Product,
}

impl System {
    pub const ALL: [System; 3] = [System::View, System::Job, System::Product];

    pub fn name(self) -> &'static str {
        match self {
            System::View => "MV",
            System::Job => "Job",
            System::Product => "trace-summarizer",
        }
    }
}

/// How long the product's poller keeps looking after ingest stopped.
pub const DRAIN: Duration = Duration::from_secs(30);

/// What `setup` did.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub loaded: Loaded,
    pub mv_create_s: f64,
    pub install_s: f64,
    pub backfill_s: f64,
    pub backfill_chunks: usize,
    pub backfill_rows: u64,
    pub late_pool: usize,
    /// The job's table holds every span written before this (its backfill started then).
    pub job_exact_since: DateTime<Utc>,
    /// The server's processes were visible here (CPU readable).
    pub cpu_readable: bool,
    pub statements_available: bool,
}

/// Ingest with no maintenance.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub seconds: f64,
    pub spans: u64,
    pub cpu_s: f64,
    pub wal_bytes: i64,
    /// Of it, the ingest's statements' (pg_stat_statements), when known.
    pub ingest_wal_bytes: Option<i64>,
}

impl Baseline {
    pub fn cpu_per_s(&self) -> f64 {
        self.cpu_s / self.seconds.max(1e-9)
    }
    pub fn wal_per_span(&self) -> f64 {
        self.wal_bytes as f64 / self.spans.max(1) as f64
    }
    /// The WAL per second that is not the ingest's statements' (the server's own).
    pub fn other_wal_per_s(&self) -> Option<f64> {
        self.ingest_wal_bytes
            .map(|i| (self.wal_bytes - i) as f64 / self.seconds.max(1e-9))
    }
}

/// One system at one rate.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// The measured interval.
    pub seconds: f64,
    pub spans: u64,
    pub late_spans: u64,
    /// The cluster's CPU (less the bench's backends) and WAL over the interval.
    pub cpu_s: f64,
    pub wal_bytes: i64,
    /// Of it, the ingest's statements' (pg_stat_statements), when known.
    pub ingest_wal_bytes: Option<i64>,
    /// The product's process and its backends.
    pub worker_cpu_s: Option<f64>,
    pub backends_cpu_s: Option<f64>,
    /// Refreshes or job runs within the interval (seconds).
    pub runs_s: Vec<f64>,
    /// Job runs: rows written.
    pub upserted: u64,
    /// Spans in the window when the cell started (the view's refresh reads them all).
    pub window_spans: i64,
    /// Freshness of each batch's probe (ms); `estimated` of them from the schedule.
    pub freshness_ms: Vec<f64>,
    pub estimated: usize,
    /// Probes never seen (the product, after `DRAIN`).
    pub unseen: usize,
    /// Late spans the system never summarizes (the Job).
    pub missed_spans: u64,
    /// The check at the end: rows compared, traces whose rows differ (both directions).
    pub compared: i64,
    pub wrong: i64,
    /// The preparation (unmeasured) and the system's last refresh, run or catch-up after ingest.
    pub prepare_s: f64,
    pub final_s: f64,
    pub statements: Vec<Statement>,
}

impl Cell {
    fn per_hour(&self, v: f64) -> f64 {
        v * 3600.0 / self.seconds.max(1e-9)
    }
    /// CPU seconds per hour of maintenance: the cell's less the baseline's for as long.
    pub fn cpu_per_hour(&self, b: &Baseline) -> f64 {
        self.per_hour(self.cpu_s - b.cpu_per_s() * self.seconds)
    }
    /// WAL bytes per hour of maintenance: the cell's less the ingest statements' own and the
    /// baseline's other WAL for as long; without pg_stat_statements, less the baseline's WAL
    /// for as many spans.
    pub fn wal_per_hour(&self, b: &Baseline) -> f64 {
        let maintenance = match (self.ingest_wal_bytes, b.other_wal_per_s()) {
            (Some(ingest), Some(other)) => (self.wal_bytes - ingest) as f64 - other * self.seconds,
            _ => self.wal_bytes as f64 - b.wal_per_span() * self.spans as f64,
        };
        self.per_hour(maintenance)
    }
    pub fn worker_per_hour(&self) -> Option<f64> {
        self.worker_cpu_s.map(|w| self.per_hour(w))
    }
    pub fn achieved(&self) -> f64 {
        self.spans as f64 / self.seconds.max(1e-9)
    }
    pub fn p50(&self) -> f64 {
        percentile(&self.freshness_ms, 50.0)
    }
    pub fn p99(&self) -> f64 {
        percentile(&self.freshness_ms, 99.0)
    }
    /// The longest refresh or run in the cell.
    pub fn longest_run_s(&self) -> f64 {
        self.runs_s.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// A cell, or why it has no figures.
#[derive(Debug, Clone)]
pub struct CellOutcome {
    pub system: System,
    pub result: std::result::Result<Cell, String>,
}

/// One rate: its baseline and a cell per system.
#[derive(Debug, Clone)]
pub struct RateRuns {
    pub rate: u32,
    pub baseline: std::result::Result<Baseline, String>,
    pub cells: Vec<CellOutcome>,
}

impl RateRuns {
    pub fn cell(&self, system: System) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.system == system)
            .and_then(|c| c.result.as_ref().ok())
    }
    pub fn baseline(&self) -> Option<&Baseline> {
        self.baseline.as_ref().ok()
    }
}

/// The comparison at one scale.
#[derive(Debug, Clone, Default)]
pub struct CompareRuns {
    pub setup: Setup,
    pub rates: Vec<RateRuns>,
}

impl CompareRuns {
    pub fn at(&self, rate: u32) -> Option<&RateRuns> {
        self.rates.iter().find(|r| r.rate == rate)
    }
}

/// Loads `spans` spans over the window, creates the view, installs the product, creates and
/// backfills the job's table, and samples the spans late spans join.
pub async fn setup(
    opts: &ConnectOptions,
    target: &Target,
    s: &CompareSettings,
    spans: u64,
    mean: f64,
) -> Result<(Setup, LatePool)> {
    let mut client = opts.connect().await?;
    let def = &s.definition;
    let days = def.window.approx().as_secs().div_ceil(86_400) as i64;
    let mut out = Setup::default();
    say(format!(
        "  loading {} spans over the last {days} days",
        count(spans)
    ));
    out.loaded = load::load_over(&client, target, spans, spans ^ 0xC0FFEE, mean, days).await?;
    // Insert-triggered autovacuum of the 5 GB spans table would land in one cell or another at
    // random; every system's ingest is the same, so it is left out (autoanalyze stays).
    client
        .batch_execute(&format!(
            "alter table {} set (autovacuum_vacuum_insert_threshold = -1)",
            target.traces()
        ))
        .await
        .ctx("setting otel_traces' autovacuum")?;
    say("  creating the materialized view (the definition: 3 days, error rule `error`)");
    out.mv_create_s = refresh::create_mv_of(&client, target, def).await?;
    say("  installing the product (install --window 3d --error-rule error)");
    out.install_s = refresh::install_incremental_of(&mut client, target, def).await?;
    say("  creating the job's table; its first run backfills it in 1-hour chunks");
    job::create(&client, target).await?;
    out.job_exact_since = client
        .query_one("select now()", &[])
        .await
        .ctx("reading now()")?
        .get(0);
    let run = job::run_once(&client, target, def).await?;
    out.backfill_s = run.seconds;
    out.backfill_chunks = run.chunks;
    out.backfill_rows = run.upserted;
    client
        .batch_execute(&format!("analyze {}", target.rel(job::TABLE)))
        .await
        .ctx("analyzing the job's table")?;
    let late = LatePool::sample(&client, target, spans).await?;
    out.late_pool = late.spans.len();
    say(format!(
        "  view {}, install {}, job backfill {} ({} chunks); {} spans sampled for late arrivals",
        secs(out.mv_create_s),
        secs(out.install_s),
        secs(out.backfill_s),
        out.backfill_chunks,
        out.late_pool
    ));
    Ok((out, late))
}

/// What every cell shares.
pub struct Bench<'a> {
    pub opts: &'a ConnectOptions,
    pub target: &'a Target,
    pub settings: &'a CompareSettings,
    pub meter: &'a Meter,
    pub late: Arc<LatePool>,
    pub mean: f64,
    pub seed: u64,
    /// Since when spans may be missing from the job's table (its last sync's start).
    pub job_synced: std::sync::Mutex<DateTime<Utc>>,
}

impl Bench<'_> {
    fn gen(&self, k: u64) -> SpanGen {
        SpanGen::with_mean_spans(self.seed ^ (k << 36), self.mean)
    }
}

/// Every rate: the baseline, then a cell per system.
pub async fn measure(b: &Bench<'_>) -> Vec<RateRuns> {
    let s = b.settings;
    let mut out = Vec::new();
    for (i, &rate) in s.rates.iter().enumerate() {
        say(format!(
            "  {} spans/s: the same ingest with no maintenance (baseline), {}",
            count(rate as u64),
            humantime::format_duration(s.baseline)
        ));
        let k = (i as u64 + 1) * 8;
        let baseline = limited(s.cell_limit, baseline(b, rate, b.gen(k))).await;
        match &baseline {
            Ok(x) => say(format!(
                "    {} spans in {}: cluster CPU {:.2} s, WAL {} (the ingest's statements: {})",
                count(x.spans),
                secs(x.seconds),
                x.cpu_s,
                mb(x.wal_bytes as f64),
                x.ingest_wal_bytes
                    .map(|w| mb(w as f64))
                    .unwrap_or_else(|| "n/a".into())
            )),
            Err(e) => say(format!("    baseline failed: {e}")),
        }
        let mut cells = Vec::new();
        for (j, system) in [System::Product, System::View, System::Job]
            .into_iter()
            .enumerate()
        {
            say(format!(
                "  {} spans/s: {}",
                count(rate as u64),
                system.name()
            ));
            let gen = b.gen(k + 1 + j as u64);
            let result = match session(b).await {
                Ok(client) => {
                    let result = limited(s.cell_limit, cell(b, &client, system, rate, gen)).await;
                    if result.is_err() {
                        // A statement still running on the server (a refresh, a job run, the
                        // check) is cancelled with the cell, failed or out of time.
                        b.opts.cancel(&client.cancel_token()).await;
                    }
                    result
                }
                Err(e) => Err(e.chain()),
            };
            match &result {
                Ok(c) => say(format!(
                    "    {} spans in {} ({} late); cluster CPU {:.2} s, WAL {}{}; freshness p50 {} p99 {}; traces wrong {} of {}",
                    count(c.spans),
                    secs(c.seconds),
                    c.late_spans,
                    c.cpu_s,
                    mb(c.wal_bytes as f64),
                    c.worker_cpu_s
                        .map(|w| format!(", worker process {w:.2} s"))
                        .unwrap_or_default(),
                    ms(c.p50()),
                    ms(c.p99()),
                    c.wrong,
                    c.compared
                )),
                Err(e) => say(format!("    {} failed: {e}", system.name())),
            }
            cells.push(CellOutcome { system, result });
        }
        out.push(RateRuns {
            rate,
            baseline,
            cells,
        });
    }
    out
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// Runs `f` with a hard time limit; an error or the limit becomes the cell's reason.
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

/// A connection for the system's own statements, limited to the cell's time.
async fn session(b: &Bench<'_>) -> Result<Client> {
    let client = b.opts.connect().await?;
    client
        .batch_execute(&format!(
            "set statement_timeout = '{}s'",
            b.settings.cell_limit.as_secs()
        ))
        .await
        .ctx("setting statement_timeout")?;
    Ok(client)
}

async fn baseline(b: &Bench<'_>, rate: u32, gen: SpanGen) -> Result<Baseline> {
    b.meter.checkpoint().await;
    let mark = b.meter.start().await?;
    let ingest = stream::steady(
        b.opts,
        b.target,
        rate,
        b.settings.cell_limit,
        gen,
        b.late.clone(),
        None,
    )
    .await?;
    let pid = ingest.backend_pid;
    tokio::time::sleep(b.settings.baseline).await;
    let log = ingest.finish().await?;
    let reading = b.meter.read(&mark, &[pid]).await?;
    Ok(Baseline {
        seconds: reading.seconds,
        spans: log.spans,
        cpu_s: reading.cpu_s,
        wal_bytes: reading.wal_bytes,
        ingest_wal_bytes: reading.bench_wal_bytes,
    })
}

/// One cell of `system` at `rate`, the system's statements on `client`.
async fn cell(
    b: &Bench<'_>,
    client: &Client,
    system: System,
    rate: u32,
    gen: SpanGen,
) -> Result<Cell> {
    match system {
        System::View | System::Job => scheduled(b, client, system, rate, gen).await,
        System::Product => product(b, client, rate, gen).await,
    }
}

/// The system's scheduled run: a REFRESH CONCURRENTLY, or one job run. Returns the instant its
/// statement was sent, when it committed, and the job's run.
async fn scheduled_run(
    b: &Bench<'_>,
    client: &Client,
    system: System,
) -> Result<(Instant, DateTime<Utc>, Instant, Option<JobRun>)> {
    let sent = Instant::now();
    let sent_wall = Utc::now();
    match system {
        System::View => {
            refresh::refresh(client, b.target, true, Memory::ServerDefaults).await?;
            Ok((sent, sent_wall, Instant::now(), None))
        }
        _ => {
            let run = job::run_once(client, b.target, &b.settings.definition).await?;
            let (s, d) = (
                run.upsert_sent.unwrap_or(sent),
                run.upsert_done.unwrap_or_else(Instant::now),
            );
            let wall = sent_wall + chrono::Duration::from_std(s - sent).unwrap_or_default();
            Ok((s, wall, d, Some(run)))
        }
    }
}

/// MV or Job: made current, then ingest; the run a period after the start; the cell ends when
/// it ends.
async fn scheduled(
    b: &Bench<'_>,
    client: &Client,
    system: System,
    rate: u32,
    gen: SpanGen,
) -> Result<Cell> {
    let s = b.settings;
    let def = &s.definition;
    let t = Instant::now();
    let mut out = Cell::default();
    if system == System::Job {
        let since = *b.job_synced.lock().expect("not poisoned");
        let started = job::sync(client, b.target, def, since).await?;
        *b.job_synced.lock().expect("not poisoned") = started;
    }
    scheduled_run(b, client, system).await?;
    out.window_spans = window_spans(client, b.target, def).await?;
    out.prepare_s = t.elapsed().as_secs_f64();

    b.meter.checkpoint().await;
    let mark = b.meter.start().await?;
    let t0 = Instant::now();
    let ingest = stream::steady(
        b.opts,
        b.target,
        rate,
        s.cell_limit,
        gen,
        b.late.clone(),
        None,
    )
    .await?;
    let ingest_pid = ingest.backend_pid;
    tokio::time::sleep_until((t0 + s.period).into()).await;
    let (sent, sent_wall, done, run) = scheduled_run(b, client, system).await?;
    let log = ingest.finish().await?;
    let reading = b.meter.read(&mark, &[ingest_pid]).await?;
    out.runs_s.push(
        run.as_ref()
            .map_or((done - sent).as_secs_f64(), |r| r.seconds),
    );
    out.upserted = run.as_ref().map_or(0, |r| r.upserted);

    // Freshness from the run log; the next run, a period after this one, is assumed to take as
    // long as this one.
    let took = done - sent;
    let next_done = sent + s.period + took;
    let next_wall = sent_wall + chrono::Duration::from_std(s.period).unwrap_or_default();
    for &at in &log.commits {
        let visible = if at < sent {
            done
        } else {
            out.estimated += 1;
            next_done
        };
        out.freshness_ms
            .push(visible.saturating_duration_since(at).as_secs_f64() * 1000.0);
    }
    if system == System::Job {
        let reach = |wall: DateTime<Utc>| {
            wall - chrono::Duration::from_std(parse_look_back()).unwrap_or_default()
        };
        out.missed_spans = log
            .late
            .iter()
            .filter(|(at, ts)| {
                let next = if *at < sent { sent_wall } else { next_wall };
                *ts <= reach(next)
            })
            .count() as u64;
    }
    fill(&mut out, &log, &reading);

    let f = Instant::now();
    scheduled_run(b, client, system).await?;
    out.final_s = f.elapsed().as_secs_f64();
    let relation = match system {
        System::View => b.target.rel(MV),
        _ => b.target.rel(job::TABLE),
    };
    (out.compared, out.wrong) = rows_wrong(client, b.target, &relation, def).await?;
    Ok(out)
}

/// The Job's look-back as a duration.
fn parse_look_back() -> Duration {
    humantime::parse_duration(job::LOOK_BACK).unwrap_or(Duration::from_secs(300))
}

fn fill(out: &mut Cell, log: &stream::SteadyLog, reading: &meter::Reading) {
    out.seconds = reading.seconds;
    out.spans = log.spans;
    out.late_spans = log.late.len() as u64;
    out.cpu_s = reading.cpu_s;
    out.wal_bytes = reading.wal_bytes;
    out.ingest_wal_bytes = reading.bench_wal_bytes;
    out.statements = reading.statements.clone();
}

/// The product: started and caught up, then ingest for the cell's time, polled.
async fn product(b: &Bench<'_>, client: &Client, rate: u32, mut gen: SpanGen) -> Result<Cell> {
    let s = b.settings;
    let t = Instant::now();
    let mut out = Cell::default();
    let mut p = ProductProcess::start(b.opts, &[], "compare")?;
    product_process::wait_caught_up(client, b.target, &mut gen, &mut p, s.cell_limit).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.prepare_s = t.elapsed().as_secs_f64();

    let poller = Poller::start(b.opts, b.target.summaries()).await?;
    b.meter.checkpoint().await;
    let mark = b.meter.start().await?;
    let w0 = p.cpu_s();
    let ingest = stream::steady(
        b.opts,
        b.target,
        rate,
        s.cell_limit,
        gen,
        b.late.clone(),
        Some(poller.pending.clone()),
    )
    .await?;
    let excluded = vec![
        ingest.backend_pid,
        poller.backend_pid,
        meter::backend_pid(client).await?,
    ];
    tokio::time::sleep(s.cell).await;
    let log = ingest.finish().await?;
    let reading = b.meter.read(&mark, &excluded).await?;
    let w1 = p.cpu_s();
    let backends = b.meter.other_backends(&excluded).await?;
    out.backends_cpu_s = Some(meter::spent(&mark, &reading, &backends));
    out.worker_cpu_s = w0.zip(w1).map(|(a, z)| z - a);
    p.check()?;
    fill(&mut out, &log, &reading);

    let f = Instant::now();
    let (samples, unseen) = poller.finish(DRAIN).await?;
    out.final_s = f.elapsed().as_secs_f64();
    out.freshness_ms = samples;
    out.unseen = unseen;
    out.freshness_ms
        .extend(std::iter::repeat_n(f64::INFINITY, unseen));
    (out.compared, out.wrong) =
        rows_wrong(client, b.target, &b.target.summaries(), &s.definition).await?;
    p.stop().await;
    Ok(out)
}

/// Spans in the window now.
async fn window_spans(client: &Client, target: &Target, def: &Definition) -> Result<i64> {
    Ok(client
        .query_one(
            &format!(
                "select count(*) from {} where \"timestamp\" > now() - {}",
                target.traces(),
                def.window.literal()
            ),
            &[],
        )
        .await
        .ctx("counting the spans in the window")?
        .get(0))
}

/// `relation` against the definition in one snapshot, both ways (EXCEPT ALL), leaving out
/// traces within 10 minutes of the window edge (they cross it while the systems run): rows of
/// the definition compared, and the traces whose rows differ (missing, invented or with another
/// value: each trace counted once).
pub async fn rows_wrong(
    client: &Client,
    target: &Target,
    relation: &str,
    def: &Definition,
) -> Result<(i64, i64)> {
    let cols = column_list(None);
    let keep = format!(
        "\"timestamp\" > now() - {} + interval '10 minutes'",
        def.window.literal()
    );
    client
        .batch_execute("set work_mem = '256MB'")
        .await
        .ctx("setting work_mem")?;
    let row = client
        .query_one(
            &format!(
                "with d as materialized (select {cols} from ({q}) q where {keep}),
                      r as materialized (select {cols} from {relation} where {keep})
                 select (select count(*) from d),
                        (select count(*) from (select trace_id from (select * from r except all select * from d) a
                                               union select trace_id from (select * from d except all select * from r) b) x)",
                q = def.query(target, "")
            ),
            &[],
        )
        .await
        .ctx("comparing with the definition")?;
    client
        .batch_execute("reset work_mem")
        .await
        .ctx("resetting work_mem")?;
    Ok((row.get(0), row.get(1)))
}
