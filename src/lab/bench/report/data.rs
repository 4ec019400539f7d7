//! The data each scale ran on: the Data shape section (spans per trace asked for and produced),
//! the paragraph that opens each scale (the load's times, the copies, the sizes at the end) and
//! the Data bullet of the method. Measured by `load.rs` (and the copies by `load.rs` and
//! `never_analyzed.rs`); the sizes at the end by `scale.rs`.

use super::headline::scale_header;
use super::input::ReportInput;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{bytes, secs};
use std::fmt::Write;

/// The Data shape section: spans per trace asked for, and what the generator produced.
pub fn shape(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let _ = writeln!(md, "## Data shape\n");
    let _ = writeln!(
        md,
        "Spans per trace asked for: {} on average (`--spans-per-trace`; upstream's 10.6M spans held 875k traces, about 12 per trace). \
         What the generator actually produced, counted in the view right after loading:\n",
        input.settings.spans_per_trace
    );
    let _ = writeln!(md, "{}", scale_header(rs, &["spans per trace"]));
    let row = |md: &mut String, label: &str, f: &dyn Fn(&ScaleResult) -> String| {
        let mut line = format!("| {label} |");
        for r in rs {
            let _ = write!(line, " {} |", f(r));
        }
        let _ = writeln!(md, "{line}");
    };
    row(md, "spans loaded", &|r| r.loaded.spans.to_string());
    row(md, "traces", &|r| r.traces_loaded.to_string());
    row(md, "mean", &|r| format!("{:.2}", r.shape.mean));
    row(md, "median", &|r| r.shape.p50.to_string());
    row(md, "90th percentile", &|r| r.shape.p90.to_string());
    row(md, "99th percentile", &|r| r.shape.p99.to_string());
    row(md, "largest", &|r| r.shape.max.to_string());
    let _ = writeln!(md);
}

/// The paragraph under each scale's heading.
pub fn section(md: &mut String, r: &ScaleResult) {
    let _ = writeln!(
        md,
        "{} spans in {} traces loaded ({:.1} spans per trace; binary COPY {}, secondary indexes {}, VACUUM ANALYZE {}). \
         Copies: a plain table for the ingest comparison, made just before it of every span otel_traces then held, so that both \
         were of one size ({}), and the never-analyzed table, of the loaded spans (inserted with its \
         indexes in place in {}, absorbed by the product's full refresh in {}). At the end, with the spans the bench inserted: \
         {} traces holding {} spans in the window. Sizes with indexes: otel_traces {}, table {}, view {}.\n",
        r.loaded.spans,
        r.traces_loaded,
        r.loaded.spans as f64 / r.traces_loaded.max(1) as f64,
        secs(r.loaded.copy_s),
        secs(r.loaded.index_s),
        secs(r.loaded.vacuum_s),
        secs(r.plain_copy_s),
        secs(r.never_load.insert_s),
        secs(r.never_load.rebuild_s),
        r.traces_in_window,
        r.spans_in_window,
        bytes(r.traces_bytes),
        bytes(r.table_bytes),
        bytes(r.view_bytes)
    );
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Data.** Synthetic spans from the crate's generator (`SpanGen::with_mean_spans`, {} spans per trace on average): \
         24 services with skewed popularity, span counts per trace skewed with a long tail, roots with '' or NULL parents, traces \
         without or with several roots, errors and NULL statuses, odd text; spread uniformly over the last 7 days with ingest times \
         shortly after (1% up to a day late). Loaded with binary COPY in chunks of 200k, secondary indexes built after the load, \
         then VACUUM ANALYZE and CHECKPOINT. New spans during the bench are new traces of the same shape, stamped now. One fresh \
         database per scale, dropped afterwards.",
        s.spans_per_trace
    );
}
