//! The continuous audit's part of the report (measured by `audit_cost.rs`): a slice's time,
//! its share of one core and the time per audited trace in Other figures, the audit section
//! of each scale (one row per period), its method, and a note when it found differences.

use super::headline::Figure;
use super::input::ReportInput;
use crate::lab::bench::audit_cost::period_text;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, secs, share};
use std::fmt::Write;

pub fn figures(input: &ReportInput) -> Vec<Figure> {
    let rs = input.results;
    vec![
        Figure::new(
            rs,
            "audit: one slice at the default period (24h: every 10 s)",
            "median time; traces checked",
            |r| match r.audit.first() {
                Some(a) => format!(
                    "{}; {:.0} traces",
                    secs(median(&a.seconds)),
                    a.checked_median()
                ),
                None => "not run".into(),
            },
        ),
        Figure::new(
            rs,
            "audit: share of one core at the default period",
            "slice time ÷ 10 s",
            |r| match r.audit.first() {
                Some(a) => share(a.core_share()),
                None => "not run".into(),
            },
        ),
        Figure::new(
            rs,
            "audit: time per audited trace",
            "slice time ÷ traces at 24h; at 1h (24× larger slices); each further trace",
            |r| match (r.audit.first(), r.audit.get(1)) {
                (Some(a), Some(b)) => format!(
                    "{}; {}; {}",
                    secs(a.per_trace()),
                    secs(b.per_trace()),
                    secs(b.marginal_per_trace(a))
                ),
                (Some(a), None) => secs(a.per_trace()),
                _ => "not run".into(),
            },
        ),
    ]
}

pub fn section(md: &mut String, input: &ReportInput, r: &ScaleResult) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "### The continuous audit\n\n| period | a slice every | traces per slice | slice (median) | fastest / slowest | share of one core | per audited trace | differences found |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for a in &r.audit {
        let lo = a.seconds.iter().copied().fold(f64::NAN, f64::min);
        let hi = a.seconds.iter().copied().fold(f64::NAN, f64::max);
        let _ = writeln!(
            md,
            "| {}{} | {} s | {:.0} | {} | {} / {} | {} | {} | {} |",
            period_text(a.period),
            if a.period.as_secs() == 24 * 3600 {
                " (default)"
            } else {
                ""
            },
            a.every.as_secs(),
            a.checked_median(),
            secs(median(&a.seconds)),
            secs(lo),
            secs(hi),
            share(a.core_share()),
            secs(a.per_trace()),
            a.mismatches
        );
    }
    let marginal = match (r.audit.first(), r.audit.get(1)) {
        (Some(a), Some(b)) => format!(
            " From the two periods' medians, each further trace in a slice costs {}; the rest of a slice is its fixed cost \
             (estimating the row count, finding the slice's end, the statements' round trips).",
            secs(b.marginal_per_trace(a))
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        md,
        "\n{} consecutive slices per period; the summaries table's estimate was {} rows.{marginal}\n",
        s.audit_slices,
        r.audit.first().map(|a| a.summaries_estimate).unwrap_or(0)
    );
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Audit.** {} consecutive slices per period by the product's `maintain::audit::run_slice`, each in a REPEATABLE READ \
         transaction with the plans pinned as a step pins them, rolled back (the cursor carried to the next slice by the bench). \
         The default period (24h) gives a slice every 10 s over 1/8640 of the summaries; the share of one core is the slice's \
         time over those 10 s (wall time of the statements, which are CPU-bound here). A 1h period gives slices 24 times larger \
         (a slice every 10 s covers 1/360); the difference between the two gives the cost of each further trace.",
        s.audit_slices
    );
}

/// Differences the audit found.
pub fn notes(md: &mut String, r: &ScaleResult) {
    let a = &r.audit;
    if a.iter().any(|x| x.mismatches > 0) {
        let _ = writeln!(
            md,
            "- {} spans: the audit found summaries that differ from the definition.",
            count(r.spans)
        );
    }
}
