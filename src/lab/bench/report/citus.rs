//! The Citus section's part of the report (measured by `citus.rs`): its own `##` section after
//! the scales (or alone, with `--parts citus`), with the 10k-span step on every node against
//! REFRESH MATERIALIZED VIEW CONCURRENTLY of the view over the distributed table, freshness
//! under ingest, and the check against the definition, per number of worker nodes; and its
//! bullet of the method.

use super::input::ReportInput;
use crate::lab::bench::citus::{CitusRuns, NodeCount};
use crate::lab::bench::stats::{count, ms, secs, times};
use std::fmt::Write;

pub fn section(md: &mut String, input: &ReportInput) {
    let Some(c) = input.citus else { return };
    let _ = writeln!(md, "## Citus: a coordinator with 1 and 2 worker nodes\n");
    if let Some(why) = &c.skipped {
        let _ = writeln!(md, "Skipped: {why}.\n");
        return;
    }
    opening(md, c);
    if !c.counts.is_empty() {
        steps(md, c);
        freshness(md, c);
    }
    match c.differing {
        Some(d) => {
            let _ = writeln!(
                md,
                "At the end, after one more step per node: otel_trace_summaries ({} rows) against the definition \
                 computed on the coordinator, EXCEPT ALL both ways: **{d} rows wrong**.\n",
                count(c.compared.max(0) as u64)
            );
        }
        None => {
            let _ = writeln!(md, "The check against the definition did not run.\n");
        }
    }
    if let Some(e) = &c.error {
        let _ = writeln!(
            md,
            "**The section stopped before its end**: {e}. The figures above are what it measured until then.\n"
        );
    }
}

fn opening(md: &mut String, c: &CitusRuns) {
    let _ = writeln!(
        md,
        "{} on three throwaway clusters of this machine (a coordinator and two workers, 127.0.0.1, durable settings, \
         `citus.shard_count = 8`), sharing its cores with the bench itself. {} spans loaded through the coordinator into \
         otel_traces distributed by trace_id, on one worker node ({}); `install --mode incremental` in {} (stamp column, \
         triggers on every shard, otel_trace_summaries distributed and co-located, the node's full refresh); `bench_mv`, the \
         definition as a materialized view on the coordinator over the distributed table, created in {}.{}\n",
        if c.version.is_empty() { "Citus" } else { &c.version },
        count(c.spans),
        secs(c.load_s),
        secs(c.install_s),
        secs(c.create_mv_s),
        match c.rebalance_s {
            Some(s) => format!(
                " The second worker node was then added to the same cluster (`citus_add_node`) and \
                 `rebalance_table_shards('otel_traces', shard_transfer_mode := 'block_writes')` moved half the shards \
                 (with their co-located summaries) to it in {}; the figures for two nodes are on that data, with the \
                 spans inserted meanwhile.",
                secs(s)
            ),
            None => String::new(),
        }
    );
}

fn shards(n: &NodeCount) -> String {
    n.shards
        .iter()
        .map(|(node, k)| format!("{node}: {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn steps(md: &mut String, c: &CitusRuns) {
    let _ = writeln!(
        md,
        "| worker nodes | shards of otel_traces | 10k-span step, until every node committed (median) | each node's step (median) | REFRESH MATERIALIZED VIEW CONCURRENTLY (median) | refresh ÷ step |\n|---:|---|---:|---|---:|---:|"
    );
    for n in &c.counts {
        let step = n.step_s();
        let refresh = n.refresh_median_s();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            n.workers,
            shards(n),
            step.map(secs).unwrap_or_else(|| "n/a".into()),
            n.node_steps()
                .iter()
                .map(|(node, s)| format!("{node}: {}", secs(*s)))
                .collect::<Vec<_>>()
                .join(", "),
            refresh.map(secs).unwrap_or_else(|| "n/a".into()),
            match (refresh, step) {
                (Some(r), Some(s)) => times(r / s),
                _ => "n/a".into(),
            }
        );
    }
    let _ = writeln!(md);
    for n in c.counts.iter().filter(|n| !n.steps.is_empty()) {
        let _ = writeln!(
            md,
            "- {} worker node(s), every run (until every node committed): {}; REFRESH CONCURRENTLY: {}.",
            n.workers,
            n.steps
                .iter()
                .map(|s| secs(s.seconds))
                .collect::<Vec<_>>()
                .join(", "),
            n.refresh_s
                .iter()
                .map(|s| secs(*s))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(md);
}

fn freshness(md: &mut String, c: &CitusRuns) {
    let _ = writeln!(
        md,
        "Freshness under ingest, `trace-summarizer run` against the coordinator (one loop per node):\n\n| worker nodes | target spans/s | achieved spans/s | batches | commit → summarized p50 | p99 | unseen |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for n in &c.counts {
        for f in &n.freshness {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                n.workers,
                count(f.rate as u64),
                f.achieved,
                f.samples_ms.len(),
                ms(f.p50()),
                ms(f.p99()),
                f.unseen
            );
        }
    }
    let _ = writeln!(md);
}

pub fn method(md: &mut String, input: &ReportInput) {
    let Some(c) = input.citus else { return };
    if c.skipped.is_some() {
        return;
    }
    let s = &input.settings.citus;
    let _ = writeln!(
        md,
        "- **Citus**: clusters of its own, started for the section and stopped after it. With one worker node, then with \
         two: first freshness: `trace-summarizer run` started as a process against the coordinator with the product's \
         defaults, caught up (a probe trace summarized), then one writer per rate ({}) for {} each inserting new traces \
         every 100 ms on the coordinator (multi-row INSERT … ON CONFLICT DO NOTHING, no late spans), and a poller reading \
         the coordinator's otel_trace_summaries every 20 ms for one probe trace per batch: freshness is commit to the poll \
         that first saw the trace complete (unseen after 30 s counts as infinite). Then, with the process stopped, the \
         step: {} new spans of new traces copied in on the coordinator in one transaction, then one step on every node at \
         once as the worker runs it (a session per node with the worker's session settings, `maintain::cycle::run` over \
         that node's shards, bounds large enough to take everything), timed from the first step's start until the last \
         node's step committed (each node's own time too), {} times after a warm-up, median; then REFRESH MATERIALIZED VIEW \
         CONCURRENTLY of `bench_mv` on the coordinator (with `rebuild`'s memory), {} times, median. At the end one more step \
         per node and the summaries compared with the definition over the distributed table (EXCEPT ALL both ways, all rows).",
        s.rates
            .iter()
            .map(|r| format!("{} spans/s", count(*r as u64)))
            .collect::<Vec<_>>()
            .join(", "),
        humantime::format_duration(s.duration),
        count(s.step_spans as u64),
        s.steps,
        s.refreshes
    );
}
