//! Ingest throughput with the product against without it: the time to insert a fixed number of
//! new spans in small batches, the way upstream's ingest does (multi-row INSERT ... ON CONFLICT
//! DO NOTHING, one transaction per batch), into
//! - otel_traces with the product installed (the stamp column, its index, the triggers) and the
//!   worker running (caught up first), and
//! - a plain copy of the same spans in another schema, nothing installed, no worker;
//! - and, to tell the two costs apart, otel_traces with the product installed but the worker
//!   stopped;
//!
//! in turn, several rounds, the order rotated every round. The plain table and the idle
//! installation take the same spans batch by batch, alternately (which one goes first alternates
//! too), each batch timed on its own: the machine's noise (a WAL flush that stalls, a checkpoint,
//! another process) falls on both alike, which whole runs one after the other cannot promise.
//! The spans are generated before the clock starts.

use super::spans::fresh_spans;
use super::stats::{count, median, say, secs};
use super::steps::cycle_once;
use super::worker_thread;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::Result;
use crate::lab::spangen::{self, SpanGen};
use crate::ops::worker::WorkerSettings;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Inserts `total` new spans in batches of `batch`; returns seconds.
pub async fn timed_inserts(
    client: &Client,
    target: &Target,
    gen: &mut SpanGen,
    total: usize,
    batch: usize,
) -> Result<f64> {
    let spans = fresh_spans(gen, total);
    let t = Instant::now();
    for chunk in spans.chunks(batch.max(1)) {
        spangen::insert_spans(client, target, chunk).await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Inserts the same `total` new spans into `a` and into `b`, batch by batch, alternately (`a`
/// first on even batches); returns the seconds spent on each.
pub async fn timed_inserts_alternating(
    client: &Client,
    a: &Target,
    b: &Target,
    gen: &mut SpanGen,
    total: usize,
    batch: usize,
) -> Result<(f64, f64)> {
    let spans = fresh_spans(gen, total);
    let (mut ta, mut tb) = (0.0, 0.0);
    for (i, chunk) in spans.chunks(batch.max(1)).enumerate() {
        let order = if i % 2 == 0 { [a, b] } else { [b, a] };
        for target in order {
            let t = Instant::now();
            spangen::insert_spans(client, target, chunk).await?;
            let s = t.elapsed().as_secs_f64();
            if std::ptr::eq(target, a) {
                ta += s;
            } else {
                tb += s;
            }
        }
    }
    Ok((ta, tb))
}

/// Seconds per round for each condition.
#[derive(Debug, Clone, Default)]
pub struct IngestRuns {
    pub spans: usize,
    pub batch: usize,
    /// The product installed, the worker running.
    pub with_product: Vec<f64>,
    /// The plain table, no worker.
    pub without: Vec<f64>,
    /// The product installed, the worker stopped.
    pub installed_idle: Vec<f64>,
}

impl IngestRuns {
    /// Throughput with the product ÷ without, from the median times.
    pub fn ratio(&self) -> f64 {
        median(&self.without) / median(&self.with_product)
    }
    /// Throughput with the product installed but no worker ÷ without: the median of the rounds'
    /// ratios (within a round their batches alternated).
    pub fn idle_ratio(&self) -> f64 {
        median(&self.idle_paired())
    }
    /// Installed (worker stopped) ÷ plain, round by round (their batches alternated).
    pub fn idle_paired(&self) -> Vec<f64> {
        self.per_round(&self.installed_idle)
    }
    /// The ratio round by round (the conditions of a round ran back to back).
    pub fn paired(&self) -> Vec<f64> {
        self.per_round(&self.with_product)
    }
    /// Plain-table time ÷ `times`, round by round.
    fn per_round(&self, times: &[f64]) -> Vec<f64> {
        self.without.iter().zip(times).map(|(w, p)| w / p).collect()
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn measure(
    opts: &ConnectOptions,
    main: &mut Client,
    client: &Client,
    product: &Target,
    plain: &Target,
    worker: &WorkerSettings,
    gen: &mut SpanGen,
    spans: usize,
    batch: usize,
    rounds: usize,
) -> Result<IngestRuns> {
    let mut out = IngestRuns {
        spans,
        batch,
        ..Default::default()
    };
    for i in 0..rounds {
        for k in 0..2 {
            if (i + k) % 2 == 0 {
                let mut running = worker_thread::start(opts.clone(), worker.clone())?;
                let timed = match worker_thread::wait_caught_up(
                    client,
                    product,
                    gen,
                    &mut running,
                    Duration::from_secs(300),
                )
                .await
                {
                    Ok(_) => timed_inserts(client, product, gen, spans, batch).await,
                    Err(e) => Err(e),
                };
                let checked = running.check();
                running.stop().await?;
                checked?;
                out.with_product.push(timed?);
            } else {
                let (without, idle) =
                    timed_inserts_alternating(client, plain, product, gen, spans, batch).await?;
                out.without.push(without);
                out.installed_idle.push(idle);
                // Absorb them now: a worker starting on this backlog could take a full refresh
                // for cheaper (at least 100k spans), which is not what this measures.
                cycle_once(main, product).await?;
            }
        }
        let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
        let (p, w, idle) = (
            last(&out.with_product),
            last(&out.without),
            last(&out.installed_idle),
        );
        say(format!(
            "  round {}/{rounds}: {} spans with the product and the worker {} ({:.0}/s), plain table {} ({:.0}/s), product installed, worker stopped {} ({:.0}/s)",
            i + 1,
            count(spans as u64),
            secs(p),
            spans as f64 / p,
            secs(w),
            spans as f64 / w,
            secs(idle),
            spans as f64 / idle
        ));
    }
    Ok(out)
}
