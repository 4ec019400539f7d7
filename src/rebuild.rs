//! Full refresh of the maintained table: recompute every summary in the window from
//! `otel_traces`, in one REPEATABLE READ transaction that also stores the tailing position.
//!
//! Readers are never blocked: rows are upserted (unchanged rows are not even rewritten) and
//! stale rows deleted, with row locks only. Ingest is never blocked: the source is only read.
//! A worker running at the same time waits on the work lock, then continues from the position
//! this rebuild stored, so no update is lost or applied twice.

use crate::error::{DbContext, Result};
use crate::horizon;
use crate::locks;
use crate::progress::Progress;
use crate::source::Target;
use crate::sqltext;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Rows per upsert batch (one progress step).
const BATCH: i64 = 50_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct RebuildStats {
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub duration: Duration,
}

impl std::fmt::Display for RebuildStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuild done: {} inserted, {} updated, {} deleted in {:.2}s",
            self.inserted,
            self.updated,
            self.deleted,
            self.duration.as_secs_f64()
        )
    }
}

/// Rebuilds `summaries` (a quoted relation name in the target schema; normally
/// `target.summaries()`, or a new table during a switch). Takes and releases the work lock.
pub async fn run(
    client: &mut Client,
    target: &Target,
    summaries: &str,
    reason: &str,
) -> Result<RebuildStats> {
    locks::wait_work(client, &target.schema).await?;
    let result = run_locked(client, target, summaries, reason).await;
    // The lock is session-level: release it even when the rebuild failed.
    let _ = locks::release_work(client, &target.schema).await;
    result
}

async fn run_locked(
    client: &mut Client,
    target: &Target,
    summaries: &str,
    reason: &str,
) -> Result<RebuildStats> {
    let started = Instant::now();
    // Generous memory for one big aggregation; session-local, reset after.
    client
        .batch_execute("set work_mem = '256MB'; set maintenance_work_mem = '256MB'")
        .await
        .ctx("setting rebuild memory")?;
    let window_secs: f64 = client
        .query_one(
            "select extract(epoch from window_interval)::float8 from trace_summarizer.state where target_schema = $1",
            &[&target.schema],
        )
        .await
        .ctx("reading the window")?
        .get(0);
    let window = crate::config::interval_literal(Duration::from_secs_f64(window_secs));
    let horizon = horizon::read(client).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .ctx("starting the rebuild transaction")?;

    let progress = Progress::spinner("aggregating spans in the window");
    let definition = sqltext::definition(target, &window, ",\n min(\"timestamp\") as oldest");
    tx.batch_execute(&format!(
        "create temp table ts_full on commit drop as
         select row_number() over () as rn, d.* from ({definition}) d;
         create index on ts_full (rn);
         analyze ts_full;"
    ))
    .await
    .ctx("aggregating the window")?;
    let total: i64 = tx
        .query_one("select count(*) from ts_full", &[])
        .await
        .ctx("counting")?
        .get(0);
    progress.finish();

    let bar = Progress::bar(total as u64, "applying summaries");
    let cols = sqltext::column_list(None);
    let upsert = format!(
        "with up as (
             insert into {summaries} as t ({cols})
             select {cols} from ts_full where rn > $1 and rn <= $2
             {tail}
             returning (t.xmax = 0) as inserted
         )
         select count(*) filter (where inserted), count(*) filter (where not inserted) from up",
        tail = sqltext::upsert_tail("t"),
    );
    let upsert = tx
        .prepare(&upsert)
        .await
        .ctx("preparing the rebuild upsert")?;
    let mut stats = RebuildStats::default();
    let mut from = 0i64;
    while from < total {
        let to = from + BATCH;
        let row = tx
            .query_one(&upsert, &[&from, &to])
            .await
            .ctx("upserting summaries")?;
        stats.inserted += row.get::<_, i64>(0);
        stats.updated += row.get::<_, i64>(1);
        bar.advance((to.min(total) - from) as u64);
        from = to;
    }
    bar.finish();
    stats.deleted = tx
        .execute(
            &format!("delete from {summaries} t where not exists (select 1 from ts_full f where f.trace_id = t.trace_id)"),
            &[],
        )
        .await
        .ctx("deleting summaries no longer in the window")? as i64;

    // The per-trace oldest span times start over from this snapshot.
    tx.batch_execute(
        "truncate trace_summarizer.trace_oldest_span;
         insert into trace_summarizer.trace_oldest_span (trace_id, oldest) select trace_id, oldest from ts_full;",
    )
    .await
    .ctx("rebuilding trace_summarizer.trace_oldest_span")?;

    let floor: Option<chrono::DateTime<chrono::Utc>> = tx
        .query_one(
            &format!("select min(\"timestamp\") from {}", target.traces()),
            &[],
        )
        .await
        .ctx("reading the oldest span")?
        .get(0);
    crate::cycle::save_position(&tx, &target.schema, &horizon, floor).await?;
    let deletes = crate::deletes::counter(&tx, target).await?;
    stats.duration = started.elapsed();
    tx.execute(
        "update trace_summarizer.state
         set rebuild_reason = null, last_rebuild_at = clock_timestamp(), last_rebuild_ms = $2,
             last_rebuild_reason = $3, deletes_seen = $4, floor_at_deletes = $5
         where target_schema = $1",
        &[
            &target.schema,
            &(stats.duration.as_secs_f64() * 1000.0),
            &reason,
            &deletes,
            &floor,
        ],
    )
    .await
    .ctx("recording the rebuild")?;
    tx.commit().await.ctx("committing the rebuild")?;
    client
        .batch_execute("reset work_mem; reset maintenance_work_mem")
        .await
        .ctx("resetting memory settings")?;
    stats.duration = started.elapsed();
    Ok(stats)
}
