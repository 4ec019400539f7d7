//! The machine's ceiling and what the product keeps of it: several writers (connections of
//! multi-row INSERT … ON CONFLICT DO NOTHING, batches of 500, upstream's way) insert as fast as
//! they can for a fixed time, first into otel_traces with the product installed and its worker
//! (`trace-summarizer run`, default settings, a separate process) running, each batch's probe
//! trace polled in the summaries for freshness; then, the product uninstalled (by the caller),
//! into the same table plain. Each at 2 and at 4 writers, each run after a CHECKPOINT; the
//! ceiling is the best plain rate. The machine's ceiling does not depend much on the table's
//! size: it runs at the largest scale only.

use super::product_process::{self, ProductProcess};
use super::stats::{count, ms, percentile, say, share};
use super::stream::{self, Poller};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::Result;
use crate::lab::spangen::SpanGen;
use std::time::Duration;

/// The product's sustained rate ÷ the plain ceiling, and its freshness p99 then.
pub const CAPACITY_TARGET: f64 = 0.8;
pub const CAPACITY_FRESHNESS_MS: f64 = 1000.0;
/// How long the poller keeps looking after the writers stopped.
pub const DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct CapacityRun {
    pub writers: usize,
    pub spans: u64,
    pub seconds: f64,
    /// With the product: freshness of each batch's probe (ms; unseen ones infinite).
    pub freshness_ms: Vec<f64>,
    pub unseen: usize,
    pub worker_cpu_s: Option<f64>,
}

impl CapacityRun {
    pub fn rate(&self) -> f64 {
        self.spans as f64 / self.seconds.max(1e-9)
    }
    pub fn p99(&self) -> f64 {
        percentile(&self.freshness_ms, 99.0)
    }
    pub fn worker_share(&self) -> Option<f64> {
        self.worker_cpu_s.map(|w| w / self.seconds.max(1e-9))
    }
}

#[derive(Debug, Clone, Default)]
pub struct CapacityRuns {
    pub with_product: Vec<CapacityRun>,
    pub plain: Vec<CapacityRun>,
}

impl CapacityRuns {
    /// The best plain run (the ceiling).
    pub fn ceiling(&self) -> Option<&CapacityRun> {
        best(&self.plain)
    }
    /// The best run with the product.
    pub fn sustained(&self) -> Option<&CapacityRun> {
        best(&self.with_product)
    }
    pub fn ratio(&self) -> f64 {
        match (self.sustained(), self.ceiling()) {
            (Some(p), Some(c)) => p.rate() / c.rate(),
            _ => f64::NAN,
        }
    }
}

/// A CHECKPOINT before each run, so that none falls inside one run and not another.
async fn checkpoint(client: &tokio_postgres::Client) {
    let _ = client.batch_execute("checkpoint").await;
}

fn best(runs: &[CapacityRun]) -> Option<&CapacityRun> {
    runs.iter().max_by(|a, b| a.rate().total_cmp(&b.rate()))
}

/// With the product installed and its worker running: one run per writer count.
pub async fn with_product(
    opts: &ConnectOptions,
    target: &Target,
    writers: &[usize],
    run: Duration,
    mean: f64,
    seed: u64,
) -> Result<Vec<CapacityRun>> {
    let client = opts.connect().await?;
    let mut gen = SpanGen::with_mean_spans(seed, mean);
    let mut p = ProductProcess::start(opts, &[], "capacity")?;
    product_process::wait_caught_up(&client, target, &mut gen, &mut p, Duration::from_secs(600))
        .await?;
    let mut out = Vec::new();
    for (i, &w) in writers.iter().enumerate() {
        checkpoint(&client).await;
        let poller = Poller::start(opts, target.summaries()).await?;
        let w0 = p.cpu_s();
        let flood = stream::flood(
            opts,
            target,
            w,
            run,
            seed ^ ((i as u64 + 1) << 44),
            mean,
            Some(poller.pending.clone()),
        )
        .await?;
        let w1 = p.cpu_s();
        let (mut samples, unseen) = poller.finish(DRAIN).await?;
        samples.extend(std::iter::repeat_n(f64::INFINITY, unseen));
        p.check()?;
        let r = CapacityRun {
            writers: w,
            spans: flood.spans,
            seconds: flood.seconds,
            freshness_ms: samples,
            unseen,
            worker_cpu_s: w0.zip(w1).map(|(a, z)| z - a),
        };
        say(format!(
            "  with the product, {w} writers: {} spans/s, freshness p99 {}, worker process {} of a core",
            count(r.rate() as u64),
            ms(r.p99()),
            r.worker_share().map(share).unwrap_or_else(|| "n/a".into())
        ));
        out.push(r);
    }
    p.stop().await;
    Ok(out)
}

/// The plain table (nothing installed): one run per writer count.
pub async fn plain(
    opts: &ConnectOptions,
    target: &Target,
    writers: &[usize],
    run: Duration,
    mean: f64,
    seed: u64,
) -> Result<Vec<CapacityRun>> {
    let client = opts.connect().await?;
    let mut out = Vec::new();
    for (i, &w) in writers.iter().enumerate() {
        checkpoint(&client).await;
        let flood = stream::flood(
            opts,
            target,
            w,
            run,
            seed ^ ((i as u64 + 9) << 44),
            mean,
            None,
        )
        .await?;
        let r = CapacityRun {
            writers: w,
            spans: flood.spans,
            seconds: flood.seconds,
            ..Default::default()
        };
        say(format!(
            "  plain, {w} writers: {} spans/s",
            count(r.rate() as u64)
        ));
        out.push(r);
    }
    Ok(out)
}
