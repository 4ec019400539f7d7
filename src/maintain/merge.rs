//! Folding new spans into existing summaries without reading the rest of their trace.
//!
//! Where only inserts happened since a summary was exact, the definition's aggregates over
//! all spans equal the merge of the old row with the aggregates over the new spans alone
//! (`sql/summary_merge.sql` says how each column merges). So a step costs what its new spans
//! cost, whether they join a new trace or one with 100k spans. Traces that also lost spans (a
//! delete, the window edge, a dropped partition) are recomputed from their spans instead
//! (`recompute.rs`); they are taken out of the merge first.

use crate::db::sqltext;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use crate::state::Names;
use tokio_postgres::GenericClient;

/// What a merge changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Merged {
    /// Traces touched by new spans (merged or inserted).
    pub traces: i64,
    /// Summaries updated in place.
    pub updated: i64,
    /// Summaries of traces seen for the first time.
    pub inserted: i64,
}

/// Aggregates the in-window rows of `ts_new` per trace into `ts_partial`, leaving out the
/// traces in `ts_affected` (they are recomputed whole).
pub async fn partials<C: GenericClient>(
    client: &C,
    def: &Definition,
    edge: chrono::DateTime<chrono::Utc>,
) -> Result<i64> {
    let spans: i64 = client
        .query_one(
            "select count(*) from ts_new where \"timestamp\" > $1",
            &[&edge],
        )
        .await
        .ctx("counting new spans")?
        .get(0);
    if spans == 0 {
        return Ok(0);
    }
    client
        .execute(
            &format!(
                "insert into ts_partial
                 select trace_id, {aggregates}, min(\"timestamp\")
                 from ts_new n
                 where \"timestamp\" > $1
                   and not exists (select 1 from ts_affected a where a.trace_id = n.trace_id)
                 group by trace_id",
                aggregates = def.aggregates()
            ),
            &[&edge],
        )
        .await
        .ctx("aggregating new spans")?;
    Ok(spans)
}

/// Merges `ts_partial` into `summaries` and the oldest-span side table.
pub async fn apply<C: GenericClient>(client: &C, summaries: &str, names: &Names) -> Result<Merged> {
    let traces: i64 = client
        .query_one("select count(*) from ts_partial", &[])
        .await
        .ctx("counting")?
        .get(0);
    if traces == 0 {
        return Ok(Merged::default());
    }
    // Lower bounds of the oldest span, appended before the summaries change: for a new trace,
    // and for one whose new spans reach below its newest (one of them may be its oldest now).
    // Spans after a trace's newest never move its oldest.
    client
        .execute(
            &format!(
                "insert into {oldest} (trace_id, oldest)
                 select n.trace_id, n.oldest from ts_partial n
                 left join {summaries} t on t.trace_id = n.trace_id
                 where t.trace_id is null or n.oldest < t.\"timestamp\"",
                oldest = names.oldest
            ),
            &[],
        )
        .await
        .ctx("recording the oldest span of merged traces")?;
    let updated = client
        .execute(&sqltext::merge(summaries), &[])
        .await
        .ctx("merging new spans into summaries")? as i64;
    let cols = sqltext::column_list(None);
    let inserted = client
        .execute(
            &format!(
                "insert into {summaries} ({cols})
                 select {cols} from ts_partial n
                 where not exists (select 1 from {summaries} t where t.trace_id = n.trace_id)"
            ),
            &[],
        )
        .await
        .ctx("inserting summaries of new traces")? as i64;
    Ok(Merged {
        traces,
        updated,
        inserted,
    })
}
