//! Full refresh of the maintained table: recompute every summary in the window from
//! `otel_traces`, in one REPEATABLE READ transaction that also stores the tailing position.
//!
//! Readers are never blocked: the fresh aggregate is diffed against the table in one full join
//! (as REFRESH MATERIALIZED VIEW CONCURRENTLY does), and only new, changed and gone rows are
//! written, with row locks only. Ingest is never blocked: the source is only read.
//! A worker running at the same time waits on the work lock, then continues from the position
//! this rebuild stored, so no update is lost or applied twice.

use crate::db::locks;
use crate::db::source::Target;
use crate::db::sqltext;
use crate::error::{DbContext, Result};
use crate::maintain::horizon;
use crate::ops::progress::Progress;
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

    // 1. Aggregate the window once (the same work as the view's refresh).
    let progress = Progress::spinner("aggregating spans in the window");
    let definition = sqltext::definition(target, &window, ",\n min(\"timestamp\") as oldest");
    tx.batch_execute(&format!(
        "create temp table ts_full on commit drop as {definition}; analyze ts_full;"
    ))
    .await
    .ctx("aggregating the window")?;
    progress.finish();

    // 2. Diff against the table in one hash join, like REFRESH ... CONCURRENTLY does, so that
    // only rows that really change are written (an upsert of every row would lock, and so
    // rewrite, all of them).
    let progress = Progress::spinner("comparing with the table");
    let f_cols = sqltext::column_list(Some("f"));
    let t_rest = sqltext::column_list(Some("t"))
        .split_once(", ")
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    let f_rest = f_cols
        .split_once(", ")
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    // One full join gives new, changed and gone rows in a single pass.
    tx.batch_execute(&format!(
        "create temp table ts_change on commit drop as
         select row_number() over () as rn, coalesce(f.trace_id, t.trace_id) as key, f.trace_id is null as gone,
                {f_cols}
         from ts_full f full join {summaries} t on t.trace_id = f.trace_id
         where f.trace_id is null or t.trace_id is null or ({t_rest}) is distinct from ({f_rest});
         create index on ts_change (rn);"
    ))
    .await
    .ctx("comparing with the table")?;
    let total: i64 = tx
        .query_one("select count(*) from ts_change where not gone", &[])
        .await
        .ctx("counting")?
        .get(0);
    progress.finish();

    // 3. Apply the changed rows in batches (one progress step each).
    let bar = Progress::bar(total as u64, "applying changed summaries");
    let last_rn: i64 = tx
        .query_one("select coalesce(max(rn), 0) from ts_change", &[])
        .await
        .ctx("counting")?
        .get(0);
    let cols = sqltext::column_list(None);
    let upsert = format!(
        "with up as (
             insert into {summaries} as t ({cols})
             select {cols} from ts_change where rn > $1 and rn <= $2 and not gone
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
    while from < last_rn {
        let to = from + BATCH;
        let row = tx
            .query_one(&upsert, &[&from, &to])
            .await
            .ctx("upserting summaries")?;
        let (ins, upd) = (row.get::<_, i64>(0), row.get::<_, i64>(1));
        stats.inserted += ins;
        stats.updated += upd;
        bar.advance((ins + upd) as u64);
        from = to;
    }
    bar.finish();
    stats.deleted = tx
        .execute(
            &format!(
                "delete from {summaries} t using ts_change c where c.gone and t.trace_id = c.key"
            ),
            &[],
        )
        .await
        .ctx("deleting summaries no longer in the window")? as i64;

    // 4. The per-trace oldest span times, diffed the same way.
    tx.batch_execute(
        "create temp table ts_side_change on commit drop as
           select coalesce(f.trace_id, s.trace_id) as key, f.trace_id is null as gone, f.oldest
           from ts_full f full join trace_summarizer.trace_oldest_span s on s.trace_id = f.trace_id
           where f.trace_id is null or s.trace_id is null or s.oldest is distinct from f.oldest;
         delete from trace_summarizer.trace_oldest_span s using ts_side_change c where c.gone and s.trace_id = c.key;
         insert into trace_summarizer.trace_oldest_span (trace_id, oldest)
           select key, oldest from ts_side_change where not gone
         on conflict (trace_id) do update set oldest = excluded.oldest;",
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
    crate::maintain::cycle::save_position(&tx, &target.schema, &horizon, floor).await?;
    let deletes = crate::maintain::deletes::counter(&tx, target).await?;
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
