//! The never-analyzed case's part of the report (measured by `never_analyzed.rs`): the step
//! on a never-analyzed otel_traces against the analyzed one in the Targets, its section of
//! each scale (the copy's statistics before and after, every pair) and its method.

use super::headline::Check;
use super::input::ReportInput;
use crate::lab::bench::never_analyzed::Statistics;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, runs, secs, times};
use std::fmt::Write;

/// Never analyzed ÷ analyzed.
const NEVER_ANALYZED_TARGET: f64 = 3.0;
/// The step size the target names (`Settings::never_analyzed_spans`).
const STEP_SPANS: usize = 10_000;

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    vec![Check {
        measure: format!(
            "the {}-span step on a never-analyzed otel_traces ÷ on the analyzed one",
            count(STEP_SPANS as u64)
        ),
        target: format!("≤ {}", times(NEVER_ANALYZED_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let n = &r.never_analyzed;
                let x = median(&n.never_analyzed) / median(&n.analyzed);
                if !n.before.never_analyzed() || !n.after.never_analyzed() {
                    (
                        format!(
                            "{} (the table had statistics: not the case asked for)",
                            times(x)
                        ),
                        Some(false),
                    )
                } else {
                    Check::cell(
                        times(x),
                        x.is_finite().then_some(x <= NEVER_ANALYZED_TARGET),
                    )
                }
            })
            .collect(),
    }]
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let n = &r.never_analyzed;
    let stat = |st: &Statistics| {
        format!(
            "reltuples {}, {} rows in pg_statistic, autovacuum {}, last_analyze and last_autoanalyze {}",
            st.reltuples,
            st.stat_rows,
            if st.autovacuum_enabled { "on" } else { "off" },
            if st.never_analyzed_per_stats { "null" } else { "set" }
        )
    };
    let _ = writeln!(
        md,
        "### A never-analyzed otel_traces\n\nThe never-analyzed copy, checked before the first step: {}; after the last: {}. \
         **{}**\n",
        stat(&n.before),
        stat(&n.after),
        if n.before.never_analyzed() && n.after.never_analyzed() {
            "The planner had no statistics about it throughout (reltuples = -1, no pg_statistic rows).".to_string()
        } else {
            "The table had statistics at some point: this is not the never-analyzed case.".to_string()
        }
    );
    let _ = writeln!(
        md,
        "| step absorbing {} new spans | median | runs |\n|---|---:|---|\n| analyzed otel_traces | {} | {} |\n| never-analyzed otel_traces | {} | {} |\n| never ÷ analyzed | {} | pair by pair: {} |\n",
        count(n.spans as u64),
        secs(median(&n.analyzed)),
        runs(&n.analyzed),
        secs(median(&n.never_analyzed)),
        runs(&n.never_analyzed),
        times(median(&n.never_analyzed) / median(&n.analyzed)),
        n.never_analyzed
            .iter()
            .zip(&n.analyzed)
            .map(|(a, b)| times(a / b))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Never-analyzed.** A second copy of the loaded spans in schema `never_analyzed`: otel_traces created with all its \
         indexes and `autovacuum_enabled = off` (and for its TOAST table), the product installed while the table was empty (an \
         index build on a non-empty table sets reltuples), the spans inserted in one statement, absorbed by `rebuild`, then \
         `pg_stat_reset_single_table_counters`. Nothing ran ANALYZE on it. Its statistics are checked before the first and after \
         the last step (reltuples, pg_statistic, pg_stat_user_tables). The same {}-span step then runs on it and on the analyzed \
         table, alternately, {} pairs, each installation in its own session.",
        count(s.never_analyzed_spans as u64),
        s.pairs
    );
}
