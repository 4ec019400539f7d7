//! Detecting deletes that retention does not explain.
//!
//! Retention removes the oldest spans (TimescaleDB `drop_chunks`, or a `DELETE` of old rows);
//! the cycle sees that as the oldest remaining span moving up and recomputes the traces that
//! lost spans. Any other delete or update is seen only in the table statistics (`n_tup_del`,
//! `n_tup_upd` summed over otel_traces and its partitions or chunks). When those counters move
//! while the oldest span did not, the summaries cannot be trusted and a full refresh is asked.

use crate::db::source::Target;
use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

/// Sum of deleted and updated tuples over otel_traces and its children.
pub async fn counter<C: GenericClient>(client: &C, target: &Target) -> Result<i64> {
    Ok(client
        .query_one(
            "with rel as (select to_regclass(quote_ident($1) || '.otel_traces') as oid)
             select coalesce(sum(s.n_tup_del + s.n_tup_upd), 0)::bigint
             from pg_stat_all_tables s, rel
             where s.relid = rel.oid
                or s.relid in (select inhrelid from pg_inherits i where i.inhparent = rel.oid)",
            &[&target.schema],
        )
        .await
        .ctx("reading delete statistics of otel_traces")?
        .get(0))
}

/// Compares the counters with the last check. The oldest span is remembered only when the
/// counters move, because statistics are flushed a moment after the delete that the cycle
/// already saw as a moved floor.
///
/// Compares the counters with the last check. Returns `Some(reason)` when a full refresh is
/// needed, and records what was seen either way.
pub async fn check<C: GenericClient>(client: &C, target: &Target) -> Result<Option<&'static str>> {
    let now = counter(client, target).await?;
    let Some(row) = client
        .query_opt(
            "select deletes_seen, floor_at_deletes, span_floor from trace_summarizer.state where target_schema = $1",
            &[&target.schema],
        )
        .await
        .ctx("reading trace_summarizer.state")?
    else {
        return Ok(None); // not installed: the cycle says so
    };
    let seen: Option<i64> = row.get(0);
    let floor_then: Option<chrono::DateTime<chrono::Utc>> = row.get(1);
    let floor_now: Option<chrono::DateTime<chrono::Utc>> = row.get(2);
    let verdict = match seen {
        Some(seen) if seen != now && floor_then == floor_now => Some("unexplained_deletes"),
        _ => None,
    };
    client
        .execute(
            "update trace_summarizer.state
             set floor_at_deletes = case when deletes_seen is distinct from $2 then span_floor else floor_at_deletes end,
                 deletes_seen = $2
             where target_schema = $1",
            &[&target.schema, &now],
        )
        .await
        .ctx("recording delete statistics")?;
    Ok(verdict)
}
