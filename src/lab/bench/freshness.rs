//! Freshness under sustained ingest: a generator inserts batches of new traces every 100 ms at
//! a target rate (upstream-style multi-row INSERT ... ON CONFLICT DO NOTHING), and notes for each
//! batch the instant its commit returned and one of its trace_ids with that trace's span count.
//! A poller looks for those traces in otel_trace_summaries every 20 ms; freshness is the time
//! from commit to the poll that first saw the complete summary (so up to one poll pessimistic).
//! The worker runs throughout (started by `scale.rs`, caught up before each rate by
//! `worker_thread::wait_caught_up`).

use super::env::join_error;
use super::spans::fresh_spans;
use super::stats::{count, ms, percentile, say};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::lab::spangen::{self, Span, SpanGen};
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

/// The target: freshness p99 at this rate, with the worker's defaults (the report's targets
/// table and the chart's red line).
pub const FRESHNESS_RATE: u32 = 10_000;
pub const FRESHNESS_TARGET_MS: f64 = 250.0;

const BATCH_EVERY: Duration = Duration::from_millis(100);
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long the poller keeps looking after the generator stopped.
pub const DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct FreshnessRun {
    pub rate: u32,
    pub achieved: f64,
    pub batches: usize,
    /// Freshness of every batch in ms; unseen batches count as +inf.
    pub samples_ms: Vec<f64>,
    pub unseen: usize,
    pub insert_p50_ms: f64,
    pub insert_p99_ms: f64,
}

impl FreshnessRun {
    pub fn p50(&self) -> f64 {
        percentile(&self.samples_ms, 50.0)
    }
    pub fn p99(&self) -> f64 {
        percentile(&self.samples_ms, 99.0)
    }
    pub fn max(&self) -> f64 {
        self.samples_ms.iter().copied().fold(f64::NAN, f64::max)
    }
    /// The generator reached at least 95% of the target rate.
    pub fn kept_up(&self) -> bool {
        self.achieved >= 0.95 * self.rate as f64
    }
}

/// One freshness run at `rate` spans/s for `duration`, with the worker already running.
pub async fn measure(
    opts: &ConnectOptions,
    target: &Target,
    rate: u32,
    duration: Duration,
    gen: SpanGen,
) -> Result<FreshnessRun> {
    let gen_client = opts.connect().await?;
    let poll_client = opts.connect().await?;
    let pending: Arc<DashMap<String, (i64, Instant)>> = Arc::new(DashMap::new());
    let gen_done = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll(
        poll_client,
        target.summaries(),
        pending.clone(),
        gen_done.clone(),
    ));
    let generated = generate(&gen_client, target, rate, duration, gen, &pending).await;
    gen_done.store(true, Ordering::Relaxed);
    let polled = poller.await.map_err(join_error)?;
    let (achieved, batches, insert_ms) = generated?;
    let mut samples_ms = polled?;
    let unseen = pending.len();
    samples_ms.extend(std::iter::repeat_n(f64::INFINITY, unseen));
    let run = FreshnessRun {
        rate,
        achieved,
        batches,
        samples_ms,
        unseen,
        insert_p50_ms: percentile(&insert_ms, 50.0),
        insert_p99_ms: percentile(&insert_ms, 99.0),
    };
    say(format!(
        "  freshness at {} spans/s (achieved {:.0}): p50 {}, p99 {}, max {}{}",
        count(rate as u64),
        run.achieved,
        ms(run.p50()),
        ms(run.p99()),
        ms(run.max()),
        if unseen > 0 {
            format!(", {unseen} batches unseen after {} s", DRAIN.as_secs())
        } else {
            String::new()
        }
    ));
    Ok(run)
}

/// Inserts at `rate` for `duration`; returns the achieved rate, the batch count and the
/// insert round-trip times (ms).
async fn generate(
    client: &Client,
    target: &Target,
    rate: u32,
    duration: Duration,
    mut gen: SpanGen,
    pending: &DashMap<String, (i64, Instant)>,
) -> Result<(f64, usize, Vec<f64>)> {
    let per_tick = (rate as f64 * BATCH_EVERY.as_secs_f64()).ceil().max(1.0) as u64;
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut insert_ms = Vec::new();
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        // What is due by the end of this tick, at most three ticks' worth at once.
        let due = (rate as f64 * (elapsed + BATCH_EVERY).min(duration).as_secs_f64()) as u64;
        let want = due.saturating_sub(sent).min(per_tick * 3);
        if want == 0 {
            continue;
        }
        let spans = fresh_spans(&mut gen, want as usize);
        let (probe, expected) = probe_of(&spans);
        let t = Instant::now();
        spangen::insert_spans(client, target, &spans).await?;
        let committed = Instant::now();
        insert_ms.push((committed - t).as_secs_f64() * 1000.0);
        pending.insert(probe, (expected, committed));
        sent += spans.len() as u64;
    }
    let achieved = sent as f64 / started.elapsed().as_secs_f64().max(1e-3);
    Ok((achieved, insert_ms.len(), insert_ms))
}

/// The batch's first trace_id and how many of its spans the batch holds (all of them: the
/// generator never sends more spans for it).
fn probe_of(spans: &[Span]) -> (String, i64) {
    let id = spans[0].trace_id.clone();
    let n = spans.iter().filter(|s| s.trace_id == id).count() as i64;
    (id, n)
}

/// Polls for pending traces until the generator is done and all were seen, or `DRAIN` passed.
async fn poll(
    client: Client,
    summaries: String,
    pending: Arc<DashMap<String, (i64, Instant)>>,
    gen_done: Arc<AtomicBool>,
) -> Result<Vec<f64>> {
    let query = client
        .prepare(&format!(
            "select trace_id, span_count from {summaries} where trace_id = any($1)"
        ))
        .await
        .ctx("preparing the freshness poll")?;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let mut drain_from: Option<Instant> = None;
    loop {
        tick.tick().await;
        if gen_done.load(Ordering::Relaxed) {
            let since = *drain_from.get_or_insert_with(Instant::now);
            if pending.is_empty() || since.elapsed() > DRAIN {
                return Ok(samples);
            }
        }
        let ids: Vec<String> = pending.iter().map(|e| e.key().clone()).collect();
        if ids.is_empty() {
            continue;
        }
        let rows = client
            .query(&query, &[&ids])
            .await
            .ctx("polling otel_trace_summaries")?;
        let seen = Instant::now();
        for row in rows {
            let id: String = row.get(0);
            let span_count: i64 = row.get(1);
            let complete = pending.get(&id).is_some_and(|e| span_count >= e.0);
            if complete {
                if let Some((_, (_, committed))) = pending.remove(&id) {
                    samples.push((seen - committed).as_secs_f64() * 1000.0);
                }
            }
        }
    }
}
