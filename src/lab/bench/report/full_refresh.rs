//! The full refresh's part of the report (measured by `refresh.rs`): `rebuild --jobs 1` and
//! `--jobs 2` against REFRESH MATERIALIZED VIEW CONCURRENTLY in the Targets, the refreshes'
//! medians in Other figures, and the Full refresh section of each scale with every run, its
//! method, and a note when the machine had fewer cores than `--jobs 2` uses.

use super::headline::{Check, Figure};
use super::input::ReportInput;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, runs, secs, times};
use std::fmt::Write;

/// `rebuild --jobs 1` and `--jobs 2` ÷ REFRESH CONCURRENTLY.
const TARGET_ONE: f64 = 1.0;
const TARGET_TWO: f64 = 0.75;

fn target(jobs: u32) -> f64 {
    if jobs == 1 {
        TARGET_ONE
    } else {
        TARGET_TWO
    }
}

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    [2, 1]
        .into_iter()
        .map(|jobs| Check {
            measure: format!(
                "full refresh: `rebuild --jobs {jobs}` ÷ REFRESH CONCURRENTLY as pg_cron runs it (server's default memory)"
            ),
            target: format!("≤ {}", times(target(jobs))),
            cells: rs
                .iter()
                .map(|r| {
                    let x = r.rebuild_s(jobs) / r.refresh_concurrently_s();
                    Check::cell(times(x), x.is_finite().then_some(x <= target(jobs)))
                })
                .collect(),
        })
        .collect()
}

pub fn figures(input: &ReportInput) -> Vec<Figure> {
    let rs = input.results;
    vec![
        Figure::new(
            rs,
            "REFRESH MATERIALIZED VIEW CONCURRENTLY, as pg_cron runs it (the ratios' denominator)",
            "median",
            |r| secs(r.refresh_concurrently_s()),
        ),
        Figure::new(
            rs,
            "`rebuild --jobs 2` ÷ REFRESH CONCURRENTLY with `rebuild`'s memory",
            "medians",
            |r| times(r.rebuild_s(2) / r.refresh_concurrently_mem_s()),
        ),
        Figure::new(
            rs,
            "`rebuild --jobs 1` ÷ REFRESH CONCURRENTLY with `rebuild`'s memory",
            "medians",
            |r| times(r.rebuild_s(1) / r.refresh_concurrently_mem_s()),
        ),
        Figure::new(
            rs,
            "`rebuild --jobs 1` ÷ plain REFRESH (which blocks readers)",
            "medians",
            |r| times(r.rebuild_s(1) / median(&r.refresh_plain)),
        ),
    ]
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let refresh_c = r.refresh_concurrently_s();
    let _ = writeln!(
        md,
        "### Full refresh\n\n| step | median | runs | ÷ REFRESH CONCURRENTLY |\n|---|---:|---|---:|"
    );
    let _ = writeln!(
        md,
        "| REFRESH MATERIALIZED VIEW CONCURRENTLY, server's default memory (as pg_cron runs it) | {} | {} | 1× |",
        secs(refresh_c),
        runs(&r.refresh_concurrently)
    );
    let _ = writeln!(
        md,
        "| REFRESH MATERIALIZED VIEW CONCURRENTLY with `rebuild`'s memory | {} | {} | {} |",
        secs(r.refresh_concurrently_mem_s()),
        runs(&r.refresh_concurrently_mem),
        times(r.refresh_concurrently_mem_s() / refresh_c)
    );
    let _ = writeln!(
        md,
        "| plain REFRESH MATERIALIZED VIEW (blocks readers), `rebuild`'s memory | {} | {} | {} |",
        secs(median(&r.refresh_plain)),
        runs(&r.refresh_plain),
        times(median(&r.refresh_plain) / refresh_c)
    );
    for (jobs, all) in [(1, &r.rebuild_1), (2, &r.rebuild_2)] {
        let _ = writeln!(
            md,
            "| `rebuild --jobs {jobs}` of the table ({}) | {} | {} | {} |",
            if jobs == 1 {
                "one connection"
            } else {
                "two connections sharing one snapshot"
            },
            secs(r.rebuild_s(jobs)),
            runs(all),
            times(r.rebuild_s(jobs) / refresh_c)
        );
    }
    let _ = writeln!(
        md,
        "| CREATE MATERIALIZED VIEW … WITH DATA + 3 indexes (once) | {} | | |",
        secs(r.create_mv_s)
    );
    let _ = writeln!(
        md,
        "| `install --mode incremental` (stamp column, its index, triggers, first fill; once) | {} | | |\n",
        secs(r.install_s)
    );
}

pub fn method(md: &mut String) {
    let _ = writeln!(
        md,
        "- **Full refresh.** `bench_mv` is the contract's definition as a materialized view with the contract's three indexes. \
         Each repetition runs REFRESH MATERIALIZED VIEW CONCURRENTLY twice (the server's default memory, as pg_cron runs it; and \
         the memory `rebuild` gives itself), plain REFRESH, `rebuild --jobs 1` and `rebuild --jobs 2` (the product's full \
         refresh on one connection, and on two sharing one snapshot, each comparing a range of trace_ids), back to back, the \
         order rotated every repetition. Nothing changes between them but the time, so each REFRESH CONCURRENTLY finds almost \
         no rows to write, and neither does `rebuild`: both compare the window with what they hold and write only what \
         differs (the traces that left the window since the last refresh). A `rebuild` that finds more than a fifth of the rows \
         differing builds the table beside and swaps it in instead (not measured here)."
    );
}

/// Fewer than two cores: `--jobs 2` cannot gain.
pub fn notes(md: &mut String, cores: usize, r: &ScaleResult) {
    if cores < 2 {
        let _ = writeln!(
            md,
            "- {} spans: the machine had {cores} core: the two connections of `rebuild --jobs 2` shared it.",
            count(r.spans)
        );
    }
}
