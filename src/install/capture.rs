//! What install adds to `otel_traces` so the worker can find every change without trusting
//! any value a writer supplies (README, "What install changes on otel_traces"):
//!
//! - the column `trace_summarizer_xid bigint default txid_current()`: the id of the
//!   inserting transaction (`pg_current_xact_id()` as a bigint), set by the server. Added
//!   without a rewrite (no default for the rows already there, which stay NULL: the first full
//!   refresh covers them), so writers that name their columns never notice it;
//! - a B-tree index on it, built without blocking ingest: `CREATE INDEX CONCURRENTLY` on a plain
//!   table, per partition then attached to an index `ON ONLY` the parent on a partitioned table,
//!   `WITH (timescaledb.transaction_per_chunk)` on a hypertable;
//! - two row triggers that record the trace of every deleted (in-window) or updated span in the
//!   installation's recompute queue, in the same transaction. Inserts fire nothing.
//!
//! DDL that needs a lock on otel_traces waits at most `LOCK_WAIT` at a time and retries, so
//! ingest is never held up for longer than that.

use crate::db::quote;
use crate::db::source::{self, Shape, Target};
use crate::definition::Window;
use crate::error::{DbContext, Error, Result};
use crate::state::Names;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, GenericClient};

/// The stamp column on otel_traces.
pub const STAMP: &str = "trace_summarizer_xid";
/// The stamp's index on otel_traces (on a partitioned table: the parent's index).
pub const STAMP_INDEX: &str = "otel_traces_trace_summarizer_xid_idx";
/// The default that stamps each row with its inserting transaction's id: the 64-bit id with its
/// epoch, as `pg_current_xact_id()` gives it, but already a bigint (no text round trip per row).
const STAMP_DEFAULT: &str = "txid_current()";
/// How long one attempt at a lock on otel_traces may wait (ingest queues behind it).
const LOCK_WAIT: &str = "200ms";
/// How long to keep retrying before giving up.
const LOCK_PATIENCE: Duration = Duration::from_secs(120);

/// What is in place on otel_traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    pub column: bool,
    pub default_ok: bool,
    pub index: bool,
    pub triggers: bool,
}

impl Capture {
    pub fn complete(&self) -> bool {
        self.column && self.default_ok && self.index && self.triggers
    }
}

/// Reads what is in place.
pub async fn status<C: GenericClient>(
    client: &C,
    target: &Target,
    names: &Names,
) -> Result<Capture> {
    let row = client
        .query_one(
            "with t as (select to_regclass(quote_ident($1) || '.otel_traces') as oid)
             select
               exists (select 1 from pg_attribute a, t where a.attrelid = t.oid and a.attname = $2 and not a.attisdropped),
               coalesce((select pg_get_expr(d.adbin, d.adrelid) from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum, t
                         where d.adrelid = t.oid and a.attname = $2), '') ~ '(txid_current|pg_current_xact_id)[(][)]',
               exists (select 1 from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0], t
                       where i.indrelid = t.oid and a.attname = $2 and i.indisvalid and i.indpred is null),
               (select count(*) from pg_trigger g, t where g.tgrelid = t.oid and g.tgname in ($3, $4) and not g.tgisinternal) = 2",
            &[&target.schema, &STAMP, &names.delete_trigger, &names.update_trigger],
        )
        .await
        .ctx("looking at otel_traces")?;
    Ok(Capture {
        column: row.get(0),
        default_ok: row.get(1),
        index: row.get(2),
        triggers: row.get(3),
    })
}

/// Runs `sql` (one or more statements, autocommit) waiting at most `LOCK_WAIT` for locks at a
/// time, retrying until `LOCK_PATIENCE` has passed.
pub async fn with_short_locks(client: &Client, sql: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = client
            .batch_execute(&format!(
                "begin; set local lock_timeout = '{LOCK_WAIT}'; {sql}; commit;"
            ))
            .await
            .ctx(what);
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

fn owner_hint(e: Error) -> Error {
    if e.is_privilege_error() {
        return Error::precondition(
            e.chain(),
            "run install as the owner of otel_traces: it adds a column, an index and two triggers to it (README, \"What install changes on otel_traces\")",
        );
    }
    e
}

/// Puts the column, its index and the triggers in place (idempotent). `window` bounds which
/// deletes matter: spans at or below the window edge are in no summary.
pub async fn ensure(
    client: &Client,
    target: &Target,
    names: &Names,
    window: &Window,
) -> Result<()> {
    let now = status(client, target, names).await?;
    let traces = target.traces();
    if !now.column {
        tracing::info!(table = %traces, column = STAMP, "adding the stamp column (no rewrite; ingest waits at most {LOCK_WAIT} at a time)");
        with_short_locks(
            client,
            &format!(
                "alter table {traces} add column if not exists {col} bigint, alter column {col} set default {STAMP_DEFAULT}",
                col = quote::ident(STAMP)
            ),
            "adding the column otel_traces.trace_summarizer_xid",
        )
        .await?;
    } else if !now.default_ok {
        with_short_locks(
            client,
            &format!(
                "alter table {traces} alter column {} set default {STAMP_DEFAULT}",
                quote::ident(STAMP)
            ),
            "setting the default of otel_traces.trace_summarizer_xid",
        )
        .await?;
    }
    if !now.index {
        ensure_index(client, target).await?;
    }
    set_triggers(client, target, names, window).await
}

/// (Re)creates the two triggers; also how a window change reaches the delete trigger.
pub async fn set_triggers(
    client: &Client,
    target: &Target,
    names: &Names,
    window: &Window,
) -> Result<()> {
    let traces = target.traces();
    let (del, upd) = (
        quote::ident(&names.delete_trigger),
        quote::ident(&names.update_trigger),
    );
    // ENABLE ALWAYS: they fire for logical replication's apply and for restores too
    // (session_replication_role = replica). TimescaleDB refuses that ALTER on hypertables.
    let always = if source::shape(client, target).await? == Shape::Hypertable {
        String::new()
    } else {
        format!(
            "; alter table {traces} enable always trigger {del};
             alter table {traces} enable always trigger {upd}"
        )
    };
    let sql = format!(
        "drop trigger if exists {del} on {traces};
         drop trigger if exists {upd} on {traces};
         create trigger {del} after delete on {traces} for each row
           when (old.\"timestamp\" > now() - {window})
           execute function {enqueue}();
         create trigger {upd} after update on {traces} for each row
           execute function {enqueue}(){always}",
        window = window.literal(),
        enqueue = names.enqueue,
    );
    with_short_locks(client, &sql, "creating the triggers on otel_traces").await
}

/// Removes the triggers, the column and its index (uninstall, or switching to the view).
pub async fn remove(client: &Client, target: &Target, names: &Names) -> Result<()> {
    let traces = target.traces();
    if source::traces_oid(client, target).await.is_err() {
        return Ok(());
    }
    let sql = format!(
        "drop trigger if exists {del} on {traces};
         drop trigger if exists {upd} on {traces};
         alter table {traces} drop column if exists {col}",
        del = quote::ident(&names.delete_trigger),
        upd = quote::ident(&names.update_trigger),
        col = quote::ident(STAMP),
    );
    with_short_locks(
        client,
        &sql,
        "removing the stamp column and triggers from otel_traces",
    )
    .await
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
async fn partitioned_index(
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
