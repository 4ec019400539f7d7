//! A step whose cost must not depend on how large a trace is: a step absorbing 100 new spans
//! of an existing 100k-span trace against a step absorbing the 100 spans of a new trace,
//! interleaved, and the big trace's summary checked at the end.

use super::stats::{count, median, say, secs};
use super::steps::{absorb, cycle_once};
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::lab::spangen::{Span, SpanGen};
use chrono::Utc;
use tokio_postgres::Client;

/// 100 spans into a 100k-span trace, and 100 spans of a new trace.
#[derive(Debug, Clone, Default)]
pub struct BigTraceRuns {
    pub big_spans: usize,
    pub new_spans: usize,
    /// The step that absorbed the whole big trace (once).
    pub first_s: f64,
    pub into_big: Vec<f64>,
    pub new_trace: Vec<f64>,
    /// The big trace's span_count in the summaries at the end, and what it should be.
    pub final_count: i64,
    pub expected_count: i64,
}

/// A new trace of `big_spans` spans in one step, then `pairs` times, alternately: `new_spans`
/// more spans of it, one step; `new_spans` spans of a new trace, one step.
pub async fn measure(
    client: &mut Client,
    target: &Target,
    gen: &mut SpanGen,
    big_spans: usize,
    new_spans: usize,
    pairs: usize,
) -> Result<BigTraceRuns> {
    cycle_once(client, target).await?;
    let big = gen.trace(Utc::now(), big_spans);
    let id = big[0].trace_id.clone();
    let (first_s, _) = absorb(client, target, &big).await?;
    say(format!(
        "  a new trace of {} spans absorbed in one step: {}",
        count(big_spans as u64),
        secs(first_s)
    ));
    let mut out = BigTraceRuns {
        big_spans,
        new_spans,
        first_s,
        expected_count: big_spans as i64,
        ..Default::default()
    };
    // Warm-up of the small step.
    absorb(client, target, &gen.trace(Utc::now(), new_spans)).await?;
    for i in 0..pairs {
        for big_first in [i % 2 == 0, i % 2 == 1] {
            if big_first {
                let more = more_of(gen, &big, new_spans);
                let (s, _) = absorb(client, target, &more).await?;
                out.into_big.push(s);
                out.expected_count += new_spans as i64;
            } else {
                let (s, _) = absorb(client, target, &gen.trace(Utc::now(), new_spans)).await?;
                out.new_trace.push(s);
            }
        }
    }
    say(format!(
        "  {} spans into the {}-span trace: {}; {} spans of a new trace: {} (medians of {pairs})",
        new_spans,
        count(big_spans as u64),
        secs(median(&out.into_big)),
        new_spans,
        secs(median(&out.new_trace)),
    ));
    out.final_count = client
        .query_opt(
            &format!(
                "select span_count from {} where trace_id = $1",
                target.summaries()
            ),
            &[&id],
        )
        .await
        .ctx("reading the big trace's summary")?
        .map(|r| r.get(0))
        .unwrap_or(-1);
    if out.final_count != out.expected_count {
        return Err(Error::precondition(
            format!(
                "bench: the {}-span trace's summary counts {} spans, {} were inserted",
                big_spans, out.final_count, out.expected_count
            ),
            "the summaries are wrong; please report it",
        ));
    }
    Ok(out)
}

/// `n` new spans of the trace `big`: children of its spans, stamped now.
fn more_of(gen: &mut SpanGen, big: &[Span], n: usize) -> Vec<Span> {
    let mut more = gen.trace(Utc::now(), n);
    for (k, s) in more.iter_mut().enumerate() {
        s.trace_id = big[0].trace_id.clone();
        s.parent_span_id = Some(big[(k * 7919) % big.len()].span_id.clone());
    }
    more
}
