//! Spans that disappear or change: retention and everything else that is not an insert.
//!
//! - **Deleted or updated rows** (a `DELETE` in batches in any order, a manual fix, an
//!   `UPDATE`): the installation's triggers on otel_traces put the trace in the recompute queue,
//!   in the transaction that changed the row, so a step sees the change and the queue entry in
//!   the same snapshot.
//! - **Relations that disappear or are emptied** (`DROP`, `DETACH` or `TRUNCATE` of any
//!   partition, TimescaleDB `drop_chunks`, `TRUNCATE otel_traces`): no trigger fires. Each step
//!   compares the relations that hold otel_traces' rows (the table, its leaf partitions or its
//!   chunks, with their relfilenodes) with the last ones seen. The traces with in-window spans
//!   in the time range summarized from a relation that is gone or was emptied go to the queue.
//!   A relation rewritten without losing rows (`VACUUM FULL`, `CLUSTER`, compression) is told
//!   apart from a truncated one by its rows the position already covers: they survive a
//!   rewrite, never a truncation.
//! - **Relations that appear** (a new partition or chunk, or a table attached with rows in it):
//!   rows the position already covers (written before the attach) go to the queue too.
//!
//! Each step then recomputes a bounded batch of queued traces (`take_batch`).

use crate::db::quote;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::state::{Names, Position};
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// What the comparison of relations found.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeafChanges {
    pub gone: usize,
    pub emptied: usize,
    pub appeared: usize,
    /// Traces put in the queue.
    pub queued: i64,
}

impl LeafChanges {
    pub fn any(&self) -> bool {
        self.gone + self.emptied + self.appeared > 0
    }
}

/// A relation as last seen: (oid, relfilenode, lo, hi).
type StoredLeaf = (u32, u32, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The relations that hold otel_traces' rows: the table itself when it has storage, its leaf
/// partitions (any depth) or its chunks. A partition being detached concurrently is gone.
const CURRENT: &str = "with recursive tree(oid) as (
        select $1::oid
        union all
        select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid where not i.inhdetachpending
    )
    select c.oid, c.relfilenode from tree t join pg_class c on c.oid = t.oid where c.relkind = 'r'";

/// Compares the current relations with the stored ones; queues the traces whose spans may be
/// gone; stores the current set. Cheap when nothing changed (one comparison of two sums).
pub async fn reconcile_leaves<C: GenericClient>(
    client: &C,
    target: &Target,
    names: &Names,
    summaries: &str,
    source_oid: u32,
    pos: &Position,
    edge: DateTime<Utc>,
) -> Result<LeafChanges> {
    let same: bool = client
        .query_one(
            &format!(
                "select (select (count(*), coalesce(sum(oid::bigint), 0), coalesce(sum(relfilenode::bigint), 0)) from ({CURRENT}) c)
                      = (select (count(*), coalesce(sum(relid::bigint), 0), coalesce(sum(relfilenode::bigint), 0)) from {leaves})",
                leaves = names.leaves
            ),
            &[&source_oid],
        )
        .await
        .ctx("comparing the partitions of otel_traces")?
        .get(0);
    if same {
        return Ok(LeafChanges::default());
    }
    let current = current_leaves(client, source_oid).await?;
    let stored: Vec<StoredLeaf> = client
        .query(
            &format!("select relid, relfilenode, lo, hi from {}", names.leaves),
            &[],
        )
        .await
        .ctx("reading the partitions last seen")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut changes = LeafChanges::default();
    for (relid, relfilenode, lo, hi) in &stored {
        match current.iter().find(|(oid, _)| oid == relid) {
            None => {
                changes.gone += 1;
                changes.queued += queue_range(client, names, summaries, *lo, *hi, edge).await?;
                client
                    .execute(
                        &format!("delete from {} where relid = $1", names.leaves),
                        &[relid],
                    )
                    .await
                    .ctx("forgetting a partition")?;
                tracing::info!(
                    relid,
                    "a partition or chunk of otel_traces is gone; its traces are recomputed"
                );
            }
            Some((_, now)) if now != relfilenode => {
                if covered_rows_survive(client, *relid, pos).await? {
                    // Rewritten (VACUUM FULL, CLUSTER, compression): no row was lost.
                    client
                        .execute(
                            &format!(
                                "update {} set relfilenode = $2 where relid = $1",
                                names.leaves
                            ),
                            &[relid, now],
                        )
                        .await
                        .ctx("recording a rewritten partition")?;
                } else {
                    changes.emptied += 1;
                    changes.queued += queue_range(client, names, summaries, *lo, *hi, edge).await?;
                    client
                        .execute(
                            &format!(
                                "update {} set relfilenode = $2, lo = null, hi = null where relid = $1",
                                names.leaves
                            ),
                            &[relid, now],
                        )
                        .await
                        .ctx("recording an emptied partition")?;
                    tracing::info!(relid, "a partition or chunk of otel_traces was truncated; its traces are recomputed");
                }
            }
            Some(_) => {}
        }
    }
    for (oid, relfilenode) in &current {
        if stored.iter().any(|(relid, ..)| relid == oid) {
            continue;
        }
        changes.appeared += 1;
        changes.queued += queue_covered_rows(client, target, names, *oid, pos, edge).await?;
        record_leaf(client, names, *oid, *relfilenode, edge).await?;
    }
    Ok(changes)
}

/// The relations holding otel_traces' rows now, with their relfilenodes.
pub async fn current_leaves<C: GenericClient>(
    client: &C,
    source_oid: u32,
) -> Result<Vec<(u32, u32)>> {
    Ok(client
        .query(CURRENT, &[&source_oid])
        .await
        .ctx("listing the partitions of otel_traces")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Records a relation with the time range of its in-window spans (read through its own index
/// on "timestamp", so two index probes).
pub async fn record_leaf<C: GenericClient>(
    client: &C,
    names: &Names,
    relid: u32,
    relfilenode: u32,
    edge: DateTime<Utc>,
) -> Result<()> {
    let rel = leaf_name(client, relid).await?;
    client
        .execute(
            &format!(
                "insert into {} (relid, relfilenode, lo, hi)
                 select $1, $2,
                        (select min(\"timestamp\") from {rel} where \"timestamp\" > $3),
                        (select max(\"timestamp\") from {rel} where \"timestamp\" > $3)
                 on conflict (relid) do update set relfilenode = excluded.relfilenode, lo = excluded.lo, hi = excluded.hi",
                names.leaves
            ),
            &[&relid, &relfilenode, &edge],
        )
        .await
        .ctx("recording a partition")?;
    Ok(())
}

/// Queues the summarized traces that may have a span in `[lo, hi]` (nothing when that range is
/// unknown or entirely outside the window).
async fn queue_range<C: GenericClient>(
    client: &C,
    names: &Names,
    summaries: &str,
    lo: Option<DateTime<Utc>>,
    hi: Option<DateTime<Utc>>,
    edge: DateTime<Utc>,
) -> Result<i64> {
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(0);
    };
    if hi <= edge {
        return Ok(0);
    }
    Ok(client
        .execute(
            &format!(
                "insert into {queue} (trace_id)
                 select distinct o.trace_id from {oldest} o join {summaries} t on t.trace_id = o.trace_id
                 where o.oldest <= $2 and t.\"timestamp\" >= $1",
                queue = names.queue,
                oldest = names.oldest
            ),
            &[&lo, &hi],
        )
        .await
        .ctx("queueing the traces of a removed partition")? as i64)
}

/// Whether a relation still holds rows that the position covers (stamped before it, or
/// before install). A truncation removes every one of them; a rewrite keeps them all.
async fn covered_rows_survive<C: GenericClient>(
    client: &C,
    relid: u32,
    pos: &Position,
) -> Result<bool> {
    let rel = leaf_name(client, relid).await?;
    Ok(client
        .query_one(
            &format!(
                "select exists (select 1 from {rel} where trace_summarizer_xid is null)
                     or exists (select 1 from {rel}
                                where trace_summarizer_xid < $1 and not (trace_summarizer_xid = any($2::bigint[])))"
            ),
            &[&pos.xmax, &pos.xip],
        )
        .await
        .ctx("looking at a rewritten partition")?
        .get(0))
}

/// Queues the traces of in-window rows of a new relation that the position already covers:
/// rows written before the relation was attached, which tailing will never read.
async fn queue_covered_rows<C: GenericClient>(
    client: &C,
    target: &Target,
    names: &Names,
    relid: u32,
    pos: &Position,
    edge: DateTime<Utc>,
) -> Result<i64> {
    let _ = target;
    let rel = leaf_name(client, relid).await?;
    Ok(client
        .execute(
            &format!(
                "insert into {queue} (trace_id)
                 select distinct trace_id from {rel}
                 where \"timestamp\" > $3
                   and (trace_summarizer_xid is null
                        or (trace_summarizer_xid < $1 and not (trace_summarizer_xid = any($2::bigint[]))))",
                queue = names.queue
            ),
            &[&pos.xmax, &pos.xip, &edge],
        )
        .await
        .ctx("queueing the rows of an attached partition")? as i64)
}

/// The relation to scan for one leaf's own rows: `ONLY` for a relation with children (the root
/// of a hypertable, whose chunks are separate leaves); plain otherwise, so that TimescaleDB
/// reads a compressed chunk's compressed rows too (`ONLY` would skip them).
async fn leaf_name<C: GenericClient>(client: &C, relid: u32) -> Result<String> {
    let row = client
        .query_one(
            "select n.nspname::text, c.relname::text, exists (select 1 from pg_inherits i where i.inhparent = c.oid)
             from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = $1",
            &[&relid],
        )
        .await
        .ctx("naming a partition")?;
    let name = quote::qualified(&row.get::<_, String>(0), &row.get::<_, String>(1));
    Ok(if row.get::<_, bool>(2) {
        format!("only {name}")
    } else {
        name
    })
}

/// Widens the stored time range of each relation by the new spans read from it.
pub async fn widen_ranges<C: GenericClient>(
    client: &C,
    names: &Names,
    edge: DateTime<Utc>,
) -> Result<()> {
    client
        .execute(
            &format!(
                "update {leaves} l set lo = least(l.lo, m.lo), hi = greatest(l.hi, m.hi)
                 from (select leaf, min(\"timestamp\") as lo, max(\"timestamp\") as hi
                       from ts_new where \"timestamp\" > $1 group by leaf) m
                 where l.relid = m.leaf",
                leaves = names.leaves
            ),
            &[&edge],
        )
        .await
        .ctx("recording the time range of partitions")?;
    Ok(())
}

/// Moves up to `limit` queued traces into `ts_affected`; returns how many entries were taken.
pub async fn take_batch<C: GenericClient>(client: &C, names: &Names, limit: i64) -> Result<i64> {
    let row = client
        .query_one(
            &format!(
                "with taken as (
                     delete from {queue} where ctid = any(array(select ctid from {queue} limit $1))
                     returning trace_id
                 ), added as (
                     insert into ts_affected select distinct trace_id from taken on conflict do nothing
                 )
                 select count(*) from taken",
                queue = names.queue
            ),
            &[&limit],
        )
        .await
        .ctx("taking traces from the recompute queue")?;
    Ok(row.get(0))
}

/// Whether more than `limit` entries wait in the queue.
pub async fn queue_exceeds<C: GenericClient>(
    client: &C,
    names: &Names,
    limit: i64,
) -> Result<bool> {
    Ok(client
        .query_one(
            &format!(
                "select count(*) > $1::bigint from (select 1 from {} limit $1::bigint + 1) q",
                names.queue
            ),
            &[&limit],
        )
        .await
        .ctx("measuring the recompute queue")?
        .get(0))
}

/// Takes up to `limit` side-table entries at or below the window edge (a span of their trace may
/// have left the window), oldest first, and adds their traces to `ts_affected`; their recompute
/// appends the exact oldest span of each trace still in the window. Returns how many entries.
pub async fn take_edge_batch<C: GenericClient>(
    client: &C,
    names: &Names,
    edge: DateTime<Utc>,
    limit: i64,
) -> Result<i64> {
    Ok(client
        .query_one(
            &format!(
                "with e as (delete from {oldest} where ctid = any(array(
                                 select ctid from {oldest} where oldest <= $1 order by oldest limit $2))
                             returning trace_id),
                      added as (insert into ts_affected select distinct trace_id from e on conflict do nothing)
                 select count(*) from e",
                oldest = names.oldest
            ),
            &[&edge, &limit],
        )
        .await
        .ctx("finding traces at the window edge")?
        .get(0))
}
