//! Synthetic data for the bench: the initial load of N spans spread over the 7-day window
//! (generated on a blocking thread in chunks and streamed through binary COPY, so 10M spans
//! never sit in memory at once), the shape of the traces it holds (the report's "Data shape"),
//! and copies of its spans in other schemas (a plain table for the ingest comparison; the
//! never-analyzed copy in `never_analyzed.rs` uses `copy_spans`).

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

/// The columns of CONTRACT.md's otel_traces (copies name them: the product adds one of its own).
const SOURCE_COLUMNS: &str = "\"timestamp\", trace_id, span_id, parent_span_id, name, kind, \
     start_time_unix_nano, end_time_unix_nano, service_name, service_version, service_instance, \
     scope_name, scope_version, status_code, status_message, attributes, resource_attributes, \
     events, links, created_at";

/// Creates otel_traces and loads about `n` spans with history-like `created_at` values, traces
/// of `mean_spans` spans on average.
pub async fn load(
    client: &Client,
    target: &Target,
    n: u64,
    seed: u64,
    mean_spans: f64,
) -> Result<Loaded> {
    load_over(client, target, n, seed, mean_spans, 7).await
}

/// `load` with the spans spread over the last `days` days.
pub async fn load_over(
    client: &Client,
    target: &Target,
    n: u64,
    seed: u64,
    mean_spans: f64,
    days: i64,
) -> Result<Loaded> {
    spangen::create_source(client, target).await?;
    for index in SECONDARY_INDEXES {
        client
            .batch_execute(&format!("drop index if exists {}", target.rel(index)))
            .await
            .ctx("dropping indexes for the bulk load")?;
    }
    let (mut rx, producer) = history_chunks(seed, mean_spans, n, days, CHUNK);
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

/// Copies every span of `from` into `to` in one statement.
pub async fn copy_spans(client: &Client, from: &Target, to: &Target) -> Result<()> {
    client
        .batch_execute(&format!(
            "insert into {} ({SOURCE_COLUMNS}) select {SOURCE_COLUMNS} from {}",
            to.traces(),
            from.traces()
        ))
        .await
        .ctx("copying the spans")
}

/// A plain copy of `from`'s spans in `to` (a schema it creates): the same table, the same
/// indexes built after the copy, then VACUUM ANALYZE, and nothing of trace-summarizer's.
/// Returns seconds.
pub async fn plain_copy(client: &Client, from: &Target, to: &Target) -> Result<f64> {
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "create schema {}",
            crate::db::quote::ident(&to.schema)
        ))
        .await
        .ctx("creating the schema of the plain copy")?;
    spangen::create_source(client, to).await?;
    for index in SECONDARY_INDEXES {
        client
            .batch_execute(&format!("drop index if exists {}", to.rel(index)))
            .await
            .ctx("dropping indexes for the bulk copy")?;
    }
    copy_spans(client, from, to).await?;
    spangen::create_source(client, to).await?;
    client
        .batch_execute(&format!("vacuum (analyze) {}", to.traces()))
        .await
        .ctx("vacuuming the copy")?;
    Ok(t.elapsed().as_secs_f64())
}

/// Spans per trace in the loaded data (from the view's span_count right after it was created).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceShape {
    pub mean: f64,
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub max: i64,
}

/// The traces in `summaries` (the view, right after it was created: one row per trace) and
/// their shape.
pub async fn trace_shape(client: &Client, summaries: &str) -> Result<(i64, TraceShape)> {
    let shape = client
        .query_one(
            &format!(
                "select count(*), avg(span_count)::float8,
                        percentile_disc(0.5) within group (order by span_count),
                        percentile_disc(0.9) within group (order by span_count),
                        percentile_disc(0.99) within group (order by span_count),
                        max(span_count)
                 from {summaries}"
            ),
            &[],
        )
        .await
        .ctx("reading the shape of the traces")?;
    Ok((
        shape.get(0),
        TraceShape {
            mean: shape.get::<_, Option<f64>>(1).unwrap_or(f64::NAN),
            p50: shape.get::<_, Option<i64>>(2).unwrap_or(0),
            p90: shape.get::<_, Option<i64>>(3).unwrap_or(0),
            p99: shape.get::<_, Option<i64>>(4).unwrap_or(0),
            max: shape.get::<_, Option<i64>>(5).unwrap_or(0),
        },
    ))
}

/// `n` spans of the generator's history over the last `days` (new traces of `mean_spans` spans
/// on average), made on a blocking thread in chunks of `chunk`, two chunks ahead of the reader.
pub fn history_chunks(
    seed: u64,
    mean_spans: f64,
    n: u64,
    days: i64,
    chunk: usize,
) -> (
    tokio::sync::mpsc::Receiver<Vec<Span>>,
    tokio::task::JoinHandle<()>,
) {
    let now = Utc::now();
    let from = now - ChronoDuration::days(days);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Span>>(2);
    let producer = tokio::task::spawn_blocking(move || {
        let mut gen = SpanGen::with_mean_spans(seed, mean_spans);
        let mut made = 0u64;
        while made < n {
            let want = (n - made).min(chunk as u64) as usize;
            let part = gen.history(want, from, now, now);
            made += part.len() as u64;
            if tx.blocking_send(part).is_err() {
                break;
            }
        }
    });
    (rx, producer)
}
