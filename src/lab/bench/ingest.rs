//! Ingest cost: the time to insert a fixed number of new spans in small batches, the way
//! upstream's ingest does (multi-row INSERT ... ON CONFLICT DO NOTHING, one transaction per
//! batch). The spans are generated before the clock starts.

use super::load::fresh_spans;
use crate::db::source::Target;
use crate::error::Result;
use crate::lab::spangen::{self, SpanGen};
use std::time::Instant;
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

/// The three conditions measured, each `repeat` times (seconds per run).
#[derive(Debug, Clone, Default)]
pub struct IngestRuns {
    pub spans: usize,
    pub batch: usize,
    /// View mode: no created_at index, no worker (before install).
    pub view_mode: Vec<f64>,
    /// Incremental mode installed (created_at index), worker stopped.
    pub worker_stopped: Vec<f64>,
    /// Incremental mode with the worker running.
    pub worker_running: Vec<f64>,
}
