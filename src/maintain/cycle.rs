//! One incremental step, in one REPEATABLE READ transaction that the caller commits:
//!
//! 1. read the installation (row-locked) and refuse a state that cannot be trusted: another
//!    format version, a pending full refresh, no position, a position or source that belongs to
//!    another server (a restored or cloned database), an otel_traces replaced under its name,
//!    or what install put on it missing or changed (a trigger disabled and enabled again);
//! 2. compare the relations holding otel_traces' rows with the last ones seen (`leaves.rs`:
//!    retention by dropping, detaching or truncating partitions and chunks, partitions attached
//!    again), and notice a window edge that moved back;
//! 3. read the spans committed since the position (`tailing.rs`), at most `max_spans`;
//! 4. take a batch of queued traces (deleted or updated spans, removed partitions) and of traces
//!    at the window edge, at most `max_traces` each: these are recomputed from their spans;
//! 5. merge the new spans of every other trace into its summary (`merge.rs`);
//! 6. recompute the batch (`recompute.rs`) and prune summaries that left the window;
//! 7. when nothing is left pending, check a slice of the audit;
//! 8. store the new position with the rows it covers.
//!
//! A kill at any instant leaves either the old position with the old rows or the new position
//! with the new rows. What a step leaves for later (a capped read, a full batch) makes the
//! caller run the next step at once.

use crate::db::locks;
use crate::db::source::Target;
use crate::db::statements::{Db, Statements};
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::install::capture;
use crate::maintain::audit::{self, Pace};
use crate::maintain::{leaves, merge, recompute, retention, scratch, tailing};
use crate::state::{self, Mode, State, FORMAT_VERSION};
use std::time::{Duration, Instant};
use tokio_postgres::{GenericClient, Transaction};

/// Why the incremental path cannot be trusted, so a full refresh must run instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// No position (never refreshed, or the position was removed).
    StateMissing,
    /// The summaries were made by another version of trace-summarizer.
    StateVersion,
    /// The position belongs to another server: a restored, cloned or imported database.
    ForeignState,
    /// otel_traces is another table than the one summarized (replaced under its name).
    SourceReplaced,
    /// What install put on otel_traces (the stamp's default, its index, the triggers) is missing
    /// or changed since the summaries were made exact: rows may have changed unseen.
    CaptureChanged,
    /// A Citus node gained or lost a shard: its shards are refreshed.
    ShardMoved,
    /// So many traces changed (a mass delete, a dropped partition) that a full refresh is cheaper.
    LargeChange,
    /// So many new spans wait (after an outage) that a full refresh is cheaper.
    Backlog,
    /// Asked for by someone (`verify` found drift, an operator).
    Requested(String),
}

impl Fallback {
    /// A stable label (metrics and logs).
    pub fn reason(&self) -> String {
        match self {
            Fallback::StateMissing => "state_missing".into(),
            Fallback::StateVersion => "state_version".into(),
            Fallback::ForeignState => "foreign_state".into(),
            Fallback::SourceReplaced => "source_replaced".into(),
            Fallback::CaptureChanged => "capture_changed".into(),
            Fallback::ShardMoved => "shard_moved".into(),
            Fallback::LargeChange => "large_change".into(),
            Fallback::Backlog => "backlog".into(),
            Fallback::Requested(r) => r.clone(),
        }
    }

    /// Every label the worker can count, so the metric starts at zero for each.
    pub const REASONS: [&'static str; 10] = [
        "state_missing",
        "state_version",
        "foreign_state",
        "source_replaced",
        "capture_changed",
        "shard_moved",
        "large_change",
        "backlog",
        "verify_drift",
        "manual",
    ];
}

/// How much one step may do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// New spans read per step (one transaction's rows are never split).
    pub max_spans: i64,
    /// Traces recomputed from their spans per step, for the queue and for the window edge each.
    pub max_traces: i64,
    /// Check, when the read is capped, whether the backlog is so large a refresh is cheaper.
    pub check_backlog: bool,
    /// Fall back to a full refresh when one transaction, or the queue of changed traces, is
    /// larger than a refresh costs (off: absorb everything, whatever it costs).
    pub refresh_when_cheaper: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spans: 50_000,
            max_traces: 5_000,
            check_backlog: true,
            refresh_when_cheaper: true,
        }
    }
}

impl Limits {
    /// No bound: what `verify` uses to catch up inside its own transaction.
    pub fn unbounded() -> Self {
        Limits {
            max_spans: i64::MAX / 4,
            max_traces: i64::MAX / 4,
            check_backlog: false,
            refresh_when_cheaper: false,
        }
    }
}

/// Queued traces beyond this (and beyond a tenth of the summaries) are cheaper to refresh.
const LARGE_CHANGE_FLOOR: i64 = 100_000;

#[derive(Debug, Default, Clone)]
pub struct StepStats {
    /// New in-window spans absorbed.
    pub spans: i64,
    /// Traces recomputed from their spans.
    pub recomputed: i64,
    /// Summaries written (merged, inserted or recomputed).
    pub upserted: i64,
    /// Summaries removed.
    pub pruned: i64,
    pub duration: Duration,
    /// The bounds this step hit: "spans", "recompute", "window_edge".
    pub bounded: Vec<&'static str>,
    /// Partitions or chunks gone, emptied or appeared.
    pub leaf_changes: usize,
    pub audit: Option<audit::Slice>,
    /// The step changed something (and was recorded).
    pub changed: bool,
    /// When nothing is left pending: the moment up to which every committed span is summarized.
    pub reflects: Option<chrono::DateTime<chrono::Utc>>,
}

impl StepStats {
    /// Work remains: run the next step without pausing.
    pub fn more(&self) -> bool {
        !self.bounded.is_empty()
    }

    /// About how many rows the step put in the session's scratch tables (new spans, and a row
    /// per trace merged, recomputed or checked), which it empties again (`scratch::VACUUM_ROWS`).
    pub fn scratch_rows(&self) -> i64 {
        self.spans
            + self.upserted
            + self.recomputed
            + self.audit.as_ref().map_or(0, |a| a.checked.max(0))
    }
}

pub enum Outcome {
    Done(StepStats),
    NeedsRebuild(Fallback),
}

/// What the caller asks of this step beyond the cycle itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// Run an audit slice if the step leaves nothing pending.
    pub audit: Option<Pace>,
    /// Record the check even when nothing changed (a heartbeat for `status`).
    pub heartbeat: bool,
    /// Leave out the check of what install put on otel_traces (`capture::status`, a catalog
    /// query whose planning alone costs about a millisecond): the worker runs it at most every
    /// few seconds. A change it finds later still falls back to a full refresh, since the
    /// stored capture version is only ever written by a refresh. Ignored on a Citus node (its
    /// shards can move).
    pub skip_capture_check: bool,
}

/// Starts a step's transaction: REPEATABLE READ, so every statement sees one snapshot.
pub async fn begin(client: &mut tokio_postgres::Client) -> Result<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .ctx("starting the cycle transaction")
}

/// What a step starts from: its installation (row-locked), its snapshot in the stamp space,
/// and the oids of otel_traces and otel_trace_summaries now. One statement, which also pins the
/// step's plans (`scratch::PINS`) and takes the transaction's snapshot.
pub struct Opening {
    pub state: State,
    pub snapshot: tailing::Snapshot,
    pub source_oid: Option<u32>,
    pub relation_oid: u32,
    /// TimescaleDB is installed: chunks may hold columnar (compressed) data.
    pub columnar: bool,
}

/// Opens a step (see `Opening`), or says why the incremental path cannot run.
pub async fn open<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
) -> Result<std::result::Result<Opening, Fallback>> {
    let row = client
        .query_opt(
            &format!(
                "select {columns}, {pins},
                        pg_snapshot_xmax(pg_current_snapshot())::text::bigint + stamp_offset,
                        array(select x::text::bigint + stamp_offset from pg_snapshot_xip(pg_current_snapshot()) x order by 1),
                        now(), now() - window_interval,
                        to_regclass(quote_ident($1) || '.otel_traces')::oid,
                        coalesce(to_regclass(quote_ident($1) || '.otel_trace_summaries')::oid, 0),
                        exists (select 1 from pg_extension where extname = 'timescaledb'),
                        set_config('timescaledb.enable_columnarscan', 'on', true)
                 from trace_summarizer.state where target_schema = $1 for update",
                columns = state::COLUMNS,
                pins = scratch::PINS,
            ),
            &[&target.schema],
        )
        .await
        .ctx("reading trace_summarizer.state")?;
    let Some(row) = row else {
        return Err(Error::precondition(
            format!(
                "trace-summarizer is not installed for schema {:?}",
                target.schema
            ),
            "run `trace-summarizer install --mode incremental` first",
        ));
    };
    let st = state::from_row(&row)?;
    let at = state::COLUMN_COUNT + scratch::PIN_COUNT;
    let opening = Opening {
        snapshot: tailing::Snapshot {
            xmax: row.get(at),
            xip: row.get(at + 1),
            now: row.get(at + 2),
            edge: row.get(at + 3),
        },
        source_oid: row.get(at + 4),
        relation_oid: row.get(at + 5),
        columnar: row.get(at + 6),
        state: st,
    };
    let st = &opening.state;
    if st.mode != Mode::Incremental {
        return Err(Error::precondition(
            format!(
                "schema {:?} is installed in mv mode; the worker only runs in incremental mode",
                target.schema
            ),
            "switch with `trace-summarizer install --mode incremental`, or let pg_cron refresh the view",
        ));
    }
    if st.version != FORMAT_VERSION {
        return Ok(Err(Fallback::StateVersion));
    }
    if let Some(reason) = &st.rebuild_reason {
        return Ok(Err(Fallback::Requested(reason.clone())));
    }
    if st.position.is_none() {
        return Ok(Err(Fallback::StateMissing));
    }
    Ok(Ok(opening))
}

/// Whether otel_traces is still the table, and what install put on it is still what it was,
/// when the summaries were made exact. Returns the fallback when not.
async fn check_source<C: GenericClient + Sync>(
    tx: &Db<'_, C>,
    target: &Target,
    opening: &Opening,
    skip_capture_check: bool,
) -> Result<std::result::Result<u32, Fallback>> {
    let st = &opening.state;
    let pos = st.position.as_ref().expect("checked by open");
    if pos.xmax > opening.snapshot.xmax {
        return Ok(Err(Fallback::ForeignState));
    }
    let Some(source_oid) = opening.source_oid else {
        return Err(Error::precondition(
            format!(
                "table otel_traces does not exist in schema {:?}",
                target.schema
            ),
            "pass --schema naming the schema that holds otel_traces",
        ));
    };
    if st.source_oid != Some(source_oid) {
        return Ok(Err(if st.relation_oid == Some(opening.relation_oid) {
            Fallback::SourceReplaced
        } else {
            Fallback::ForeignState
        }));
    }
    if skip_capture_check && target.local.is_none() {
        return Ok(Ok(source_oid));
    }
    let capture_now = capture::status(tx, target, &st.names(), st.stamp_offset).await?;
    let stored = st.capture_version.as_deref().unwrap_or("");
    if target.local.is_some()
        && capture::Capture::relations_of(stored)
            != capture::Capture::relations_of(&capture_now.version)
    {
        // A Citus node gained or lost a shard (a move, the rebalancer, a new node).
        tracing::info!("this node's shards of otel_traces changed");
        return Ok(Err(Fallback::ShardMoved));
    }
    if !capture_now.complete() || st.capture_version.as_deref() != Some(&capture_now.version) {
        tracing::warn!(
            missing = capture_now.missing().join(", "),
            "what install put on otel_traces is missing or was changed"
        );
        return Ok(Err(Fallback::CaptureChanged));
    }
    Ok(Ok(source_oid))
}

/// Runs one step inside `tx` (REPEATABLE READ, not yet used).
pub async fn step<C: GenericClient + Sync>(
    tx: &Db<'_, C>,
    target: &Target,
    limits: &Limits,
    extras: &Extras,
) -> Result<Outcome> {
    let started = Instant::now();
    scratch::clear(tx).await?;
    let opening = match open(tx, target).await? {
        Ok(o) => o,
        Err(fallback) => return Ok(Outcome::NeedsRebuild(fallback)),
    };
    let source_oid = match check_source(tx, target, &opening, extras.skip_capture_check).await? {
        Ok(oid) => oid,
        Err(fallback) => return Ok(Outcome::NeedsRebuild(fallback)),
    };
    let Opening {
        state: st,
        snapshot: snap,
        columnar,
        ..
    } = opening;
    let pos = st.position.clone().expect("checked by open");
    let def = Definition {
        window: st.window.clone(),
        error_rule: st.error_rule,
    };
    let names = st.names();

    let mut stats = StepStats::default();
    let changes = leaves::reconcile(tx, target, &names, source_oid, &pos, &snap, columnar).await?;
    stats.leaf_changes = changes.gone + changes.emptied + changes.appeared + changes.replaced;
    let mut edge_back = 0;
    if let Some(done) = st.edge_done.filter(|done| *done > snap.edge) {
        edge_back = retention::edge_moved_back(tx, target, &names, &pos, snap.edge, done).await?;
        stats.leaf_changes += 1;
    }

    if columnar {
        tx.execute(tailing::COLUMNAR_OFF, &[])
            .await
            .ctx("reading the rowstore only")?;
    }
    let new = tailing::collect(
        tx,
        target,
        &pos,
        &snap,
        limits.max_spans,
        limits.refresh_when_cheaper,
    )
    .await;
    if columnar {
        tx.execute(tailing::COLUMNAR_ON, &[])
            .await
            .ctx("reading columnar data again")?;
    }
    let new = new?;
    if new.refused {
        return Ok(Outcome::NeedsRebuild(Fallback::Backlog));
    }
    if new.capped {
        stats.bounded.push("spans");
        if limits.check_backlog {
            let limit = if limits.refresh_when_cheaper {
                tailing::refresh_cheaper_above(tx, target).await?
            } else {
                i64::MAX / 4
            };
            if backlog_too_large(tx, target, new.cap, &snap, limit).await? {
                return Ok(Outcome::NeedsRebuild(Fallback::Backlog));
            }
        }
    }
    let taken = retention::take(tx, &names, target, snap.edge, limits.max_traces).await?;
    let (queued, at_edge) = (taken.queued, taken.at_edge);
    if queued >= limits.max_traces {
        stats.bounded.push("recompute");
        if limits.refresh_when_cheaper {
            let large = large_change_limit(tx, &target.summaries()).await?;
            if retention::queue_exceeds(tx, &names, large).await? {
                return Ok(Outcome::NeedsRebuild(Fallback::LargeChange));
            }
        }
    }
    if at_edge >= limits.max_traces {
        stats.bounded.push("window_edge");
    }

    stats.spans = new.rows;
    let covers = snap.position_at(new.cap);
    let mut merged = merge::Merged::default();
    if new.rows > 0 {
        merged = merge::apply(
            tx,
            &def,
            target,
            &names,
            snap.edge,
            queued > 0 || at_edge > 0,
        )
        .await?;
    }
    let mut recomputed = recompute::Applied::default();
    if queued > 0 || at_edge > 0 {
        recomputed = recompute::apply(tx, target, &def, &names, snap.edge, &covers).await?;
    }
    stats.recomputed = recomputed.upserted + recomputed.deleted;
    stats.upserted = merged.updated + merged.inserted + recomputed.upserted;
    stats.pruned = recomputed.deleted + taken.pruned;

    if let Some(pace) = &extras.audit {
        if stats.bounded.is_empty() {
            let slice = audit::run_slice(
                tx, target, &def, &names, snap.edge, &covers, pace, &st.audit,
            )
            .await?;
            state::record_audit(tx, &target.schema, &slice.record, slice.pass_done).await?;
            stats.upserted += slice.mismatches;
            stats.audit = Some(slice);
        }
    }

    stats.changed = new.rows > 0
        || queued > 0
        || at_edge > 0
        || stats.pruned > 0
        || changes.any()
        || edge_back > 0
        || stats.audit.as_ref().is_some_and(|a| a.mismatches > 0);
    stats.duration = started.elapsed();
    if stats.bounded.is_empty() {
        stats.reflects = Some(snap.now);
    }
    if stats.changed {
        state::save_step(
            tx,
            &target.schema,
            &covers,
            source_oid,
            snap.edge,
            stats.duration.as_secs_f64() * 1000.0,
            stats.spans,
            stats.upserted,
            stats.pruned,
        )
        .await?;
    } else if extras.heartbeat {
        state::save_position(tx, &target.schema, &covers, source_oid, snap.edge).await?;
    }
    Ok(Outcome::Done(stats))
}

/// Whether the spans still unread beyond `cap` exceed what a full refresh costs.
async fn backlog_too_large<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    cap: i64,
    snap: &tailing::Snapshot,
    limit: i64,
) -> Result<bool> {
    let count: i64 = client
        .query_one(
            &format!(
                "select count(*) from (select 1 from {} where trace_summarizer_xid >= $1 and trace_summarizer_xid < $2 limit $3) b",
                target.traces()
            ),
            &[&cap, &snap.xmax, &(limit + 1)],
        )
        .await
        .ctx("measuring the backlog")?
        .get(0);
    if count > limit {
        tracing::warn!(
            backlog_spans = count,
            limit,
            "backlog larger than a full refresh costs"
        );
    }
    Ok(count > limit)
}

/// Queued traces beyond which a full refresh is cheaper.
async fn large_change_limit<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    summaries: &str,
) -> Result<i64> {
    let estimated: f64 = client
        .query_one(
            "select greatest(reltuples, 0)::float8 from pg_class where oid = $1::text::regclass",
            &[&summaries],
        )
        .await
        .ctx("estimating the number of summaries")?
        .get(0);
    Ok(((estimated / 10.0) as i64).max(LARGE_CHANGE_FLOOR))
}

/// Runs one step in its own transaction under the work lock (a transaction-level lock, taken
/// first), and commits it (or rolls it back when a full refresh is needed). With `wait`, waits
/// for the lock (a manual command beside a worker); otherwise returns None at once when someone
/// else holds it. The session's scratch tables must exist (`scratch::prepare`); `statements` is
/// the connection's cache of prepared statements.
pub async fn run(
    client: &mut tokio_postgres::Client,
    statements: &Statements,
    target: &Target,
    limits: &Limits,
    extras: &Extras,
    wait: bool,
) -> Result<Option<Outcome>> {
    let tx = begin(client).await?;
    let db = Db::new(&tx, statements);
    if !locks::work_in_transaction(&db, &target.schema, wait).await? {
        tx.rollback().await.ctx("rolling back")?;
        return Ok(None);
    }
    let outcome = step(&db, target, limits, extras).await?;
    match &outcome {
        Outcome::Done(_) => tx.commit().await.ctx("committing the step")?,
        Outcome::NeedsRebuild(_) => tx.rollback().await.ctx("rolling back")?,
    }
    Ok(Some(outcome))
}

/// Runs steps inside one transaction until nothing is left pending (no bound): `verify` uses
/// it to compare like with like.
pub async fn catch_up<C: GenericClient + Sync>(
    tx: &Db<'_, C>,
    target: &Target,
) -> Result<Option<Fallback>> {
    loop {
        match step(tx, target, &Limits::unbounded(), &Extras::default()).await? {
            Outcome::NeedsRebuild(f) => return Ok(Some(f)),
            Outcome::Done(s) if s.more() => continue,
            Outcome::Done(_) => return Ok(None),
        }
    }
}
