//! Before the live run: the schema, the refusal to touch a user's data, the synthetic history
//! (7 days of spans, loaded with COPY in chunks, with a progress bar on a terminal), ANALYZE,
//! and the incremental install.

use super::fmt::thousands;
use crate::db::quote;
use crate::db::source::{self, SummaryKind, Target};
use crate::error::{DbContext, Error, Result};
use crate::install::{self, InstallPlan};
use crate::lab::spangen::SpanGen;
use crate::ops::shutdown::Shutdown;
use crate::state::Mode;
use chrono::{Duration as ChronoDuration, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The summary window the demo installs.
const CHUNK: u64 = 100_000;

/// The target schema, created when it does not exist yet.
pub async fn schema(client: &Client, schema: &str) -> Result<Target> {
    let exists = client
        .query_opt("select 1 from pg_namespace where nspname = $1", &[&schema])
        .await
        .ctx("looking up the schema")?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("create schema {}", quote::ident(schema)))
            .await
            .ctx("creating the schema")?;
    }
    source::resolve(client, Some(schema)).await
}

/// With `--database-url`: only an empty or absent otel_traces, and no summaries we did not
/// install, so the demo never mixes synthetic spans into real ones or replaces a user's view.
pub async fn check_user_database(client: &Client, target: &Target) -> Result<()> {
    let exists: bool = client
        .query_one("select to_regclass($1) is not null", &[&target.traces()])
        .await
        .ctx("looking for otel_traces")?
        .get(0);
    if exists {
        let has_rows: bool = client
            .query_one(
                &format!("select exists (select 1 from {})", target.traces()),
                &[],
            )
            .await
            .ctx("checking whether otel_traces is empty")?
            .get(0);
        if has_rows {
            return Err(Error::precondition(
                format!("{} already has rows; the demo loads synthetic spans and only into an empty table", target.traces()),
                "point --database-url at an empty database (or --schema at an unused schema), or run the demo without --database-url on a throwaway cluster",
            ));
        }
    }
    let kind = source::summary_kind(client, target).await?;
    let ours = crate::state::load(client, &target.schema).await?.is_some();
    if kind != SummaryKind::Absent && !ours {
        return Err(Error::precondition(
            format!("{} exists and was not installed by trace-summarizer", target.summaries()),
            "the demo never replaces an existing relation: use an empty database or another --schema",
        ));
    }
    Ok(())
}

/// What the load did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub spans: u64,
    pub seconds: f64,
}

/// Loads about `total` synthetic spans spread over the last 7 days, generating the next chunk
/// while the current one is copied. Stops early (between chunks) when `stop` fires.
pub async fn load(client: &Client, target: &Target, total: u64, stop: &Shutdown) -> Result<Loaded> {
    let started = Instant::now();
    let now = Utc::now();
    let from = now - ChronoDuration::days(7);
    println!(
        "demo: loading {} synthetic spans over the last 7 days into {}",
        thousands(total),
        target.traces()
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "loading spans [{bar:30}] {human_pos}/{human_len} ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let chunk = |mut gen: SpanGen, n: u64| {
        tokio::task::spawn_blocking(move || {
            let spans = gen.history(n as usize, from, now, now);
            (gen, spans)
        })
    };
    let seed = now.timestamp_micros() as u64;
    let mut next = (total > 0).then(|| chunk(SpanGen::new(seed), CHUNK.min(total)));
    let mut loaded = 0u64;
    let mut last_line = Instant::now();
    while let Some(handle) = next.take() {
        let (gen, spans) = handle
            .await
            .map_err(|e| Error::io("generating spans", std::io::Error::other(e.to_string())))?;
        let remaining = total.saturating_sub(loaded + spans.len() as u64);
        if remaining > 0 && !stop.requested() {
            next = Some(chunk(gen, CHUNK.min(remaining)));
        }
        let n = crate::lab::spangen::copy_spans(client, target, &spans).await?;
        loaded += n;
        match &bar {
            Some(b) => b.set_position(loaded.min(total)),
            None if last_line.elapsed() >= Duration::from_secs(5) || next.is_none() => {
                last_line = Instant::now();
                let rate = loaded as f64 / started.elapsed().as_secs_f64().max(1e-3);
                println!(
                    "demo: loaded {} of {} spans ({} spans/s)",
                    thousands(loaded),
                    thousands(total),
                    thousands(rate as u64)
                );
            }
            None => {}
        }
        if stop.requested() {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    client
        .batch_execute(&format!("analyze {}", target.traces()))
        .await
        .ctx("analyzing otel_traces")?;
    let seconds = started.elapsed().as_secs_f64();
    println!("demo: loaded {} spans in {seconds:.1} s", thousands(loaded));
    Ok(Loaded {
        spans: loaded,
        seconds,
    })
}

/// Installs incremental mode (the table, its indexes, the tailing index, the state).
pub async fn install(client: &mut Client, target: &Target) -> Result<()> {
    println!(
        "demo: installing otel_trace_summaries in incremental mode (building every summary once)"
    );
    let started = Instant::now();
    let plan = InstallPlan {
        mode: Mode::Incremental,
        def: crate::definition::Definition {
            window: crate::definition::Window::parse("--window", "7d")?,
            error_rule: crate::definition::ErrorRule::NotOk,
        },
        reader_roles: vec![],
        cron_schedule: "*/2 * * * *".into(),
        adopt: false,
        alter_publications: false,
        connect: None,
    };
    let report = install::install(client, target, &plan).await?;
    for notice in report.notices {
        println!("demo: {notice}");
    }
    let rows: i64 = client
        .query_one(&format!("select count(*) from {}", target.summaries()), &[])
        .await
        .ctx("counting summaries")?
        .get(0);
    println!(
        "demo: installed: {} trace summaries in {:.1} s",
        thousands(rows.max(0) as u64),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
