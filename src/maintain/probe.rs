//! The idle check: one prepared statement that says whether a step has anything to do, so an
//! idle worker costs next to nothing (a step is one transaction of about 25 statements).
//!
//! It reads the installation's state row and answers, in the statement's own snapshot:
//! - whether any committed row carries a stamp the position does not cover (through the stamp
//!   index: at or above the position's `xmax`, or one of its `xip`);
//! - whether the recompute queue holds a trace (deletes, updates, removed partitions);
//! - whether a trace's oldest span crossed the window edge, or the edge moved back;
//! - whether the state asks for a full refresh (another format, a pending reason, no position);
//! - the backend's pid: a pooler in transaction mode would hand the worker another session.
//!
//! Catalog changes (a partition dropped, truncated or attached, what install put on otel_traces
//! changed, otel_traces replaced) are checked at their own pace by `catalog_changed`, and by
//! every step. A step finds everything the probe finds and more, so the probe only decides when
//! a step runs, never what it does.

use crate::db::source::Target;
use crate::db::statements::Db;
use crate::error::{DbContext, Result};
use crate::install::capture;
use crate::maintain::{columnar, leaves};
use crate::state::{self, Names};
use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Statement};

/// The prepared probe of one installation.
pub struct Probe {
    statement: Statement,
    /// Counts committed rows the position does not cover yet, up to a limit (`waiting`).
    waiting: Statement,
    schema: String,
    /// The installation the statement was prepared for (its side tables are named after it).
    pub installation_id: i32,
}

/// What the probe found.
#[derive(Debug, Clone)]
pub struct Found {
    pub pid: i32,
    /// The state asks for a full refresh, or is not this installation any more: run a step.
    pub must_step: bool,
    pub new_rows: bool,
    pub queued: bool,
    /// Traces at the window edge, or an edge that moved back.
    pub edge: bool,
    /// The probe's own `now()`: when nothing is pending, everything committed before it is
    /// summarized.
    pub now: DateTime<Utc>,
    pub source_oid: Option<u32>,
    pub capture_version: Option<String>,
    pub stamp_offset: i64,
    /// TimescaleDB is installed: chunks may hold columnar (compressed) data.
    pub columnar: bool,
}

impl Found {
    /// Rows or queued changes wait (the edge is paced separately).
    pub fn pending(&self) -> bool {
        self.must_step || self.new_rows || self.queued
    }
}

impl Probe {
    /// Prepares the probe for `names`' installation of `target`.
    pub async fn prepare(
        client: &Client,
        target: &Target,
        names: &Names,
        id: i32,
    ) -> Result<Probe> {
        let sql = format!(
            "select pg_backend_pid(),
                    s.version <> $2 or s.rebuild_reason is not null or s.pos_xmax is null or s.installation_id <> $3,
                    exists (select 1 from {traces} where trace_summarizer_xid >= s.pos_xmax)
                      or exists (select 1 from {traces} where trace_summarizer_xid = any(s.pos_xip)),
                    exists (select 1 from {queue}),
                    exists (select 1 from {oldest} o where o.oldest <= now() - s.window_interval)
                      or coalesce(s.edge_done > now() - s.window_interval, false),
                    now(), s.source_oid, s.capture_version, s.stamp_offset,
                    exists (select 1 from pg_extension where extname = 'timescaledb')
             from trace_summarizer.state s where s.target_schema = $1",
            traces = target.traces(),
            queue = names.queue,
            oldest = names.oldest,
        );
        let statement = client.prepare(&sql).await.ctx("preparing the idle check")?;
        // Through the stamp index, reading at most $2 entries: cheap whatever the backlog.
        let waiting = client
            .prepare(&format!(
                "select count(*) from (
                   select 1 from {traces}
                   where trace_summarizer_xid >= (select s.pos_xmax from trace_summarizer.state s
                                                  where s.target_schema = $1)
                   limit $2) w",
                traces = target.traces(),
            ))
            .await
            .ctx("preparing the check for waiting spans")?;
        Ok(Probe {
            statement,
            waiting,
            schema: target.schema.clone(),
            installation_id: id,
        })
    }

    /// Runs the probe (one round trip, no planning after the first few runs).
    pub async fn run(&self, client: &Client) -> Result<Found> {
        let row = client
            .query_opt(
                &self.statement,
                &[&self.schema, &state::FORMAT_VERSION, &self.installation_id],
            )
            .await
            .ctx("checking for new spans")?;
        let Some(row) = row else {
            // Uninstalled under the worker: a step says what to do.
            let pid: i32 = client
                .query_one("select pg_backend_pid()", &[])
                .await
                .ctx("reading the backend pid")?
                .get(0);
            return Ok(Found {
                pid,
                must_step: true,
                new_rows: false,
                queued: false,
                edge: false,
                now: Utc::now(),
                source_oid: None,
                capture_version: None,
                stamp_offset: 0,
                columnar: false,
            });
        };
        Ok(Found {
            pid: row.get(0),
            must_step: row.get(1),
            new_rows: row.get::<_, Option<bool>>(2).unwrap_or(true),
            queued: row.get(3),
            edge: row.get(4),
            now: row.get(5),
            source_oid: row.get(6),
            capture_version: row.get(7),
            stamp_offset: row.get(8),
            columnar: row.get(9),
        })
    }
}

impl Probe {
    /// How many committed spans wait above the position's `xmax`, counting at most `limit`
    /// (the pause after a step ends early when `limit` wait: the ingest rate jumped).
    pub async fn waiting(&self, client: &Client, limit: i64) -> Result<i64> {
        Ok(client
            .query_one(&self.waiting, &[&self.schema, &limit])
            .await
            .ctx("counting waiting spans")?
            .get(0))
    }
}

/// Whether otel_traces or what install put on it changed since the last step: another table
/// under the name, the capture objects' row versions, the relations holding its rows, or a
/// compressed TimescaleDB chunk's batches (a few catalog queries; run every few seconds when
/// idle).
pub async fn catalog_changed(
    client: &Db<'_, Client>,
    target: &Target,
    names: &Names,
    found: &Found,
) -> Result<bool> {
    let source_oid: Option<u32> = client
        .query_one(
            "select to_regclass(quote_ident($1) || '.otel_traces')::oid",
            &[&target.schema],
        )
        .await
        .ctx("looking up otel_traces")?
        .get(0);
    let Some(source_oid) = source_oid else {
        return Ok(true);
    };
    if found.source_oid != Some(source_oid) {
        return Ok(true);
    }
    let capture = capture::status(client, target, names, found.stamp_offset).await?;
    if !capture.complete() || found.capture_version.as_deref() != Some(capture.version.as_str()) {
        return Ok(true);
    }
    if leaves::unreconciled(client, target, names, source_oid).await? > 0 {
        return Ok(true);
    }
    // Spans compressed before a step read them (TimescaleDB): the idle check reads no columnar
    // data.
    Ok(found.columnar && !columnar::moved(client, target, false).await?.is_empty())
}
