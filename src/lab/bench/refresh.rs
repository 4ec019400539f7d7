//! The two ways to bring the summaries up to date on the same data: the materialized view
//! (`public.bench_mv`, the seed's definition and indexes, refreshed CONCURRENTLY or plainly)
//! against the maintained table (`otel_trace_summaries`, installed in incremental mode by the
//! library, fully rebuilt by `rebuild::run`, or advanced by single incremental cycles).

use super::load::fresh_spans;
use super::stats::{count, say, secs};
use crate::db::source::Target;
use crate::definition::{Definition, ErrorRule, Window};
use crate::error::{DbContext, Error, Result};
use crate::install::{self, InstallPlan};
use crate::lab::spangen::{self, SpanGen};
use crate::maintain::cycle::{self, Extras, Limits, Outcome, StepStats};
use crate::maintain::rebuild::Method;
use crate::maintain::scratch;
use crate::state::Mode;
use std::time::Instant;
use tokio_postgres::Client;

/// The materialized view built beside the table for the comparison.
pub const MV: &str = "bench_mv";

/// The same memory for REFRESH as `rebuild.rs` gives itself, so both sides run alike.
pub const SESSION_MEMORY: &str = "set work_mem = '512MB'; set maintenance_work_mem = '512MB'";

/// Creates `bench_mv` with the contract's definition and its three indexes; returns seconds.
pub async fn create_mv(client: &Client, target: &Target, window: &Window) -> Result<f64> {
    let mv = target.rel(MV);
    let definition = definition(window).query(target, "");
    client
        .batch_execute(SESSION_MEMORY)
        .await
        .ctx("setting session memory")?;
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "drop materialized view if exists {mv};
             create materialized view {mv} as
             {definition}
             with data;
             create unique index bench_mv_trace_id on {mv} (trace_id);
             create index bench_mv_timestamp on {mv} (\"timestamp\" desc);
             create index bench_mv_service_timestamp on {mv} (root_service_name, \"timestamp\" desc);"
        ))
        .await
        .ctx("creating the materialized view bench_mv")?;
    let elapsed = t.elapsed().as_secs_f64();
    client
        .batch_execute(&format!("analyze {mv}"))
        .await
        .ctx("analyzing bench_mv")?;
    Ok(elapsed)
}

/// The contract's definition over `window`.
pub fn definition(window: &Window) -> Definition {
    Definition {
        window: window.clone(),
        error_rule: ErrorRule::NotOk,
    }
}

/// The memory a REFRESH runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// The server's defaults, as the seed's pg_cron job runs it.
    ServerDefaults,
    /// What `rebuild` sets for itself (`SESSION_MEMORY`).
    LikeRebuild,
}

/// `REFRESH MATERIALIZED VIEW [CONCURRENTLY] bench_mv`; returns seconds.
pub async fn refresh(
    client: &Client,
    target: &Target,
    concurrently: bool,
    memory: Memory,
) -> Result<f64> {
    client
        .batch_execute(match memory {
            Memory::ServerDefaults => "reset work_mem; reset maintenance_work_mem",
            Memory::LikeRebuild => SESSION_MEMORY,
        })
        .await
        .ctx("setting session memory")?;
    let how = if concurrently { "concurrently " } else { "" };
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "refresh materialized view {how}{}",
            target.rel(MV)
        ))
        .await
        .ctx("refreshing bench_mv")?;
    Ok(t.elapsed().as_secs_f64())
}

/// Installs otel_trace_summaries as a table in incremental mode (adding the stamp column, its
/// index and the triggers, and filling the table); returns seconds.
pub async fn install_incremental(
    client: &mut Client,
    target: &Target,
    window: &Window,
) -> Result<f64> {
    let plan = InstallPlan {
        mode: Mode::Incremental,
        def: definition(window),
        reader_roles: vec![],
        cron_schedule: "*/2 * * * *".into(),
        adopt: false,
    };
    let t = Instant::now();
    let report = install::install(client, target, &plan).await?;
    let elapsed = t.elapsed().as_secs_f64();
    for n in report.notices {
        say(format!("  install: {n}"));
    }
    scratch::prepare(&*client, target, &plan.def).await?;
    Ok(elapsed)
}

/// A full rebuild of the maintained table; returns seconds (including the work lock).
pub async fn rebuild(client: &mut Client, target: &Target) -> Result<f64> {
    let t = Instant::now();
    crate::maintain::rebuild::run(client, target, "bench", None, Method::Auto).await?;
    Ok(t.elapsed().as_secs_f64())
}

/// Runs one incremental step now, with bounds large enough to absorb everything at once (no
/// worker may be running); returns seconds and its stats.
pub async fn cycle_once(client: &mut Client, target: &Target) -> Result<(f64, StepStats)> {
    let t = Instant::now();
    let limits = Limits {
        max_spans: 100_000_000,
        max_traces: 100_000_000,
        check_backlog: false,
        refresh_when_cheaper: false,
    };
    match cycle::run(client, target, &limits, &Extras::default(), true).await? {
        Some(Outcome::Done(stats)) => Ok((t.elapsed().as_secs_f64(), stats)),
        Some(Outcome::NeedsRebuild(fallback)) => Err(Error::precondition(
            format!(
                "bench: the incremental cycle asked for a full refresh ({})",
                fallback.reason()
            ),
            "this should not happen on the bench's own database; please report it",
        )),
        None => unreachable!("run waits for the work lock"),
    }
}

/// Copies `spans` in (one COPY, one transaction, default created_at), then times one step
/// absorbing them; fails when the step absorbed another number of spans.
pub async fn absorb(
    client: &mut Client,
    target: &Target,
    spans: &[spangen::Span],
) -> Result<(f64, StepStats)> {
    spangen::copy_spans(&*client, target, spans).await?;
    let (s, stats) = cycle_once(client, target).await?;
    if stats.spans != spans.len() as i64 {
        return Err(Error::precondition(
            format!(
                "bench: a step absorbed {} spans where {} were inserted just before it",
                stats.spans,
                spans.len()
            ),
            "nothing else writes to the bench's database; please report it",
        ));
    }
    Ok((s, stats))
}

/// One incremental cycle absorbing a given number of new spans.
#[derive(Debug, Clone, Default)]
pub struct CycleRuns {
    pub new_spans: usize,
    pub seconds: Vec<f64>,
    /// Spans the cycle reported absorbing (should equal `new_spans`).
    pub absorbed: Vec<i64>,
    pub traces: Vec<i64>,
}

/// For each size: `repeat` times, insert that many new spans of new traces (one COPY, default
/// created_at), then time one step. Sizes are interleaved across repetitions.
pub async fn cycles(
    client: &mut Client,
    target: &Target,
    gen: &mut SpanGen,
    sizes: &[usize],
    repeat: usize,
) -> Result<Vec<CycleRuns>> {
    // Absorb anything pending, then one unrecorded warm-up cycle.
    cycle_once(client, target).await?;
    spangen::copy_spans(&*client, target, &fresh_spans(gen, 1_000)).await?;
    cycle_once(client, target).await?;
    let mut out: Vec<CycleRuns> = sizes
        .iter()
        .map(|&n| CycleRuns {
            new_spans: n,
            ..Default::default()
        })
        .collect();
    for r in 0..repeat {
        for runs in out.iter_mut() {
            let spans = fresh_spans(gen, runs.new_spans);
            let (s, stats) = absorb(client, target, &spans).await?;
            say(format!(
                "  cycle absorbing {} new spans ({} traces): {} (run {}/{repeat})",
                count(runs.new_spans as u64),
                stats.upserted,
                secs(s),
                r + 1
            ));
            runs.seconds.push(s);
            runs.absorbed.push(stats.spans);
            runs.traces.push(stats.upserted);
        }
    }
    Ok(out)
}
