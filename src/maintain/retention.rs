//! Spans that disappear or change: the recompute queue and the window edge.
//!
//! - **Deleted or updated rows** (a `DELETE` in batches in any order, a manual fix, an
//!   `UPDATE`): the installation's triggers on otel_traces put the trace in the recompute queue,
//!   in the transaction that changed the row, so a step sees the change and the queue entry in
//!   the same snapshot.
//! - **Relations that disappear, are emptied, or come back** are found by `leaves.rs`, which
//!   queues their traces here.
//! - **The window edge**: traces whose oldest in-window span crossed it are recomputed, from the
//!   side table of oldest span times. When the edge moves back (a DST fall-back in a calendar
//!   window, a server clock stepped back), the spans between the two edges belong to the window
//!   again: their traces are queued (`edge_moved_back`).
//!
//! Each step then recomputes a bounded batch of queued traces (`take_batch`).

use crate::db::source::Target;
use crate::db::statements::Db;
use crate::error::{DbContext, Result};
use crate::maintain::tailing::covered;
use crate::state::{Names, Position};
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// What `take` took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Taken {
    /// Queue entries (deleted or updated spans, removed partitions).
    pub queued: i64,
    /// Side-table entries at or below the window edge.
    pub at_edge: i64,
    /// Summaries whose newest span left the window, removed.
    pub pruned: i64,
}

/// In one statement: moves up to `limit` queued traces and up to `limit` side-table entries at
/// or below the window edge (a span of their trace may have left the window; oldest first) into
/// `ts_affected`, and removes the summaries whose newest span left the window (normally already
/// recomputed away as their oldest span crossed the edge; this catches any without a side-table
/// entry, whose entries pass the edge in turn). The recompute of `ts_affected` appends the exact
/// oldest span of each trace still in the window.
pub async fn take<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    names: &Names,
    target: &Target,
    edge: DateTime<Utc>,
    limit: i64,
) -> Result<Taken> {
    // Pruned from each relation the summaries live in (one, or a Citus node's local shards).
    let writes = target.summary_writes();
    let gone = writes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "gone{i} as (delete from {} where \"timestamp\" <= $2 returning 1)",
                w.relation
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let gone_count = (0..writes.len())
        .map(|i| format!("(select count(*) from gone{i})"))
        .collect::<Vec<_>>()
        .join(" + ");
    let row = client
        .query_one(
            &format!(
                "with q as (
                     delete from {queue} where ctid = any(array(select ctid from {queue} limit $1))
                     returning trace_id
                 ), e as (
                     delete from {oldest} where ctid = any(array(
                         select ctid from {oldest} where oldest <= $2 order by oldest limit $1))
                     returning trace_id
                 ), added as (
                     insert into ts_affected
                     select distinct trace_id from (select trace_id from q union all select trace_id from e) x
                     on conflict do nothing
                 ), {gone}
                 select (select count(*) from q), (select count(*) from e), {gone_count}",
                queue = names.queue,
                oldest = names.oldest,
            ),
            &[&limit, &edge],
        )
        .await
        .ctx("taking traces to recompute")?;
    Ok(Taken {
        queued: row.get(0),
        at_edge: row.get(1),
        pruned: row.get(2),
    })
}

/// Whether more than `limit` entries wait in the queue.
pub async fn queue_exceeds<C: GenericClient + Sync>(
    client: &Db<'_, C>,
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

/// The window edge moved back from `done` to `edge`: the spans in `(edge, done]` are in the window
/// again, so their traces are queued (their summaries lack those spans, or were pruned). Reads
/// them through the index on "timestamp"; returns how many traces were queued.
pub async fn edge_moved_back<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    pos: &Position,
    edge: DateTime<Utc>,
    done: DateTime<Utc>,
) -> Result<i64> {
    let queued = client
        .execute(
            &format!(
                "insert into {queue} (trace_id)
                 select distinct trace_id from {traces}
                 where \"timestamp\" > $1 and \"timestamp\" <= $2 and trace_id is not null and {covered}",
                queue = names.queue,
                traces = target.traces(),
                covered = covered("trace_summarizer_xid", "$3", "$4"),
            ),
            &[&edge, &done, &pos.xmax, &pos.xip],
        )
        .await
        .ctx("queueing the traces the window edge gave back")? as i64;
    tracing::info!(
        queued,
        back_by_s = (done - edge).num_seconds(),
        "the window edge moved back (a DST fall-back or a clock set back); its traces are recomputed"
    );
    Ok(queued)
}
