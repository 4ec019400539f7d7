//! Freshness's part of the report (measured by `freshness.rs`, drawn by `chart.rs`): the p99
//! at 10k spans/s in the Targets, p50 / p99 per rate in Other figures, the freshness section
//! of each scale (one row per rate), the Freshness chart section, its method, and notes when
//! the generator fell behind, its inserts stalled or batches went unseen.

use super::headline::{Check, Figure};
use super::input::ReportInput;
use crate::lab::bench::freshness::{
    FreshnessRun, DRAIN, FRESHNESS_RATE, FRESHNESS_TARGET_MS, POLL_EVERY,
};
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, ms};
use std::fmt::Write;

/// Milliseconds, or how long a batch went unseen.
fn fresh_ms(v: f64) -> String {
    if v.is_infinite() {
        format!("> {} s (unseen)", DRAIN.as_secs())
    } else {
        ms(v)
    }
}

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    vec![Check {
        measure: format!(
            "freshness p99 at {} spans/s, the worker's default settings",
            count(FRESHNESS_RATE as u64)
        ),
        target: format!("≤ {FRESHNESS_TARGET_MS:.0} ms"),
        cells: rs
            .iter()
            .map(|r| match r.freshness_at(FRESHNESS_RATE) {
                Some(f) => {
                    let p99 = f.p99();
                    let kept_up = if f.kept_up() {
                        ""
                    } else {
                        " (generator fell behind)"
                    };
                    Check::cell(
                        format!("{}{kept_up}", fresh_ms(p99)),
                        Some(p99 <= FRESHNESS_TARGET_MS && f.kept_up()),
                    )
                }
                None => ("not run".into(), None),
            })
            .collect(),
    }]
}

/// One row per rate.
pub fn figures(input: &ReportInput) -> Vec<Figure> {
    input
        .settings
        .rates
        .iter()
        .map(|&rate| {
            Figure::new(
                input.results,
                format!("freshness at {} spans/s", count(rate as u64)),
                "p50 / p99",
                |r| match r.freshness_at(rate) {
                    Some(f) => format!("{} / {}", fresh_ms(f.p50()), fresh_ms(f.p99())),
                    None => "not run".into(),
                },
            )
        })
        .collect()
}

pub fn section(md: &mut String, input: &ReportInput, r: &ScaleResult) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "### Freshness under sustained ingest ({} per rate)\n\n| target rate (spans/s) | achieved | batches | p50 | p99 | max | unseen | insert p50 / p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|",
        humantime::format_duration(s.freshness)
    );
    for f in &r.freshness {
        row(md, f);
    }
    let _ = writeln!(md);
}

fn row(md: &mut String, f: &FreshnessRun) {
    let achieved = if f.kept_up() {
        format!("{:.0}", f.achieved)
    } else {
        format!("{:.0} (generator fell behind)", f.achieved)
    };
    let _ = writeln!(
        md,
        "| {} | {achieved} | {} | {} | {} | {} | {} | {} / {} |",
        f.rate,
        f.batches,
        fresh_ms(f.p50()),
        fresh_ms(f.p99()),
        fresh_ms(f.max()),
        f.unseen,
        ms(f.insert_p50_ms),
        ms(f.insert_p99_ms)
    );
}

/// The Freshness chart section: the PNG beside the report, or why there is none.
pub fn chart(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Freshness chart\n");
    match &input.chart {
        Some(name) => {
            let _ = writeln!(md, "![freshness p50 and p99 against ingest rate]({name})\n");
            let _ = writeln!(
                md,
                "Freshness (time from an ingest commit to the poll that saw the trace's summary) against the achieved ingest rate: \
                 p99 as solid lines, p50 as thin lines, one colour per scale; the red line is the p99 target ({FRESHNESS_TARGET_MS:.0} ms \
                 at {} spans/s).{}\n",
                count(FRESHNESS_RATE as u64),
                if input.chart_has_text { "" } else { " (No font was found, so the chart has no text labels.)" }
            );
        }
        None => {
            let _ = writeln!(
                md,
                "The chart could not be written (see the bench's output).\n"
            );
        }
    }
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Freshness.** The worker runs in-process (the library's `Worker` with `WorkerSettings::default()`). A generator \
         inserts new traces every 100 ms at the target rate with multi-row INSERT … ON CONFLICT DO NOTHING, one transaction per \
         batch, and records for each batch the instant its commit returned and one trace_id with its span count. A poller \
         queries those trace_ids every {} ms; freshness is the time from the commit to the first poll that returned the complete \
         summary, so it includes up to {} ms of polling granularity. Batches not seen {} s after the generator stopped count as \
         unseen (infinitely late) in the percentiles. Before each rate a probe trace is inserted and awaited, so every rate \
         starts caught up. {} per rate.",
        POLL_EVERY.as_millis(),
        POLL_EVERY.as_millis(),
        DRAIN.as_secs(),
        humantime::format_duration(s.freshness)
    );
}

/// A generator that fell behind, inserts that stalled, batches never seen.
pub fn notes(md: &mut String, r: &ScaleResult) {
    for f in &r.freshness {
        if !f.kept_up() {
            let _ = writeln!(
                md,
                "- {} spans: at {} spans/s the generator itself fell behind ({:.0} spans/s achieved): the machine was saturated.",
                count(r.spans),
                count(f.rate as u64),
                f.achieved
            );
        }
        if f.insert_p99_ms > 100.0 && f.insert_p99_ms > 5.0 * f.insert_p50_ms {
            let _ = writeln!(
                md,
                "- {} spans: at {} spans/s the generator's own inserts stalled at times (p99 {} against a median of {}): the \
                 database was held up by something other than the worker (a checkpoint's writes, WAL flushes, other work on the \
                 machine), and freshness outliers at that rate include those stalls.",
                count(r.spans),
                count(f.rate as u64),
                ms(f.insert_p99_ms),
                ms(f.insert_p50_ms)
            );
        }
        if f.unseen > 0 {
            let _ = writeln!(
                md,
                "- {} spans: at {} spans/s, {} batches were not summarized within {} s of the generator stopping.",
                count(r.spans),
                count(f.rate as u64),
                f.unseen,
                DRAIN.as_secs()
            );
        }
    }
}
