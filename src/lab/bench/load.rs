//! Synthetic data for the bench: the initial load of N spans spread over the 7-day window
//! (generated on a blocking thread in chunks and streamed through binary COPY, so 10M spans
//! never sit in memory at once), and batches of new spans stamped "now" for live ingest.

use super::env::join_error;
use super::stats::{count, say};
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::lab::spangen::{self, Span, SpanGen};
use chrono::{Duration as ChronoDuration, Utc};
use std::time::Instant;
use tokio_postgres::Client;

/// Spans generated and copied per chunk.
pub const CHUNK: usize = 200_000;

/// The secondary indexes of `sql/otel_traces.sql`, dropped during the bulk load and rebuilt by
/// running `create_source` again (its statements are `if not exists`).
const SECONDARY_INDEXES: [&str; 3] = [
    "otel_traces_timestamp_idx",
    "otel_traces_trace_id_idx",
    "otel_traces_service_timestamp_idx",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub spans: u64,
    pub copy_s: f64,
    pub index_s: f64,
    pub vacuum_s: f64,
}

/// Creates otel_traces and loads about `n` spans with history-like `created_at` values.
pub async fn load(client: &Client, target: &Target, n: u64, seed: u64) -> Result<Loaded> {
    spangen::create_source(client, target).await?;
    for index in SECONDARY_INDEXES {
        client
            .batch_execute(&format!("drop index if exists {}", target.rel(index)))
            .await
            .ctx("dropping indexes for the bulk load")?;
    }
    let now = Utc::now();
    let from = now - ChronoDuration::days(7);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Span>>(2);
    let producer = tokio::task::spawn_blocking(move || {
        let mut gen = SpanGen::new(seed);
        let mut made = 0u64;
        while made < n {
            let want = (n - made).min(CHUNK as u64) as usize;
            let chunk = gen.history(want, from, now, now);
            made += chunk.len() as u64;
            if tx.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut loaded = Loaded::default();
    let mut last_report = Instant::now();
    while let Some(chunk) = rx.recv().await {
        loaded.spans += spangen::copy_spans(client, target, &chunk).await?;
        if last_report.elapsed().as_secs() >= 10 || loaded.spans >= n {
            last_report = Instant::now();
            let rate = loaded.spans as f64 / started.elapsed().as_secs_f64().max(1e-3);
            say(format!(
                "  loaded {} of {} spans ({} spans/s)",
                count(loaded.spans),
                count(n),
                count(rate as u64)
            ));
        }
    }
    producer.await.map_err(join_error)?;
    loaded.copy_s = started.elapsed().as_secs_f64();

    say("  building the indexes of otel_traces");
    let t = Instant::now();
    spangen::create_source(client, target).await?;
    loaded.index_s = t.elapsed().as_secs_f64();

    say("  vacuum (analyze) otel_traces, then checkpoint");
    let t = Instant::now();
    client
        .batch_execute(&format!("vacuum (analyze) {}", target.traces()))
        .await
        .ctx("vacuuming otel_traces")?;
    loaded.vacuum_s = t.elapsed().as_secs_f64();
    // Start the measurements without a pending checkpoint of the load. Needs superuser or
    // pg_checkpoint; without it the measurements only get noisier.
    if let Err(e) = client.batch_execute("checkpoint").await {
        say(format!("  (checkpoint skipped: {e})"));
    }
    Ok(loaded)
}

/// `n` new spans of new traces starting now, with `created_at` left to the column default.
/// The last trace may be cut short so the count is exact.
pub fn fresh_spans(gen: &mut SpanGen, n: usize) -> Vec<Span> {
    let mut out = Vec::with_capacity(n);
    let now = Utc::now();
    while out.len() < n {
        let mut trace = gen.trace(now, 0);
        trace.truncate(n - out.len());
        out.extend(trace);
    }
    out
}
