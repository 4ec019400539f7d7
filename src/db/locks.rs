//! Advisory locks, keyed per target schema (documented in README.md):
//!
//! - leader: `hashtextextended('trace-summarizer:' || schema, 0)`, held for the whole life of
//!   the leading worker's dedicated session. Exactly one `run` process holds it.
//! - work: `hashtextextended('trace-summarizer-work:' || schema, 0)`, held by a cycle, a
//!   rebuild, verify or a mode switch while it changes the summaries and the position, so that
//!   a rebuild and a worker never interleave.

use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

const LEADER: &str = "select pg_try_advisory_lock(hashtextextended('trace-summarizer:' || $1, 0))";
const WORK_TRY: &str =
    "select pg_try_advisory_lock(hashtextextended('trace-summarizer-work:' || $1, 0))";
const WORK_WAIT: &str =
    "select pg_advisory_lock(hashtextextended('trace-summarizer-work:' || $1, 0))";
const WORK_RELEASE: &str =
    "select pg_advisory_unlock(hashtextextended('trace-summarizer-work:' || $1, 0))";

/// Tries to become the leader for `schema` on this session.
pub async fn try_leader<C: GenericClient>(client: &C, schema: &str) -> Result<bool> {
    Ok(client
        .query_one(LEADER, &[&schema])
        .await
        .ctx("trying the leader lock")?
        .get(0))
}

/// Tries the work lock without waiting.
pub async fn try_work<C: GenericClient>(client: &C, schema: &str) -> Result<bool> {
    Ok(client
        .query_one(WORK_TRY, &[&schema])
        .await
        .ctx("trying the work lock")?
        .get(0))
}

/// Waits for the work lock (a running cycle finishes in well under a second).
pub async fn wait_work<C: GenericClient>(client: &C, schema: &str) -> Result<()> {
    client
        .query_one(WORK_WAIT, &[&schema])
        .await
        .ctx("waiting for the work lock")?;
    Ok(())
}

pub async fn release_work<C: GenericClient>(client: &C, schema: &str) -> Result<()> {
    client
        .query_one(WORK_RELEASE, &[&schema])
        .await
        .ctx("releasing the work lock")?;
    Ok(())
}

/// Who holds the leader lock: application_name and pid, from pg_locks.
pub async fn leader_of<C: GenericClient>(
    client: &C,
    schema: &str,
) -> Result<Option<(String, i32)>> {
    let row = client
        .query_opt(
            "select coalesce(a.application_name, ''), l.pid
             from pg_locks l left join pg_stat_activity a on a.pid = l.pid
             where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database where datname = current_database())
               and ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('trace-summarizer:' || $1, 0)
               and l.objsubid = 1
             limit 1",
            &[&schema],
        )
        .await
        .ctx("looking up the leader")?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

const WORK_TRY_XACT: &str =
    "select pg_try_advisory_xact_lock(hashtextextended('trace-summarizer-work:' || $1, 0))";
const WORK_WAIT_XACT: &str =
    "select pg_advisory_xact_lock(hashtextextended('trace-summarizer-work:' || $1, 0)), true";

/// Takes the work lock for the caller's transaction (released at its end): waits for it with
/// `wait`, otherwise returns false at once when someone holds it. It conflicts with the
/// session-level work lock of manual commands, which span several transactions.
pub async fn work_in_transaction<C: GenericClient + Sync>(
    tx: &crate::db::statements::Db<'_, C>,
    schema: &str,
    wait: bool,
) -> Result<bool> {
    Ok(tx
        .query_one(
            if wait { WORK_WAIT_XACT } else { WORK_TRY_XACT },
            &[&schema],
        )
        .await
        .ctx("taking the work lock")?
        .get(if wait { 1 } else { 0 }))
}
