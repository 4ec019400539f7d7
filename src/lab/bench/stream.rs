//! Live ingest for the comparison and the capacity measure, upstream's way: multi-row INSERT …
//! ON CONFLICT DO NOTHING, one transaction per batch.
//!
//! - `steady`: one writer at a target rate, a batch every 100 ms, until stopped. Each batch
//!   is new traces stamped now plus late spans: 1% of the spans arrive late, as in the loaded
//!   history (`SpanGen::history`: 60 s to a day late), each joining an existing trace whose spans
//!   lie that far back (`LatePool`, sampled from otel_traces). Every batch's commit instant is
//!   logged, and with a poller one of its new traces (the probe) with that trace's span count.
//! - `flood`: several writers inserting as fast as they can for a fixed time (batches of 500).
//! - `Poller`: looks for probe traces in a summaries relation every 20 ms and records the time
//!   from commit to the poll that first saw the complete summary (as `freshness.rs` does).
//!
//! Statements carry a `/* bench … */` comment so that `pg_stat_statements` breakdowns can leave
//! them out.

use super::spans::fresh_spans;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::lab::spangen::{self, Span, SpanGen};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use dashmap::DashMap;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

pub const BATCH_EVERY: Duration = Duration::from_millis(100);
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// The share of spans that arrive late.
pub const LATE_SHARE: f64 = 0.01;
/// The comment that marks the bench's own statements.
pub const MARK: &str = "/* bench ingest */";

/// Existing spans late spans join: (trace_id, timestamp), 60 s to a day old when sampled.
#[derive(Debug, Clone, Default)]
pub struct LatePool {
    pub spans: Vec<(String, DateTime<Utc>)>,
}

impl LatePool {
    /// About 5,000 spans of otel_traces whose timestamps lie 60 s to a day back.
    pub async fn sample(client: &Client, target: &Target, total_spans: u64) -> Result<LatePool> {
        // The loaded spans lie uniformly over the window: a third of them in the last day.
        let pct = (15_000.0 / total_spans.max(1) as f64 * 100.0).clamp(0.01, 100.0);
        let rows = client
            .query(
                &format!(
                    "{MARK} select trace_id, \"timestamp\" from {} tablesample system ({pct})
                     where \"timestamp\" between now() - interval '1 day' and now() - interval '60 seconds'
                     limit 5000",
                    target.traces()
                ),
                &[],
            )
            .await
            .ctx("sampling spans for late arrivals")?;
        Ok(LatePool {
            spans: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        })
    }
}

/// One late span joining the trace of `(trace_id, at)`: a child span a moment after `at`.
fn late_span(gen: &mut SpanGen, trace_id: &str, at: DateTime<Utc>) -> Span {
    let offset = ChronoDuration::milliseconds(gen.rng().random_range(0..2_000));
    let parent: String = fresh_spans(gen, 1)[0].span_id.clone();
    let mut s = fresh_spans(gen, 1).remove(0);
    let shift = at + offset - s.timestamp;
    s.timestamp += shift;
    s.start_time_unix_nano = s
        .start_time_unix_nano
        .map(|n| n + shift.num_nanoseconds().unwrap_or(0));
    s.end_time_unix_nano = s
        .end_time_unix_nano
        .map(|n| n + shift.num_nanoseconds().unwrap_or(0));
    s.trace_id = trace_id.to_string();
    s.parent_span_id = Some(parent);
    s
}

/// What `steady` did.
#[derive(Debug, Clone, Default)]
pub struct SteadyLog {
    /// When each batch's commit returned.
    pub commits: Vec<Instant>,
    pub spans: u64,
    /// Each late span: when its batch committed, and its `timestamp`.
    pub late: Vec<(Instant, DateTime<Utc>)>,
    pub seconds: f64,
}

/// Inserts spans with the bench's mark (the same statement as `spangen::insert_spans`).
async fn insert(client: &Client, target: &Target, spans: &[Span]) -> Result<u64> {
    spangen::insert_spans_marked(client, target, spans, MARK).await
}

/// A writer running in the background (see `steady`); stopped by `finish`, aborted when
/// dropped.
pub struct Steady {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Result<SteadyLog>>>,
    /// Its connection's backend (the bench's own work).
    pub backend_pid: i32,
}

impl Steady {
    /// Stops the writer after its current batch and returns what it did.
    pub async fn finish(mut self) -> Result<SteadyLog> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.take() {
            Some(t) => t.await.map_err(join_error)?,
            None => Ok(SteadyLog::default()),
        }
    }
}

impl Drop for Steady {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Starts one writer at `rate` spans/s on a connection of its own, until `finish` (or `max`),
/// 1% of the spans late (from `late`, when it has any). Each commit goes to `pending` too (for
/// a `Poller`) when given.
pub async fn steady(
    opts: &ConnectOptions,
    target: &Target,
    rate: u32,
    max: Duration,
    gen: SpanGen,
    late: Arc<LatePool>,
    pending: Option<Arc<DashMap<String, (i64, Instant)>>>,
) -> Result<Steady> {
    let client = opts.connect().await?;
    let backend_pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .ctx("reading the writer's backend pid")?
        .get(0);
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(write_steadily(
        client,
        target.clone(),
        rate,
        max,
        gen,
        late,
        pending,
        stop.clone(),
    ));
    Ok(Steady {
        stop,
        task: Some(task),
        backend_pid,
    })
}

#[allow(clippy::too_many_arguments)]
async fn write_steadily(
    client: Client,
    target: Target,
    rate: u32,
    max: Duration,
    mut gen: SpanGen,
    late: Arc<LatePool>,
    pending: Option<Arc<DashMap<String, (i64, Instant)>>>,
    stop: Arc<AtomicBool>,
) -> Result<SteadyLog> {
    let per_tick = (rate as f64 * BATCH_EVERY.as_secs_f64()).ceil().max(1.0) as u64;
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut log = SteadyLog::default();
    let mut late_due = 0.0f64;
    while started.elapsed() < max && !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let target_sent = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
        let want = target_sent.saturating_sub(log.spans).min(per_tick * 3);
        if want == 0 {
            continue;
        }
        late_due += want as f64 * LATE_SHARE;
        let n_late = if late.spans.is_empty() {
            0
        } else {
            late_due.floor() as usize
        };
        late_due -= n_late as f64;
        let mut spans = fresh_spans(&mut gen, (want as usize).saturating_sub(n_late).max(1));
        let probe = spans[0].trace_id.clone();
        let probe_spans = spans.iter().filter(|s| s.trace_id == probe).count() as i64;
        let mut late_times = Vec::with_capacity(n_late);
        for _ in 0..n_late {
            let (id, at) = &late.spans[gen.rng().random_range(0..late.spans.len())];
            let s = late_span(&mut gen, id, *at);
            late_times.push(s.timestamp);
            spans.push(s);
        }
        insert(&client, &target, &spans).await?;
        let at = Instant::now();
        if let Some(p) = &pending {
            p.insert(probe, (probe_spans, at));
        }
        log.commits.push(at);
        log.late.extend(late_times.into_iter().map(|ts| (at, ts)));
        log.spans += spans.len() as u64;
    }
    log.seconds = started.elapsed().as_secs_f64();
    Ok(log)
}

/// What `flood` did.
#[derive(Debug, Clone, Default)]
pub struct FloodRun {
    pub spans: u64,
    pub seconds: f64,
}

/// Spans per batch of a flood writer.
pub const FLOOD_BATCH: usize = 500;

/// `writers` connections inserting batches of `FLOOD_BATCH` new spans as fast as they can for
/// `duration`; each batch's probe goes to `pending` when given. The spans are generated ahead
/// of the clock, a second's worth at a time per writer, off the async threads.
pub async fn flood(
    opts: &ConnectOptions,
    target: &Target,
    writers: usize,
    duration: Duration,
    seed: u64,
    mean_spans: f64,
    pending: Option<Arc<DashMap<String, (i64, Instant)>>>,
) -> Result<FloodRun> {
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = opts.connect().await?;
        let target = target.clone();
        let sent = sent.clone();
        let pending = pending.clone();
        tasks.push(tokio::spawn(async move {
            let mut gen = SpanGen::with_mean_spans(seed ^ ((w as u64 + 1) << 32), mean_spans);
            while started.elapsed() < duration {
                let (batches, g) = tokio::task::spawn_blocking(move || {
                    let batches: Vec<Vec<Span>> = (0..20)
                        .map(|_| fresh_spans(&mut gen, FLOOD_BATCH))
                        .collect();
                    (batches, gen)
                })
                .await
                .map_err(join_error)?;
                gen = g;
                for spans in batches {
                    if started.elapsed() >= duration {
                        break;
                    }
                    insert(&client, &target, &spans).await?;
                    let at = Instant::now();
                    if let Some(p) = &pending {
                        let id = spans[0].trace_id.clone();
                        let n = spans.iter().filter(|s| s.trace_id == id).count() as i64;
                        p.insert(id, (n, at));
                    }
                    sent.fetch_add(spans.len() as u64, Ordering::Relaxed);
                }
            }
            Ok::<(), Error>(())
        }));
    }
    let mut first_err = None;
    for t in tasks {
        match t.await.map_err(join_error) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(FloodRun {
        spans: sent.load(Ordering::Relaxed),
        seconds,
    })
}

/// Polls a summaries relation for pending probe traces every 20 ms; `start`, then `finish`.
pub struct Poller {
    pub pending: Arc<DashMap<String, (i64, Instant)>>,
    done: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Result<Vec<f64>>>>,
    /// The poll connection's backend (the bench's own work, left out of the database's cost).
    pub backend_pid: i32,
}

impl Poller {
    /// Starts polling `relation` on a connection of its own.
    pub async fn start(opts: &ConnectOptions, relation: String) -> Result<Poller> {
        let client = opts.connect().await?;
        let backend_pid: i32 = client
            .query_one("select pg_backend_pid()", &[])
            .await
            .ctx("reading the poller's backend pid")?
            .get(0);
        let pending: Arc<DashMap<String, (i64, Instant)>> = Arc::new(DashMap::new());
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(poll(client, relation, pending.clone(), done.clone()));
        Ok(Poller {
            pending,
            done,
            task: Some(task),
            backend_pid,
        })
    }

    /// Stops polling once every pending probe was seen or `drain` passed; returns the
    /// freshness of each probe seen (ms) and how many were never seen.
    pub async fn finish(mut self, drain: Duration) -> Result<(Vec<f64>, usize)> {
        let Some(task) = self.task.take() else {
            return Ok((Vec::new(), self.pending.len()));
        };
        let t = Instant::now();
        while !self.pending.is_empty() && t.elapsed() < drain && !task.is_finished() {
            tokio::time::sleep(POLL_EVERY).await;
        }
        self.done.store(true, Ordering::Relaxed);
        let samples = task.await.map_err(join_error)??;
        Ok((samples, self.pending.len()))
    }
}

impl Drop for Poller {
    /// On error paths: the poll stops with its owner.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn poll(
    client: Client,
    relation: String,
    pending: Arc<DashMap<String, (i64, Instant)>>,
    done: Arc<AtomicBool>,
) -> Result<Vec<f64>> {
    let query = client
        .prepare(&format!(
            "{MARK} select trace_id, span_count from {relation} where trace_id = any($1)"
        ))
        .await
        .ctx("preparing the freshness poll")?;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let ids: Vec<String> = pending.iter().map(|e| e.key().clone()).collect();
        if ids.is_empty() {
            continue;
        }
        let rows = client
            .query(&query, &[&ids])
            .await
            .ctx("polling the summaries")?;
        let seen = Instant::now();
        for row in rows {
            let id: String = row.get(0);
            let span_count: i64 = row.get(1);
            if pending.get(&id).is_some_and(|e| span_count >= e.0) {
                if let Some((_, (_, committed))) = pending.remove(&id) {
                    samples.push((seen - committed).as_secs_f64() * 1000.0);
                }
            }
        }
    }
    Ok(samples)
}

/// Maps a failed task to our error type.
fn join_error(e: tokio::task::JoinError) -> Error {
    Error::io(
        "a background task of the bench failed",
        std::io::Error::other(e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_spans_join_their_trace_at_its_time() {
        let mut gen = SpanGen::with_mean_spans(3, 12.0);
        let at = Utc::now() - ChronoDuration::hours(5);
        let s = late_span(&mut gen, "abc", at);
        assert_eq!(s.trace_id, "abc");
        assert!(s.timestamp >= at && s.timestamp < at + ChronoDuration::seconds(2));
        assert!(s.parent_span_id.as_deref().is_some_and(|p| !p.is_empty()));
    }
}
