//! The product idle: `trace-summarizer run --audit-period 0` (the audit off, every other setting
//! the default) on the comparison's database with no new spans, the window edge crossing at its
//! natural rate. After the worker caught up and settled, for a fixed time: the CPU of its
//! process (procfs) and of its backends (the database's client backends other than the
//! bench's, from the cluster's samples). The audit's own cost at its default period is the
//! audit measure's (`audit_cost.rs`).

use super::meter::{self, Meter};
use super::product_process::{self, ProductProcess};
use super::stats::{say, share};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::Result;
use crate::lab::spangen::SpanGen;
use std::time::Duration;

/// The share of a core the idle product may take (backends and process together).
pub const IDLE_TARGET: f64 = 0.005;

#[derive(Debug, Clone, Default)]
pub struct IdleRun {
    pub seconds: f64,
    pub worker_cpu_s: f64,
    pub backends_cpu_s: f64,
    /// The whole cluster less the bench's backend, for reference (includes the server's own
    /// background processes).
    pub cluster_cpu_s: f64,
}

impl IdleRun {
    /// Backends and process together, as a share of one core.
    pub fn share(&self) -> f64 {
        (self.worker_cpu_s + self.backends_cpu_s) / self.seconds.max(1e-9)
    }
    pub fn worker_share(&self) -> f64 {
        self.worker_cpu_s / self.seconds.max(1e-9)
    }
    pub fn backends_share(&self) -> f64 {
        self.backends_cpu_s / self.seconds.max(1e-9)
    }
}

pub async fn measure(
    opts: &ConnectOptions,
    target: &Target,
    meter: &Meter,
    duration: Duration,
    mut gen: SpanGen,
) -> Result<IdleRun> {
    let client = opts.connect().await?;
    let own = meter::backend_pid(&client).await?;
    let mut p = ProductProcess::start(opts, &["--audit-period", "0"], "idle")?;
    product_process::wait_caught_up(&client, target, &mut gen, &mut p, Duration::from_secs(600))
        .await?;
    // Let the worker settle into its idle checks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mark = meter.start().await?;
    let w0 = p.cpu_s();
    let mut backends = meter.other_backends(&[own]).await?;
    tokio::time::sleep(duration).await;
    let reading = meter.read(&mark, &[own]).await?;
    let w1 = p.cpu_s();
    backends.extend(meter.other_backends(&[own]).await?);
    backends.sort_unstable();
    backends.dedup();
    p.check()?;
    let run = IdleRun {
        seconds: reading.seconds,
        worker_cpu_s: w0.zip(w1).map(|(a, z)| z - a).unwrap_or(f64::NAN),
        backends_cpu_s: meter::spent(&mark, &reading, &backends),
        cluster_cpu_s: reading.cpu_s,
    };
    p.stop().await;
    say(format!(
        "  idle (audit off) for {:.0} s: {} of a core (process {}, backends {})",
        run.seconds,
        share(run.share()),
        share(run.worker_share()),
        share(run.backends_share())
    ));
    Ok(run)
}
