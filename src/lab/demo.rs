//! `demo`: the README's first command. Starts a throwaway PostgreSQL (or uses an empty
//! `--database-url`), loads synthetic spans over the last 7 days, installs incremental mode,
//! then runs the worker in-process while a built-in generator keeps ingesting (with late
//! spans), showing ingest rate, lag and the latest traces live. On Ctrl-C or after
//! `--duration` it stops everything cleanly, checks the table against its definition and
//! prints a summary. DATABASE_URL from the environment alone is ignored: only an explicit
//! `--database-url` (of an empty database) receives synthetic spans.
//!
//! Submodules: `signals` (Ctrl-C/SIGTERM), `prepare` (checks, load, install), `ingest` (the
//! generator), `view` (live view and summary lines), `term` (terminal helpers), `fmt`
//! (number formatting).

mod fmt;
mod ingest;
mod prepare;
mod signals;
mod term;
mod view;

use crate::cli::DemoArgs;
use crate::db::connect::ConnectOptions;
use crate::db::source::{self, Target};
use crate::error::{Error, Result};
use crate::lab::cluster::{Cluster, ClusterOptions};
use crate::ops::metrics::{Health, Metrics};
use crate::ops::shutdown::Shutdown;
use crate::ops::worker::{Worker, WorkerSettings};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the demo's data lives.
struct Place {
    url: String,
    /// True when the database is the user's (`--database-url`), not a throwaway cluster.
    user_database: bool,
}

pub async fn run(url: Option<&str>, schema: Option<&str>, args: DemoArgs) -> Result<()> {
    let duration = args
        .duration
        .as_deref()
        .map(|d| crate::settings::positive_duration("--duration", d))
        .transpose()?;
    let schema = schema.unwrap_or("public").to_string();
    let from_env =
        url.is_some() && std::env::var("DATABASE_URL").ok().as_deref() == url && !url_flag_given();
    let url = if from_env { None } else { url };
    if from_env {
        println!("demo: ignoring DATABASE_URL from the environment (the demo loads synthetic spans); pass --database-url to run it in that database");
    }
    let stop = signals::listen(args.keep)?;

    let cluster = match url {
        Some(_) => None,
        None => {
            println!("demo: starting a throwaway PostgreSQL cluster");
            let c = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
                .await
                .map_err(|e| {
                    Error::io("starting PostgreSQL", std::io::Error::other(e.to_string()))
                })??;
            signals::set_cluster(c.bindir(), &c.data_dir());
            Some(c)
        }
    };
    let place = match (&cluster, url) {
        (Some(c), _) => Place {
            url: c.url("postgres"),
            user_database: false,
        },
        (None, Some(u)) => Place {
            url: u.to_string(),
            user_database: true,
        },
        (None, None) => return Err(Error::Config("demo: no database".into())),
    };
    let result = session(&place, &schema, &args, duration, &stop).await;
    if let Some(c) = cluster {
        signals::clear_cluster();
        if args.keep {
            print_kept(&place.url, c);
        } else {
            drop(c);
            println!("demo: removed the throwaway cluster (pass --keep to keep it)");
        }
    }
    result
}

/// Whether `--database-url` is on the command line. DATABASE_URL alone (exported for real
/// use, as the README shows) must not send synthetic spans into that database.
fn url_flag_given() -> bool {
    std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--database-url" || a.starts_with("--database-url=")
    })
}

/// Everything after the database is reachable: load, install, live run, verify.
async fn session(
    place: &Place,
    schema: &str,
    args: &DemoArgs,
    duration: Option<Duration>,
    stop: &Shutdown,
) -> Result<()> {
    let opts = ConnectOptions::parse(Some(&place.url))?;
    let mut client = opts.connect().await?;
    let target = prepare::schema(&client, schema).await?;
    if place.user_database {
        prepare::check_user_database(&client, &target).await?;
        println!(
            "demo: warning: loading synthetic spans into {} in {} (created if absent)",
            target.traces(),
            opts.target()
        );
    }
    source_ready(&client, &target).await?;
    let loaded = prepare::load(&client, &target, args.spans, stop).await?;
    if stop.requested() {
        println!("demo: stopped during the load");
        return Ok(());
    }
    prepare::install(&mut client, &target).await?;
    if stop.requested() {
        println!("demo: stopped after install");
        return Ok(());
    }
    let outcome = live(place, &opts, &target, args, duration, stop).await?;
    println!("demo: checking that otel_trace_summaries equals its definition (recomputing every summary)");
    let started = Instant::now();
    let report = crate::ops::verify::run(
        &mut client,
        &target,
        &crate::ops::verify::Scope::Whole,
        false,
    )
    .await?;
    view::print_summary(&loaded, &outcome, &report, started.elapsed());
    if place.user_database {
        println!(
            "demo: the synthetic spans stay in {}; remove them with `trace-summarizer uninstall` (same --database-url and --schema) and `drop table {}`",
            target.traces(),
            target.traces()
        );
    }
    if report.mismatches > 0 {
        return Err(Error::precondition(
            format!(
                "verify found {} mismatching summaries after the demo",
                report.mismatches
            ),
            "this is a bug in trace-summarizer: please report it with the output above",
        ));
    }
    Ok(())
}

async fn source_ready(client: &tokio_postgres::Client, target: &Target) -> Result<()> {
    crate::lab::spangen::create_source(client, target).await?;
    source::check_traces(client, target).await
}

/// The live phase: worker and generator run until Ctrl-C, `--duration` or a worker failure.
async fn live(
    place: &Place,
    opts: &ConnectOptions,
    target: &Target,
    args: &DemoArgs,
    duration: Option<Duration>,
    stop: &Shutdown,
) -> Result<view::Outcome> {
    // Everything that can fail before anything runs in the background.
    let status_client = opts.connect().await?;
    let sample = ingest::sample_trace_ids(&status_client, target).await?;
    let on_terminal = std::io::stdout().is_terminal();
    // On a terminal the worker's log lines would scroll the live view away: send them to a
    // file while it runs.
    let redirect = if on_terminal && std::io::stderr().is_terminal() {
        term::StderrToFile::start()
    } else {
        None
    };
    let metrics = Metrics::new();
    let health = Arc::new(Health::default());
    health.tick();
    let (worker_tx, worker_stop) = Shutdown::manual();
    let cfg = WorkerSettings {
        schemas: vec![target.schema.clone()],
        ..WorkerSettings::default()
    };
    let handle = Worker::start(opts.clone(), cfg, metrics.clone(), health, worker_stop);
    let worker_task = tokio::spawn(async move { handle.wait().await });
    let schema_metrics = metrics.for_schema(&target.schema);
    // Ingest starts once the worker has caught up with the install, so the lag shown is the
    // lag under live ingest, not the install's duration.
    first_cycle(&schema_metrics, &worker_task, stop).await;

    let stats = Arc::new(ingest::Stats::default());
    let (gen_tx, gen_stop) = Shutdown::manual();
    let generator = ingest::Generator {
        opts: opts.clone(),
        target: target.clone(),
        rate: args.rate,
        sample,
        stats: stats.clone(),
    };
    let gen_task = tokio::spawn(generator.run(gen_stop));

    let screen = view::Screen {
        on_terminal,
        url: place.url.clone(),
        rate: args.rate,
        duration,
        log_path: redirect.as_ref().map(|r| r.path().to_path_buf()),
    };
    let watched = view::watch(
        &screen,
        &status_client,
        target,
        &stats,
        &metrics,
        &schema_metrics,
        stop,
        &worker_task,
    )
    .await;

    // Stop the generator first, then the worker (which cancels its running cycle).
    let _ = gen_tx.send(true);
    let _ = gen_task.await;
    let _ = worker_tx.send(true);
    let worker_result = match worker_task.await {
        Ok(r) => r,
        Err(e) => Err(Error::io(
            "the worker task",
            std::io::Error::other(e.to_string()),
        )),
    };
    let log_path = redirect.as_ref().map(|r| r.path().to_path_buf());
    drop(redirect);
    if on_terminal {
        println!();
    }
    worker_result?;
    Ok(view::Outcome {
        watched,
        ingest: stats.snapshot(),
        metrics: view::MetricTotals::read(&metrics, &schema_metrics),
        log_path,
    })
}

/// Waits (at most a minute) until the worker has finished a cycle or a refresh, stopped, or a
/// signal came.
async fn first_cycle(
    metrics: &crate::ops::metrics::SchemaMetrics,
    worker: &tokio::task::JoinHandle<Result<()>>,
    stop: &Shutdown,
) {
    let started = Instant::now();
    while metrics.last_success_timestamp_seconds.get() <= 0.0
        && !worker.is_finished()
        && !stop.requested()
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--keep`: leave the server running and say how to use and stop it.
fn print_kept(url: &str, cluster: Cluster) {
    let bindir = cluster.bindir().to_path_buf();
    let root = cluster.keep();
    let stop = format!(
        "{} -D {} stop",
        bindir.join("pg_ctl").display(),
        root.join("data").display()
    );
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let stop = if as_root {
        format!("runuser -u postgres -- {stop}")
    } else {
        stop
    };
    println!(
        "demo: kept the cluster in {} (still running)",
        root.display()
    );
    println!("  connect:     psql '{url}'");
    println!("  keep it current: trace-summarizer --database-url '{url}' run");
    println!("  stop it:     {stop}");
    println!("  then remove: rm -rf {}", root.display());
}
