//! One function per subcommand: validate settings (exit 2 before any I/O on bad flags), open
//! the connection, call the library, print the result. Errors are printed once here, with the
//! program's name and the hint that says what to do.

use crate::cli::{Cli, Command, Mode};
use crate::db::connect::ConnectOptions;
use crate::db::source::{self, SummaryKind};
use crate::error::{Error, Result};
use crate::maintain::rebuild;
use crate::ops::metrics::{Health, Metrics};
use crate::ops::shutdown::Shutdown;
use crate::ops::{status, verify, worker};
use crate::{config, install, state};
use std::sync::Arc;

/// Runs the command and returns the process exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// Prints an error chain once, with a hint when there is one.
pub fn report(e: &Error) {
    let mut msg = format!("trace-summarizer: error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg += &format!(": {text}");
        }
        source = s.source();
    }
    if let Some(db) = match e {
        Error::Db { source, .. } | Error::Connect { source, .. } => source.as_db_error(),
        _ => None,
    } {
        if !msg.contains(db.message()) {
            msg += &format!(": {}", db.message());
        }
    }
    eprintln!("{msg}");
    if let Some(hint) = e.hint() {
        eprintln!("hint: {hint}");
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let g = cli.global;
    match cli.command {
        #[cfg(feature = "lab")]
        Command::Demo(args) => {
            return crate::lab::demo::run(g.database_url.as_deref(), g.schema.as_deref(), args)
                .await
                .map(|_| 0)
        }
        #[cfg(feature = "lab")]
        Command::Bench(args) => {
            return crate::lab::bench::run(g.database_url.as_deref(), args)
                .await
                .map(|_| 0)
        }
        _ => {}
    }
    let opts = ConnectOptions::parse(g.database_url.as_deref())?;
    match cli.command {
        Command::Install(args) => {
            let plan = install::InstallPlan {
                mode: args.mode,
                window: config::positive_duration("--window", &args.window)?,
                reader_roles: args.reader_roles.clone(),
                cron_schedule: args.cron_schedule.clone(),
            };
            let mut client = opts.connect().await?;
            let target = source::resolve(&client, g.schema.as_deref()).await?;
            let notices = install::install(&mut client, &target, &plan).await?;
            for n in notices {
                eprintln!("{n}");
            }
            let mode = if plan.mode == Mode::Mv {
                "materialized view (mv mode)"
            } else {
                "table (incremental mode)"
            };
            println!("installed {} as a {mode}", target.summaries());
            Ok(0)
        }
        Command::Uninstall => {
            let mut client = opts.connect().await?;
            let target = source::resolve(&client, g.schema.as_deref()).await?;
            let done = install::uninstall(&mut client, &target).await?;
            if done.is_empty() {
                println!("nothing to uninstall in schema {:?}", target.schema);
            }
            for d in done {
                println!("{d}");
            }
            Ok(0)
        }
        Command::Run(args) => {
            let cfg = worker::WorkerConfig {
                schema: g.schema.clone(),
                once: args.once,
                interval: config::positive_duration("--interval", &args.interval)?,
                reconcile_interval: config::positive_duration(
                    "--reconcile-interval",
                    &args.reconcile_interval,
                )?,
                statement_timeout: config::positive_duration(
                    "--statement-timeout",
                    &args.statement_timeout,
                )?,
            };
            let metrics = Metrics::new();
            let health = Arc::new(Health::default());
            health.tick();
            let live_max_age = (cfg.statement_timeout.as_secs() as i64).max(60) + 60;
            let _server = match args.listen {
                Some(addr) => Some(
                    crate::ops::http::serve(addr, metrics.clone(), health.clone(), live_max_age)
                        .await?,
                ),
                None => None,
            };
            let shutdown = Shutdown::install();
            worker::Worker::new(opts, cfg, metrics, health, shutdown)
                .run()
                .await?;
            Ok(0)
        }
        Command::Rebuild => {
            let mut client = opts.connect().await?;
            let target = source::resolve(&client, g.schema.as_deref()).await?;
            match source::summary_kind(&client, &target).await? {
                SummaryKind::MaterializedView => {
                    let started = std::time::Instant::now();
                    client
                        .batch_execute(&format!(
                            "refresh materialized view concurrently {}",
                            target.summaries()
                        ))
                        .await
                        .map_err(|source| Error::Db {
                            context: "refreshing the materialized view".into(),
                            source,
                        })?;
                    let secs = started.elapsed().as_secs_f64();
                    if state::load(&client, &target.schema).await?.is_some() {
                        client
                            .execute(
                                "update trace_summarizer.state set last_rebuild_at = clock_timestamp(), last_rebuild_ms = $2, last_rebuild_reason = 'manual' where target_schema = $1",
                                &[&target.schema, &(secs * 1000.0)],
                            )
                            .await
                            .map_err(|source| Error::Db { context: "recording the refresh".into(), source })?;
                    }
                    println!(
                        "refreshed materialized view {} concurrently in {secs:.2}s",
                        target.summaries()
                    );
                    Ok(0)
                }
                SummaryKind::Table => {
                    source::check_traces(&client, &target, true).await?;
                    if state::load(&client, &target.schema).await?.is_none() {
                        return Err(Error::precondition(
                            "otel_trace_summaries is a table that trace-summarizer did not install",
                            "run `trace-summarizer install --mode incremental` first",
                        ));
                    }
                    crate::maintain::recompute::prepare_session(&client).await?;
                    let stats =
                        rebuild::run(&mut client, &target, &target.summaries(), "manual").await?;
                    println!("{stats}");
                    Ok(0)
                }
                _ => Err(Error::precondition(
                    format!(
                        "otel_trace_summaries is not installed in schema {:?}",
                        target.schema
                    ),
                    "run `trace-summarizer install` first",
                )),
            }
        }
        Command::Status(args) => {
            let warn_after = config::duration("--warn-after", &args.warn_after)?;
            let stale_after = config::duration("--stale-after", &args.stale_after)?;
            if stale_after < warn_after {
                return Err(Error::Config(
                    "--stale-after must not be shorter than --warn-after".into(),
                ));
            }
            let client = opts.connect().await?;
            let target = source::resolve(&client, g.schema.as_deref()).await?;
            let mut st = status::collect(&client, &target, warn_after, stale_after).await?;
            st.reasons_for_verdict(warn_after, stale_after);
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st).expect("status serializes")
                );
            } else {
                print!("{}", st.render_text());
            }
            Ok(if st.verdict == status::Verdict::Stale {
                1
            } else {
                0
            })
        }
        Command::Verify(args) => {
            let scope = match (&args.sample, &args.since) {
                (Some(0), _) => return Err(Error::Config("--sample must be at least 1".into())),
                (Some(n), _) => verify::Scope::Sample(*n),
                (None, Some(d)) => verify::Scope::Since(config::positive_duration("--since", d)?),
                (None, None) => verify::Scope::Whole,
            };
            let mut client = opts.connect().await?;
            let target = source::resolve(&client, g.schema.as_deref()).await?;
            source::check_traces(&client, &target, false).await?;
            let report = verify::run(&mut client, &target, &scope, args.repair).await?;
            if report.mismatches == 0 {
                println!(
                    "verify ok: {} summaries equal the definition",
                    report.expected_rows
                );
                return Ok(0);
            }
            println!(
                "verify found {} differing trace(s) (of {} expected rows):",
                report.mismatches, report.expected_rows
            );
            for m in &report.first {
                println!("  {} {} {}", m.trace_id, m.kind, m.columns.join(","));
            }
            if report.repaired > 0 {
                println!("repaired {} trace(s)", report.repaired);
                Ok(0)
            } else {
                println!("run `trace-summarizer verify --repair` to fix them; the worker will also run a full refresh");
                Ok(1)
            }
        }
        #[cfg(feature = "lab")]
        Command::Demo(_) | Command::Bench(_) => unreachable!("handled above"),
    }
}
