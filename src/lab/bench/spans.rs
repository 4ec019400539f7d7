//! New spans for the measures: batches of new traces stamped "now", as live ingest sends them.
//! A leaf: it uses nothing else of the bench, so every measure can use it.

use crate::lab::spangen::{Span, SpanGen};
use chrono::Utc;

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
