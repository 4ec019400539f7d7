//! The markdown report: the comparison of the three systems first (`comparison.rs`), then the
//! targets (each ratio, its target, met or not, per scale), the
//! other figures, the data's shape, the machine, then per scale the medians and every run
//! behind them, the freshness chart, how each number was measured, and notes.
//!
//! This file only assembles. Each measure's part of the report lives in a file named as the
//! measure's own (`full_refresh.rs` for the full refresh, `steps.rs`, …; `data.rs` for the load
//! and `machine.rs` for the opening and the machine), which provides whichever of these it has:
//! - `checks(rs) -> Vec<Check>`: its rows of the Targets table (`headline.rs`);
//! - `figures(input) -> Vec<Figure>`: its rows of the Other figures table;
//! - `section(md, [input,] r)`: its `###` section under each scale;
//! - `method(md, [input])`: its bullet of "How each number was measured";
//! - `notes(md, r)`: its bullets of the Notes, per scale.
//!
//! The functions below call them in the report's order. A section file uses `input.rs` (what
//! the report is rendered from), `headline.rs`, the bench's measure modules (their result types
//! and constants) and `stats.rs`; never another section file, nor this one. To add a measure's
//! part, add its file and call its functions from the lists below where its parts belong.

mod audit;
mod big_trace;
mod citus;
mod comparison;
mod data;
mod equality;
mod failover;
mod freshness;
mod full_refresh;
mod headline;
mod ingest;
mod input;
mod machine;
mod never_analyzed;
mod queries;
mod restore;
mod steps;

use super::scale::ScaleResult;
use super::stats::count;
use headline::{Check, Figure};
pub use input::ReportInput;
use std::fmt::Write;

/// Renders the whole report.
pub fn render(input: &ReportInput) -> String {
    if input.settings.parts == crate::cli::BenchParts::Citus {
        return render_citus(input);
    }
    if input.settings.parts == crate::cli::BenchParts::Restore {
        return render_restore(input);
    }
    let mut md = String::new();
    machine::opening(&mut md, input);
    comparison::section(&mut md, input);
    headline::targets(&mut md, input.results, &checks(input.results));
    headline::other_figures(&mut md, input.results, &figures(input));
    data::shape(&mut md, input);
    machine::section(&mut md, input);
    for r in input.results {
        scale_section(&mut md, input, r);
    }
    citus::section(&mut md, input);
    restore::section(&mut md, input);
    freshness::chart(&mut md, input);
    method(&mut md, input);
    notes(&mut md, input);
    md
}

/// The rows of the Targets table, in order.
fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    let mut out = Vec::new();
    out.extend(full_refresh::checks(rs));
    out.extend(steps::checks(rs));
    out.extend(never_analyzed::checks(rs));
    out.extend(big_trace::checks(rs));
    out.extend(freshness::checks(rs));
    out.extend(ingest::checks(rs));
    out.extend(equality::checks(rs));
    out
}

/// The rows of the Other figures table, in order.
fn figures(input: &ReportInput) -> Vec<Figure> {
    let mut out = Vec::new();
    out.extend(full_refresh::figures(input));
    out.extend(steps::figures(input));
    out.extend(audit::figures(input));
    out.extend(ingest::figures(input));
    out.extend(failover::figures(input));
    out.extend(freshness::figures(input));
    out.extend(queries::figures(input));
    out
}

/// One scale: what was loaded, then each measure's section.
fn scale_section(md: &mut String, input: &ReportInput, r: &ScaleResult) {
    let _ = writeln!(md, "## {} spans\n", count(r.spans));
    data::section(md, r);
    full_refresh::section(md, r);
    steps::section(md, r);
    never_analyzed::section(md, r);
    big_trace::section(md, r);
    audit::section(md, input, r);
    ingest::section(md, r);
    freshness::section(md, input, r);
    failover::section(md, r);
    queries::section(md, input, r);
    equality::section(md, r);
}

fn method(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## How each number was measured\n");
    comparison::method(md, input);
    data::method(md, input);
    full_refresh::method(md);
    steps::method(md);
    never_analyzed::method(md, input);
    big_trace::method(md, input);
    audit::method(md, input);
    ingest::method(md, input);
    freshness::method(md, input);
    failover::method(md);
    queries::method(md, input);
    equality::method(md);
    citus::method(md, input);
    restore::method(md, input);
}

/// `--parts citus`: the opening, the Citus section, the machine, and how it was measured.
fn render_citus(input: &ReportInput) -> String {
    let mut md = String::new();
    machine::opening(&mut md, input);
    citus::section(&mut md, input);
    machine::brief(&mut md, input);
    if input.citus.is_some_and(|c| c.skipped.is_none()) {
        let _ = writeln!(md, "## How it was measured\n");
        citus::method(&mut md, input);
    }
    md
}

/// `--parts restore`: the opening, the restore section, the machine, and how it was measured.
fn render_restore(input: &ReportInput) -> String {
    let mut md = String::new();
    machine::opening(&mut md, input);
    restore::section(&mut md, input);
    machine::brief(&mut md, input);
    let _ = writeln!(md, "## How it was measured\n");
    restore::method(&mut md, input);
    md
}

/// Notes generated from the results: what to keep in mind when reading them.
fn notes(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Notes\n");
    let _ = writeln!(
        md,
        "- Targets are judged on medians from this one run; a target missed here is shown as missed, whatever its margin."
    );
    comparison::notes(md, input);
    for r in input.results {
        full_refresh::notes(md, input.machine.cores, r);
        ingest::notes(md, r);
        freshness::notes(md, r);
        // Full refreshes the worker fell back to while a measure ran.
        for e in &r.events {
            let _ = writeln!(md, "- {} spans: {e}.", count(r.spans));
        }
        audit::notes(md, r);
    }
}

#[cfg(test)]
mod snapshot;
