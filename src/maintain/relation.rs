//! The relation readers use, `otel_trace_summaries`, and the atomic swap that replaces it.
//!
//! A new relation (table or materialized view) is always built beside the one readers use,
//! under `otel_trace_summaries_new` with suffixed index names, then swapped in by `swap`: in the
//! builder's own transaction, a savepoint drops the old relation, renames the new one and its
//! indexes, carries grants and the comment over. The drop waits for its lock with a short
//! `lock_timeout` and is retried, so a slow reader never stalls the swap, and readers queued
//! behind it wait at most that long. Everything commits together with the build and the
//! position (or nothing does).

use crate::db::quote;
use crate::db::source::{SummaryKind, Target, SUMMARIES};
use crate::db::sqltext::{self, INDEX_NAMES};
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::state::Mode;
use std::time::{Duration, Instant};
use tokio_postgres::{GenericClient, Transaction};

/// Where a new relation is built before the swap.
pub const NEW: &str = "otel_trace_summaries_new";
/// How long one attempt of the swap waits for readers' locks.
const SWAP_LOCK_WAIT: &str = "200ms";
/// How long the swap keeps retrying.
const SWAP_PATIENCE: Duration = Duration::from_secs(120);

/// The comment trace-summarizer puts on a relation it made.
pub fn comment_for(mode: Mode, def: &Definition) -> String {
    let rule = match def.error_rule {
        crate::definition::ErrorRule::NotOk => "",
        crate::definition::ErrorRule::Error => " error_count counts status_code = 2.",
    };
    match mode {
        Mode::Mv => format!(
            "Per-trace summaries of otel_traces over the last {w}.{rule} Materialized view refreshed by the pg_cron job \
             {job} (REFRESH MATERIALIZED VIEW CONCURRENTLY), or by `trace-summarizer rebuild`. Installed by trace-summarizer.",
            w = def.window,
            job = "refresh_otel_trace_summaries"
        ),
        Mode::Incremental => format!(
            "Per-trace summaries of otel_traces over the last {w}.{rule} Table kept current incrementally by `trace-summarizer run`, \
             with the same columns and values as the materialized view it replaces. Installed by trace-summarizer.",
            w = def.window
        ),
    }
}

pub fn is_our_comment(comment: &str) -> bool {
    comment.starts_with("Per-trace summaries of otel_traces")
        && comment.ends_with("Installed by trace-summarizer.")
}

pub async fn comment_of<C: GenericClient>(client: &C, target: &Target) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "select obj_description(to_regclass(quote_ident($1) || '.otel_trace_summaries'), 'pg_class')",
            &[&target.schema],
        )
        .await
        .ctx("reading the comment")?
        .get(0))
}

/// Non-owner grants on the current relation, as (grantee, privilege) ready for GRANT.
pub async fn grants_of<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "select case when a.grantee = 0 then 'public' else a.grantee::regrole::text end, a.privilege_type
             from pg_class c, aclexplode(c.relacl) a
             where c.oid = to_regclass(quote_ident($1) || '.otel_trace_summaries') and a.grantee <> c.relowner",
            &[&target.schema],
        )
        .await
        .ctx("reading grants of otel_trace_summaries")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Grants SELECT on the relation to each reader role.
pub async fn grant_select<C: GenericClient>(
    client: &C,
    target: &Target,
    roles: &[String],
) -> Result<()> {
    for role in roles {
        client
            .batch_execute(&format!(
                "grant select on {} to {}",
                target.summaries(),
                quote::ident(role)
            ))
            .await
            .ctx("granting select to a reader role")?;
    }
    Ok(())
}

/// Drops what an interrupted build left beside the relation.
pub async fn drop_leftovers<C: GenericClient>(client: &C, target: &Target) -> Result<()> {
    let kind: Option<String> = client
        .query_opt(
            "select c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2",
            &[&target.schema, &NEW],
        )
        .await
        .ctx("looking for leftovers")?
        .map(|r| r.get(0));
    let sql = match kind.as_deref() {
        Some("m") => format!("drop materialized view {}", target.rel(NEW)),
        Some("r") => format!("drop table {}", target.rel(NEW)),
        _ => return Ok(()),
    };
    crate::db::ddl::run(
        client,
        &sql,
        "dropping the leftover of an interrupted build",
    )
    .await
}

/// Creates the new table beside the current relation, empty, with the definition's exact
/// column types, collations and nullability (as the view's: a CTAS of the definition that reads
/// no row). The full refresh fills it, then builds its indexes (`index_beside`). Like a refreshed
/// view, it is not analyzed: autovacuum analyzes a new table soon, and the worker's statements
/// do not depend on statistics.
pub async fn create_empty_beside<C: GenericClient>(
    client: &C,
    target: &Target,
    def: &Definition,
) -> Result<()> {
    let new = target.rel(NEW);
    let cols = sqltext::column_list(None);
    crate::db::ddl::run(
        client,
        &format!(
            "create table {new} as select {cols} from ({}) q with no data",
            def.query(target, "")
        ),
        "creating the new summaries table",
    )
    .await
    .map_err(create_hint)
}

/// Builds the contract's indexes on the new table, under temporary names. In bulk, after the
/// rows are in: maintaining them row by row while filling was measured 3x slower. PostgreSQL
/// may give each build parallel workers (`max_parallel_maintenance_workers`).
pub async fn index_beside<C: GenericClient>(client: &C, target: &Target) -> Result<()> {
    crate::db::ddl::run(
        client,
        &sqltext::indexes(&target.rel(NEW), "_new"),
        "indexing the new summaries table",
    )
    .await
    .map_err(create_hint)
}

/// Creates the materialized view beside the current relation, with its indexes.
pub async fn create_view_beside<C: GenericClient>(
    client: &C,
    target: &Target,
    def: &Definition,
) -> Result<()> {
    let new = target.rel(NEW);
    crate::db::ddl::run(
        client,
        &format!(
            "create materialized view {new} as\n{}\nwith data;\n{}",
            def.query(target, ""),
            sqltext::indexes(&new, "_new")
        ),
        "creating the materialized view",
    )
    .await
    .map_err(create_hint)
}

fn create_hint(e: Error) -> Error {
    if e.is_privilege_error() {
        return Error::precondition(
            e.chain(),
            "the role needs CREATE on the target schema (grant create on schema <schema> to <role>)",
        );
    }
    e
}

/// How the swap treats the relation's metadata.
#[derive(Debug, Clone)]
pub struct Swap {
    /// What the new relation is.
    pub new_mode: Mode,
    /// What stands under the name now.
    pub old: SummaryKind,
    /// The comment to set (the old relation's own comment is kept when it is not ours).
    pub comment: String,
    /// Roles to grant SELECT, besides the grants carried over from the old relation.
    pub readers: Vec<String>,
    /// More SQL to run in the swap itself (unscheduling the view's pg_cron job).
    pub after: Option<String>,
}

/// Replaces whatever stands under the final name with the new relation, in `tx`, retrying while
/// readers hold locks. Returns the oid of the relation now under the name.
pub async fn swap(tx: &mut Transaction<'_>, target: &Target, plan: &Swap) -> Result<u32> {
    let mut delay = Duration::from_millis(50);
    let deadline = Instant::now() + SWAP_PATIENCE;
    loop {
        let sp = tx
            .savepoint("trace_summarizer_swap")
            .await
            .ctx("savepoint")?;
        match swap_once(&sp, target, plan).await {
            Ok(oid) => {
                sp.commit().await.ctx("releasing the savepoint")?;
                return Ok(oid);
            }
            Err(e) if e.is_lock_timeout() && Instant::now() < deadline => {
                sp.rollback().await.ctx("rolling back to the savepoint")?;
                tracing::info!(
                    retry_in_ms = delay.as_millis() as u64,
                    "a reader holds otel_trace_summaries; retrying the switch"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) if e.is_lock_timeout() => {
                return Err(Error::precondition(
                    "could not swap otel_trace_summaries: long-running readers kept it locked for 2 minutes",
                    "find them in pg_stat_activity and retry; nothing was changed",
                ))
            }
            Err(e) => return Err(owner_hint(e)),
        }
    }
}

async fn swap_once<C: GenericClient>(tx: &C, target: &Target, plan: &Swap) -> Result<u32> {
    tx.batch_execute(&format!("set local lock_timeout = '{SWAP_LOCK_WAIT}'"))
        .await
        .ctx("setting lock_timeout")?;
    let mut carried = Vec::new();
    let mut comment = plan.comment.clone();
    if plan.old != SummaryKind::Absent {
        carried = grants_of(tx, target).await?;
        if let Some(c) = comment_of(tx, target).await? {
            if !is_our_comment(&c) {
                comment = c;
            }
        }
        let drop = match plan.old {
            SummaryKind::MaterializedView => "drop materialized view",
            SummaryKind::Table => "drop table",
            _ => "drop view",
        };
        tx.batch_execute(&format!("{drop} {}", target.summaries()))
            .await
            .ctx("dropping the old relation")?;
    }
    let kind_word = match plan.new_mode {
        Mode::Mv => "materialized view",
        Mode::Incremental => "table",
    };
    tx.batch_execute(&format!(
        "alter {kind_word} {} rename to {}",
        target.rel(NEW),
        quote::ident(SUMMARIES)
    ))
    .await
    .ctx("renaming the new relation")?;
    for name in INDEX_NAMES {
        tx.batch_execute(&format!(
            "alter index {} rename to {}",
            target.rel(&format!("{name}_new")),
            quote::ident(name)
        ))
        .await
        .ctx("renaming indexes")?;
    }
    for (grantee, privilege) in carried {
        tx.batch_execute(&format!(
            "grant {privilege} on {} to {grantee}",
            target.summaries()
        ))
        .await
        .ctx("carrying grants over")?;
    }
    grant_select(tx, target, &plan.readers).await?;
    tx.batch_execute(&format!(
        "comment on {kind_word} {} is {}",
        target.summaries(),
        quote::literal(&comment)
    ))
    .await
    .ctx("setting the comment")?;
    if let Some(sql) = &plan.after {
        tx.batch_execute(sql).await.ctx("finishing the swap")?;
    }
    let oid: u32 = tx
        .query_one(
            "select to_regclass(quote_ident($1) || '.otel_trace_summaries')::oid",
            &[&target.schema],
        )
        .await
        .ctx("looking up the new relation")?
        .get(0);
    Ok(oid)
}

pub fn owner_hint(e: Error) -> Error {
    if e.is_privilege_error() {
        return Error::precondition(
            e.chain(),
            "run this as the owner of otel_trace_summaries (or a member of the owning role)",
        );
    }
    e
}

/// Whether this role may replace the relation (owns it, and may create in the schema): the
/// full refresh then builds beside and swaps; otherwise it rewrites changed rows in place.
pub async fn may_replace<C: GenericClient>(client: &C, target: &Target) -> Result<bool> {
    Ok(client
        .query_one(
            "select has_schema_privilege(n.oid, 'create') and pg_has_role(c.relowner, 'usage')
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where c.oid = to_regclass(quote_ident($1) || '.otel_trace_summaries')",
            &[&target.schema],
        )
        .await
        .ctx("checking privileges on otel_trace_summaries")?
        .get(0))
}
