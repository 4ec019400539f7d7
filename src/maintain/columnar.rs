//! TimescaleDB's columnar storage: spans that a compression moved out of the rowstore before a
//! step read them.
//!
//! Tailing and the idle check read only the rowstore (`tailing::COLUMNAR_OFF`), so that they
//! never decompress old chunks. New rows always land in the rowstore, also in a compressed chunk
//! (which then becomes "partial"). Two commands move rows into columnar storage:
//! - `compress_chunk` of an uncompressed chunk truncates its rowstore (a new relfilenode);
//! - a recompression of a partial chunk (`compress_chunk` again, or the compression policy)
//!   deletes the rowstore's rows one by one and inserts new compressed batches. No trigger fires,
//!   and the chunk keeps its relfilenode; the chunk's catalog row changes only when no row was
//!   inserted meanwhile.
//!
//! A row moved after a step read it is summarized already. A row moved before any step read it
//! keeps its stamp, which the position does not cover; the compressed batch that holds it was
//! written by a transaction the position does not cover either. So each step (and the idle
//! worker's catalog check) looks, in the chunks that are compressed and either partial or whose
//! catalog row changed since the position, for a compressed batch the position does not cover
//! (the batch tuple's `xmin`, widened to 64 bits, in the stamp space). Only then does it read
//! that chunk's columnar data, and queues the in-window traces of its rows the position does not
//! cover: the recompute makes them exact in the same step. Nothing is read when no chunk is
//! compressed.

use crate::db::source::Target;
use crate::db::statements::Db;
use crate::error::{DbContext, Result};
use crate::maintain::leaves;
use crate::maintain::tailing::covered;
use crate::state::{Names, Position};
use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

/// A 32-bit `xmin` of a tuple visible to the statement's snapshot, as a stamp: widened with the
/// epoch of the snapshot's `xmax` (a visible tuple's xmin lies below it), plus the installation's
/// stamp offset (`s.stamp_offset`).
fn stamp_of_xmin(xmin: &str) -> String {
    format!(
        "(select w - case when w >= x then 4294967296 else 0 end + s.stamp_offset
          from (select pg_snapshot_xmax(pg_current_snapshot())::text::bigint as x) cur,
               lateral (select ((cur.x >> 32) << 32) + {xmin}::text::bigint as w) wide)"
    )
}

/// The compressed chunks of otel_traces that may hold rows a recompression moved since the
/// position ($1: the schema): partial now, or their catalog row changed since the position. Each
/// with the chunk's oid and its compressed relation's name. The relations are found in the
/// statement's own snapshot (no name lookups, which would see a chunk dropped since).
fn candidates() -> String {
    format!(
        "select r.oid, format('%I.%I', z.schema_name, z.table_name)
         from trace_summarizer.state s
         join _timescaledb_catalog.hypertable h on h.schema_name = s.target_schema and h.table_name = 'otel_traces'
         join _timescaledb_catalog.chunk c on c.hypertable_id = h.id and not c.dropped
         join _timescaledb_catalog.chunk z on z.id = c.compressed_chunk_id
         join pg_namespace n on n.nspname = c.schema_name
         join pg_class r on r.relnamespace = n.oid and r.relname = c.table_name
         where s.target_schema = $1
           and (c.status & 8 <> 0 or not {covered})",
        covered = covered(&stamp_of_xmin("c.xmin"), "s.pos_xmax", "s.pos_xip")
    )
}

/// Whether a compressed relation holds a batch written since the position ($1: the schema).
fn new_batches(compressed: &str) -> String {
    format!(
        "select exists (select 1 from {compressed} b, trace_summarizer.state s
                        where s.target_schema = $1 and not {covered})",
        covered = covered(&stamp_of_xmin("b.xmin"), "s.pos_xmax", "s.pos_xip")
    )
}

/// The compressed chunks that hold a batch written since the position: a step must look at
/// their columnar rows. Read-only; empty without TimescaleDB's catalog. `in_step`: inside a
/// step's transaction, where a compressed relation dropped since the snapshot (a decompression)
/// must not abort the transaction (a savepoint catches it); such a chunk counts as found, and
/// its rows are then read through otel_traces.
pub async fn moved<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    in_step: bool,
) -> Result<Vec<u32>> {
    let rows = client
        .query(&candidates(), &[&target.schema])
        .await
        .ctx("looking for recompressed chunks of otel_traces")?;
    let mut found = Vec::new();
    for r in rows {
        let (chunk, compressed): (u32, String) = (r.get(0), r.get(1));
        if in_step {
            client
                .batch_execute("savepoint ts_columnar")
                .await
                .ctx("looking at a compressed chunk")?;
        }
        let fresh = match client
            .query_one(&new_batches(&compressed), &[&target.schema])
            .await
        {
            Ok(row) => row.get(0),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                if in_step {
                    client
                        .batch_execute("rollback to savepoint ts_columnar")
                        .await
                        .ctx("looking at a compressed chunk")?;
                }
                true
            }
            Err(e) => return Err(e).ctx("looking at the batches of a compressed chunk"),
        };
        if in_step {
            client
                .batch_execute("release savepoint ts_columnar")
                .await
                .ctx("looking at a compressed chunk")?;
        }
        if fresh {
            found.push(chunk);
        }
    }
    Ok(found)
}

/// Queues the in-window traces of rows the position does not cover in the chunks that `moved`
/// found (their columnar rows included: the step reads columnar data here). Returns how many
/// chunks held such rows, and how many traces were queued.
pub async fn queue_moved<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    pos: &Position,
    edge: DateTime<Utc>,
) -> Result<(usize, i64)> {
    let (mut chunks, mut queued) = (0, 0);
    for chunk in moved(client, target, true).await? {
        let only = leaves::within(client, target, chunk).await?;
        let n = client
            .execute(
                &format!(
                    "insert into {queue} (trace_id)
                     select distinct trace_id from {traces}
                     where {only} and \"timestamp\" > $3 and trace_id is not null and not {covered}",
                    queue = names.queue,
                    traces = target.traces(),
                    covered = covered("trace_summarizer_xid", "$1", "$2"),
                ),
                &[&pos.xmax, &pos.xip, &edge],
            )
            .await
            .ctx("queueing the traces of recompressed spans")?;
        if n == 0 {
            // Compressed after a step read them.
            continue;
        }
        tracing::info!(
            relid = chunk,
            traces = n,
            "spans of otel_traces were compressed before a step read them; their traces are recomputed"
        );
        chunks += 1;
        queued += n as i64;
    }
    Ok((chunks, queued))
}
