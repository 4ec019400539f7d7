//! SRQL-shaped reads on the materialized view and on the maintained table: the trace list,
//! a filtered list, the stats payload and the dashboard's freshness probe. Prepared once, run
//! alternately on both relations (which hold the same rows), medians reported; and the table's
//! activity counters when they ran.

use super::stats::{median, say, secs};
use crate::db::sqltext::COLUMNS;
use crate::error::{DbContext, Result};
use std::time::Instant;
use tokio_postgres::Client;

#[derive(Debug, Clone)]
pub struct QueryResult {
    pub name: &'static str,
    pub sql: String,
    pub view_s: f64,
    pub table_s: f64,
    pub view_rows: usize,
    pub table_rows: usize,
    /// The plans' nodes, outermost first (`EXPLAIN (COSTS OFF)` after the runs).
    pub view_plan: String,
    pub table_plan: String,
}

/// A plan in one line: its nodes, outermost first, with the relations they scan.
async fn plan(client: &Client, sql: &str) -> Result<String> {
    let rows = client
        .query(&format!("explain (costs off) {sql}"), &[])
        .await
        .ctx("explaining a query")?;
    let nodes: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("Index Cond")
                && !t.starts_with("Filter")
                && !t.starts_with("Sort Key")
                && !t.starts_with("Recheck Cond")
                && !t.starts_with("Workers")
        })
        .map(|l| l.trim_start().trim_start_matches("->").trim().to_string())
        .collect();
    Ok(nodes.join(" → "))
}

/// The queries, with `{rel}` for the relation.
fn shapes() -> Vec<(&'static str, String)> {
    let cols = COLUMNS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        (
            "list (last hour, newest 100)",
            format!("select {cols} from {{rel}} where \"timestamp\" >= now() - interval '1 hour' and \"timestamp\" <= now() order by \"timestamp\" desc limit 100"),
        ),
        (
            "filter (root_service_name = 'checkout', newest 100)",
            format!("select {cols} from {{rel}} where root_service_name = 'checkout' order by \"timestamp\" desc limit 100"),
        ),
        (
            "stats (last 24 hours)",
            "select jsonb_build_object('total', coalesce(count(*), 0), 'errors', coalesce(sum(case when error_count > 0 then 1 else 0 end), 0)) as payload from {rel} where \"timestamp\" >= now() - interval '24 hours'".to_string(),
        ),
        ("dashboard freshness (max timestamp)", "select max(\"timestamp\") from {rel}".to_string()),
    ]
}

/// Runs every query `runs` times on `view` and on `table` (quoted relation names).
pub async fn run(
    client: &Client,
    view: &str,
    table: &str,
    runs: usize,
) -> Result<Vec<QueryResult>> {
    let mut out = Vec::new();
    for (name, sql) in shapes() {
        let on_view = client
            .prepare(&sql.replace("{rel}", view))
            .await
            .ctx("preparing a query on the view")?;
        let on_table = client
            .prepare(&sql.replace("{rel}", table))
            .await
            .ctx("preparing a query on the table")?;
        // Warm both caches the same way.
        let mut view_rows = 0;
        let mut table_rows = 0;
        for _ in 0..3 {
            view_rows = client
                .query(&on_view, &[])
                .await
                .ctx("querying the view")?
                .len();
            table_rows = client
                .query(&on_table, &[])
                .await
                .ctx("querying the table")?
                .len();
        }
        let (mut v, mut t) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for i in 0..runs {
            // Alternate which side goes first.
            let order = if i % 2 == 0 {
                [(&on_view, true), (&on_table, false)]
            } else {
                [(&on_table, false), (&on_view, true)]
            };
            for (statement, is_view) in order {
                let start = Instant::now();
                client.query(statement, &[]).await.ctx("running a query")?;
                let s = start.elapsed().as_secs_f64();
                if is_view {
                    v.push(s)
                } else {
                    t.push(s)
                }
            }
        }
        let r = QueryResult {
            name,
            sql: sql.replace("{rel}", "otel_trace_summaries"),
            view_s: median(&v),
            table_s: median(&t),
            view_rows,
            table_rows,
            view_plan: plan(client, &sql.replace("{rel}", view)).await?,
            table_plan: plan(client, &sql.replace("{rel}", table)).await?,
        };
        say(format!(
            "  {name}: view {}, table {}",
            secs(r.view_s),
            secs(r.table_s)
        ));
        out.push(r);
    }
    Ok(out)
}

/// The table's live and dead rows when the reads run, and whether autovacuum had been there.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableActivity {
    pub live: i64,
    pub dead: i64,
    pub autovacuumed: bool,
}

/// Reads `public.otel_trace_summaries`'s activity counters.
pub async fn table_activity(client: &Client) -> Result<TableActivity> {
    let table = client
        .query_one(
            "select n_live_tup, n_dead_tup, last_autovacuum is not null from pg_stat_user_tables
             where relid = 'public.otel_trace_summaries'::regclass",
            &[],
        )
        .await
        .ctx("reading the table's activity counters")?;
    Ok(TableActivity {
        live: table.get(0),
        dead: table.get(1),
        autovacuumed: table.get(2),
    })
}
