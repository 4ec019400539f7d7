//! One function per subcommand: the settings are validated first (exit 2 before any I/O on bad
//! flags), then the connection is opened, the library called, the result printed. Errors are
//! printed once here, with the program's name and the hint that says what to do.

use crate::db::source::{self, SummaryKind, Target};
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::install::{self, InstallPlan};
use crate::maintain::parallel::Parallel;
use crate::maintain::rebuild::{self, Method};
use crate::ops::metrics::{Health, Metrics};
use crate::ops::shutdown::Shutdown;
use crate::ops::{status, verify, worker};
use crate::settings::{self, CommandSettings, Settings};
use crate::state;
use std::sync::Arc;

/// Runs the command and returns the process exit code.
pub async fn dispatch(cli: crate::cli::Cli) -> i32 {
    let result = match settings::from_cli(cli) {
        Ok(s) => run(s).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// Prints an error once: its whole chain on one line, then a `hint:` line when there is one.
pub fn report(e: &Error) {
    eprintln!("trace-summarizer: error: {}", e.chain());
    if let Some(hint) = e.hint() {
        eprintln!("hint: {hint}");
    }
}

async fn run(s: Settings) -> Result<i32> {
    let schema = s.schema().ok().flatten().map(str::to_string);
    match s.command {
        CommandSettings::Install {
            mode,
            window,
            error_rule,
            reader_roles,
            cron_schedule,
            adopt,
            alter_publications,
        } => {
            let plan = InstallPlan {
                mode,
                def: Definition { window, error_rule },
                reader_roles,
                cron_schedule,
                adopt,
                alter_publications,
                connect: Some(s.connect.clone()),
            };
            let mut client = s.connect.connect().await?;
            let target = source::resolve(&client, schema.as_deref()).await?;
            let report = install::install(&mut client, &target, &plan).await?;
            for n in &report.notices {
                eprintln!("{n}");
            }
            for c in &report.changes {
                println!("{c}");
            }
            let form = match mode {
                state::Mode::Mv => "materialized view (mv mode)",
                state::Mode::Incremental => "table (incremental mode)",
            };
            println!("installed {} as a {form}", target.summaries());
            Ok(0)
        }
        CommandSettings::Uninstall => {
            let mut client = s.connect.connect().await?;
            let target = source::resolve(&client, schema.as_deref()).await?;
            let done = install::uninstall(&mut client, &target, Some(&s.connect)).await?;
            if done.is_empty() {
                println!("nothing to uninstall in schema {:?}", target.schema);
            }
            for d in done {
                println!("{d}");
            }
            Ok(0)
        }
        CommandSettings::Run { worker, listen } => {
            let metrics = Metrics::new();
            let health = Arc::new(Health::default());
            health.tick();
            let live_max_age = (worker.statement_timeout.as_secs() as i64).max(60) + 60;
            let _server = match listen {
                Some(addr) => Some(
                    crate::ops::http::serve(addr, metrics.clone(), health.clone(), live_max_age)
                        .await?,
                ),
                None => None,
            };
            let handle = worker::Worker::start(
                s.connect.clone(),
                worker,
                metrics,
                health,
                Shutdown::install(),
            );
            handle.wait().await?;
            Ok(0)
        }
        CommandSettings::Rebuild { timeout, jobs } => {
            let mut client = s.connect.connect().await?;
            let target = source::resolve(&client, schema.as_deref()).await?;
            let parallel = Parallel {
                connect: s.connect.clone(),
                jobs,
            };
            rebuild_command(&mut client, &target, timeout, &parallel).await
        }
        CommandSettings::Status {
            json,
            warn_after,
            stale_after,
        } => {
            let client = s.connect.connect().await?;
            let target = source::resolve(&client, schema.as_deref()).await?;
            let mut st =
                status::collect(&client, &target, Some(&s.connect), warn_after, stale_after)
                    .await?;
            st.reasons_for_verdict(warn_after, stale_after);
            if json {
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
        CommandSettings::Verify { scope, repair } => {
            let mut client = s.connect.connect().await?;
            let target = source::resolve(&client, schema.as_deref()).await?;
            source::check_traces(&client, &target).await?;
            let report = verify::run(&mut client, &target, &scope, repair).await?;
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
        CommandSettings::Demo(args) => {
            crate::lab::demo::run(s.database_url.as_deref(), schema.as_deref(), args)
                .await
                .map(|_| 0)
        }
        #[cfg(feature = "lab")]
        CommandSettings::Bench(args) => crate::lab::bench::run(s.database_url.as_deref(), args)
            .await
            .map(|_| 0),
    }
}

/// `rebuild`: a full refresh of the table, or a concurrent refresh of the view.
async fn rebuild_command(
    client: &mut tokio_postgres::Client,
    target: &Target,
    timeout: Option<std::time::Duration>,
    parallel: &Parallel,
) -> Result<i32> {
    match source::summary_kind(&*client, target).await? {
        SummaryKind::MaterializedView => {
            let started = std::time::Instant::now();
            if let Some(t) = timeout {
                client
                    .batch_execute(&format!("set statement_timeout = {}", t.as_millis().max(1)))
                    .await
                    .ctx("setting the timeout")?;
            }
            client
                .batch_execute(&format!(
                    "refresh materialized view concurrently {}",
                    target.summaries()
                ))
                .await
                .ctx("refreshing the materialized view")?;
            let secs = started.elapsed().as_secs_f64();
            if state::load(&*client, &target.schema).await?.is_some() {
                state::record_refresh(&*client, &target.schema, secs * 1000.0).await?;
            }
            println!(
                "refreshed materialized view {} concurrently in {secs:.2}s",
                target.summaries()
            );
            Ok(0)
        }
        SummaryKind::Table => {
            source::check_traces(&*client, target).await?;
            if state::load(&*client, &target.schema).await?.is_none() {
                return Err(Error::precondition(
                    "otel_trace_summaries is a table that trace-summarizer did not install",
                    "run `trace-summarizer install --mode incremental` first",
                ));
            }
            let stats = rebuild::run(
                client,
                target,
                "manual",
                timeout,
                Method::Auto,
                Some(parallel),
            )
            .await?;
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
