//! What install adds to `otel_traces` so the worker can find every change without trusting
//! any value a writer supplies (README, "What install changes on otel_traces"):
//!
//! - the column `trace_summarizer_xid bigint default txid_current()`: the id of the
//!   inserting transaction (`pg_current_xact_id()` as a bigint), set by the server, plus the
//!   installation's stamp offset (zero unless a restore moved the stamp space; `stamps.rs`).
//!   Added without a rewrite (no default for the rows already there, which stay NULL: the first
//!   full refresh covers them), so writers that name their columns never notice it;
//! - a B-tree index on it, built without blocking ingest: `CREATE INDEX CONCURRENTLY` on a plain
//!   table, per partition then attached to an index `ON ONLY` the parent on a partitioned table,
//!   `WITH (timescaledb.transaction_per_chunk)` on a hypertable;
//! - three row triggers:
//!   - `BEFORE INSERT`, whose `WHEN` clause lets every row stamped by the default through
//!     without running any function, and restamps the others: rows copied with their stamp
//!     (`INSERT ... SELECT *` from a backup, `COPY FROM` a file written by `COPY TO`, a reload
//!     after `TRUNCATE`, a span moved to another partition by an `UPDATE`, logical replication
//!     of the column) are new rows of the inserting transaction, like any other;
//!   - `AFTER DELETE` (spans near or inside the window) and `AFTER UPDATE`, which record the
//!     trace in the installation's recompute queue, in the same transaction. An `UPDATE` that
//!     changes the stamp itself is refused.
//!
//! DDL that needs a lock on otel_traces waits at most `LOCK_WAIT` at a time and retries, so
//! ingest is never held up for longer than that. Each statement goes to the server on its own
//! (Citus refuses several utility statements in one string).

use crate::db::quote;
use crate::db::source::{self, Shape, Target};
use crate::db::statements::Db;
use crate::definition::Window;
use crate::error::{DbContext, Error, Result};
use crate::state::Names;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, GenericClient};

/// The stamp column on otel_traces.
pub const STAMP: &str = "trace_summarizer_xid";
/// The stamp's index on otel_traces (on a partitioned table: the parent's index).
pub const STAMP_INDEX: &str = "otel_traces_trace_summarizer_xid_idx";
/// How long one attempt at a lock on otel_traces may wait (ingest queues behind it).
const LOCK_WAIT: &str = "200ms";
/// How long to keep retrying before giving up.
const LOCK_PATIENCE: Duration = Duration::from_secs(120);
/// Deletes of spans this far beyond the window edge are queued too: a deleting session in
/// another time zone computes a calendar window's edge up to a DST shift (at most 2 hours)
/// away from the worker's.
const DELETE_MARGIN: &str = "interval '3 hours'";

/// The stamp of a row inserted now: the inserting transaction's id (the 64-bit id with its
/// epoch, as `pg_current_xact_id()` gives it, but already a bigint) plus the stamp offset. On a
/// Citus node, the node-local function that computes it (`citus/node.rs`): the shards' default
/// and triggers are the same text on every node, the offset is the node's.
pub fn stamp_expr(target: &Target, names: &Names, offset: i64) -> String {
    if target.local.is_some() {
        format!("{}()", names.stamp_now)
    } else if offset == 0 {
        "txid_current()".into()
    } else {
        format!("txid_current() + {offset}")
    }
}

/// The column default as `pg_get_expr` shows it.
fn rendered_default(target: &Target, names: &Names, offset: i64) -> String {
    if target.local.is_some() {
        format!("{}()", names.stamp_now.replace('"', ""))
    } else if offset == 0 {
        "txid_current()".into()
    } else {
        format!("(txid_current() + {offset})")
    }
}

/// The relations that carry the column, its default, its index and the triggers: otel_traces,
/// or a Citus node's local shards of it.
pub fn carriers(target: &Target) -> Vec<String> {
    match &target.local {
        None => vec![target.traces()],
        Some(local) => local.pairs.iter().map(|p| p.traces.clone()).collect(),
    }
}

/// What is in place on otel_traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub column: bool,
    pub default_ok: bool,
    pub index: bool,
    /// The three triggers exist and are enabled.
    pub triggers: bool,
    /// Anything of ours is on otel_traces (the column, or any of the triggers).
    pub any: bool,
    /// The row versions of the default, the index, the triggers and the stamp function: any
    /// change means rows may have been written or removed unseen in between.
    pub version: String,
}

impl Capture {
    /// The relations that carry the capture, as recorded in a version (`status`).
    pub fn relations_of(version: &str) -> &str {
        version.split(';').next().unwrap_or("")
    }

    pub fn complete(&self) -> bool {
        self.column && self.default_ok && self.index && self.triggers
    }

    /// What is missing, for messages.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.column {
            m.push("the column trace_summarizer_xid");
        } else if !self.default_ok {
            m.push("the default of trace_summarizer_xid");
        }
        if !self.index {
            m.push("its index");
        }
        if !self.triggers {
            m.push("the triggers (missing or disabled)");
        }
        m
    }
}

/// Reads what is in place, for an installation whose stamp offset is `offset`.
pub async fn status<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    names: &Names,
    offset: i64,
) -> Result<Capture> {
    // Per relation carrying the capture (one, or a Citus node's shards), then all of them. A
    // Citus node left without shards has nothing missing.
    let row = client
        .query_one(
            "with t as (select r, to_regclass(r) as oid from unnest($1::text[]) r),
                  d as (select t.r, d.adbin, d.adrelid, d.xmin, d.ctid from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
                        join t on d.adrelid = t.oid where a.attname = $2 and not a.attisdropped),
                  i as (select t.r, i.indexrelid, i.indisvalid, i.xmin, i.ctid from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                        join t on i.indrelid = t.oid where a.attname = $2 and i.indnatts = 1 and i.indpred is null and i.indexprs is null),
                  g as (select t.r, g.tgname, g.tgenabled, g.xmin, g.ctid from pg_trigger g join t on g.tgrelid = t.oid
                        where g.tgname = any($3::text[]) and not g.tgisinternal),
                  per as (
                      select t.r,
                             exists (select 1 from pg_attribute a where a.attrelid = t.oid and a.attname = $2 and not a.attisdropped) as col,
                             coalesce((select pg_get_expr(d.adbin, d.adrelid) from d where d.r = t.r), '') = $5 as def,
                             exists (select 1 from i where i.r = t.r and i.indisvalid) as idx,
                             (select count(*) from g where g.r = t.r and g.tgenabled in ('O', 'A')) as enabled,
                             (select count(*) from g where g.r = t.r) as present,
                             concat_ws(';',
                               (select 'default:' || d.xmin || '/' || d.ctid from d where d.r = t.r),
                               (select string_agg('index:' || i.indexrelid || ':' || i.indisvalid || ':' || i.xmin || '/' || i.ctid, ',' order by i.indexrelid) from i where i.r = t.r),
                               (select string_agg(g.tgname || ':' || g.tgenabled::text || ':' || g.xmin || '/' || g.ctid, ',' order by g.tgname) from g where g.r = t.r)) as version
                      from t)
             select coalesce(bool_and(col), none), coalesce(bool_and(def), none), coalesce(bool_and(idx), none),
                    coalesce(bool_and(enabled = $6), none), coalesce(bool_or(col or present > 0), false),
                    concat_ws(';',
                      'relations:' || string_agg(coalesce(to_regclass(r)::oid::text, '-'), ',' order by r),
                      string_agg(version, '|' order by r),
                      (select 'function:' || p.xmin || '/' || p.ctid from pg_proc p where p.oid = to_regprocedure($4 || '()')),
                      (select 'now:' || p.xmin || '/' || p.ctid from pg_proc p where p.oid = to_regprocedure($7 || '()')))
             from (select cardinality($1::text[]) = 0 as none) n left join per on true
             group by none",
            &[
                &carriers(target),
                &STAMP,
                &names.triggers(),
                &names.stamp_fn,
                &rendered_default(target, names, offset),
                &(names.triggers().len() as i64),
                &names.stamp_now,
            ],
        )
        .await
        .ctx("looking at otel_traces")?;
    Ok(Capture {
        column: row.get(0),
        default_ok: row.get(1),
        index: row.get(2),
        triggers: row.get(3),
        any: row.get(4),
        version: row.get(5),
    })
}

/// Runs `statements` in one transaction, each on its own, waiting at most `LOCK_WAIT` for locks
/// at a time, retrying the whole transaction until `LOCK_PATIENCE` has passed.
pub async fn with_short_locks(client: &Client, statements: &[String], what: &str) -> Result<()> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = async {
            client.batch_execute("begin").await.ctx(what)?;
            client
                .batch_execute(&format!("set local lock_timeout = '{LOCK_WAIT}'"))
                .await
                .ctx(what)?;
            for sql in statements {
                client.batch_execute(sql).await.ctx(what)?;
            }
            client.batch_execute("commit").await.ctx(what)
        }
        .await;
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = client.batch_execute("rollback").await;
                if !e.is_lock_timeout() {
                    return Err(owner_hint(e));
                }
                if Instant::now() >= deadline {
                    return Err(Error::precondition(
                        format!("{what}: otel_traces stayed locked by other sessions for {}s", LOCK_PATIENCE.as_secs()),
                        "find the long transactions in pg_stat_activity and retry; nothing was changed",
                    ));
                }
                tracing::info!(
                    retry_in_ms = delay.as_millis() as u64,
                    "otel_traces is busy; retrying ({what})"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

pub fn owner_hint(e: Error) -> Error {
    if e.is_privilege_error() {
        return Error::precondition(
            e.chain(),
            "run install as the owner of otel_traces: it adds a column, an index and three triggers to it (README, \"What install changes on otel_traces\")",
        );
    }
    e
}

/// Puts the column, its default, its index, the stamp function and the triggers in place
/// (idempotent: what is already complete is left alone, so its row versions stay). `window`
/// bounds which deletes matter; `offset` is the installation's stamp offset. On a Citus node,
/// the column and its index come from the distributed table (install on the coordinator); the
/// default and the triggers are put on each local shard.
pub async fn ensure(
    client: &Client,
    target: &Target,
    names: &Names,
    window: &Window,
    offset: i64,
) -> Result<()> {
    let now = status(&Db::once(client), target, names, offset).await?;
    let traces = target.traces();
    let col = quote::ident(STAMP);
    if target.local.is_some() {
        if !now.column || !now.index {
            return Err(Error::precondition(
                "the shards of otel_traces on this Citus node lack the column trace_summarizer_xid or its index",
                "run `trace-summarizer install` against the coordinator: it adds both to the distributed table",
            ));
        }
        if !now.default_ok || !now.triggers {
            set_triggers(client, target, names, window, offset).await?;
        }
        return Ok(());
    }
    if !now.column {
        tracing::info!(table = %traces, column = STAMP, "adding the stamp column (no rewrite; ingest waits at most {LOCK_WAIT} at a time)");
        with_short_locks(
            client,
            &[
                format!("alter table {traces} add column if not exists {col} bigint"),
                format!(
                    "alter table {traces} alter column {col} set default {}",
                    stamp_expr(target, names, offset)
                ),
            ],
            "adding the column otel_traces.trace_summarizer_xid",
        )
        .await?;
    } else if !now.default_ok {
        with_short_locks(
            client,
            &[format!(
                "alter table {traces} alter column {col} set default {}",
                stamp_expr(target, names, offset)
            )],
            "setting the default of otel_traces.trace_summarizer_xid",
        )
        .await?;
    }
    if !now.index {
        ensure_index(client, target).await?;
    }
    if !now.triggers || !now.column {
        set_triggers(client, target, names, window, offset).await?;
    }
    Ok(())
}

/// The functions that give a row its stamp: the trigger function that restamps a row which does
/// not carry this transaction's stamp, and on a Citus node the node-local function of the stamp
/// now (the node's own offset).
fn stamp_functions(target: &Target, names: &Names, offset: i64) -> Vec<String> {
    let mut sql = Vec::new();
    if target.local.is_some() {
        sql.push(format!(
            // No SET clause: the function is inlined into the default and the trigger's WHEN.
            "create or replace function {f}() returns bigint
             language sql stable
             as $fn$ select pg_catalog.txid_current() + {offset} $fn$",
            f = names.stamp_now,
        ));
    }
    sql.push(format!(
        "create or replace function {f}() returns trigger
         language plpgsql set search_path = pg_catalog, pg_temp
         as $fn$
         begin
             new.{col} := {expr};
             return new;
         end
         $fn$",
        f = names.stamp_fn,
        col = quote::ident(STAMP),
        expr = stamp_expr(target, names, offset),
    ));
    sql
}

/// Whether the triggers can be `ENABLE ALWAYS`, so that they fire for logical replication's
/// apply and for restores (session_replication_role = replica): TimescaleDB refuses that ALTER
/// on hypertables.
async fn can_fire_always(client: &Client, target: &Target) -> Result<bool> {
    if target.local.is_some() {
        return Ok(true);
    }
    Ok(source::shape(client, target).await? != Shape::Hypertable)
}

/// The statements that (re)create the column default and the three triggers on `relation`.
fn trigger_statements(
    relation: &str,
    target: &Target,
    names: &Names,
    window: &Window,
    offset: i64,
    always: bool,
) -> Vec<String> {
    let (stamp, del, upd) = (
        quote::ident(&names.stamp_trigger),
        quote::ident(&names.delete_trigger),
        quote::ident(&names.update_trigger),
    );
    let col = quote::ident(STAMP);
    let expr = stamp_expr(target, names, offset);
    let mut sql = Vec::new();
    if target.local.is_some() {
        // The distributed table has no default (the coordinator would evaluate it): each shard
        // has its own, evaluated on its node.
        sql.push(format!(
            "alter table {relation} alter column {col} set default {expr}"
        ));
    }
    sql.extend([
        format!("drop trigger if exists {stamp} on {relation}"),
        format!(
            "create trigger {stamp} before insert on {relation} for each row
               when (new.{col} is distinct from {expr})
               execute function {f}()",
            f = names.stamp_fn,
        ),
        format!("drop trigger if exists {del} on {relation}"),
        format!("drop trigger if exists {upd} on {relation}"),
        format!(
            "create trigger {del} after delete on {relation} for each row
               when (old.\"timestamp\" > now() - {window} - {DELETE_MARGIN})
               execute function {enqueue}()",
            window = window.literal(),
            enqueue = names.enqueue,
        ),
        format!(
            "create trigger {upd} after update on {relation} for each row
               execute function {enqueue}()",
            enqueue = names.enqueue,
        ),
    ]);
    if always {
        for t in [&stamp, &del, &upd] {
            sql.push(format!("alter table {relation} enable always trigger {t}"));
        }
    }
    sql
}

/// (Re)creates the stamp functions and the three triggers (on a Citus node: on each local
/// shard, with its default), one transaction per relation; also how a window change reaches the
/// delete trigger.
pub async fn set_triggers(
    client: &Client,
    target: &Target,
    names: &Names,
    window: &Window,
    offset: i64,
) -> Result<()> {
    let always = can_fire_always(client, target).await?;
    let carriers = carriers(target);
    for (n, relation) in carriers.iter().enumerate() {
        let mut sql = if n == 0 {
            stamp_functions(target, names, offset)
        } else {
            Vec::new()
        };
        sql.extend(trigger_statements(
            relation, target, names, window, offset, always,
        ));
        with_short_locks(client, &sql, "creating the triggers on otel_traces").await?;
    }
    if carriers.is_empty() {
        with_short_locks(
            client,
            &stamp_functions(target, names, offset),
            "creating the stamp functions",
        )
        .await?;
    }
    Ok(())
}

/// Moves the stamp space to `offset`, and records it in the state, in one transaction: on a
/// single server the column default, the stamp function and its trigger (the default's ALTER
/// waits for every running insert, so no row is stamped with the old offset after it commits);
/// on a Citus node the node-local function of the stamp now. Writes no row of otel_traces.
pub async fn set_offset(
    client: &Client,
    target: &Target,
    names: &Names,
    offset: i64,
) -> Result<()> {
    let mut sql = Vec::new();
    if target.local.is_none() {
        let traces = target.traces();
        sql.push(format!(
            "alter table {traces} alter column {} set default {}",
            quote::ident(STAMP),
            stamp_expr(target, names, offset)
        ));
        let always = can_fire_always(client, target).await?;
        let t = quote::ident(&names.stamp_trigger);
        sql.extend(stamp_functions(target, names, offset));
        sql.extend([
            format!("drop trigger if exists {t} on {traces}"),
            format!(
                "create trigger {t} before insert on {traces} for each row
                   when (new.{col} is distinct from {expr})
                   execute function {f}()",
                col = quote::ident(STAMP),
                expr = stamp_expr(target, names, offset),
                f = names.stamp_fn,
            ),
        ]);
        if always {
            sql.push(format!("alter table {traces} enable always trigger {t}"));
        }
    } else {
        // Every running insert on this node finishes with the old function: lock the shards
        // first, so no row is stamped with the old offset after the new one commits.
        for relation in carriers(target) {
            sql.push(format!("lock table {relation} in share row exclusive mode"));
        }
        sql.extend(stamp_functions(target, names, offset));
    }
    sql.push(format!(
        "update trace_summarizer.state set stamp_offset = {offset} where target_schema = {}",
        quote::literal(&target.schema)
    ));
    with_short_locks(client, &sql, "moving the stamp space of otel_traces").await
}

/// Removes the triggers, the column and its index (uninstall, or switching to the view). On a
/// Citus node: the triggers and defaults of the local shards (the column goes with the
/// distributed table's own uninstall on the coordinator).
pub async fn remove(client: &Client, target: &Target, names: &Names) -> Result<()> {
    if target.local.is_none() && source::traces_oid(client, target).await.is_err() {
        return Ok(());
    }
    for relation in carriers(target) {
        // Only the triggers that exist: a Citus distributed table refuses DROP TRIGGER even with
        // IF EXISTS (its shards' triggers are the nodes' to drop).
        let present: Vec<String> = client
            .query(
                "select tgname::text from pg_trigger where tgrelid = to_regclass($1) and tgname = any($2)",
                &[&relation, &names.triggers()],
            )
            .await
            .ctx("looking at the triggers on otel_traces")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut sql: Vec<String> = present
            .iter()
            .map(|t| format!("drop trigger if exists {} on {relation}", quote::ident(t)))
            .collect();
        if target.local.is_none() {
            sql.push(format!(
                "alter table {relation} drop column if exists {}",
                quote::ident(STAMP)
            ));
        } else {
            sql.push(format!(
                "alter table {relation} alter column {} drop default",
                quote::ident(STAMP)
            ));
        }
        with_short_locks(
            client,
            &sql,
            "removing the stamp column and triggers from otel_traces",
        )
        .await?;
    }
    Ok(())
}

/// Builds the stamp's index without blocking ingest, as the table's shape allows.
async fn ensure_index(client: &Client, target: &Target) -> Result<()> {
    let traces = target.traces();
    let index = quote::ident(STAMP_INDEX);
    let col = quote::ident(STAMP);
    match source::shape(client, target).await? {
        Shape::Hypertable => {
            // Hypertables refuse CONCURRENTLY; this form builds chunk by chunk, each in its own
            // transaction, without blocking ingest. New chunks get the index automatically.
            drop_invalid(client, &target.rel(STAMP_INDEX)).await?;
            client
                .batch_execute(&format!(
                    "create index if not exists {index} on {traces} ({col}) with (timescaledb.transaction_per_chunk)"
                ))
                .await
                .ctx("creating the index on otel_traces (trace_summarizer_xid)")
                .map_err(owner_hint)?;
        }
        Shape::Plain => {
            drop_invalid(client, &target.rel(STAMP_INDEX)).await?;
            client
                .batch_execute(&format!(
                    "create index concurrently if not exists {index} on {traces} ({col})"
                ))
                .await
                .ctx("creating the index on otel_traces (trace_summarizer_xid)")
                .map_err(owner_hint)?;
        }
        Shape::Partitioned => {
            let oid = source::traces_oid(client, target).await?;
            partitioned_index(client, oid, &target.schema, STAMP_INDEX).await?;
        }
    }
    Ok(())
}

/// An interrupted CONCURRENTLY build leaves an invalid index: start over.
async fn drop_invalid(client: &Client, index: &str) -> Result<()> {
    let invalid: bool = client
        .query_one(
            "select coalesce((select not indisvalid from pg_index where indexrelid = to_regclass($1)), false)",
            &[&index],
        )
        .await
        .ctx("looking at the stamp index")?
        .get(0);
    if invalid {
        client
            .batch_execute(&format!("drop index concurrently if exists {index}"))
            .await
            .ctx("dropping an invalid index")?;
    }
    Ok(())
}

/// PostgreSQL's way to index a partitioned table without blocking writes: an index `ON ONLY`
/// the parent (invalid, instant), a concurrent build on each partition, then `ATTACH
/// PARTITION`; once every partition's index is attached, the parent's becomes valid. Recurses
/// into sub-partitioned partitions. Partitions created or attached later get the index from the
/// parent automatically.
pub(crate) async fn partitioned_index(
    client: &Client,
    parent: u32,
    index_schema: &str,
    index_name: &str,
) -> Result<()> {
    let col = quote::ident(STAMP);
    let parent_index = quote::qualified(index_schema, index_name);
    let parent_name: String = client
        .query_one("select $1::oid::regclass::text", &[&parent])
        .await
        .ctx("naming a partition")?
        .get(0);
    client
        .batch_execute(&format!(
            "create index if not exists {} on only {parent_name} ({col})",
            quote::ident(index_name)
        ))
        .await
        .ctx("creating the index on the partitioned otel_traces")
        .map_err(owner_hint)?;
    let parent_index_oid: u32 = client
        .query_one("select to_regclass($1)::oid", &[&parent_index])
        .await
        .ctx("looking up the partitioned index")?
        .get(0);
    let children = client
        .query(
            "select c.oid, c.oid::regclass::text, c.relkind::text,
                    (select i.indexrelid::regclass::text from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                      where i.indrelid = c.oid and a.attname = $2 and i.indnatts = 1 and i.indpred is null and i.indexprs is null
                      order by i.indisvalid desc limit 1),
                    exists (select 1 from pg_inherits ii join pg_index i on i.indexrelid = ii.inhrelid
                             where ii.inhparent = $3 and i.indrelid = c.oid)
             from pg_inherits h join pg_class c on c.oid = h.inhrelid
             where h.inhparent = $1",
            &[&parent, &STAMP, &parent_index_oid],
        )
        .await
        .ctx("listing partitions")?;
    for child in children {
        let (oid, name, kind): (u32, String, String) = (child.get(0), child.get(1), child.get(2));
        let existing: Option<String> = child.get(3);
        let attached: bool = child.get(4);
        if attached {
            continue;
        }
        let child_index = match kind.as_str() {
            "p" => {
                let row = client
                    .query_one(
                        "select n.nspname::text, c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = $1",
                        &[&oid],
                    )
                    .await
                    .ctx("naming a partition")?;
                let (schema, relname): (String, String) = (row.get(0), row.get(1));
                let idx = shorten(&format!("{relname}_trace_summarizer_xid_idx"));
                Box::pin(partitioned_index(client, oid, &schema, &idx)).await?;
                quote::qualified(&schema, &idx)
            }
            "r" => match existing {
                Some(idx) => {
                    drop_invalid(client, &idx).await?;
                    if index_exists(client, &idx).await? {
                        idx
                    } else {
                        build_concurrently(client, oid, &name).await?
                    }
                }
                None => build_concurrently(client, oid, &name).await?,
            },
            "f" => {
                return Err(Error::precondition(
                    format!("partition {name} of otel_traces is a foreign table, which cannot be indexed"),
                    "incremental mode supports plain, declaratively partitioned (with local partitions) and TimescaleDB tables; use --mode mv",
                ))
            }
            other => {
                return Err(Error::precondition(
                    format!("partition {name} of otel_traces has an unsupported kind {other:?}"),
                    "use --mode mv",
                ))
            }
        };
        client
            .batch_execute(&format!(
                "alter index {parent_index} attach partition {child_index}"
            ))
            .await
            .ctx("attaching a partition's index")
            .map_err(owner_hint)?;
    }
    Ok(())
}

async fn index_exists(client: &Client, index: &str) -> Result<bool> {
    Ok(client
        .query_one("select to_regclass($1) is not null", &[&index])
        .await
        .ctx("looking up an index")?
        .get(0))
}

/// Builds the stamp index on one leaf partition concurrently; returns its name.
async fn build_concurrently(client: &Client, oid: u32, name: &str) -> Result<String> {
    let col = quote::ident(STAMP);
    client
        .batch_execute(&format!("create index concurrently on {name} ({col})"))
        .await
        .ctx("creating the index on a partition of otel_traces")
        .map_err(owner_hint)?;
    let row = client
        .query_one(
            "select i.indexrelid::regclass::text from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
              where i.indrelid = $1 and a.attname = $2 and i.indisvalid order by i.indexrelid desc limit 1",
            &[&oid, &STAMP],
        )
        .await
        .ctx("looking up the new index")?;
    Ok(row.get(0))
}

/// Index names are limited to 63 bytes.
fn shorten(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let mut cut = 54;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!("{}_{hash:08x}", &name[..cut])
}
