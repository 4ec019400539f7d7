//! The single steps' part of the report (measured by `steps.rs`): the 10k-span step against
//! REFRESH CONCURRENTLY and its growth across scales in the Targets, each size's step in Other
//! figures, the One step section of each scale with every run, and its method.

use super::headline::{Check, Figure};
use super::input::ReportInput;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, pct, runs, secs, times};
use std::fmt::Write;

/// The 10k-span step ÷ REFRESH CONCURRENTLY, at 10M spans.
const STEP_TARGET: f64 = 0.01;
const STEP_SPANS: usize = 10_000;
const TARGET_SCALE: u64 = 10_000_000;
const BASE_SCALE: u64 = 1_000_000;
/// The 10k-span step at 10M ÷ at 1M.
const STEP_GROWTH_TARGET: f64 = 1.3;

fn step_ratio(r: &ScaleResult, n: usize) -> Option<f64> {
    r.step_s(n).map(|s| s / r.refresh_concurrently_s())
}

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check {
        measure: format!(
            "one step absorbing {} new spans ÷ REFRESH CONCURRENTLY",
            count(STEP_SPANS as u64)
        ),
        target: format!("≤ {} at {} spans", pct(STEP_TARGET), count(TARGET_SCALE)),
        cells: rs
            .iter()
            .map(|r| match step_ratio(r, STEP_SPANS) {
                Some(x) => Check::cell(
                    pct(x),
                    (r.spans >= TARGET_SCALE).then_some(x <= STEP_TARGET),
                ),
                None => ("not run".into(), None),
            })
            .collect(),
    });
    let base = rs.iter().min_by_key(|r| r.spans);
    out.push(Check {
        measure: format!(
            "the {}-span step's time ÷ its time at the smallest scale",
            count(STEP_SPANS as u64)
        ),
        target: format!(
            "≤ {} ({} ÷ {})",
            times(STEP_GROWTH_TARGET),
            count(TARGET_SCALE),
            count(BASE_SCALE)
        ),
        cells: rs
            .iter()
            .map(|r| match (base, r.step_s(STEP_SPANS)) {
                (Some(b), Some(s)) if b.spans < r.spans => match b.step_s(STEP_SPANS) {
                    Some(bs) => {
                        let x = s / bs;
                        let applies = r.spans == TARGET_SCALE && b.spans == BASE_SCALE;
                        Check::cell(
                            format!("{} (÷ {})", times(x), count(b.spans)),
                            applies.then_some(x <= STEP_GROWTH_TARGET),
                        )
                    }
                    None => ("n/a".into(), None),
                },
                _ => ("—".into(), None),
            })
            .collect(),
    });
    out
}

/// One row per step size.
pub fn figures(input: &ReportInput) -> Vec<Figure> {
    input
        .settings
        .cycle_sizes
        .iter()
        .map(|&n| {
            Figure::new(
                input.results,
                format!("one step absorbing {} new spans", count(n as u64)),
                "median; ÷ REFRESH CONCURRENTLY",
                |r| match r.step_s(n) {
                    Some(x) => format!("{} ({})", secs(x), pct(x / r.refresh_concurrently_s())),
                    None => "not run".into(),
                },
            )
        })
        .collect()
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let refresh_c = r.refresh_concurrently_s();
    let _ = writeln!(
        md,
        "### One step absorbing new traces\n\n| new spans | summaries written | step (median) | runs | ÷ REFRESH CONCURRENTLY |\n|---:|---:|---:|---|---:|"
    );
    for c in &r.cycles {
        let traces = median(&c.traces.iter().map(|&t| t as f64).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} |",
            count(c.new_spans as u64),
            traces,
            secs(median(&c.seconds)),
            runs(&c.seconds),
            pct(median(&c.seconds) / refresh_c)
        );
    }
    let _ = writeln!(md);
}

pub fn method(md: &mut String) {
    let _ = writeln!(
        md,
        "- **One step.** New traces are inserted by one COPY (one transaction, `created_at` left to its default), then one step \
         (`maintain::cycle::run`, as the worker runs it, with bounds large enough to take everything at once) is timed from taking \
         the work lock to COMMIT. The bench checks that the step absorbed exactly the spans inserted. Sizes are interleaved across \
         repetitions; the ratio divides the median by the median REFRESH CONCURRENTLY on the same data. The growth across scales \
         divides medians measured in two databases, minutes apart: it is not interleaved."
    );
}
