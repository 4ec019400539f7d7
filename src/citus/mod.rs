//! Past one primary: `otel_traces` distributed by trace_id with Citus.
//!
//! # The design: each node summarizes its own shards
//!
//! A Citus cluster hash-distributes `otel_traces` by trace_id, and `otel_trace_summaries` is
//! distributed the same way and co-located with it: the spans of a trace and its summary live in
//! one pair of shards (the same hash range) on one node. Every summary depends on its own trace's
//! spans only, so the work is shard-local by construction.
//!
//! - **Stamps are the node's own.** Each shard of `otel_traces` gets, from trace-summarizer on its
//!   node, the stamp column's default and the three triggers (`node.rs`): the default is
//!   `trace_summarizer.stamp_now_<id>()`, a node-local function that returns the node's own
//!   `txid_current()` plus the node's stamp offset. The distributed table itself has the column
//!   without a default, so the coordinator never evaluates one: an `INSERT` or `COPY` that leaves
//!   the column out lets each shard stamp the row with the id of the node-local transaction that
//!   writes it, and a row that arrives with any other value (a copy, a `COPY` with every column, a
//!   `NULL` from the coordinator) is restamped by the shard's `BEFORE INSERT` trigger.
//! - **Visibility is decided on each node.** Every node that holds shards has its own installation
//!   (a state row with the coordinator's installation id, its own position, queue and side
//!   tables) and its own worker loop: a step is a `REPEATABLE READ` transaction on that node, over
//!   its local shards only (`shards.rs`: read through the union of its shards, written into each
//!   shard of the summaries for the hash range it covers). Its position is a snapshot of that
//!   node's transaction ids, exactly as on a single server: a row is read once its node-local
//!   transaction committed, never before, never twice. A multi-shard transaction commits with
//!   two-phase commit: each node's part is a prepared transaction of that node, which stays in
//!   the node's `xip` until `COMMIT PREPARED` there. A trace never spans nodes, so no summary
//!   depends on two nodes' snapshots.
//! - **Deletes and updates** fire the shard's triggers on its node, which queue the trace in that
//!   node's queue.
//! - **Shards that move** (`citus_move_shard_placement`, the rebalancer, a new node): a node whose
//!   set of local shards gains one runs a full refresh of its shards (`shard_moved`), after
//!   putting the default and triggers on the new shard and moving its stamp space past the
//!   stamps the shard brought from its old node. A node that loses a shard simply stops reading it.
//! - **The coordinator** keeps the installation (mode, window, error rule) and, when it holds
//!   shards itself (a single-node cluster), is a node like the others.

pub mod install;
pub mod node;
pub mod nodes;
pub mod shards;
pub mod status;

use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use tokio_postgres::GenericClient;

/// How otel_traces stands with Citus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// No Citus, or otel_traces is a plain local table.
    Local,
    /// Hash-distributed by trace_id: the supported form.
    ByTraceId,
}

/// Whether otel_traces is a Citus distributed table, and how. Distributed otherwise than by a
/// hash of trace_id (a reference table, another column) is refused with what to do.
pub async fn distribution<C: GenericClient>(client: &C, target: &Target) -> Result<Distribution> {
    let has_citus: bool = client
        .query_one(
            "select exists (select 1 from pg_extension where extname = 'citus')",
            &[],
        )
        .await
        .ctx("looking for Citus")?
        .get(0);
    if !has_citus {
        return Ok(Distribution::Local);
    }
    let row = client
        .query_opt(
            "select p.partmethod::text, coalesce(column_to_column_name(p.logicalrelid, p.partkey)::text, '')
             from pg_dist_partition p
             where p.logicalrelid = to_regclass(quote_ident($1) || '.otel_traces')",
            &[&target.schema],
        )
        .await
        .ctx("looking at how otel_traces is distributed")?;
    match row {
        None => Ok(Distribution::Local),
        Some(r) => {
            let (method, column): (String, String) = (r.get(0), r.get(1));
            if method == "h" && column == "trace_id" {
                Ok(Distribution::ByTraceId)
            } else {
                Err(Error::precondition(
                    format!(
                        "otel_traces is a Citus table distributed by method {method:?} on column {column:?}; incremental mode needs it hash-distributed by trace_id"
                    ),
                    "distribute it with create_distributed_table('otel_traces', 'trace_id'), or use --mode mv",
                ))
            }
        }
    }
}

/// Sets up a session on a Citus node for trace-summarizer's node-local work: its own objects
/// stay on that node (no DDL propagation), and shards are visible in the catalog.
pub async fn node_session<C: GenericClient>(client: &C) -> Result<()> {
    crate::db::ddl::run(
        client,
        "set citus.enable_ddl_propagation = off; set citus.override_table_visibility = off",
        "configuring a session on a Citus node",
    )
    .await
}
