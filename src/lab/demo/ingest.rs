//! The demo's built-in ingest: new traces stamped near now at a steady rate, in small batches
//! every 100 ms with `INSERT … ON CONFLICT DO NOTHING` (as upstream ingests), plus about 2%
//! late spans: spans of traces that already exist, arriving seconds to hours after their
//! siblings.

use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::lab::spangen::{Span, SpanGen};
use crate::ops::shutdown::Shutdown;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const TICK: Duration = Duration::from_millis(100);
const LATE_SHARE: f64 = 0.02;
const RECENT: usize = 5_000;

/// Counters shared with the view.
#[derive(Default)]
pub struct Stats {
    pub spans: AtomicU64,
    pub late: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub spans: u64,
    pub late: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Stats {
    pub fn snapshot(&self) -> Totals {
        Totals {
            spans: self.spans.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// A few existing trace ids (from the loaded history), for late spans of old traces.
pub async fn sample_trace_ids(client: &Client, target: &Target) -> Result<Vec<String>> {
    let rows: i64 = client
        .query_one(
            "select coalesce(reltuples, 0)::int8 from pg_class where oid = to_regclass($1)",
            &[&target.traces()],
        )
        .await
        .ctx("estimating otel_traces")?
        .get(0);
    let pct = (100.0 * 4_000.0 / rows.max(1) as f64).clamp(0.001, 100.0);
    let sql = format!(
        "select distinct trace_id from {} tablesample bernoulli ({pct:.4}) limit 2000",
        target.traces()
    );
    let ids = client.query(&sql, &[]).await.ctx("sampling trace ids")?;
    Ok(ids.iter().map(|r| r.get(0)).collect())
}

pub struct Generator {
    pub opts: ConnectOptions,
    pub target: Target,
    /// Spans per second.
    pub rate: u32,
    pub sample: Vec<String>,
    pub stats: std::sync::Arc<Stats>,
}

impl Generator {
    /// Ingests until `stop` fires. Errors are counted and retried (reconnecting if needed).
    pub async fn run(self, stop: Shutdown) {
        let seed = Utc::now().timestamp_micros() as u64 ^ 0x5eed;
        let mut gen = SpanGen::new(seed);
        let mut recent: VecDeque<(String, DateTime<Utc>)> = VecDeque::with_capacity(RECENT);
        let mut client: Option<Client> = None;
        let mut owed = 0.0f64;
        let mut late_owed = 0.0f64;
        let mut last = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            // Owe spans for the time that passed; after a stall, catch up at most 2 s worth.
            owed =
                (owed + self.rate as f64 * (now - last).as_secs_f64()).min(self.rate as f64 * 2.0);
            last = now;
            if owed < 1.0 {
                continue;
            }
            let mut batch = self.new_spans(&mut gen, &mut recent, owed as usize);
            late_owed += batch.len() as f64 * LATE_SHARE;
            let mut late = 0u64;
            while late_owed >= 1.0 {
                late_owed -= 1.0;
                if let Some(s) = self.late_span(&mut gen, &recent) {
                    batch.push(s);
                    late += 1;
                }
            }
            owed -= batch.len() as f64;
            let dead = match &client {
                Some(c) => c.is_closed(),
                None => true,
            };
            if dead {
                client = self.opts.connect().await.map_err(|e| self.failed(e)).ok();
            }
            let Some(c) = client.as_ref() else { continue };
            match crate::lab::spangen::insert_spans(c, &self.target, &batch).await {
                Ok(n) => {
                    self.stats.spans.fetch_add(n, Ordering::Relaxed);
                    self.stats.late.fetch_add(late.min(n), Ordering::Relaxed);
                }
                Err(e) => self.failed(e),
            }
        }
    }

    fn failed(&self, e: crate::error::Error) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.stats.last_error.lock() {
            *last = Some(e.to_string());
        }
        tracing::warn!(error = %e, "demo ingest failed; retrying");
    }

    /// Whole new traces starting a moment ago, at least `n` spans in all.
    fn new_spans(
        &self,
        gen: &mut SpanGen,
        recent: &mut VecDeque<(String, DateTime<Utc>)>,
        n: usize,
    ) -> Vec<Span> {
        let mut out = Vec::with_capacity(n + 16);
        let now = Utc::now();
        while out.len() < n {
            // A span starts up to 2 s after its trace: start 2.5 s back so nothing is in the future.
            let start = now - ChronoDuration::milliseconds(2_000 + gen.rng().random_range(0..500));
            let spans = gen.trace(start, 0);
            if let Some(first) = spans.first() {
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back((first.trace_id.clone(), start));
            }
            out.extend(spans);
        }
        out
    }

    /// One span of an existing trace: half of them for a trace generated during the demo (its
    /// own start time, arriving late), half for a loaded trace, stamped minutes to hours ago.
    fn late_span(
        &self,
        gen: &mut SpanGen,
        recent: &VecDeque<(String, DateTime<Utc>)>,
    ) -> Option<Span> {
        let use_recent = self.sample.is_empty() || gen.rng().random_bool(0.5);
        let (trace_id, ts) = if use_recent {
            // The older half of the recent traces: their other spans went in a while ago.
            let older = recent.len() / 2;
            if older == 0 {
                return None;
            }
            let (id, start) = &recent[gen.rng().random_range(0..older)];
            (
                id.clone(),
                *start + ChronoDuration::milliseconds(gen.rng().random_range(0..2_000)),
            )
        } else {
            let id = self.sample[gen.rng().random_range(0..self.sample.len())].clone();
            let back = gen.rng().random_range(60..6 * 3_600);
            (id, Utc::now() - ChronoDuration::seconds(back))
        };
        let mut span = gen.trace(ts, 1).pop()?;
        span.trace_id = trace_id;
        span.parent_span_id = Some(format!("{:016x}", gen.rng().random::<u64>()));
        Some(span)
    }
}
