//! Recomputing a set of traces from all their spans in the window: the trace_ids sit in the
//! session's `ts_affected`; their rows are computed with the definition's aggregates (one index
//! lookup per trace, never a scan of the window), then upserted, or deleted when no span is left,
//! and each trace's exact oldest in-window span is appended to the installation's side table.
//!
//! The spans are restricted to those the step's new position covers (`covers`): a trace
//! recomputed in a bounded step does not already count spans the next step will merge, and rows
//! of a transaction still in progress in the step's snapshot (visible only because they were
//! loaded frozen) wait for the step that reads them as new.

use crate::db::source::Target;
use crate::db::sqltext;
use crate::db::statements::Db;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use crate::maintain::tailing::covered;
use crate::state::{Names, Position};
use tokio_postgres::GenericClient;

#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub upserted: i64,
    pub deleted: i64,
}

/// Recomputes every trace in `ts_affected` into `summaries`, from the spans `covers` covers.
pub async fn apply<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    def: &Definition,
    names: &Names,
    edge: chrono::DateTime<chrono::Utc>,
    covers: &Position,
) -> Result<Applied> {
    let count: i64 = client
        .query_one("select count(*) from ts_affected", &[])
        .await
        .ctx("counting")?
        .get(0);
    if count == 0 {
        return Ok(Applied::default());
    }
    client
        .execute("delete from ts_fresh", &[])
        .await
        .ctx("clearing scratch rows")?;
    let fill = format!(
        "insert into ts_fresh
         select a.trace_id, s.*
         from ts_affected a
         cross join lateral (
             select {aggregates}, min(\"timestamp\") as oldest
             from {traces}
             where trace_id = a.trace_id and \"timestamp\" > $1 and {covered}
         ) s",
        aggregates = def.aggregates(),
        traces = target.traces(),
        covered = covered("trace_summarizer_xid", "$2", "$3"),
    );
    client
        .execute(&fill, &[&edge, &covers.xmax, &covers.xip])
        .await
        .ctx("recomputing affected traces")?;
    let cols = sqltext::column_list(None);
    // Into each relation the summaries live in (one, or a Citus node's local shards).
    let (mut upserted, mut deleted) = (0i64, 0i64);
    for w in target.summary_writes() {
        let rel = &w.relation;
        upserted += client
            .execute(
                &format!(
                    "insert into {rel} as t ({cols}) select {cols} from ts_fresh
                     where span_count > 0 and {holds} {tail}",
                    holds = w.holds("ts_fresh.trace_id"),
                    tail = sqltext::upsert_tail("t"),
                ),
                &[],
            )
            .await
            .ctx("upserting summaries")? as i64;
        deleted += client
            .execute(
                &format!("delete from {rel} t using ts_fresh f where t.trace_id = f.trace_id and f.span_count = 0"),
                &[],
            )
            .await
            .ctx("deleting summaries of traces that left the window")? as i64;
    }
    // The exact oldest span of each recomputed trace (older entries of a trace stay: they are
    // lower bounds, and pass the window edge first).
    client
        .execute(
            &format!(
                "insert into {oldest} (trace_id, oldest)
                 select trace_id, oldest from ts_fresh where span_count > 0",
                oldest = names.oldest
            ),
            &[],
        )
        .await
        .ctx("recording the oldest span of recomputed traces")?;
    Ok(Applied { upserted, deleted })
}
