//! The stamp space, and how a restored database moves it without rewriting otel_traces.
//!
//! A stamp is the inserting transaction's id plus the installation's stamp offset. Every row a
//! live server writes gets a stamp below its next transaction id (plus the offset). A dump
//! restored into another server (upstream's major-version path: `pg_dumpall`, then `psql` into
//! the new cluster) brings stamps written by the old server, whose ids may be far ahead of the
//! new one's: once the new server's ids pass them, those rows would look new and be counted a
//! second time.
//!
//! Rather than rewriting those rows (an `UPDATE` of every stamped row doubles the table and its
//! WAL), the stamp space moves past them: the offset grows until every new stamp lies above the
//! highest restored one. That changes the column default and the stamp trigger (instant DDL)
//! and writes no span. The full refresh that follows covers every row below its position, the
//! restored ones included. The offset never decreases.
//!
//! `pg_upgrade` keeps transaction ids, relation oids and the stamps: nothing moves, and the
//! worker goes on from its position.

use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::install::capture;
use crate::state::State;
use tokio_postgres::Client;

/// Ids the server may hand out while the new offset is being set: new stamps start that far
/// above the highest restored one.
const SLACK: i64 = 1_000_000;

/// Moves the stamp space past every stamp in otel_traces, if some lies at or beyond the next
/// stamp this server would write. Returns the new offset, or None when nothing moved. Needs the
/// owner of otel_traces when it moves (it changes the column default and a trigger).
pub async fn advance_past_foreign(
    client: &Client,
    target: &Target,
    st: &State,
) -> Result<Option<i64>> {
    // Every stamp, compressed TimescaleDB chunks included (a worker's session reads none).
    let sql = format!(
        "begin;
         set local timescaledb.enable_columnarscan = on;
         select coalesce(max(trace_summarizer_xid), 0)::text || ' ' || txid_current()::text from {};
         commit;",
        target.traces()
    );
    let text = client
        .simple_query(&sql)
        .await
        .ctx("looking for stamps written by another server")?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    let mut parts = text.split(' ').map(|p| p.parse::<i64>().unwrap_or(0));
    let (highest, next) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if highest < next + st.stamp_offset {
        return Ok(None);
    }
    let offset = (highest - next + 1 + SLACK).max(st.stamp_offset);
    tracing::warn!(
        highest_stamp = highest,
        next_xid = next,
        old_offset = st.stamp_offset,
        new_offset = offset,
        "otel_traces holds stamps written by another server (a restore); moving the stamp space past them (no row is rewritten)"
    );
    capture::set_offset(client, target, &st.names(), offset)
        .await
        .map_err(|e| {
            if e.is_privilege_error() || matches!(e, crate::error::Error::Precondition { .. }) {
                crate::error::Error::precondition(
                    e.chain(),
                    "otel_traces holds stamps written by another server (a restored dump); run `trace-summarizer install` once as the owner of otel_traces: it moves the stamp space past them without rewriting the table, and refreshes the summaries",
                )
            } else {
                e
            }
        })?;
    Ok(Some(offset))
}
