//! One incremental cycle, in one REPEATABLE READ transaction:
//!
//! 1. find the spans committed since the last cycle (by `created_at`, guarded by the commit
//!    horizon and the last snapshot's xmin, see `horizon.rs`), inside the window;
//! 2. add the traces whose oldest in-window span crossed the window edge or fell below the
//!    oldest span left in `otel_traces` (retention);
//! 3. recompute those traces only (`recompute.rs`), upsert them, delete the emptied ones;
//! 4. prune summaries whose newest span left the window;
//! 5. store the new tailing position with the rows it covers, in the same transaction.
//!
//! A kill at any instant leaves either the old position with the old rows or the new position
//! with the new rows.

use crate::db::source::Target;
use crate::db::sqltext::STATE_VERSION;
use crate::error::{DbContext, Result};
use crate::maintain::horizon::Horizon;
use crate::maintain::recompute;
use std::time::{Duration, Instant};
use tokio_postgres::Transaction;

/// Why the incremental path cannot be trusted, so a full refresh must run instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    StateMissing,
    StateVersion,
    Requested(String),
}

impl Fallback {
    /// A stable label (metrics and logs).
    pub fn reason(&self) -> String {
        match self {
            Fallback::StateMissing => "state_missing".into(),
            Fallback::StateVersion => "state_version".into(),
            Fallback::Requested(r) => r.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CycleStats {
    /// Spans newly committed and absorbed.
    pub spans: i64,
    /// Traces recomputed (new spans, window edge, retention).
    pub affected: i64,
    pub upserted: i64,
    pub pruned: i64,
    pub duration: Duration,
}

pub enum Outcome {
    Done(CycleStats),
    NeedsRebuild(Fallback),
}

/// Runs one cycle inside `tx` (REPEATABLE READ, opened after `horizon` was read).
pub async fn run(tx: &Transaction<'_>, target: &Target, horizon: &Horizon) -> Result<Outcome> {
    let started = Instant::now();
    let state = tx
        .query_opt(
            "select version, rebuild_reason, tail_snapshot is null or tail_from is null,
                    extract(epoch from window_interval)::float8
             from trace_summarizer.state where target_schema = $1 and mode = 'incremental' for update",
            &[&target.schema],
        )
        .await
        .ctx("reading the tailing position")?;
    let Some(state) = state else {
        return Ok(Outcome::NeedsRebuild(Fallback::StateMissing));
    };
    if state.get::<_, i32>(0) != STATE_VERSION {
        return Ok(Outcome::NeedsRebuild(Fallback::StateVersion));
    }
    if let Some(reason) = state.get::<_, Option<String>>(1) {
        return Ok(Outcome::NeedsRebuild(Fallback::Requested(reason)));
    }
    if state.get::<_, bool>(2) {
        return Ok(Outcome::NeedsRebuild(Fallback::StateMissing));
    }
    let window = crate::config::interval_literal(Duration::from_secs_f64(state.get::<_, f64>(3)));
    let traces = target.traces();

    // The oldest span left in the source: spans below it were deleted by retention.
    let floor: Option<chrono::DateTime<chrono::Utc>> = tx
        .query_one(&format!("select min(\"timestamp\") from {traces}"), &[])
        .await
        .ctx("reading the oldest span")?
        .get(0);

    // 1. New spans: candidates by created_at, minus rows already visible to the last cycle's
    // snapshot (an xmin older than that snapshot's xmin belongs to a finished transaction).
    // The position is bound as parameters so the planner sees constants and uses the index.
    let pos = tx
        .query_one(
            "select tail_from, tail_pending, pg_snapshot_xmin(tail_snapshot)::text
             from trace_summarizer.state where target_schema = $1",
            &[&target.schema],
        )
        .await
        .ctx("reading the tailing position")?;
    let tail_from: chrono::DateTime<chrono::Utc> = pos.get(0);
    let tail_pending: Vec<chrono::DateTime<chrono::Utc>> = pos.get(1);
    let seen_xmin: String = pos.get(2);
    let new = tx
        .query_one(
            &format!(
                "with new_spans as (
                     select t.trace_id
                     from {traces} t
                     where (t.created_at >= $1 or t.created_at = any($2::timestamptz[]))
                       and t.\"timestamp\" > now() - {window}
                       and trace_summarizer.widen_xid(t.xmin, pg_snapshot_xmax(pg_current_snapshot()))
                           >= $3::text::xid8
                 ), added as (
                     insert into ts_affected select distinct trace_id from new_spans
                     on conflict do nothing returning 1
                 )
                 select (select count(*) from new_spans), (select count(*) from added)"
            ),
            &[&tail_from, &tail_pending, &seen_xmin],
        )
        .await
        .ctx("finding newly committed spans")?;
    let spans: i64 = new.get(0);

    // 2. Traces whose oldest in-window span crossed the window edge or was deleted.
    tx.execute(
        &format!(
            "insert into ts_affected
             select trace_id from trace_summarizer.trace_oldest_span
             where oldest <= now() - {window} or oldest < coalesce($1::timestamptz, 'infinity')
             on conflict do nothing"
        ),
        &[&floor],
    )
    .await
    .ctx("finding traces at the window edge")?;
    let affected: i64 = tx
        .query_one("select count(*) from ts_affected", &[])
        .await
        .ctx("counting")?
        .get(0);

    // 3. Recompute and apply.
    let summaries = target.summaries();
    let applied = recompute::apply(tx, target, &summaries, &window).await?;

    // 4. Summaries whose newest span left the window (normally already handled in 3).
    let pruned = tx
        .query_one(
            &format!(
                "with gone as (delete from {summaries} where \"timestamp\" <= now() - {window} returning trace_id),
                      side as (delete from trace_summarizer.trace_oldest_span o using gone g where o.trace_id = g.trace_id)
                 select count(*) from gone"
            ),
            &[],
        )
        .await
        .ctx("pruning summaries that left the window")?
        .get::<_, i64>(0);

    // 5. The new position, committed with the rows it covers.
    let stats = CycleStats {
        spans,
        affected,
        upserted: applied.upserted,
        pruned: pruned + applied.deleted,
        duration: started.elapsed(),
    };
    save_position(tx, &target.schema, horizon, floor).await?;
    tx.execute(
        "update trace_summarizer.state
         set last_cycle_at = clock_timestamp(), last_cycle_ms = $2, last_spans = $3,
             last_upserted = $4, last_pruned = $5
         where target_schema = $1",
        &[
            &target.schema,
            &(stats.duration.as_secs_f64() * 1000.0),
            &stats.spans,
            &stats.upserted,
            &stats.pruned,
        ],
    )
    .await
    .ctx("recording the cycle")?;
    Ok(Outcome::Done(stats))
}

/// Stores the tailing position for this transaction's snapshot.
pub async fn save_position(
    tx: &Transaction<'_>,
    schema: &str,
    horizon: &Horizon,
    floor: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    tx.execute(
        "update trace_summarizer.state
         set tail_from = $2, tail_pending = $3, tail_snapshot = pg_current_snapshot(),
             reflected_at = now(), span_floor = $4
         where target_schema = $1",
        &[&schema, &horizon.tail_from(), &horizon.pending, &floor],
    )
    .await
    .ctx("saving the tailing position")?;
    Ok(())
}

/// Starts the cycle's transaction: REPEATABLE READ, so every statement sees one snapshot.
pub async fn begin(client: &mut tokio_postgres::Client) -> Result<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .ctx("starting the cycle transaction")
}
