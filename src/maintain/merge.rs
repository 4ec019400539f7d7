//! Folding new spans into existing summaries without reading the rest of their trace.
//!
//! Where only inserts happened since a summary was exact, the definition's aggregates over
//! all spans equal the merge of the old row with the aggregates over the new spans alone
//! (`sql/summary_merge.sql` says how each column merges). So a step costs what its new spans
//! cost, whether they join a new trace or one with 100k spans. Traces that also lost spans (a
//! delete, the window edge, a dropped partition) are recomputed from their spans instead
//! (`recompute.rs`); they are taken out of the merge first.

use crate::db::source::Target;
use crate::db::sqltext;
use crate::db::statements::Db;
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

/// Folds the rows of `ts_new` (new spans, all in the window) into `summaries`, in one statement:
/// the new spans' aggregates per trace, leaving out the traces in `ts_affected` when `affected`
/// says it holds any (they are recomputed whole); lower bounds of the oldest span in the side table, written before the
/// summaries change (for a new trace, and for one whose new spans reach below its newest: one of
/// them may be its oldest now; spans after a trace's newest never move its oldest); the time
/// range read from each relation; and an upsert that inserts new traces and merges into the
/// others (`sql/summary_merge.sql`).
pub async fn apply<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    def: &Definition,
    target: &Target,
    names: &Names,
    edge: chrono::DateTime<chrono::Utc>,
    affected: bool,
) -> Result<Merged> {
    // Leaves out the traces recomputed whole this step, when there are any (otherwise a probe
    // of the empty ts_affected per new span costs a sixth of the merge for nothing).
    let unaffected = if affected {
        " and not exists (select 1 from ts_affected a where a.trace_id = n.trace_id)"
    } else {
        ""
    };
    let cols = sqltext::column_list(None);
    let summaries = target.summaries_read();
    // One upsert per relation the summaries live in (one, or a Citus node's local shards).
    let writes = target.summary_writes();
    let upserts: Vec<String> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "u{i} as (
                     insert into {rel} as t ({cols}) select {cols} from p where {holds}
                     on conflict (trace_id) do update set {set}
                     returning (t.xmax = 0) as inserted
                 )",
                rel = w.relation,
                holds = w.holds("p.trace_id"),
                set = sqltext::merge_set(),
            )
        })
        .collect();
    let union = (0..writes.len())
        .map(|i| format!("select inserted from u{i}"))
        .collect::<Vec<_>>()
        .join(" union all ");
    let row = client
        .query_one(
            &format!(
                "with p as (
                     select trace_id, {aggregates}, min(\"timestamp\") as oldest
                     from ts_new n
                     where \"timestamp\" > $1{unaffected}
                     group by trace_id
                 ), o as (
                     insert into {oldest} (trace_id, oldest)
                     select p.trace_id, p.oldest from p left join {summaries} t on t.trace_id = p.trace_id
                     where t.trace_id is null or p.oldest < t.\"timestamp\"
                 ), l as (
                     update {leaves} l set lo = least(l.lo, m.lo), hi = greatest(l.hi, m.hi)
                     from (select leaf, min(\"timestamp\") as lo, max(\"timestamp\") as hi
                           from ts_new where \"timestamp\" > $1 group by leaf) m
                     where l.relid = m.leaf
                 ), {upserts}
                 select count(*) filter (where inserted), count(*) filter (where not inserted)
                 from ({union}) u",
                aggregates = def.aggregates(),
                oldest = names.oldest,
                leaves = names.leaves,
                upserts = upserts.join(", "),
            ),
            &[&edge],
        )
        .await
        .ctx("merging new spans into summaries")?;
    let (inserted, updated): (i64, i64) = (row.get(0), row.get(1));
    Ok(Merged {
        traces: inserted + updated,
        updated,
        inserted,
    })
}
