//! The restore section's part of the report (measured by `restore.rs`): its own `##` section
//! after the Citus one (or alone, with `--parts restore`), with the time until the worker is
//! current again after a dump was restored into a fresh cluster, against a single-connection
//! `rebuild` on the same server, and what the restore cost otel_traces; and its method.

use super::input::ReportInput;
use crate::lab::bench::stats::{bytes, count, secs};
use std::fmt::Write;

/// The target: the first step after a restore takes at most this many times a
/// single-connection rebuild.
const TARGET: f64 = 1.5;
/// The target: otel_traces grows by at most this share.
const GROWTH: f64 = 0.05;

pub fn section(md: &mut String, input: &ReportInput) {
    let Some(r) = input.restore else { return };
    let _ = writeln!(
        md,
        "## Restores: a dump restored into PostgreSQL 15 and 18\n"
    );
    let _ = writeln!(
        md,
        "{} spans, each stamped by the column default, in an installation whose server had burned 200k transaction ids \
         first (so that the restored stamps lie ahead of a fresh server's ids); loaded and caught up in {}; `pg_dump` \
         (plain SQL) wrote {} in {}, and PostgreSQL 15's `psql` restored it into a fresh cluster of each major, as \
         upstream's upgrade does. Then the worker's first `run --once` (a full refresh, `foreign_state`, which moves \
         the stamp space past the restored stamps instead of rewriting them), and `rebuild --jobs 1` on the same \
         server. Target: the first step ≤ {TARGET:.1}× the rebuild, otel_traces grows ≤ {:.0}%, no span row \
         updated.\n",
        count(r.spans),
        secs(r.load_s),
        bytes(r.dump_bytes as i64),
        secs(r.dump_s),
        GROWTH * 100.0
    );
    if !r.targets.is_empty() {
        let _ = writeln!(
            md,
            "| restore | restored in | first step (until current) | rebuild --jobs 1 | ratio | otel_traces after the restore → after the first step | span rows updated | exact after the first step |\n|---|---:|---:|---:|---:|---:|---:|---|"
        );
        for t in &r.targets {
            let ratio = t.first_step_s / t.rebuild_s.max(1e-9);
            let growth = (t.size_after - t.size_restored) as f64 / t.size_restored.max(1) as f64;
            let _ = writeln!(
                md,
                "| {} (PostgreSQL {}) | {} | {} | {} | {:.2}× {} | {} → {} ({:+.2}%) {} | {} {} | {} |",
                t.label,
                t.major,
                secs(t.restore_s),
                secs(t.first_step_s),
                secs(t.rebuild_s),
                ratio,
                mark(ratio <= TARGET),
                bytes(t.size_restored),
                bytes(t.size_after),
                growth * 100.0,
                mark(growth <= GROWTH),
                t.updated,
                mark(t.updated == 0),
                if t.exact { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(md);
    }
    for s in &r.skipped {
        let _ = writeln!(md, "Skipped: {s}.\n");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(
            md,
            "**The section stopped before its end**: {e}. The figures above are what it measured until then.\n"
        );
    }
}

fn mark(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}

pub fn method(md: &mut String, input: &ReportInput) {
    if input.restore.is_none() {
        return;
    }
    let _ = writeln!(
        md,
        "- **Restores**: each cluster is a throwaway one of its own (durable settings), the source and each target \
         in turn, never two at once. Both timings are of whole CLI runs (connection and checks included), each after a \
         checkpoint. Rows updated are `n_tup_upd` of otel_traces since the restore; the sizes are `pg_table_size`. \
         `tests/restore.rs` checks the same path (with ingest and a worker running during the dump) in CI."
    );
}
