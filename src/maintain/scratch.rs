//! The session's scratch tables (`sql/session_scratch.sql`): temporary, created once per
//! session, emptied at every commit. Built from otel_traces and the definition's aggregates, so
//! their columns carry the source's types and collations.

use crate::db::source::Target;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

const SCRATCH: &str = include_str!("../../sql/session_scratch.sql");

/// Creates the scratch tables if this session has none yet.
pub async fn prepare<C: GenericClient>(
    client: &C,
    target: &Target,
    def: &Definition,
) -> Result<()> {
    let sql = crate::db::sqltext::strip_comments(SCRATCH)
        .replace("{{traces}}", &target.traces())
        .replace("{{aggregates}}", &def.aggregates());
    client
        .batch_execute(&sql)
        .await
        .ctx("creating the session's scratch tables")
}

/// Empties the scratch tables (several steps may share one transaction: `verify`).
pub async fn clear<C: GenericClient>(client: &C) -> Result<()> {
    client
        .batch_execute(
            "delete from ts_new; delete from ts_partial; delete from ts_fresh; delete from ts_affected;",
        )
        .await
        .ctx("clearing the scratch tables")
}

/// Settings that keep every statement of a step on the access paths it was written for, whatever
/// the planner's statistics say: a never-analyzed otel_traces (every new partition and chunk
/// starts that way) must not turn an index lookup into a sequential scan, and a cost estimate
/// inflated by missing statistics must not trigger JIT compilation. Local to the transaction.
pub async fn pin_plans<C: GenericClient>(client: &C) -> Result<()> {
    client
        .batch_execute(
            "set local enable_seqscan = off;
             set local enable_hashjoin = off;
             set local enable_mergejoin = off;
             set local jit = off;",
        )
        .await
        .ctx("pinning access paths")
}

/// Gives the planner its usual choices back (after steps, before a whole-window comparison).
pub async fn unpin_plans<C: GenericClient>(client: &C) -> Result<()> {
    client
        .batch_execute(
            "set local enable_seqscan = on;
             set local enable_hashjoin = on;
             set local enable_mergejoin = on;",
        )
        .await
        .ctx("restoring the planner's choices")
}
