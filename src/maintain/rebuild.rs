//! The full refresh of the maintained table: the definition computed over the whole window, in
//! one REPEATABLE READ transaction that also stores the tailing position, rebuilds the side
//! tables and clears the recompute queue. A timeout, a crash or a `kill -9` at any instant
//! leaves the old table, the old position and the pending reason: nothing is half done.
//!
//! Two ways, both invisible to readers:
//! - **beside and swap** (the role owns the table): the new table is built under a temporary
//!   name with its indexes, then swapped in (`relation::swap`), as a plain REFRESH MATERIALIZED
//!   VIEW does (the same aggregation with the same plan, plus the side table of oldest span
//!   times: see docs/bench-report.md for what that costs against REFRESH ... CONCURRENTLY);
//! - **in place** (the role may only write rows): the fresh aggregate is diffed against the table
//!   in one full join, as REFRESH ... CONCURRENTLY does, and only new, changed and gone rows are
//!   written.
//!
//! A worker running at the same time waits on the work lock, then continues from the position
//! this refresh stored, so no update is lost or applied twice. The refresh has its own time
//! limit (`--rebuild-timeout`), not the cycle's.

use crate::db::locks;
use crate::db::source::{self, SummaryKind, Target};
use crate::db::sqltext;
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::maintain::progress::Progress;
use crate::maintain::relation::{self, Swap};
use crate::maintain::retention;
use crate::maintain::tailing::Snapshot;
use crate::state::{self, Names, State};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, GenericClient};

/// Rows per batch when writing changed rows in place (one progress step).
const BATCH: i64 = 50_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct RebuildStats {
    /// Summaries in the table afterwards.
    pub rows: i64,
    /// In place: rows inserted, updated and deleted. Beside and swap: all zero.
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    /// Built beside and swapped in.
    pub swapped: bool,
    /// Stamps copied from another server, cleared.
    pub foreign_stamps: i64,
    pub duration: Duration,
}

impl std::fmt::Display for RebuildStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.swapped {
            write!(
                f,
                "rebuild done: {} summaries built beside the table and swapped in, in {:.2}s",
                self.rows,
                self.duration.as_secs_f64()
            )
        } else {
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
}

/// How the refresh replaces the relation.
#[derive(Debug, Clone)]
pub enum Method {
    /// Choose: beside and swap when this role may replace the table, else in place.
    Auto,
    /// Build beside and swap in with this plan (install: first fill, switch, adoption).
    Replace(Swap),
}

/// Runs a full refresh of `target`'s table. Takes and releases the work lock.
pub async fn run(
    client: &mut Client,
    target: &Target,
    reason: &str,
    timeout: Option<Duration>,
    method: Method,
) -> Result<RebuildStats> {
    locks::wait_work(&*client, &target.schema).await?;
    let result = run_locked(client, target, reason, timeout, method).await;
    // The lock is session-level: release it even when the refresh failed.
    let _ = locks::release_work(&*client, &target.schema).await;
    result
}

async fn run_locked(
    client: &mut Client,
    target: &Target,
    reason: &str,
    timeout: Option<Duration>,
    method: Method,
) -> Result<RebuildStats> {
    let started = Instant::now();
    relation::drop_leftovers(&*client, target).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: started"
    );
    let mut tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .ctx("starting the rebuild transaction")?;
    let timeout_ms = timeout.map(|d| d.as_millis().max(1) as u64).unwrap_or(0);
    // One big aggregation: memory for its sort and the index builds, and otherwise the plan
    // that REFRESH of the view gets (parallel workers were measured slower: gathering the
    // sorted spans costs more than the index scan in trace_id order that the planner picks).
    // Our own updates of otel_traces (clearing foreign stamps) are not changes of the spans
    // for the triggers.
    tx.batch_execute(&format!(
        "set local statement_timeout = {timeout_ms};
         set local lock_timeout = 0;
         set local work_mem = '512MB';
         set local maintenance_work_mem = '512MB';
         set local trace_summarizer.maintenance = 'on';"
    ))
    .await
    .ctx("configuring the rebuild")?;
    let Some(st) = state::load_for_update(&tx, &target.schema).await? else {
        return Err(Error::precondition(
            format!(
                "trace-summarizer is not installed for schema {:?}",
                target.schema
            ),
            "run `trace-summarizer install --mode incremental` first",
        ));
    };
    let def = Definition {
        window: st.window.clone(),
        error_rule: st.error_rule,
    };
    let names = st.names();
    let snap = Snapshot::read(&tx, &def.window.interval_text()).await?;
    let mut stats = RebuildStats {
        foreign_stamps: clear_foreign_stamps(&tx, target, &snap).await?,
        ..Default::default()
    };

    // 1. Aggregate the window once (the same work as the view's refresh).
    let progress = Progress::spinner("aggregating spans in the window");
    tx.batch_execute(&format!(
        "create temp table ts_full on commit drop as {};",
        def.query(target, ",\n min(\"timestamp\") as oldest")
    ))
    .await
    .ctx("aggregating the window")?;
    progress.finish();

    // 2. Put the rows in place, and the side table beside them.
    let (kind, _) = source::summary_relation(&tx, target).await?;
    let swap = match method {
        Method::Replace(plan) => Some(plan),
        Method::Auto
            if kind == SummaryKind::Table && relation::may_replace(&tx, target).await? =>
        {
            Some(Swap {
                new_mode: crate::state::Mode::Incremental,
                old: kind,
                comment: relation::comment_for(crate::state::Mode::Incremental, &def),
                readers: Vec::new(),
                after: None,
            })
        }
        Method::Auto if kind == SummaryKind::Table => None,
        Method::Auto => {
            return Err(Error::precondition(
                format!(
                    "{} is not the table trace-summarizer maintains",
                    target.summaries()
                ),
                "run `trace-summarizer install --mode incremental` first",
            ))
        }
    };
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: aggregated"
    );
    let relation_oid = match swap {
        Some(plan) => {
            let progress = Progress::spinner("building the new table and its indexes");
            relation::create_table_beside(&tx, target, "ts_full").await?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "rebuild: table built"
            );
            rebuild_side_table(&tx, &names).await?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "rebuild: side table built"
            );
            progress.finish();
            let oid = relation::swap(&mut tx, target, &plan).await?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "rebuild: swapped"
            );
            stats.swapped = true;
            oid
        }
        None => {
            in_place(&tx, target, &names, &mut stats).await?;
            source::summary_relation(&tx, target).await?.1
        }
    };
    stats.rows = tx
        .query_one("select count(*) from ts_full", &[])
        .await
        .ctx("counting")?
        .get(0);

    // 3. The relations holding otel_traces' rows, the queue, the position.
    let source_oid = source::traces_oid(&tx, target).await?;
    record_leaves(&tx, &names, source_oid, &snap).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: leaves recorded"
    );
    tx.batch_execute(&format!("delete from {}", names.queue))
        .await
        .ctx("clearing the recompute queue")?;
    stats.duration = started.elapsed();
    state::save_position(
        &tx,
        &target.schema,
        &snap.position_at(snap.xmax),
        source_oid,
    )
    .await?;
    state::record_rebuild(
        &tx,
        &target.schema,
        reason,
        stats.duration.as_secs_f64() * 1000.0,
        relation_oid,
    )
    .await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: recorded"
    );
    tx.commit().await.ctx("committing the rebuild")?;
    stats.duration = started.elapsed();
    tracing::debug!(ms = stats.duration.as_millis() as u64, "rebuild: committed");
    Ok(stats)
}

/// Clears stamps this server cannot have written (at or beyond the snapshot's xmax: copied by a
/// restore or by replication): once this server's ids pass them, they would look new again.
/// The refresh that follows summarizes those rows like any other.
async fn clear_foreign_stamps<C: GenericClient>(
    client: &C,
    target: &Target,
    snap: &Snapshot,
) -> Result<i64> {
    let any: bool = client
        .query_one(
            &format!(
                "select exists (select 1 from {} where trace_summarizer_xid >= $1)",
                target.traces()
            ),
            &[&snap.xmax],
        )
        .await
        .ctx("looking for stamps copied from another server")?
        .get(0);
    if !any {
        return Ok(0);
    }
    let n = client
        .execute(
            &format!(
                "update {} set trace_summarizer_xid = null where trace_summarizer_xid >= $1",
                target.traces()
            ),
            &[&snap.xmax],
        )
        .await
        .ctx("clearing stamps copied from another server")
        .map_err(|e| {
            if e.is_privilege_error() {
                Error::precondition(
                    e.chain(),
                    "otel_traces holds stamps copied from another server (a restore, or replication of the column trace_summarizer_xid); run `trace-summarizer rebuild` once as the owner of otel_traces, or grant update (trace_summarizer_xid) on otel_traces to the worker's role",
                )
            } else {
                e
            }
        })? as i64;
    if n > 0 {
        tracing::warn!(
            rows = n,
            "cleared trace_summarizer_xid on rows stamped by another server (restored or replicated)"
        );
    }
    Ok(n)
}

/// Builds the side table of oldest span times beside the old one (exact values, one per trace),
/// and swaps it in (only this installation's worker reads it, and it waits on the work lock).
async fn rebuild_side_table<C: GenericClient>(client: &C, names: &Names) -> Result<()> {
    let q = |n: &str| crate::db::quote::qualified("trace_summarizer", n);
    let new = q(&format!("{}_new", names.oldest_table));
    let idx_new = crate::db::quote::ident(&format!("{}_new", names.oldest_index));
    client
        .batch_execute(&format!(
            "drop table if exists {new};
             create table {new} as select trace_id, oldest from ts_full;
             create index {idx_new} on {new} (oldest);
             drop table {old};
             alter table {new} rename to {table};
             alter index {qidx_new} rename to {idx};",
            old = names.oldest,
            table = crate::db::quote::ident(&names.oldest_table),
            qidx_new = q(&format!("{}_new", names.oldest_index)),
            idx = crate::db::quote::ident(&names.oldest_index),
        ))
        .await
        .ctx("rebuilding the oldest-span side table")
}

/// Writes only the rows that differ from `ts_full`, in place.
async fn in_place<C: GenericClient>(
    client: &C,
    target: &Target,
    names: &Names,
    stats: &mut RebuildStats,
) -> Result<()> {
    let summaries = target.summaries();
    let progress = Progress::spinner("comparing with the table");
    let f_cols = sqltext::column_list(Some("f"));
    // One full join gives new, changed and gone rows in a single pass, like REFRESH ...
    // CONCURRENTLY; only those are written (an upsert of every row would lock, and so
    // rewrite, all of them).
    client
        .batch_execute(&format!(
            "create temp table ts_change on commit drop as
             select row_number() over () as rn, coalesce(f.trace_id, t.trace_id) as key, f.trace_id is null as gone,
                    {f_cols}
             from ts_full f full join {summaries} t on t.trace_id = f.trace_id
             where f.trace_id is null or t.trace_id is null or {t_row} is distinct from {f_row};
             create index on ts_change (rn);",
            t_row = sqltext::value_row("t"),
            f_row = sqltext::value_row("f"),
        ))
        .await
        .ctx("comparing with the table")?;
    let total: i64 = client
        .query_one("select count(*) from ts_change where not gone", &[])
        .await
        .ctx("counting")?
        .get(0);
    progress.finish();
    let bar = Progress::bar(total as u64, "applying changed summaries");
    let last_rn: i64 = client
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
    let mut from = 0i64;
    while from < last_rn {
        let to = from + BATCH;
        let row = client
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
    stats.deleted = client
        .execute(
            &format!(
                "delete from {summaries} t using ts_change c where c.gone and t.trace_id = c.key"
            ),
            &[],
        )
        .await
        .ctx("deleting summaries no longer in the window")? as i64;
    client
        .batch_execute(&format!(
            "delete from {oldest};
             insert into {oldest} (trace_id, oldest) select trace_id, oldest from ts_full;",
            oldest = names.oldest
        ))
        .await
        .ctx("rebuilding the oldest-span side table")?;
    Ok(())
}

/// Records the relations that hold otel_traces' rows now, with the time range of their
/// in-window spans.
async fn record_leaves<C: GenericClient>(
    client: &C,
    names: &Names,
    source_oid: u32,
    snap: &Snapshot,
) -> Result<()> {
    client
        .batch_execute(&format!("delete from {}", names.leaves))
        .await
        .ctx("clearing the partitions last seen")?;
    let leaves = retention::current_leaves(client, source_oid).await?;
    for (oid, relfilenode) in leaves {
        retention::record_leaf(client, names, oid, relfilenode, snap.edge).await?;
    }
    Ok(())
}

/// The state's definition, for callers that have a state.
pub fn definition(st: &State) -> Definition {
    Definition {
        window: st.window.clone(),
        error_rule: st.error_rule,
    }
}
