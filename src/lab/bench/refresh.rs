//! The full refresh, both ways, on the same data: the materialized view (`public.bench_mv`,
//! the seed's definition and indexes, refreshed CONCURRENTLY or plainly) against the
//! maintained table (`otel_trace_summaries`, installed in incremental mode by the library and
//! fully refreshed by `rebuild::run` on one connection and on two, as `rebuild --jobs 1` and
//! `--jobs 2` do), and the measure that interleaves them. Single incremental steps are in
//! `steps.rs`.

use super::stats::{say, secs};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::definition::{Definition, ErrorRule, Window};
use crate::error::{DbContext, Result};
use crate::install::{self, InstallPlan};
use crate::maintain::parallel::{Jobs, Parallel};
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
    create_mv_of(client, target, &definition(window)).await
}

/// `create_mv` with another definition (the comparison's: 3 days, error rule `error`).
pub async fn create_mv_of(client: &Client, target: &Target, def: &Definition) -> Result<f64> {
    let mv = target.rel(MV);
    let definition = def.query(target, "");
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
    install_incremental_of(client, target, &definition(window)).await
}

/// `install_incremental` with another definition: what `install --window <w> --error-rule <r>`
/// does.
pub async fn install_incremental_of(
    client: &mut Client,
    target: &Target,
    def: &Definition,
) -> Result<f64> {
    let plan = InstallPlan {
        mode: Mode::Incremental,
        def: def.clone(),
        reader_roles: vec![],
        cron_schedule: "*/2 * * * *".into(),
        adopt: false,
        alter_publications: false,
        connect: None,
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

/// A full refresh of the maintained table on this session only; returns seconds.
pub async fn rebuild_alone(client: &mut Client, target: &Target) -> Result<f64> {
    let t = Instant::now();
    crate::maintain::rebuild::run(client, target, "bench", None, Method::Auto, None).await?;
    Ok(t.elapsed().as_secs_f64())
}

/// A full refresh of the maintained table, as `rebuild --jobs <jobs>` runs it (helper
/// sessions connect with `opts`); returns seconds (including the work lock and connecting the
/// helpers).
pub async fn rebuild(
    client: &mut Client,
    opts: &ConnectOptions,
    target: &Target,
    jobs: u32,
) -> Result<f64> {
    let parallel = Parallel {
        connect: opts.clone(),
        jobs: Jobs::Exactly(jobs),
    };
    let t = Instant::now();
    crate::maintain::rebuild::run(client, target, "bench", None, Method::Auto, Some(&parallel))
        .await?;
    Ok(t.elapsed().as_secs_f64())
}

/// The full refreshes of one scale, `repeat` runs of each.
#[derive(Debug, Clone, Default)]
pub struct FullRefreshRuns {
    /// REFRESH CONCURRENTLY as the seed's pg_cron job runs it (the server's default memory).
    pub concurrently: Vec<f64>,
    /// REFRESH CONCURRENTLY with the memory `rebuild` gives itself.
    pub concurrently_mem: Vec<f64>,
    pub plain: Vec<f64>,
    /// `rebuild --jobs 1` and `rebuild --jobs 2`.
    pub rebuild_1: Vec<f64>,
    pub rebuild_2: Vec<f64>,
}

/// `repeat` times: REFRESH CONCURRENTLY (server defaults, and with rebuild's memory), plain
/// REFRESH, `rebuild --jobs 1` and `rebuild --jobs 2`, back to back, the order rotated every
/// repetition.
pub async fn measure(
    client: &mut Client,
    opts: &ConnectOptions,
    target: &Target,
    repeat: usize,
) -> Result<FullRefreshRuns> {
    let mut out = FullRefreshRuns::default();
    for i in 0..repeat {
        let [mut c, mut cm, mut p, mut b1, mut b2] = [f64::NAN; 5];
        // Rotate which goes first, so none always runs on the caches the others warmed.
        for k in 0..5 {
            match (i + k) % 5 {
                0 => c = refresh(client, target, true, Memory::ServerDefaults).await?,
                1 => cm = refresh(client, target, true, Memory::LikeRebuild).await?,
                2 => p = refresh(client, target, false, Memory::LikeRebuild).await?,
                3 => b1 = rebuild(client, opts, target, 1).await?,
                _ => b2 = rebuild(client, opts, target, 2).await?,
            }
        }
        say(format!(
            "  run {}/{repeat}: refresh concurrently {} (with rebuild's memory {}), plain refresh {}, rebuild --jobs 1 {}, --jobs 2 {}",
            i + 1,
            secs(c),
            secs(cm),
            secs(p),
            secs(b1),
            secs(b2)
        ));
        out.concurrently.push(c);
        out.concurrently_mem.push(cm);
        out.plain.push(p);
        out.rebuild_1.push(b1);
        out.rebuild_2.push(b2);
    }
    Ok(out)
}
