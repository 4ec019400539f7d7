//! Single incremental steps, as the worker runs them: `cycle_once` (one step with bounds large
//! enough to take everything) and `absorb` (insert spans, then one step that must absorb
//! exactly them), which the other step measures (never-analyzed, huge trace, ingest, equality)
//! use too; and the steps measure: new traces of several sizes, one step each.

use super::spans::fresh_spans;
use super::stats::{count, say, secs};
use crate::db::source::Target;
use crate::db::statements::Statements;
use crate::error::{Error, Result};
use crate::lab::spangen::{self, SpanGen};
use crate::maintain::cycle::{self, Extras, Limits, Outcome, StepStats};
use std::time::Instant;
use tokio_postgres::Client;

/// Runs one incremental step now, with bounds large enough to absorb everything at once (no
/// worker may be running); returns seconds and its stats.
pub async fn cycle_once(client: &mut Client, target: &Target) -> Result<(f64, StepStats)> {
    let t = Instant::now();
    let limits = Limits {
        max_spans: 100_000_000,
        max_traces: 100_000_000,
        check_backlog: false,
        refresh_when_cheaper: false,
    };
    match cycle::run(
        client,
        &Statements::new(),
        target,
        &limits,
        &Extras::default(),
        true,
    )
    .await?
    {
        Some(Outcome::Done(stats)) => Ok((t.elapsed().as_secs_f64(), stats)),
        Some(Outcome::NeedsRebuild(fallback)) => Err(Error::precondition(
            format!(
                "bench: the incremental cycle asked for a full refresh ({})",
                fallback.reason()
            ),
            "this should not happen on the bench's own database; please report it",
        )),
        None => unreachable!("run waits for the work lock"),
    }
}

/// Copies `spans` in (one COPY, one transaction, default created_at), then times one step
/// absorbing them; fails when the step absorbed another number of spans.
pub async fn absorb(
    client: &mut Client,
    target: &Target,
    spans: &[spangen::Span],
) -> Result<(f64, StepStats)> {
    spangen::copy_spans(&*client, target, spans).await?;
    let (s, stats) = cycle_once(client, target).await?;
    if stats.spans != spans.len() as i64 {
        return Err(Error::precondition(
            format!(
                "bench: a step absorbed {} spans where {} were inserted just before it",
                stats.spans,
                spans.len()
            ),
            "nothing else writes to the bench's database; please report it",
        ));
    }
    Ok((s, stats))
}

/// One incremental cycle absorbing a given number of new spans.
#[derive(Debug, Clone, Default)]
pub struct CycleRuns {
    pub new_spans: usize,
    pub seconds: Vec<f64>,
    /// Spans the cycle reported absorbing (should equal `new_spans`).
    pub absorbed: Vec<i64>,
    pub traces: Vec<i64>,
}

/// For each size: `repeat` times, insert that many new spans of new traces (one COPY, default
/// created_at), then time one step. Sizes are interleaved across repetitions.
pub async fn measure(
    client: &mut Client,
    target: &Target,
    gen: &mut SpanGen,
    sizes: &[usize],
    repeat: usize,
) -> Result<Vec<CycleRuns>> {
    // Absorb anything pending, then one unrecorded warm-up cycle.
    cycle_once(client, target).await?;
    spangen::copy_spans(&*client, target, &fresh_spans(gen, 1_000)).await?;
    cycle_once(client, target).await?;
    let mut out: Vec<CycleRuns> = sizes
        .iter()
        .map(|&n| CycleRuns {
            new_spans: n,
            ..Default::default()
        })
        .collect();
    for r in 0..repeat {
        for runs in out.iter_mut() {
            let spans = fresh_spans(gen, runs.new_spans);
            let (s, stats) = absorb(client, target, &spans).await?;
            say(format!(
                "  cycle absorbing {} new spans ({} traces): {} (run {}/{repeat})",
                count(runs.new_spans as u64),
                stats.upserted,
                secs(s),
                r + 1
            ));
            runs.seconds.push(s);
            runs.absorbed.push(stats.spans);
            runs.traces.push(stats.upserted);
        }
    }
    Ok(out)
}
