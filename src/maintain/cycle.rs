//! One incremental step, in one REPEATABLE READ transaction that the caller commits:
//!
//! 1. read the installation (row-locked) and refuse a state that cannot be trusted: another
//!    format version, a pending full refresh, no position, a position or source that belongs to
//!    another server (a restored or cloned database), stamps copied from another server;
//! 2. compare the relations holding otel_traces' rows with the last ones seen (retention by
//!    dropping, detaching or truncating partitions and chunks);
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
use crate::db::source::{self, Target};
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::maintain::audit::{self, Pace};
use crate::maintain::{merge, recompute, retention, scratch, tailing};
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
    /// otel_traces holds stamps this server did not write (copied by a restore or replication).
    ForeignStamps,
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
            Fallback::ForeignStamps => "foreign_stamps".into(),
            Fallback::LargeChange => "large_change".into(),
            Fallback::Backlog => "backlog".into(),
            Fallback::Requested(r) => r.clone(),
        }
    }

    /// Every label the worker can count, so the metric starts at zero for each.
    pub const REASONS: [&'static str; 8] = [
        "state_missing",
        "state_version",
        "foreign_state",
        "foreign_stamps",
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

/// A backlog beyond this many spans (and beyond a tenth of the table) costs more to absorb than
/// a full refresh: per span, a step costs roughly ten times what one sequential aggregation does.
const BACKLOG_FLOOR: i64 = 100_000;
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

/// The state an incremental step needs, or the reason it cannot run.
pub async fn load_trusted<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<std::result::Result<State, Fallback>> {
    let Some(st) = state::load_for_update(client, &target.schema).await? else {
        return Err(Error::precondition(
            format!(
                "trace-summarizer is not installed for schema {:?}",
                target.schema
            ),
            "run `trace-summarizer install --mode incremental` first",
        ));
    };
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
    Ok(Ok(st))
}

/// Runs one step inside `tx` (REPEATABLE READ, not yet used).
pub async fn step<C: GenericClient>(
    tx: &C,
    target: &Target,
    limits: &Limits,
    extras: &Extras,
) -> Result<Outcome> {
    let started = Instant::now();
    let st = match load_trusted(tx, target).await? {
        Ok(st) => st,
        Err(fallback) => return Ok(Outcome::NeedsRebuild(fallback)),
    };
    let pos = st.position.clone().expect("checked by load_trusted");
    scratch::clear(tx).await?;
    let def = Definition {
        window: st.window.clone(),
        error_rule: st.error_rule,
    };
    let names = st.names();
    let summaries = target.summaries();
    scratch::pin_plans(tx).await?;
    let snap = tailing::Snapshot::read(tx, &def.window.interval_text()).await?;
    let source_oid = source::traces_oid(tx, target).await?;
    if st.source_oid != Some(source_oid) || pos.xmax > snap.xmax {
        return Ok(Outcome::NeedsRebuild(Fallback::ForeignState));
    }
    if tailing::has_foreign_stamps(tx, target, &snap).await? {
        return Ok(Outcome::NeedsRebuild(Fallback::ForeignStamps));
    }

    let mut stats = StepStats::default();
    let leaves =
        retention::reconcile_leaves(tx, target, &names, &summaries, source_oid, &pos, snap.edge)
            .await?;
    stats.leaf_changes = leaves.gone + leaves.emptied + leaves.appeared;

    let refresh_cheaper = if limits.refresh_when_cheaper {
        backlog_limit(tx, target).await?
    } else {
        i64::MAX / 4
    };
    let new = tailing::collect(tx, target, &pos, &snap, limits.max_spans, refresh_cheaper).await?;
    if new.large_transaction.is_some_and(|n| n > refresh_cheaper) {
        tracing::warn!(
            spans = new.large_transaction,
            limit = refresh_cheaper,
            "one transaction wrote more spans than a full refresh costs to absorb"
        );
        return Ok(Outcome::NeedsRebuild(Fallback::Backlog));
    }
    if new.capped {
        stats.bounded.push("spans");
        if limits.check_backlog
            && backlog_too_large(tx, target, new.cap, &snap, refresh_cheaper).await?
        {
            return Ok(Outcome::NeedsRebuild(Fallback::Backlog));
        }
    }
    let queued = retention::take_batch(tx, &names, limits.max_traces).await?;
    if queued >= limits.max_traces {
        stats.bounded.push("recompute");
        if limits.refresh_when_cheaper {
            let large = large_change_limit(tx, &summaries).await?;
            if retention::queue_exceeds(tx, &names, large).await? {
                return Ok(Outcome::NeedsRebuild(Fallback::LargeChange));
            }
        }
    }
    let at_edge = retention::take_edge_batch(tx, &names, snap.edge, limits.max_traces).await?;
    if at_edge >= limits.max_traces {
        stats.bounded.push("window_edge");
    }

    stats.spans = merge::partials(tx, &def, snap.edge).await?;
    let merged = merge::apply(tx, &summaries, &names).await?;
    let cap = new.capped.then_some(new.cap);
    let recomputed = recompute::apply(tx, target, &def, &summaries, &names, snap.edge, cap).await?;
    stats.recomputed = tx
        .query_one("select count(*) from ts_affected", &[])
        .await
        .ctx("counting")?
        .get(0);
    let pruned = prune(tx, &summaries, snap.edge).await?;
    retention::widen_ranges(tx, &names, snap.edge).await?;
    stats.upserted = merged.updated + merged.inserted + recomputed.upserted;
    stats.pruned = recomputed.deleted + pruned;

    if let Some(pace) = &extras.audit {
        if stats.bounded.is_empty() {
            let slice = audit::run_slice(
                tx, target, &def, &summaries, &names, snap.edge, pace, &st.audit,
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
        || leaves.any()
        || stats.audit.as_ref().is_some_and(|a| a.mismatches > 0);
    stats.duration = started.elapsed();
    if stats.bounded.is_empty() {
        stats.reflects = Some(snap.now);
    }
    if stats.changed || extras.heartbeat {
        state::save_position(tx, &target.schema, &snap.position_at(new.cap), source_oid).await?;
    }
    if stats.changed {
        state::record_cycle(
            tx,
            &target.schema,
            stats.duration.as_secs_f64() * 1000.0,
            stats.spans,
            stats.upserted,
            stats.pruned,
        )
        .await?;
    }
    Ok(Outcome::Done(stats))
}

/// Summaries whose newest span left the window (normally already recomputed away as their
/// oldest span crossed the edge; this catches any without a side-table entry, whose entries
/// pass the edge in turn).
async fn prune<C: GenericClient>(
    client: &C,
    summaries: &str,
    edge: chrono::DateTime<chrono::Utc>,
) -> Result<i64> {
    Ok(client
        .query_one(
            &format!(
                "with gone as (delete from {summaries} where \"timestamp\" <= $1 returning trace_id)
                 select count(*) from gone"
            ),
            &[&edge],
        )
        .await
        .ctx("pruning summaries that left the window")?
        .get(0))
}

/// New spans beyond which a full refresh is cheaper than absorbing them: a tenth of the
/// source's estimated rows, and never less than `BACKLOG_FLOOR`.
async fn backlog_limit<C: GenericClient>(client: &C, target: &Target) -> Result<i64> {
    let estimated: f64 = client
        .query_one(
            "with recursive tree(oid) as (
                 select to_regclass(quote_ident($1) || '.otel_traces')::oid
                 union all select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid)
             select coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 from pg_class c join tree t on t.oid = c.oid",
            &[&target.schema],
        )
        .await
        .ctx("estimating the size of otel_traces")?
        .get(0);
    Ok(((estimated / 10.0) as i64).max(BACKLOG_FLOOR))
}

/// Whether the spans still unread beyond `cap` exceed what a full refresh costs.
async fn backlog_too_large<C: GenericClient>(
    client: &C,
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
async fn large_change_limit<C: GenericClient>(client: &C, summaries: &str) -> Result<i64> {
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

/// Runs one step in its own transaction under the work lock, and commits it (or rolls it back
/// when a full refresh is needed). With `wait`, waits for the lock (a manual command beside a
/// worker); otherwise returns None at once when someone else holds it. The session's scratch
/// tables must exist (`scratch::prepare`).
pub async fn run(
    client: &mut tokio_postgres::Client,
    target: &Target,
    limits: &Limits,
    extras: &Extras,
    wait: bool,
) -> Result<Option<Outcome>> {
    if wait {
        locks::wait_work(&*client, &target.schema).await?;
    } else if !locks::try_work(&*client, &target.schema).await? {
        return Ok(None);
    }
    let result = run_locked(client, target, limits, extras).await;
    // The lock is session-level: release it whatever happened.
    let _ = locks::release_work(&*client, &target.schema).await;
    result.map(Some)
}

async fn run_locked(
    client: &mut tokio_postgres::Client,
    target: &Target,
    limits: &Limits,
    extras: &Extras,
) -> Result<Outcome> {
    let tx = begin(client).await?;
    let outcome = step(&tx, target, limits, extras).await?;
    match &outcome {
        Outcome::Done(_) => tx.commit().await.ctx("committing the step")?,
        Outcome::NeedsRebuild(_) => tx.rollback().await.ctx("rolling back")?,
    }
    Ok(outcome)
}

/// Runs steps inside one transaction until nothing is left pending (no bound): `verify` uses
/// it to compare like with like.
pub async fn catch_up<C: GenericClient>(tx: &C, target: &Target) -> Result<Option<Fallback>> {
    loop {
        match step(tx, target, &Limits::unbounded(), &Extras::default()).await? {
            Outcome::NeedsRebuild(f) => return Ok(Some(f)),
            Outcome::Done(s) if s.more() => continue,
            Outcome::Done(_) => return Ok(None),
        }
    }
}
