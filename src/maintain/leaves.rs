//! The relations that hold otel_traces' rows (the table itself, its leaf partitions at any
//! depth, or its TimescaleDB chunks), and what happened to them since the last step.
//!
//! No trigger fires when a relation disappears, is emptied or comes back. So each step compares
//! the relations with the ones last seen, each with three things that change only when its rows
//! may have changed unseen:
//! - its relfilenode: a new one after `TRUNCATE`, but also after a rewrite that loses nothing
//!   (`VACUUM FULL`, `CLUSTER`, compression), told apart by the rows the position covers (they
//!   survive a rewrite, never a truncation: every row written since carries a new stamp);
//! - the version of its `pg_inherits` row (`xmin` and `ctid`): a partition detached and attached
//!   again, even in one transaction, has a new row, whatever was done to it meanwhile;
//! - the versions of its copies of our triggers (`pg_trigger`): disabled and enabled again,
//!   dropped and recreated, or lost on a detach.
//!
//! A relation gone (`DROP`, `DETACH`, `drop_chunks`) or emptied: the summarized traces with
//! spans in the time range read from it go to the recompute queue. A relation new or replaced
//! (attached with rows, re-attached, its triggers changed): that range too, and the traces of its
//! rows the position already covers (written before the attach; tailing never reads them).
//!
//! Every read of a relation goes through otel_traces itself, restricted to the relation by
//! `tableoid` and by the relation's own bounds (so that partitions and chunks are pruned): the
//! worker needs privileges on otel_traces alone, not on each partition pg_partman creates.

use crate::db::source::Target;
use crate::db::statements::Db;
use crate::error::{DbContext, Result};
use crate::maintain::columnar;
use crate::maintain::tailing::{covered, Snapshot};
use crate::state::{Names, Position};
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// What the comparison of relations found.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeafChanges {
    pub gone: usize,
    pub emptied: usize,
    pub appeared: usize,
    /// Re-attached, or their triggers changed.
    pub replaced: usize,
    /// Traces put in the queue.
    pub queued: i64,
    /// TimescaleDB chunks whose columnar storage received rows no step had read
    /// (`columnar.rs`).
    pub recompressed: usize,
}

impl LeafChanges {
    pub fn any(&self) -> bool {
        self.gone + self.emptied + self.appeared + self.replaced + self.recompressed > 0
    }
}

/// The relations that hold otel_traces' rows now ($1: the roots, `Target::roots`; $2: our
/// trigger names): the table itself when it has storage, its leaf partitions (any depth) or its
/// chunks, with the version of the `pg_inherits` row that attaches each, and of its copies of our
/// triggers. A partition being detached concurrently is gone.
const CURRENT: &str = "with recursive tree(oid, inh) as (
        select unnest($1::oid[]), null::text
        union all
        select i.inhrelid, i.xmin::text || '/' || i.ctid::text
        from pg_inherits i join tree t on i.inhparent = t.oid where not i.inhdetachpending
    )
    select c.oid as relid, c.relfilenode, t.inh,
           (select string_agg(g.tgname || ':' || g.tgenabled::text || ':' || g.xmin::text || '/' || g.ctid::text, ',' order by g.tgname)
            from pg_trigger g where g.tgrelid = c.oid and g.tgname = any($2::text[])) as trig
    from tree t join pg_class c on c.oid = t.oid where c.relkind = 'r'";

/// A relation that differs from what was last seen.
struct Difference {
    relid: u32,
    /// Now (None: gone).
    now: Option<(u32, Option<String>, Option<String>)>,
    /// Last seen (None: new).
    seen: Option<Seen>,
}

struct Seen {
    inh: Option<String>,
    trig: Option<String>,
    lo: Option<DateTime<Utc>>,
    hi: Option<DateTime<Utc>>,
}

/// Compares the current relations with the stored ones; queues the traces whose spans may have
/// changed unseen; stores the current set. One statement when nothing changed.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    source_oid: u32,
    pos: &Position,
    snap: &Snapshot,
    columnar: bool,
) -> Result<LeafChanges> {
    let summaries = target.summaries_read();
    let rows = client
        .query(
            &format!(
                "with cur as ({CURRENT})
                 select coalesce(c.relid, l.relid), c.relid is not null, c.relfilenode, c.inh, c.trig,
                        l.relid is not null, l.relfilenode, l.inh_version, l.trig_version, l.lo, l.hi
                 from cur c full join {leaves} l on l.relid = c.relid
                 where c.relid is null or l.relid is null
                    or (c.relfilenode, c.inh, c.trig) is distinct from (l.relfilenode, l.inh_version, l.trig_version)",
                leaves = names.leaves
            ),
            &[&target.roots(source_oid), &names.triggers()],
        )
        .await
        .ctx("comparing the partitions of otel_traces")?;
    let mut changes = LeafChanges::default();
    for r in rows {
        let d = Difference {
            relid: r.get(0),
            now: r.get::<_, bool>(1).then(|| (r.get(2), r.get(3), r.get(4))),
            seen: r.get::<_, bool>(5).then(|| Seen {
                inh: r.get(7),
                trig: r.get(8),
                lo: r.get(9),
                hi: r.get(10),
            }),
        };
        let context = Context {
            target,
            names,
            summaries: &summaries,
            pos,
            snap,
        };
        apply(client, &context, d, &mut changes).await?;
    }
    if columnar {
        let (chunks, queued) = columnar::queue_moved(client, target, names, pos, snap.edge).await?;
        changes.recompressed += chunks;
        changes.queued += queued;
    }
    Ok(changes)
}

/// What `apply` works against.
struct Context<'a> {
    target: &'a Target,
    names: &'a Names,
    summaries: &'a str,
    pos: &'a Position,
    snap: &'a Snapshot,
}

async fn apply<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    cx: &Context<'_>,
    d: Difference,
    changes: &mut LeafChanges,
) -> Result<()> {
    let (target, names, summaries, pos, edge) =
        (cx.target, cx.names, cx.summaries, cx.pos, cx.snap.edge);
    let relid = d.relid;
    match (d.now, d.seen) {
        (None, Some(seen)) => {
            changes.gone += 1;
            changes.queued += queue_range(client, names, summaries, seen.lo, seen.hi, edge).await?;
            client
                .execute(
                    &format!("delete from {} where relid = $1", names.leaves),
                    &[&relid],
                )
                .await
                .ctx("forgetting a partition")?;
            tracing::info!(
                relid,
                "a partition or chunk of otel_traces is gone; its traces are recomputed"
            );
        }
        (Some((relfilenode, inh, trig)), None) => {
            changes.appeared += 1;
            changes.queued += queue_covered_rows(client, target, relid, pos, edge, names).await?;
            record(client, target, names, relid, relfilenode, inh, trig, edge).await?;
        }
        (Some((relfilenode, inh, trig)), Some(seen)) => {
            if inh == seen.inh && trig == seen.trig {
                // Only the storage changed: a rewrite keeps the rows the position covers, a
                // truncation keeps none of them.
                if covered_rows_survive(client, target, relid, pos).await? {
                    // Rows a compression moved unread are found by `columnar::queue_moved`.
                    client
                        .execute(
                            &format!(
                                "update {} set relfilenode = $2 where relid = $1",
                                names.leaves
                            ),
                            &[&relid, &relfilenode],
                        )
                        .await
                        .ctx("recording a rewritten partition")?;
                    return Ok(());
                }
                changes.emptied += 1;
                tracing::info!(
                    relid,
                    "a partition or chunk of otel_traces was truncated; its traces are recomputed"
                );
            } else {
                changes.replaced += 1;
                tracing::info!(
                    relid,
                    "a partition or chunk of otel_traces was attached again or its triggers changed; its traces are recomputed"
                );
            }
            changes.queued += queue_range(client, names, summaries, seen.lo, seen.hi, edge).await?;
            changes.queued += queue_covered_rows(client, target, relid, pos, edge, names).await?;
            record(client, target, names, relid, relfilenode, inh, trig, edge).await?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// How many relations differ from what was last seen (for `status`: changes the worker has not
/// reconciled yet). Read-only.
pub async fn unreconciled<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    source_oid: u32,
) -> Result<i64> {
    Ok(client
        .query_one(
            &format!(
                "with cur as ({CURRENT})
                 select count(*) from cur c full join {leaves} l on l.relid = c.relid
                 where c.relid is null or l.relid is null
                    or (c.relfilenode, c.inh, c.trig) is distinct from (l.relfilenode, l.inh_version, l.trig_version)",
                leaves = names.leaves
            ),
            &[&target.roots(source_oid), &names.triggers()],
        )
        .await
        .ctx("comparing the partitions of otel_traces")?
        .get(0))
}

/// Forgets every relation and records the current ones (a full refresh).
pub async fn record_all<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    source_oid: u32,
    edge: DateTime<Utc>,
) -> Result<()> {
    client
        .execute(&format!("delete from {}", names.leaves), &[])
        .await
        .ctx("clearing the partitions last seen")?;
    let rows = client
        .query(CURRENT, &[&target.roots(source_oid), &names.triggers()])
        .await
        .ctx("listing the partitions of otel_traces")?;
    for r in rows {
        record(
            client,
            target,
            names,
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            edge,
        )
        .await?;
    }
    Ok(())
}

/// Records a relation with the time range of its in-window spans (through its own index on
/// "timestamp": two index probes).
#[allow(clippy::too_many_arguments)]
async fn record<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    relid: u32,
    relfilenode: u32,
    inh: Option<String>,
    trig: Option<String>,
    edge: DateTime<Utc>,
) -> Result<()> {
    let only = within(client, target, relid).await?;
    let traces = target.traces();
    client
        .execute(
            &format!(
                "insert into {leaves} (relid, relfilenode, inh_version, trig_version, lo, hi)
                 select $1, $2, $3, $4,
                        (select min(\"timestamp\") from {traces} where {only} and \"timestamp\" > $5),
                        (select max(\"timestamp\") from {traces} where {only} and \"timestamp\" > $5)
                 on conflict (relid) do update set relfilenode = excluded.relfilenode, inh_version = excluded.inh_version,
                        trig_version = excluded.trig_version, lo = excluded.lo, hi = excluded.hi",
                leaves = names.leaves
            ),
            &[&relid, &relfilenode, &inh, &trig, &edge],
        )
        .await
        .ctx("recording a partition")?;
    Ok(())
}

/// A filter on otel_traces that keeps the rows of one of its relations only, and lets the
/// planner prune every other partition or chunk: `tableoid`, and the relation's own bounds (its
/// partition constraint, or a chunk's check constraints).
pub async fn within<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    relid: u32,
) -> Result<String> {
    let row = client
        .query_one(
            "select c.oid = to_regclass(quote_ident($2) || '.otel_traces'),
                    case when c.relispartition then pg_get_partition_constraintdef(c.oid) end,
                    (select string_agg('(' || pg_get_expr(k.conbin, k.conrelid) || ')', ' and ' order by k.conname)
                     from pg_constraint k where k.conrelid = c.oid and k.contype = 'c')
             from pg_class c where c.oid = $1",
            &[&relid, &target.schema],
        )
        .await
        .ctx("reading the bounds of a partition")?;
    let root: bool = row.get(0);
    let bounds: Option<String> = if root {
        None
    } else {
        row.get::<_, Option<String>>(1).or(row.get(2))
    };
    Ok(match bounds {
        Some(b) => format!("tableoid = {relid}::oid and ({b})"),
        None => format!("tableoid = {relid}::oid"),
    })
}

/// Queues the summarized traces that may have a span in `[lo, hi]` (nothing when that range is
/// unknown or entirely outside the window).
async fn queue_range<C: GenericClient + Sync>(
    client: &Db<'_, C>,
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

/// Whether a relation still holds rows that the position covers (stamped before it, or before
/// install). A truncation removes every one of them; a rewrite keeps them all.
async fn covered_rows_survive<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    relid: u32,
    pos: &Position,
) -> Result<bool> {
    let only = within(client, target, relid).await?;
    Ok(client
        .query_one(
            &format!(
                "select exists (select 1 from {} where {only} and {})",
                target.traces(),
                covered("trace_summarizer_xid", "$1", "$2")
            ),
            &[&pos.xmax, &pos.xip],
        )
        .await
        .ctx("looking at a rewritten partition")?
        .get(0))
}

/// Queues the traces of in-window rows of a relation that the position already covers: rows
/// written before the relation was attached, which tailing will never read.
async fn queue_covered_rows<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    relid: u32,
    pos: &Position,
    edge: DateTime<Utc>,
    names: &Names,
) -> Result<i64> {
    let only = within(client, target, relid).await?;
    Ok(client
        .execute(
            &format!(
                "insert into {queue} (trace_id)
                 select distinct trace_id from {traces}
                 where {only} and \"timestamp\" > $3 and trace_id is not null and {covered}",
                queue = names.queue,
                traces = target.traces(),
                covered = covered("trace_summarizer_xid", "$1", "$2"),
            ),
            &[&pos.xmax, &pos.xip, &edge],
        )
        .await
        .ctx("queueing the rows of an attached partition")? as i64)
}
