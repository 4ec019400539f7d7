//! Recomputing a set of traces from all their spans in the window: the trace_ids sit in the
//! session's `ts_affected`; their rows are computed with the definition's aggregates (one index
//! lookup per trace, never a scan of the window), then upserted, or deleted when no span is left,
//! and each trace's exact oldest in-window span is appended to the installation's side table.
//!
//! `cap` restricts the spans to those the step's position covers (ids below `cap`), so a trace
//! recomputed in a bounded step does not already count spans the next step will merge.

use crate::db::source::Target;
use crate::db::sqltext;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use crate::state::Names;
use tokio_postgres::GenericClient;

#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub upserted: i64,
    pub deleted: i64,
}

/// Recomputes every trace in `ts_affected` into `summaries`. `cap`: None when the step covers
/// everything its snapshot sees.
pub async fn apply<C: GenericClient>(
    client: &C,
    target: &Target,
    def: &Definition,
    summaries: &str,
    names: &Names,
    edge: chrono::DateTime<chrono::Utc>,
    cap: Option<i64>,
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
    let cap_filter = if cap.is_some() {
        "and (o.trace_summarizer_xid < $2 or o.trace_summarizer_xid is null)"
    } else {
        "and $2::bigint is null"
    };
    let fill = format!(
        "insert into ts_fresh
         select a.trace_id, s.*
         from ts_affected a
         cross join lateral (
             select {aggregates}, min(o.\"timestamp\") as oldest
             from {traces} o
             where o.trace_id = a.trace_id and o.\"timestamp\" > $1 {cap_filter}
         ) s",
        aggregates = def.aggregates(),
        traces = target.traces(),
    );
    client
        .execute(&fill, &[&edge, &cap])
        .await
        .ctx("recomputing affected traces")?;
    let cols = sqltext::column_list(None);
    let upserted = client
        .execute(
            &format!(
                "insert into {summaries} as t ({cols}) select {cols} from ts_fresh where span_count > 0 {tail}",
                tail = sqltext::upsert_tail("t"),
            ),
            &[],
        )
        .await
        .ctx("upserting summaries")? as i64;
    let deleted = client
        .execute(
            &format!("delete from {summaries} t using ts_fresh f where t.trace_id = f.trace_id and f.span_count = 0"),
            &[],
        )
        .await
        .ctx("deleting summaries of traces that left the window")? as i64;
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
