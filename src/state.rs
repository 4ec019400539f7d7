//! trace-summarizer's own state in schema `trace_summarizer`: install/upgrade of that schema
//! (ordered up/down files in `sql/state/`), and reading the row for a target schema.

use crate::db::sqltext;
use crate::error::{DbContext, Error, Result};
use std::time::Duration;
use tokio_postgres::GenericClient;

/// The state row, as far as the Rust side needs it (the cycle itself reads the rest in SQL).
#[derive(Debug, Clone)]
pub struct State {
    pub version: i32,
    pub mode: String,
    pub window: Duration,
    pub rebuild_reason: Option<String>,
    pub has_position: bool,
    pub tailing_index: Option<String>,
}

/// Creates the state schema if it is missing (idempotent).
pub async fn ensure_schema<C: GenericClient>(client: &C) -> Result<()> {
    client
        .batch_execute(sqltext::STATE_UP)
        .await
        .ctx("creating schema trace_summarizer")
        .map_err(privilege_hint)?;
    client
        .batch_execute(sqltext::WIDEN_XID)
        .await
        .ctx("creating trace_summarizer.widen_xid")?;
    Ok(())
}

fn privilege_hint(e: Error) -> Error {
    match e.sqlstate() {
        Some(c) if *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => Error::precondition(
            format!("{e}"),
            "grant create on database <db> to <role> (install creates the schema trace_summarizer), or run install as the database owner",
        ),
        _ => e,
    }
}

/// Whether the state table exists at all.
pub async fn schema_exists<C: GenericClient>(client: &C) -> Result<bool> {
    Ok(client
        .query_one(
            "select to_regclass('trace_summarizer.state') is not null",
            &[],
        )
        .await
        .ctx("looking for trace_summarizer.state")?
        .get(0))
}

/// The state row for `schema`, if there is one.
pub async fn load<C: GenericClient>(client: &C, schema: &str) -> Result<Option<State>> {
    if !schema_exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "select version, mode, extract(epoch from window_interval)::float8, rebuild_reason,
                    tail_snapshot is not null and tail_from is not null, tailing_index
             from trace_summarizer.state where target_schema = $1",
            &[&schema],
        )
        .await
        .ctx("reading trace_summarizer.state")?;
    Ok(row.map(|r| State {
        version: r.get(0),
        mode: r.get(1),
        window: Duration::from_secs_f64(r.get::<_, f64>(2).max(0.0)),
        rebuild_reason: r.get(3),
        has_position: r.get(4),
        tailing_index: r.get(5),
    }))
}

/// Creates or updates the row for `schema` with its mode and window.
pub async fn upsert<C: GenericClient>(
    client: &C,
    schema: &str,
    mode: &str,
    window: Duration,
) -> Result<()> {
    let micros = window.as_micros() as i64;
    client
        .execute(
            "insert into trace_summarizer.state (target_schema, version, mode, window_interval)
             values ($1, $2, $3, make_interval(secs => $4::float8 / 1e6))
             on conflict (target_schema) do update
               set version = excluded.version, mode = excluded.mode, window_interval = excluded.window_interval",
            &[&schema, &sqltext::STATE_VERSION, &mode, &(micros as f64)],
        )
        .await
        .ctx("writing trace_summarizer.state")?;
    Ok(())
}

/// Asks the worker to run a full refresh at its next cycle.
pub async fn request_rebuild<C: GenericClient>(
    client: &C,
    schema: &str,
    reason: &str,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set rebuild_reason = $2 where target_schema = $1",
            &[&schema, &reason],
        )
        .await
        .ctx("flagging a rebuild in trace_summarizer.state")?;
    Ok(())
}

/// Another target schema already installed in incremental mode in this database, if any.
pub async fn other_incremental<C: GenericClient>(
    client: &C,
    schema: &str,
) -> Result<Option<String>> {
    if !schema_exists(client).await? {
        return Ok(None);
    }
    Ok(client
        .query_opt(
            "select target_schema from trace_summarizer.state where target_schema <> $1 and mode = 'incremental'",
            &[&schema],
        )
        .await
        .ctx("reading trace_summarizer.state")?
        .map(|r| r.get(0)))
}
