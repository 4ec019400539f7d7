//! The full refresh of the maintained table: the definition computed over the whole window, in
//! one REPEATABLE READ transaction that also stores the tailing position, completes the side
//! table of oldest span times and clears the recompute queue. A timeout, a crash or a `kill -9`
//! at any instant leaves the old table, the old position and the pending reason: nothing is
//! half done.
//!
//! **`rebuild` and the worker's fallbacks compare, then write what differs** (`diff`): one
//! statement per session aggregates the window, joins it with the table and keeps the new,
//! changed and gone rows, and, from the same rows, the oldest span times the side table lacks;
//! then only those rows are written, in place, as REFRESH ... CONCURRENTLY does. When more than
//! a fifth of the rows differ and this role owns the table, the new table is built beside from
//! the unchanged and the changed rows, indexed and swapped in (`relation::swap`) instead.
//!
//! **On several connections** (`--jobs`; `parallel.rs`), helper sessions share the refresh
//! transaction's snapshot and each compares a range of trace_ids while the refresh's own
//! session (the leader) compares the first. The helpers write nothing outside their own
//! temporary tables, and roll back: their differences are streamed into the leader's
//! transaction (binary COPY through this process), and the leader writes everything that
//! changes, in its own transaction, like a refresh on one session. Rows committed by helper
//! transactions could not be used instead: they begin after the leader's snapshot, so the leader
//! could neither read nor diff them, and their commits would change tables before the
//! refresh commits.
//!
//! **Install** (first fill, a change of window or error rule, a switch from the view, an
//! adoption) builds the new table beside on one session: one statement aggregates the window
//! into it and into a new side table, then both are indexed and swapped in.
//!
//! A worker running at the same time waits on the work lock, then continues from the position
//! this refresh stored, so no update is lost or applied twice. The refresh has its own time
//! limit (`--rebuild-timeout`), not the cycle's.

use crate::db::locks;
use crate::db::source::{self, SummaryKind, Target};
use crate::db::sqltext;
use crate::db::statements::{Db, Statements};
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::install::capture;
use crate::maintain::leaves;
use crate::maintain::parallel::{self, Helper, Parallel, Range, Slice};
use crate::maintain::progress::Progress;
use crate::maintain::relation::{self, Swap};
use crate::maintain::stamps;
use crate::maintain::tailing::Snapshot;
use crate::state::{self, Names, Position, State};
use std::time::{Duration, Instant};
use tokio_postgres::{CancelToken, Client, GenericClient, Transaction};

/// Rows per batch when writing changed rows in place (one progress step).
const BATCH: i64 = 50_000;

/// Memory for the aggregation's sorts and the index builds, in every session of a refresh.
const MEMORY: &str = "512MB";

/// Beyond one row in this many differing, a refresh by the table's owner builds the table
/// beside and swaps it in rather than writing the rows in place: in place, each changed row
/// costs a new row version and an entry in each of three indexes (measured at about 3x the
/// cost per row of building beside), and leaves as many dead rows.
const BESIDE_ABOVE: i64 = 5;

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
    /// Sessions that aggregated the window (the refresh's own included).
    pub jobs: usize,
    /// The stamp space moved past stamps restored from another server (the new offset).
    pub stamp_offset_moved: Option<i64>,
    pub duration: Duration,
}

impl std::fmt::Display for RebuildStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = if self.jobs == 1 {
            "1 connection".to_string()
        } else {
            format!("{} connections", self.jobs)
        };
        if self.swapped {
            write!(
                f,
                "rebuild done: {} summaries built beside the table and swapped in, in {:.2}s ({on})",
                self.rows,
                self.duration.as_secs_f64(),
            )
        } else {
            write!(
                f,
                "rebuild done: {} inserted, {} updated, {} deleted in {:.2}s ({on})",
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
    /// Compare and write what differs (built beside and swapped in instead when much differs
    /// and this role may replace the table).
    Auto,
    /// Build beside and swap in with this plan (install: first fill, switch, adoption).
    Replace(Swap),
}

/// Runs a full refresh of `target`'s table. Takes and releases the work lock. With `parallel`,
/// `Method::Auto` compares the window with the table on that many connections.
pub async fn run(
    client: &mut Client,
    target: &Target,
    reason: &str,
    timeout: Option<Duration>,
    method: Method,
    parallel: Option<&Parallel>,
) -> Result<RebuildStats> {
    locks::wait_work(&*client, &target.schema).await?;
    let result = run_locked(client, target, reason, timeout, method, parallel).await;
    // The lock is session-level: release it even when the refresh failed.
    let _ = locks::release_work(&*client, &target.schema).await;
    result
}

/// How the refresh replaces the rows.
enum Way {
    /// Build the new table beside the old one and swap it in.
    Beside(Swap),
    /// Compare, and write what differs in place; with a swap plan (this role owns the table),
    /// build beside instead when more than `1 / BESIDE_ABOVE` of the rows differ.
    Diff(Option<Swap>),
}

/// What the refresh transaction works with, decided before it begins.
struct Plan<'a> {
    reason: &'a str,
    timeout_ms: u64,
    way: Way,
    /// The helper sessions, and the range of trace_ids of each session (the leader's first).
    helpers: Vec<Helper>,
    ranges: Vec<Range>,
    parallel: Option<&'a Parallel>,
    started: Instant,
    stamp_offset_moved: Option<i64>,
}

async fn run_locked(
    client: &mut Client,
    target: &Target,
    reason: &str,
    timeout: Option<Duration>,
    method: Method,
    parallel: Option<&Parallel>,
) -> Result<RebuildStats> {
    let started = Instant::now();
    relation::drop_leftovers(&*client, target).await?;
    let stamp_offset_moved = prepare_capture(client, target).await?;
    let Some(st) = state::load(&*client, &target.schema).await? else {
        return Err(not_installed(target));
    };
    drop_side_leftover(&*client, &st.names()).await?;
    // How the relation is replaced; decided under the work lock, which everything that
    // replaces the relation holds.
    let (kind, _) = source::summary_relation(&*client, target).await?;
    let way = match method {
        Method::Replace(plan) => Way::Beside(plan),
        Method::Auto if kind == SummaryKind::Table => {
            // A Citus node's shards are never replaced: written in place.
            Way::Diff(
                if target.local.is_none() && relation::may_replace(&*client, target).await? {
                    Some(Swap {
                        new_mode: crate::state::Mode::Incremental,
                        old: kind,
                        comment: relation::comment_for(
                            crate::state::Mode::Incremental,
                            &definition(&st),
                        ),
                        readers: Vec::new(),
                        after: None,
                    })
                } else {
                    None
                },
            )
        }
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
    let timeout_ms = timeout.map(|d| d.as_millis().max(1) as u64).unwrap_or(0);
    let (helpers, ranges) = match (&way, parallel) {
        (Way::Diff(_), Some(p)) if target.local.is_none() => {
            open_helpers(&*client, target, p, timeout_ms).await?
        }
        _ => (Vec::new(), vec![(None, None)]),
    };
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        jobs = helpers.len() + 1,
        "rebuild: started"
    );
    let plan = Plan {
        reason,
        timeout_ms,
        way,
        helpers,
        ranges,
        parallel,
        started,
        stamp_offset_moved,
    };
    refresh(client, target, plan).await
}

/// Opens the helper sessions `parallel` asks for and cuts the trace_ids into one range per
/// session (the leader's first). Fewer when fewer can connect or the sample is small.
async fn open_helpers(
    client: &Client,
    target: &Target,
    parallel: &Parallel,
    timeout_ms: u64,
) -> Result<(Vec<Helper>, Vec<Range>)> {
    let single = || (Vec::new(), vec![(None, None)]);
    let jobs = parallel::resolve(client, parallel.jobs).await?;
    let mut bounds = match parallel::boundaries(client, target, jobs).await {
        Ok(b) => b,
        // A relation that cannot be sampled (a view or a foreign table as otel_traces).
        Err(e) => {
            tracing::warn!(error = %e.chain(), "cannot cut otel_traces into ranges; refreshing on one connection");
            return Ok(single());
        }
    };
    if bounds.is_empty() {
        return Ok(single());
    }
    // As the refresh transaction sets itself; the sessions are the parallelism, with no
    // parallel workers on top.
    let setup = format!(
        "set statement_timeout = {timeout_ms};
         set lock_timeout = 0;
         set idle_in_transaction_session_timeout = 0;
         set client_connection_check_interval = '2s';
         set work_mem = '{MEMORY}';
         set max_parallel_workers_per_gather = 0;"
    );
    let mut helpers = parallel::open_helpers(&parallel.connect, bounds.len() as u32, &setup).await;
    if helpers.len() < bounds.len() {
        bounds = parallel::boundaries(client, target, helpers.len() as u32 + 1).await?;
        helpers.truncate(bounds.len());
        bounds.truncate(helpers.len());
    }
    Ok((helpers, parallel::ranges(&bounds)))
}

/// The refresh transaction.
async fn refresh(client: &mut Client, target: &Target, plan: Plan<'_>) -> Result<RebuildStats> {
    let started = plan.started;
    let leader_token = client.cancel_token();
    let mut tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .ctx("starting the rebuild transaction")?;
    // One big aggregation: memory for its sort and the index builds, and otherwise the plan
    // that REFRESH of the view gets (parallel workers were measured slower: gathering the
    // sorted spans costs more than the index scan in trace_id order that the planner picks).
    // The session may wait for its helpers, idle in this transaction.
    // One statement at a time: Citus refuses several utility statements in one string.
    crate::db::ddl::run(
        &tx,
        &format!(
            "set local statement_timeout = {};
             set local lock_timeout = 0;
             set local idle_in_transaction_session_timeout = 0;
             set local work_mem = '{MEMORY}';
             set local maintenance_work_mem = '{MEMORY}';",
            plan.timeout_ms
        ),
        "configuring the rebuild",
    )
    .await?;
    // The worker's session pins plans to index lookups and turns JIT off; one aggregation of
    // the window wants the planner's own choices, as the helper sessions have them.
    crate::maintain::scratch::unpin_plans(&tx).await?;
    tx.batch_execute("set local jit to default")
        .await
        .ctx("configuring the rebuild")?;
    let Some(st) = state::load_for_update(&Db::once(&tx), &target.schema).await? else {
        return Err(not_installed(target));
    };
    let def = definition(&st);
    let names = st.names();
    let snap = Snapshot::read(&Db::once(&tx), &def.window.interval_text(), st.stamp_offset).await?;
    let covers = snap.position_at(snap.xmax);
    // What the summaries will be exact against: the capture objects as they are now.
    let capture_now = capture::status(&Db::once(&tx), target, &names, st.stamp_offset).await?;
    if !capture_now.complete() {
        // Changed between the repair above and this snapshot: try again later.
        return Err(Error::precondition(
            format!(
                "otel_traces lost {} while the refresh started",
                capture_now.missing().join(", ")
            ),
            "run `trace-summarizer install` as the owner of otel_traces, then `trace-summarizer rebuild`",
        ));
    }
    if !plan.helpers.is_empty() {
        tx.batch_execute("set local max_parallel_workers_per_gather = 0")
            .await
            .ctx("configuring the rebuild")?;
        // The helpers see exactly the rows this transaction sees.
        let id: String = tx
            .query_one("select pg_export_snapshot()", &[])
            .await
            .ctx("exporting the refresh's snapshot")?
            .get(0);
        parallel::import_snapshot(&plan.helpers, &id).await?;
    }
    let mut stats = RebuildStats {
        stamp_offset_moved: plan.stamp_offset_moved,
        jobs: plan.helpers.len() + 1,
        ..Default::default()
    };
    let work = Work {
        target,
        def: &def,
        covers: &covers,
        snap: &snap,
        names: &names,
        started,
    };
    match plan.way {
        Way::Beside(swap) => {
            // Aggregate the window (the same work as the view's refresh) into the new table
            // and the new side table, then index them and swap them in.
            create_beside(&tx, target, &def, &names).await?;
            let progress = Progress::spinner("aggregating spans in the window");
            let slice = Slice::new(snap.edge, &(None, None), |cond| {
                beside_sql(&def, target, &covers, &names, cond)
            });
            stats.rows = tx
                .execute(slice.sql.as_str(), &slice.params())
                .await
                .ctx("aggregating the window")? as i64;
            progress.finish();
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "rebuild: aggregated"
            );
            build_and_swap(&mut tx, target, &swap, started).await?;
            swap_side_table(&tx, &names).await?;
            stats.swapped = true;
        }
        Way::Diff(swap) => {
            diff(
                &mut tx,
                &work,
                swap,
                Sessions {
                    helpers: &plan.helpers,
                    ranges: &plan.ranges,
                    parallel: plan.parallel,
                    leader_token: &leader_token,
                },
                &mut stats,
            )
            .await?;
        }
    }
    let relation_oid = source::summary_relation(&tx, target).await?.1;

    // The relations holding otel_traces' rows, the queue, the position.
    let source_oid = source::traces_oid(&tx, target).await?;
    leaves::record_all(
        &Db::new(&tx, &Statements::new()),
        target,
        &names,
        source_oid,
        snap.edge,
    )
    .await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: leaves recorded"
    );
    tx.batch_execute(&format!("delete from {}", names.queue))
        .await
        .ctx("clearing the recompute queue")?;
    stats.duration = started.elapsed();
    state::save_position(
        &Db::once(&tx),
        &target.schema,
        &covers,
        source_oid,
        snap.edge,
    )
    .await?;
    state::record_capture_version(&tx, &target.schema, &capture_now.version).await?;
    state::record_rebuild(
        &tx,
        &target.schema,
        plan.reason,
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

/// What every part of the refresh works with.
struct Work<'a> {
    target: &'a Target,
    def: &'a Definition,
    covers: &'a Position,
    snap: &'a Snapshot,
    names: &'a Names,
    started: Instant,
}

/// Building beside: the definition over the whole window (`cond` is empty, the window's edge
/// is `$1`), written into the new table and, from the same rows, the oldest span time of each
/// trace into the new side table.
fn beside_sql(
    def: &Definition,
    target: &Target,
    covers: &Position,
    names: &Names,
    cond: &str,
) -> String {
    let cols = sqltext::column_list(None);
    format!(
        "with agg as materialized ({}),
         side as (insert into {side} (trace_id, oldest) select trace_id, oldest from agg)
         insert into {new} ({cols}) select {cols} from agg",
        def.query_covered_at(
            target,
            ",\n min(\"timestamp\") as oldest",
            covers,
            "$1",
            cond
        ),
        side = side_new(names),
        new = target.rel(relation::NEW),
    )
}

/// The new summaries table and the new side table, empty, beside the ones in use.
async fn create_beside<C: GenericClient>(
    client: &C,
    target: &Target,
    def: &Definition,
    names: &Names,
) -> Result<()> {
    relation::create_empty_beside(client, target, def).await?;
    client
        .batch_execute(&format!(
            "create table {} (trace_id text not null, oldest timestamptz not null)",
            side_new(names)
        ))
        .await
        .ctx("creating the new oldest-span side table")
}

/// The temporary tables a session compares into: the differing rows (`key`, `gone`, then
/// the 14 columns) and the oldest span times the side table lacks. Every session makes them
/// with this same statement, so a helper's rows copy into the leader's in binary.
fn scratch_sql(def: &Definition, target: &Target) -> String {
    format!(
        "create temp table ts_change on commit drop as
           select ''::text as key, false as gone, {cols} from ({query}) q with no data;
         create temp table ts_side (trace_id text not null, oldest timestamptz not null) on commit drop;",
        cols = sqltext::column_list(None),
        query = def.query(target, ""),
    )
}

/// One session's comparison: the definition over its range of trace_ids (`cond`, with the
/// window's edge as `$1`), fully joined with the table's rows of that range; the rows that
/// differ go to `ts_change`, and the oldest span times the side table lacks (no entry of the
/// trace at or below it) to `ts_side`. Returns the traces in the range, the rows to write and
/// the rows gone.
fn diff_sql(work: &Work<'_>, cond: &str) -> String {
    let cols = sqltext::column_list(None);
    format!(
        "with agg as materialized ({agg}),
         side as (
             insert into ts_side (trace_id, oldest)
             select f.trace_id, f.oldest from agg f
             where not exists (select from (select trace_id, oldest from {oldest} s where true{cond}) o
                               where o.trace_id = f.trace_id and o.oldest <= f.oldest)),
         ch as (
             insert into ts_change
             select coalesce(f.trace_id, t.trace_id), f.trace_id is null, {f_cols}
             from agg f full join (select {cols} from {summaries} s where true{cond}) t on t.trace_id = f.trace_id
             where f.trace_id is null or t.trace_id is null or {t_row} is distinct from {f_row}
             returning gone)
         select (select count(*) from agg), count(*) filter (where not gone), count(*) filter (where gone) from ch",
        agg = work.def.query_covered_at(
            work.target,
            ",\n min(\"timestamp\") as oldest",
            work.covers,
            "$1",
            cond
        ),
        oldest = work.names.oldest,
        summaries = work.target.summaries_read(),
        f_cols = sqltext::column_list(Some("f")),
        t_row = sqltext::value_row("t"),
        f_row = sqltext::value_row("f"),
    )
}

/// The sessions of a refresh: the helpers, each session's range of trace_ids (the refresh's
/// own first), where helpers connect, and how to cancel the refresh's own statement.
struct Sessions<'a> {
    helpers: &'a [Helper],
    ranges: &'a [Range],
    parallel: Option<&'a Parallel>,
    leader_token: &'a CancelToken,
}

/// Compares the window with the table on every session at once, brings the helpers'
/// differences into this transaction, then writes only the new, changed and gone rows in
/// place, or (with `swap`, when more than a fifth of the rows differ) builds the table beside
/// from the unchanged rows and the changed ones. The oldest span times the side table lacks
/// are added to it.
async fn diff(
    tx: &mut Transaction<'_>,
    work: &Work<'_>,
    swap: Option<Swap>,
    sessions: Sessions<'_>,
    stats: &mut RebuildStats,
) -> Result<()> {
    let Sessions {
        helpers,
        ranges,
        parallel,
        leader_token,
    } = sessions;
    let (target, names) = (work.target, work.names);
    let summaries = target.summaries();
    let cols = sqltext::column_list(None);
    let progress = Progress::spinner("comparing the window with the table");
    let scratch = scratch_sql(work.def, target);
    let slices: Vec<Slice> = ranges
        .iter()
        .map(|r| Slice::new(work.snap.edge, r, |cond| diff_sql(work, cond)))
        .collect();
    let counts: Vec<(i64, i64, i64)> = match parallel {
        Some(p) if !helpers.is_empty() => {
            let n = helpers.len() + 1;
            let what = |k: usize| {
                format!(
                    "comparing range {} of {n} of the window with the table ({})",
                    k + 1,
                    if k == 0 {
                        "the refresh's own session".to_string()
                    } else {
                        format!("helper session {k}")
                    }
                )
            };
            let mut jobs: Vec<futures_util::future::BoxFuture<'_, Result<(i64, i64, i64)>>> =
                Vec::new();
            let leader: &Transaction<'_> = tx;
            let (scratch_ref, slices_ref) = (&scratch, &slices);
            let w0 = what(0);
            jobs.push(Box::pin(async move {
                crate::db::ddl::run(leader, scratch_ref, &w0).await?;
                counts_of(leader, &slices_ref[0], &w0).await
            }));
            for (k, h) in helpers.iter().enumerate() {
                let wk = what(k + 1);
                jobs.push(Box::pin(async move {
                    crate::db::ddl::run(&h.client, scratch_ref, &wk).await?;
                    counts_of(&h.client, &slices_ref[k + 1], &wk).await
                }));
            }
            let mut tokens = vec![leader_token];
            tokens.extend(helpers.iter().map(|h| h.token()));
            let counts = parallel::run_all(&p.connect, &tokens, jobs).await?;
            // The helpers' differences, into this transaction.
            for (k, h) in helpers.iter().enumerate() {
                for table in ["ts_change", "ts_side"] {
                    parallel::relay(&h.client, &*tx, table, &format!("helper session {}", k + 1))
                        .await?;
                }
            }
            parallel::finish(helpers).await;
            counts
        }
        _ => {
            crate::db::ddl::run(&*tx, &scratch, "comparing the window with the table").await?;
            vec![counts_of(&*tx, &slices[0], "comparing the window with the table").await?]
        }
    };
    progress.finish();
    let (mut written, mut gone) = (0, 0);
    for (r, w, g) in counts {
        stats.rows += r;
        written += w;
        gone += g;
    }
    tracing::debug!(
        ms = work.started.elapsed().as_millis() as u64,
        rows = stats.rows,
        written,
        gone,
        "rebuild: compared"
    );
    tx.batch_execute(&format!(
        "insert into {} (trace_id, oldest) select trace_id, oldest from ts_side",
        names.oldest
    ))
    .await
    .ctx("completing the oldest-span side table")?;
    if let Some(plan) = swap.filter(|_| (written + gone) * BESIDE_ABOVE > stats.rows) {
        // Much differs: the unchanged rows and the changed ones, beside.
        let progress = Progress::spinner("building the new table");
        relation::create_empty_beside(&*tx, target, work.def).await?;
        tx.batch_execute(&format!(
            "insert into {new} ({cols})
             select {cols} from {summaries} t where not exists (select from ts_change c where c.key = t.trace_id)
             union all select {cols} from ts_change where not gone;",
            new = target.rel(relation::NEW),
        ))
        .await
        .ctx("building the new table")?;
        progress.finish();
        build_and_swap(tx, target, &plan, work.started).await?;
        stats.swapped = true;
        return Ok(());
    }
    if written > 0 {
        crate::db::ddl::run(
            &*tx,
            &format!(
                "create temp table ts_todo on commit drop as
                   select row_number() over () as rn, {cols} from ts_change where not gone;
                 create index on ts_todo (rn);"
            ),
            "applying changed summaries",
        )
        .await?;
    }
    let bar = Progress::bar(written as u64, "applying changed summaries");
    // Into each relation the summaries live in (the table, or a Citus node's local shards,
    // each with the trace_ids it holds).
    let writes = target.summary_writes();
    let upserts: Vec<String> = writes
        .iter()
        .map(|w| {
            format!(
                "with up as (
                     insert into {rel} as t ({cols})
                     select {cols} from ts_todo where rn > $1 and rn <= $2 and {holds}
                     {tail}
                     returning (t.xmax = 0) as inserted
                 )
                 select count(*) filter (where inserted), count(*) filter (where not inserted) from up",
                rel = w.relation,
                holds = w.holds("ts_todo.trace_id"),
                tail = sqltext::upsert_tail("t"),
            )
        })
        .collect();
    let mut from = 0i64;
    while from < written {
        let to = from + BATCH;
        for upsert in &upserts {
            let row = tx
                .query_one(upsert.as_str(), &[&from, &to])
                .await
                .ctx("upserting summaries")?;
            let (ins, upd) = (row.get::<_, i64>(0), row.get::<_, i64>(1));
            stats.inserted += ins;
            stats.updated += upd;
            bar.advance((ins + upd) as u64);
        }
        from = to;
    }
    bar.finish();
    if gone > 0 {
        for w in &writes {
            stats.deleted +=
                tx.execute(
                    &format!(
                        "delete from {} t using ts_change c where c.gone and t.trace_id = c.key",
                        w.relation
                    ),
                    &[],
                )
                .await
                .ctx("deleting summaries no longer in the window")? as i64;
        }
    }
    Ok(())
}

/// Runs a session's comparison: (traces in its range, rows to write, rows gone).
async fn counts_of<C: GenericClient>(
    client: &C,
    slice: &Slice,
    what: &str,
) -> Result<(i64, i64, i64)> {
    let row = client
        .query_one(slice.sql.as_str(), &slice.params())
        .await
        .ctx(what)?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Indexes the new table and swaps it in.
async fn build_and_swap(
    tx: &mut Transaction<'_>,
    target: &Target,
    swap: &Swap,
    started: Instant,
) -> Result<()> {
    let progress = Progress::spinner("building the new table's indexes");
    relation::index_beside(&*tx, target).await?;
    progress.finish();
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: table indexed"
    );
    relation::swap(tx, target, swap).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "rebuild: swapped"
    );
    Ok(())
}

/// Before a refresh: what install put on otel_traces must be complete (a replaced otel_traces
/// has none of our triggers), and no stamp may lie ahead of this server (a restore). Repairs
/// both when this role owns otel_traces; otherwise stops with what to run. Returns the new stamp
/// offset when the stamp space moved.
async fn prepare_capture(client: &Client, target: &Target) -> Result<Option<i64>> {
    let Some(st) = state::load(client, &target.schema).await? else {
        return Err(not_installed(target));
    };
    let names = st.names();
    let now = capture::status(&Db::once(client), target, &names, st.stamp_offset).await?;
    if !now.complete() {
        tracing::warn!(
            missing = now.missing().join(", "),
            "otel_traces lacks what install put on it; putting it back before the refresh"
        );
        capture::ensure(client, target, &names, &st.window, st.stamp_offset)
            .await
            .map_err(|e| match e {
                Error::Precondition { .. } => Error::precondition(
                    format!(
                        "otel_traces in schema {:?} lacks {} (replaced, or changed by hand): {}",
                        target.schema,
                        now.missing().join(", "),
                        e.chain()
                    ),
                    "run `trace-summarizer install` once as the owner of otel_traces: it puts them back and refreshes the summaries",
                ),
                other => other,
            })?;
    }
    stamps::advance_past_foreign(client, target, &st).await
}

fn not_installed(target: &Target) -> Error {
    Error::precondition(
        format!(
            "trace-summarizer is not installed for schema {:?}",
            target.schema
        ),
        "run `trace-summarizer install --mode incremental` first",
    )
}

/// Where the side table of oldest span times is built beside the one in use.
fn side_new(names: &Names) -> String {
    crate::db::quote::qualified("trace_summarizer", &format!("{}_new", names.oldest_table))
}

/// Drops a new side table an interrupted refresh left.
async fn drop_side_leftover<C: GenericClient>(client: &C, names: &Names) -> Result<()> {
    client
        .batch_execute(&format!("drop table if exists {}", side_new(names)))
        .await
        .ctx("dropping the leftover of an interrupted refresh")
}

/// Indexes the new side table of oldest span times (exact values, one per trace) and swaps it
/// in (only this installation's worker reads it, and it waits on the work lock).
async fn swap_side_table<C: GenericClient>(client: &C, names: &Names) -> Result<()> {
    let q = |n: &str| crate::db::quote::qualified("trace_summarizer", n);
    let idx_new = crate::db::quote::ident(&format!("{}_new", names.oldest_index));
    crate::db::ddl::run(
        client,
        &format!(
            "create index {idx_new} on {new} (oldest);
             drop table {old};
             alter table {new} rename to {table};
             alter index {qidx_new} rename to {idx};",
            new = side_new(names),
            old = names.oldest,
            table = crate::db::quote::ident(&names.oldest_table),
            qidx_new = q(&format!("{}_new", names.oldest_index)),
            idx = crate::db::quote::ident(&names.oldest_index),
        ),
        "rebuilding the oldest-span side table",
    )
    .await
}

/// The state's definition, for callers that have a state.
pub fn definition(st: &State) -> Definition {
    Definition {
        window: st.window.clone(),
        error_rule: st.error_rule,
    }
}
