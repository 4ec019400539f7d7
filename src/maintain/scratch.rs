//! The session's scratch tables (`sql/session_scratch.sql`): temporary, created once per
//! session, emptied at the start of every step and vacuumed now and then. Built from otel_traces and the definition's aggregates, so
//! their columns carry the source's types and collations.

use crate::db::source::Target;
use crate::db::statements::Db;
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

/// Empties the scratch tables, in one prepared statement (a step's first).
pub async fn clear<C: GenericClient + Sync>(client: &Db<'_, C>) -> Result<()> {
    client
        .execute(
            "with a as (delete from ts_new), b as (delete from ts_partial),
                  c as (delete from ts_fresh), d as (delete from ts_affected)
             select",
            &[],
        )
        .await
        .ctx("clearing the scratch tables")?;
    Ok(())
}

/// The scratch tables are vacuumed once steps have put this many rows in them, or after
/// `VACUUM_EVERY` steps. Autovacuum never visits temporary tables, and every step empties them
/// with DELETE: the dead rows pile up, and each step's scans and deletes read them all again.
/// Measured at about 10k spans/s on 1M spans (steps of ~1,100 spans), the worker's backend
/// used 24-26% of a core with a vacuum every 200 steps, 7.7% with one every 20k rows, 8.5-9%
/// every 5k rows or 1.5k rows (a vacuum then costs about a millisecond).
pub const VACUUM_ROWS: i64 = 20_000;
/// See `VACUUM_ROWS`.
pub const VACUUM_EVERY: u32 = 200;

/// Vacuums the scratch tables (outside any transaction).
pub async fn vacuum(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute("vacuum ts_new, ts_partial, ts_fresh, ts_affected")
        .await
        .ctx("vacuuming the scratch tables")
}

/// `pin_plans` as select-list items (`set_config(..., true)`), for a step's first statement: the
/// settings apply to the statements after it, in the same transaction.
pub const PINS: &str =
    "set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
     set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true)";
/// How many select-list items `PINS` adds.
pub const PIN_COUNT: usize = 4;

/// Settings that keep every statement of a step on the access paths it was written for, whatever
/// the planner's statistics say: a never-analyzed otel_traces (every new partition and chunk
/// starts that way) must not turn an index lookup into a sequential scan, and a cost estimate
/// inflated by missing statistics must not trigger JIT compilation. Local to the transaction.
pub async fn pin_plans<C: GenericClient>(client: &C) -> Result<()> {
    crate::db::ddl::run(
        client,
        "set local enable_seqscan = off;
             set local enable_hashjoin = off;
             set local enable_mergejoin = off;
             set local jit = off;",
        "pinning access paths",
    )
    .await
}

/// Gives the planner its usual choices back (after steps, before a whole-window comparison).
pub async fn unpin_plans<C: GenericClient>(client: &C) -> Result<()> {
    crate::db::ddl::run(
        client,
        "set local enable_seqscan = on;
             set local enable_hashjoin = on;
             set local enable_mergejoin = on;
             set local timescaledb.enable_columnarscan = on;",
        "restoring the planner's choices",
    )
    .await
}
