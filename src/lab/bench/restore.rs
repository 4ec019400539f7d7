//! The restore section (`bench --parts restore`): upstream's major-version path, a dump of an
//! installation restored into a fresh cluster, PostgreSQL 15 → 15 and 15 → 18 (18's server
//! binaries from `lab::cluster::major_bindir`; that part is skipped, saying so, without them).
//!
//! The source is a cluster of its own. Its transaction ids are pushed ahead first, so that the
//! restored stamps lie ahead of a fresh server's ids, as those of a server that has run for a
//! while do. otel_traces is created empty and installed, then `n` spans are copied in (each
//! stamped by the column default, as ingest stamps them) and one step catches up. `pg_dump`
//! writes plain SQL and the source's `psql` restores it, as upstream's compose script does.
//!
//! On each target: the restore's time; the worker's first `run --once` (the full refresh
//! `foreign_state`, which moves the stamp space), timed until it is current again; then
//! `rebuild --jobs 1` on the same server, the single-connection full refresh the first step is
//! compared with; otel_traces' size after the restore and after the first step; the span rows
//! updated since the restore (`pg_stat_user_tables`); and `verify` after the first step.
//! Never fails the bench: an error is recorded.

use super::config::Settings;
use super::stats::{bytes, count, say, secs};
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::lab::bench::load::history_chunks;
use crate::lab::cluster::{self, Cluster, ClusterOptions};
use crate::lab::spangen;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// Transaction ids the source burns before loading.
const BURNED_XIDS: i64 = 200_000;
/// Days of history the spans lie in (inside the default 7-day window).
const HISTORY_DAYS: i64 = 2;
/// Spans per COPY.
const CHUNK: usize = 100_000;
/// The database's name, on the source and the targets.
const DB: &str = "bench_restore";

/// Everything the restore section measured.
#[derive(Debug, Clone, Default)]
pub struct RestoreRuns {
    /// Why it stopped before its end.
    pub error: Option<String>,
    pub spans: u64,
    pub load_s: f64,
    pub dump_s: f64,
    pub dump_bytes: u64,
    pub targets: Vec<RestoreTarget>,
    /// Targets that did not run, and why.
    pub skipped: Vec<String>,
}

/// One restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreTarget {
    pub label: String,
    pub major: u32,
    pub restore_s: f64,
    /// The worker's first step after the restore (a full refresh): until current again.
    pub first_step_s: f64,
    /// `rebuild --jobs 1` on the same server, after the first step.
    pub rebuild_s: f64,
    /// pg_table_size(otel_traces) after the restore, and after the first step.
    pub size_restored: i64,
    pub size_after: i64,
    /// Span rows updated since the restore.
    pub updated: i64,
    /// `verify` found the table equal to the definition after the first step.
    pub exact: bool,
    /// The stamp offset the first step set.
    pub stamp_offset: i64,
}

/// Runs the section at `settings.scales[0]` spans (at least 1M).
pub async fn measure(settings: &Settings) -> RestoreRuns {
    let n = settings.scales.first().copied().unwrap_or(1_000_000);
    let mut runs = RestoreRuns {
        spans: n,
        ..Default::default()
    };
    say(format!(
        "restore: {} spans dumped from PostgreSQL 15 and restored into 15 and 18",
        count(n)
    ));
    if let Err(e) = run(&mut runs, settings.spans_per_trace).await {
        say(format!("  the restore section stopped: {e}"));
        runs.error = Some(e.to_string());
    }
    runs
}

async fn run(runs: &mut RestoreRuns, mean_spans: f64) -> Result<()> {
    let source = Cluster::start(&ClusterOptions {
        durable: true,
        ..Default::default()
    })?;
    let tools = source.bindir().to_path_buf();
    for tool in ["pg_dump", "psql"] {
        if !source.has_tool(tool) {
            return Err(Error::Config(format!(
                "{} has no {tool}: the restore section needs PostgreSQL's client tools",
                tools.display()
            )));
        }
    }
    create_database(&source).await?;
    let url = source.url(DB);
    let client = connect(&url).await?;
    let target = Target::new("public");
    say("  burning transaction ids on the source, installing, loading");
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "do $$ begin for i in 1..{BURNED_XIDS} loop perform txid_current(); commit; end loop; end $$"
        ))
        .await
        .ctx("burning transaction ids")?;
    spangen::create_source(&client, &target).await?;
    cli(&url, &["install", "--mode", "incremental"])?;
    let (mut rx, producer) = history_chunks(4_242, mean_spans, runs.spans, HISTORY_DAYS, CHUNK);
    let mut loaded = 0u64;
    while let Some(chunk) = rx.recv().await {
        loaded += spangen::copy_spans(&client, &target, &chunk).await?;
    }
    producer
        .await
        .map_err(|e| Error::Config(format!("the span generator failed: {e}")))?;
    runs.spans = loaded;
    client
        .batch_execute("vacuum (analyze) otel_traces")
        .await
        .ctx("vacuuming otel_traces")?;
    cli(&url, &["run", "--once"])?;
    runs.load_s = t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
    let dump = dir.path().join("dump.sql");
    let t = Instant::now();
    tool(
        Command::new(tools.join("pg_dump"))
            .arg("--format=plain")
            .arg(format!("--file={}", dump.display()))
            .arg(format!("--dbname={url}")),
        "pg_dump",
    )?;
    runs.dump_s = t.elapsed().as_secs_f64();
    runs.dump_bytes = std::fs::metadata(&dump)
        .map_err(|e| Error::io("reading the dump's size", e))?
        .len();
    say(format!(
        "  {} spans loaded and caught up in {}; dump {} in {}",
        count(loaded),
        secs(runs.load_s),
        bytes(runs.dump_bytes as i64),
        secs(runs.dump_s)
    ));
    drop(client);
    drop(source);

    let mut targets: Vec<(String, Option<PathBuf>)> = vec![("15 → 15".into(), Some(tools.clone()))];
    match cluster::major_bindir(18) {
        Some(dir) => targets.push(("15 → 18".into(), Some(dir))),
        None => runs.skipped.push(
            "15 → 18: no PostgreSQL 18 server binaries (run scripts/pg-major.sh 18, or set TRACE_SUMMARIZER_PG18_BINDIR)"
                .into(),
        ),
    }
    for (label, bindir) in targets {
        let r = restore_into(&label, bindir, &tools, &dump).await?;
        say(format!(
            "  {label} (PostgreSQL {}): restored in {}; first step {}, rebuild --jobs 1 {} ({:.2}×); otel_traces {} → {}; {} rows updated; {}",
            r.major,
            secs(r.restore_s),
            secs(r.first_step_s),
            secs(r.rebuild_s),
            r.first_step_s / r.rebuild_s.max(1e-9),
            bytes(r.size_restored),
            bytes(r.size_after),
            r.updated,
            if r.exact { "exact" } else { "NOT exact" }
        ));
        runs.targets.push(r);
    }
    Ok(())
}

/// Restores `dump` into a fresh cluster of `bindir` and measures the first step.
async fn restore_into(
    label: &str,
    bindir: Option<PathBuf>,
    tools: &Path,
    dump: &Path,
) -> Result<RestoreTarget> {
    let cluster = Cluster::start(&ClusterOptions {
        durable: true,
        bindir,
        ..Default::default()
    })?;
    let mut r = RestoreTarget {
        label: label.to_string(),
        major: cluster.major()?,
        ..Default::default()
    };
    create_database(&cluster).await?;
    let url = cluster.url(DB);
    let t = Instant::now();
    tool(
        Command::new(tools.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-f"])
            .arg(dump),
        "psql restoring the dump",
    )?;
    r.restore_s = t.elapsed().as_secs_f64();
    let client = connect(&url).await?;
    // The restore's own writes checkpointed, so that the first step is not timed with them.
    client.batch_execute("checkpoint").await.ctx("checkpoint")?;
    r.size_restored = size(&client).await?;
    let updated_before = updated(&client).await?;

    let t = Instant::now();
    cli(&url, &["run", "--once"])?;
    r.first_step_s = t.elapsed().as_secs_f64();
    r.size_after = size(&client).await?;
    r.exact = Command::new(exe()?)
        .args(["--database-url", &url, "verify"])
        .output()
        .map_err(|e| Error::io("running verify", e))?
        .status
        .success();
    r.stamp_offset = client
        .query_one(
            "select stamp_offset from trace_summarizer.state where target_schema = 'public'",
            &[],
        )
        .await
        .ctx("reading the stamp offset")?
        .get(0);
    client.batch_execute("checkpoint").await.ctx("checkpoint")?;
    let t = Instant::now();
    cli(&url, &["rebuild", "--jobs", "1"])?;
    r.rebuild_s = t.elapsed().as_secs_f64();
    r.updated = updated(&client).await? - updated_before;
    Ok(r)
}

async fn create_database(cluster: &Cluster) -> Result<()> {
    connect(&cluster.url("postgres"))
        .await?
        .batch_execute(&format!("create database {DB}"))
        .await
        .ctx("creating the restore section's database")
}

async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .ctx("connecting to a restore cluster")?;
    tokio::spawn(conn);
    Ok(client)
}

async fn size(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("select pg_table_size('otel_traces')", &[])
        .await
        .ctx("measuring otel_traces")?
        .get(0))
}

/// Span rows updated in this database (the statistics, once the sessions' counts are flushed).
async fn updated(client: &Client) -> Result<i64> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(client
        .query_one(
            "select coalesce(sum(n_tup_upd), 0)::bigint from pg_stat_user_tables where relname = 'otel_traces'",
            &[],
        )
        .await
        .ctx("reading the statistics of otel_traces")?
        .get(0))
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("finding the trace-summarizer binary", e))
}

/// Runs this binary's `args` against `url`; an error carries its output.
fn cli(url: &str, args: &[&str]) -> Result<()> {
    tool(
        Command::new(exe()?)
            .args(["--database-url", url])
            .args(args),
        &format!("trace-summarizer {}", args.join(" ")),
    )
}

fn tool(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| Error::io(what.to_string(), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}
