//! The huge trace's part of the report (measured by `big_trace.rs`): 100 spans into a
//! 100k-span trace against 100 spans of a new trace in the Targets, its section of each scale
//! (every pair, the trace's final count) and its method.

use super::headline::Check;
use super::input::ReportInput;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, runs, secs, times};
use std::fmt::Write;

/// 100 spans into a 100k-span trace ÷ 100 spans of a new trace.
const BIG_TRACE_TARGET: f64 = 1.5;

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    vec![Check {
        measure: "a step absorbing 100 new spans into a 100k-span trace ÷ 100 spans of a new trace"
            .into(),
        target: format!("≤ {}", times(BIG_TRACE_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let b = &r.big_trace;
                let x = median(&b.into_big) / median(&b.new_trace);
                Check::cell(times(x), x.is_finite().then_some(x <= BIG_TRACE_TARGET))
            })
            .collect(),
    }]
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let b = &r.big_trace;
    let _ = writeln!(
        md,
        "### A huge trace\n\nA new trace of {} spans was absorbed in one step in {}. Then, interleaved:\n\n\
         | step | median | runs |\n|---|---:|---|\n| {} new spans of the {}-span trace | {} | {} |\n| {} spans of a new trace | {} | {} |\n| huge ÷ new | {} | |\n\n\
         At the end the huge trace's summary counted {} spans ({} inserted).\n",
        count(b.big_spans as u64),
        secs(b.first_s),
        b.new_spans,
        count(b.big_spans as u64),
        secs(median(&b.into_big)),
        runs(&b.into_big),
        b.new_spans,
        secs(median(&b.new_trace)),
        runs(&b.new_trace),
        times(median(&b.into_big) / median(&b.new_trace)),
        b.final_count,
        b.expected_count
    );
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Huge trace.** A new trace of {} spans is absorbed in one step; then, alternately, {} pairs of: {} new spans of that \
         trace (children of its spans), one step; {} spans of a new trace, one step.",
        count(s.big_trace_spans as u64),
        s.pairs,
        s.big_trace_new,
        s.big_trace_new
    );
}
