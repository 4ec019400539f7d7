//! The reads' part of the report (measured by `queries.rs`): table ÷ view per query in Other
//! figures, the Reads section of each scale (times, rows, the table's live and dead rows, the
//! plans that differ) and its method with the queries' SQL.

use super::headline::Figure;
use super::input::ReportInput;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{secs, times};
use std::fmt::Write;

/// One row per query (the first scale's queries).
pub fn figures(input: &ReportInput) -> Vec<Figure> {
    let rs = input.results;
    let names: Vec<&'static str> = rs
        .first()
        .map(|r| r.queries.iter().map(|q| q.name).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|name| {
            Figure::new(rs, format!("read: {name}"), "table ÷ view", |r| {
                r.queries
                    .iter()
                    .find(|q| q.name == name)
                    .map(|q| times(q.table_s / q.view_s))
                    .unwrap_or_else(|| "n/a".into())
            })
        })
        .collect()
}

pub fn section(md: &mut String, input: &ReportInput, r: &ScaleResult) {
    let s = input.settings;
    let _ = writeln!(md, "### Reads ({} runs each, alternating)\n\n| query | view | table | table ÷ view | rows |\n|---|---:|---:|---:|---:|", s.query_runs);
    for q in &r.queries {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} |",
            q.name,
            secs(q.view_s),
            secs(q.table_s),
            times(q.table_s / q.view_s),
            q.view_rows,
            q.table_rows
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "When the reads ran, the table had {} live and {} dead rows (autovacuum {}); the view had just been refreshed.\n",
        r.table_live,
        r.table_dead,
        if r.table_autovacuumed { "had vacuumed it" } else { "had not vacuumed it yet" }
    );
    let differing: Vec<_> = r
        .queries
        .iter()
        .filter(|q| as_table_plan(&q.view_plan) != q.table_plan)
        .collect();
    if differing.is_empty() {
        let _ = writeln!(
            md,
            "The view and the table had the same plan for every query.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "Plans that differ between view and table (`EXPLAIN (COSTS OFF)` after the runs):\n"
        );
        for q in differing {
            let _ = writeln!(
                md,
                "- {}: view `{}`; table `{}`",
                q.name, q.view_plan, q.table_plan
            );
        }
        let _ = writeln!(md);
    }
}

/// A view's one-line plan with the view's relation and index names replaced by the table's
/// counterparts (the contract's index names), so the two plans compare node for node and
/// index for index.
fn as_table_plan(view_plan: &str) -> String {
    view_plan
        .replace("bench_mv_trace_id", "idx_trace_summaries_trace_id")
        .replace(
            "bench_mv_service_timestamp",
            "idx_trace_summaries_service_timestamp",
        )
        .replace("bench_mv_timestamp", "idx_trace_summaries_timestamp")
        .replace("bench_mv", "otel_trace_summaries")
}

pub fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(
        md,
        "- **Reads.** The SRQL shapes from CONTRACT.md, prepared once, {} runs each, alternating view and table, after 3 warm-up \
         runs on each; client round trip included.",
        s.query_runs
    );
    if let Some(r) = input.results.first() {
        let _ = writeln!(md, "\n  ```sql");
        for q in &r.queries {
            let _ = writeln!(md, "  -- {}\n  {};", q.name, q.sql);
        }
        let _ = writeln!(md, "  ```\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_plans_compare_index_for_index_with_table_plans() {
        let view = "Limit → Index Scan using bench_mv_service_timestamp on bench_mv";
        assert_eq!(
            as_table_plan(view),
            "Limit → Index Scan using idx_trace_summaries_service_timestamp on otel_trace_summaries"
        );
        assert_ne!(
            as_table_plan(view),
            "Limit → Index Scan using idx_trace_summaries_timestamp on otel_trace_summaries"
        );
    }
}
