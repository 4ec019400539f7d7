//! Ingest throughput's part of the report (measured by `ingest.rs`): the product installed
//! (worker stopped) against the plain table in the Targets, with the worker running in Other
//! figures, the ingest section of each scale (every round, round by round ratios), its method,
//! and a note when the rounds spread widely.

use super::headline::{Check, Figure};
use super::input::ReportInput;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, pct, runs, secs};
use std::fmt::Write;

/// Ingest throughput with the product ÷ without.
const INGEST_TARGET: f64 = 0.95;

/// A ratio as a percentage with one decimal: `96.6%`.
fn pct1(r: f64) -> String {
    if r.is_finite() {
        format!("{:.1}%", r * 100.0)
    } else {
        "n/a".into()
    }
}

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    vec![Check {
        measure: "ingest throughput into otel_traces with the product installed (stamp column, its index, triggers) ÷ the plain table; no worker running in either".into(),
        target: format!("≥ {}", pct(INGEST_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let x = r.ingest.idle_ratio();
                Check::cell(pct1(x), x.is_finite().then_some(x >= INGEST_TARGET))
            })
            .collect(),
    }]
}

pub fn figures(input: &ReportInput) -> Vec<Figure> {
    vec![Figure::new(
        input.results,
        "ingest throughput with the product installed and its worker running ÷ the plain table, no worker",
        "medians of the same rounds",
        |r| pct1(r.ingest.ratio()),
    )]
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let i = &r.ingest;
    let _ = writeln!(
        md,
        "### Ingest throughput ({} spans in batches of {}, {} rounds)\n\n| condition | median | runs | spans/s |\n|---|---:|---|---:|",
        count(i.spans as u64),
        i.batch,
        i.with_product.len()
    );
    let base = median(&i.without);
    for (label, v) in [
        ("plain table, no worker", &i.without),
        ("the product installed, the worker running", &i.with_product),
        (
            "the product installed, the worker stopped (its batches alternating with the plain table's)",
            &i.installed_idle,
        ),
    ] {
        let m = median(v);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {:.0} ({} of plain) |",
            secs(m),
            runs(v),
            i.spans as f64 / m,
            pct1(base / m)
        );
    }
    let paired = i.paired();
    let _ = writeln!(
        md,
        "\nWith the product installed and the worker stopped, ÷ the plain table, the two taking the same batches alternately: \
         **{}** (median of the rounds: {}). This is the target's figure: what the stamp column, its index and the triggers \
         cost an insert.\n\nWith the worker running, ÷ the plain table, from the medians: {}; round by round: {} (median {}). \
         The difference is what the running worker costs the inserts on this machine: it competes with them for the same \
         cores and for WAL flushes, doing the work that REFRESH of the view would otherwise do (which competes with the \
         inserts too), and its rounds ran apart from the plain table's, so the machine's noise does not cancel out.\n",
        pct1(i.idle_ratio()),
        i.idle_paired().iter().map(|x| pct1(*x)).collect::<Vec<_>>().join(", "),
        pct1(i.ratio()),
        paired.iter().map(|x| pct1(*x)).collect::<Vec<_>>().join(", "),
        pct1(median(&paired)),
    );
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Ingest throughput.** {} pre-generated spans inserted in batches of {} (one multi-row INSERT … ON CONFLICT DO NOTHING \
         per batch, autocommit), into `plain.otel_traces` (a copy of the loaded spans, nothing installed) and into otel_traces with the product \
         installed and the worker stopped, the same batches alternately (which table goes first alternates too), each batch \
         timed on its own; and, in the same round, before or after (alternating), into otel_traces with the worker running \
         (started and caught up first). {} rounds.",
        count(s.ingest_spans as u64),
        s.ingest_batch,
        s.ingest_rounds
    );
}

/// Rounds of one condition that spread more than 10%: the machine's noise.
pub fn notes(md: &mut String, r: &ScaleResult) {
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::NAN, f64::min);
        let hi = v.iter().copied().fold(f64::NAN, f64::max);
        hi / lo - 1.0
    };
    let i = &r.ingest;
    let worst = spread(&i.with_product).max(spread(&i.without));
    if worst.is_finite() && worst > 0.1 {
        let _ = writeln!(
            md,
            "- {} spans: the slowest ingest round of one condition took {} longer than the fastest; the machine's noise is of \
             that order, which is why the ratio is taken from medians of interleaved rounds.",
            count(r.spans),
            pct(worst)
        );
    }
}
