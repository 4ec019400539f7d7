//! `install` and `uninstall`, in both modes, including switching a live deployment between
//! the materialized view and the maintained table.
//!
//! A new relation is always built beside the one readers use (under `otel_trace_summaries_new`,
//! with suffixed index names), filled, then swapped in by `switch.rs`.

pub mod cron;
pub mod switch;

use crate::cli::Mode;
use crate::config;
use crate::db::quote;
use crate::db::source::{self, SummaryKind, Target};
use crate::db::sqltext;
use crate::error::{DbContext, Error, Result};
use crate::maintain::rebuild;
use crate::state;
use std::time::Duration;
use tokio_postgres::{Client, GenericClient};

pub(crate) const NEW: &str = "otel_trace_summaries_new";
pub const INDEXES: [&str; 3] = [
    "idx_trace_summaries_trace_id",
    "idx_trace_summaries_timestamp",
    "idx_trace_summaries_service_timestamp",
];
const TAILING_INDEX: &str = "otel_traces_created_at_idx";

#[derive(Debug, Clone)]
pub struct InstallPlan {
    pub mode: Mode,
    pub window: Duration,
    pub reader_roles: Vec<String>,
    pub cron_schedule: String,
}

pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Incremental => "incremental",
        Mode::Mv => "mv",
    }
}

pub(crate) fn comment_for(mode: Mode, window: Duration) -> String {
    let w = humantime::format_duration(window);
    match mode {
        Mode::Mv => format!(
            "Per-trace summaries of otel_traces over the last {w}. Materialized view refreshed by the pg_cron job \
             {job} (REFRESH MATERIALIZED VIEW CONCURRENTLY), or by `trace-summarizer rebuild`. Installed by trace-summarizer.",
            job = cron::JOB_NAME
        ),
        Mode::Incremental => format!(
            "Per-trace summaries of otel_traces over the last {w}. Table kept current incrementally by `trace-summarizer run`, \
             with the same columns and values as the materialized view it replaces. Installed by trace-summarizer."
        ),
    }
}

pub(crate) fn is_our_comment(comment: &str) -> bool {
    comment.starts_with("Per-trace summaries of otel_traces")
        && comment.ends_with("Installed by trace-summarizer.")
}

/// Runs install. Returns the notices to print (for example "refresh by hand").
pub async fn install(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
) -> Result<Vec<String>> {
    source::check_traces(client, target, plan.mode == Mode::Incremental).await?;
    let roles = reader_roles(client, &plan.reader_roles).await?;
    if let Some(other) = state::other_incremental(client, &target.schema).await? {
        return Err(Error::precondition(
            format!("schema {other:?} is already maintained incrementally in this database"),
            "one incremental installation per database is supported: uninstall it first (--schema it)",
        ));
    }
    let kind = source::summary_kind(client, target).await?;
    if kind == SummaryKind::Other {
        return Err(Error::precondition(
            format!(
                "{} exists but is neither a table nor a materialized view",
                target.summaries()
            ),
            format!("drop or rename it first (drop view {})", target.summaries()),
        ));
    }
    let current = state::load(client, &target.schema).await?;
    let same_window = current
        .as_ref()
        .is_some_and(|s| s.window == plan.window && s.version == sqltext::STATE_VERSION);
    let mut notices = Vec::new();
    match (plan.mode, kind) {
        (Mode::Incremental, SummaryKind::Table) if same_window => {
            // Already installed: make sure grants and comment are there; nothing else changes.
            finish_in_place(client, target, plan, &roles).await?;
        }
        (Mode::Mv, SummaryKind::MaterializedView)
            if same_window && current.as_ref().is_some_and(|s| s.mode == "mv") =>
        {
            finish_in_place(client, target, plan, &roles).await?;
            let mut tx = client.transaction().await.ctx("begin")?;
            schedule_or_notice(&mut tx, target, plan, &mut notices).await?;
            tx.commit().await.ctx("commit")?;
        }
        (Mode::Incremental, _) => {
            let made_index = ensure_tailing_index(client, target).await?;
            build_table(client, target, plan, made_index).await?;
            switch::swap_or_clean(client, target, plan, &roles, kind, &mut notices).await?;
        }
        (Mode::Mv, _) => {
            build_view(client, target, plan).await?;
            switch::swap_or_clean(client, target, plan, &roles, kind, &mut notices).await?;
            if kind == SummaryKind::Table {
                drop_tailing_index(client, current.and_then(|s| s.tailing_index)).await?;
            }
        }
    }
    Ok(notices)
}

/// Explicit roles must exist; by default `spire` is granted when it exists.
async fn reader_roles(client: &Client, requested: &[String]) -> Result<Vec<String>> {
    let requested = config::reader_roles(requested)?;
    let (names, explicit) = if requested.is_empty() {
        (vec!["spire".to_string()], false)
    } else {
        (requested, true)
    };
    let mut found = Vec::new();
    for name in names {
        let exists = client
            .query_opt("select 1 from pg_roles where rolname = $1", &[&name])
            .await
            .ctx("looking up reader roles")?
            .is_some();
        match (exists, explicit) {
            (true, _) => found.push(name),
            (false, true) => {
                return Err(Error::precondition(
                    format!("reader role {name:?} does not exist"),
                    format!(
                        "create it (create role {} nologin) or omit --reader-role",
                        quote::ident(&name)
                    ),
                ))
            }
            (false, false) => {}
        }
    }
    Ok(found)
}

fn render_indexes(relation: &str, schema_suffix: &str) -> String {
    sqltext_indexes()
        .replace("{{relation}}", relation)
        .replace(
            "{{trace_id_index}}",
            &quote::ident(&format!("{}{schema_suffix}", INDEXES[0])),
        )
        .replace(
            "{{timestamp_index}}",
            &quote::ident(&format!("{}{schema_suffix}", INDEXES[1])),
        )
        .replace(
            "{{service_index}}",
            &quote::ident(&format!("{}{schema_suffix}", INDEXES[2])),
        )
}

fn sqltext_indexes() -> String {
    include_str!("../../sql/summary_indexes.sql")
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops leftovers of an interrupted install.
pub(crate) async fn drop_leftovers<C: GenericClient>(client: &C, target: &Target) -> Result<()> {
    let kind: Option<String> = client
        .query_opt(
            "select c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2",
            &[&target.schema, &NEW],
        )
        .await
        .ctx("looking for leftovers")?
        .map(|r| r.get(0));
    match kind.as_deref() {
        Some("m") => {
            client
                .batch_execute(&format!("drop materialized view {}", target.rel(NEW)))
                .await
        }
        Some("r") => {
            client
                .batch_execute(&format!("drop table {}", target.rel(NEW)))
                .await
        }
        _ => Ok(()),
    }
    .ctx("dropping the leftover of an interrupted install")
}

/// Builds and fills the new table beside the current relation.
async fn build_table(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    made_index: Option<String>,
) -> Result<()> {
    drop_leftovers(client, target).await?;
    let tx = client.transaction().await.ctx("begin")?;
    state::ensure_schema(&tx).await?;
    let keep_mode = match state::load(&tx, &target.schema).await? {
        Some(s) => s.mode,
        None => "incremental".to_string(),
    };
    state::upsert(&tx, &target.schema, &keep_mode, plan.window).await?;
    if let Some(index) = made_index {
        tx.execute(
            "update trace_summarizer.state set tailing_index = $2 where target_schema = $1",
            &[&target.schema, &index],
        )
        .await
        .ctx("recording the tailing index")?;
    }
    let new = target.rel(NEW);
    tx.batch_execute(&include_str!("../../sql/summary_table.sql").replace("{{table}}", &new))
        .await
        .ctx("creating the summaries table")?;
    tx.batch_execute(&render_indexes(&new, "_new"))
        .await
        .ctx("creating indexes")?;
    tx.commit().await.ctx("commit")?;
    crate::maintain::recompute::prepare_session(client).await?;
    let stats = rebuild::run(client, target, &new, "install").await?;
    tracing::info!(
        rows = stats.inserted,
        seconds = stats.duration.as_secs_f64(),
        "filled the summaries table"
    );
    Ok(())
}

/// Builds the materialized view beside the current relation.
async fn build_view(client: &mut Client, target: &Target, plan: &InstallPlan) -> Result<()> {
    drop_leftovers(client, target).await?;
    let new = target.rel(NEW);
    let definition = sqltext::definition(target, &config::interval_literal(plan.window), "");
    let tx = client.transaction().await.ctx("begin")?;
    state::ensure_schema(&tx).await?;
    tx.batch_execute(&format!(
        "create materialized view {new} as\n{definition}\nwith data"
    ))
    .await
    .ctx("creating the materialized view")?;
    tx.batch_execute(&render_indexes(&new, "_new"))
        .await
        .ctx("creating indexes")?;
    tx.commit().await.ctx("commit")?;
    Ok(())
}

/// Schedules the pg_cron job when pg_cron is usable; otherwise adds the notice.
pub(crate) async fn schedule_or_notice(
    tx: &mut tokio_postgres::Transaction<'_>,
    target: &Target,
    plan: &InstallPlan,
    notices: &mut Vec<String>,
) -> Result<()> {
    match cron::usable(tx).await? {
        Ok(()) => {
            cron::schedule(&*tx, target, &plan.cron_schedule).await?;
        }
        Err(why) => notices.push(format!(
            "NOTICE: {why}; no refresh job was scheduled. Refreshing the view by hand is required: run `trace-summarizer rebuild` (or REFRESH MATERIALIZED VIEW CONCURRENTLY) on a schedule."
        )),
    }
    Ok(())
}

pub(crate) async fn comment_of<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "select obj_description(to_regclass(quote_ident($1) || '.otel_trace_summaries'), 'pg_class')",
            &[&target.schema],
        )
        .await
        .ctx("reading the comment")?
        .get(0))
}

pub(crate) async fn grant_readers<C: GenericClient>(
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

/// Re-applies grants and the comment to an installed relation (install run twice).
async fn finish_in_place(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    roles: &[String],
) -> Result<()> {
    let tx = client.transaction().await.ctx("begin")?;
    grant_readers(&tx, target, roles).await?;
    let kind_word = if plan.mode == Mode::Mv {
        "materialized view"
    } else {
        "table"
    };
    if comment_of(&tx, target)
        .await?
        .is_none_or(|c| is_our_comment(&c))
    {
        tx.batch_execute(&format!(
            "comment on {kind_word} {} is {}",
            target.summaries(),
            quote::literal(&comment_for(plan.mode, plan.window))
        ))
        .await
        .ctx("setting the comment")?;
    }
    tx.commit().await.ctx("commit")?;
    Ok(())
}

/// Makes sure an index leads with created_at (tailing reads new rows through it). Returns the
/// name when this call created it.
async fn ensure_tailing_index(client: &Client, target: &Target) -> Result<Option<String>> {
    let existing = client
        .query_opt(
            "select i.indexrelid::regclass::text, i.indisvalid
             from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
             where i.indrelid = to_regclass(quote_ident($1) || '.otel_traces') and a.attname = 'created_at'
             order by i.indisvalid desc limit 1",
            &[&target.schema],
        )
        .await
        .ctx("looking for an index on otel_traces.created_at")?;
    if let Some(row) = existing {
        let (name, valid): (String, bool) = (row.get(0), row.get(1));
        if valid {
            return Ok(None);
        }
        // A concurrent build that was interrupted leaves an invalid index: start over.
        client
            .batch_execute(&format!("drop index concurrently if exists {name}"))
            .await
            .ctx("dropping an invalid index")?;
    }
    let index = target.rel(TAILING_INDEX);
    let sql = if source::is_hypertable(client, target).await? {
        // Hypertables refuse CONCURRENTLY; this form builds chunk by chunk without blocking ingest.
        format!("create index if not exists {} on {} (created_at) with (timescaledb.transaction_per_chunk)", quote::ident(TAILING_INDEX), target.traces())
    } else {
        format!(
            "create index concurrently if not exists {} on {} (created_at)",
            quote::ident(TAILING_INDEX),
            target.traces()
        )
    };
    tracing::info!(index = %index, "creating an index on otel_traces (created_at) without blocking ingest, for tailing by ingest time");
    client.batch_execute(&sql).await.ctx("creating the index on otel_traces (created_at)").map_err(|e| match e.sqlstate() {
        Some(c) if c.code() == "42501" => Error::precondition(
            e.to_string(),
            "run install as the owner of otel_traces (creating an index needs ownership), or create the index yourself: create index concurrently on otel_traces (created_at)",
        ),
        _ => e,
    })?;
    Ok(Some(index))
}

async fn drop_tailing_index(client: &Client, index: Option<String>) -> Result<()> {
    if let Some(index) = index {
        client
            .batch_execute(&format!("drop index concurrently if exists {index}"))
            .await
            .ctx("dropping the tailing index")?;
    }
    Ok(())
}

/// Removes the relation, the pg_cron job, the tailing index we made and the state schema.
pub async fn uninstall(client: &mut Client, target: &Target) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let current = state::load(client, &target.schema).await?;
    drop_leftovers(client, target).await?;
    let tx = client.transaction().await.ctx("begin")?;
    let removed = cron::unschedule_all(&tx).await?;
    if removed > 0 {
        done.push(format!("unscheduled {removed} pg_cron job(s)"));
    }
    match source::summary_kind(&tx, target).await? {
        SummaryKind::MaterializedView => {
            tx.batch_execute(&format!("drop materialized view {}", target.summaries()))
                .await
                .ctx("dropping the view")
                .map_err(switch::owner_hint)?;
            done.push(format!(
                "dropped materialized view {} and its indexes",
                target.summaries()
            ));
        }
        SummaryKind::Table => {
            tx.batch_execute(&format!("drop table {}", target.summaries()))
                .await
                .ctx("dropping the table")
                .map_err(switch::owner_hint)?;
            done.push(format!(
                "dropped table {} and its indexes",
                target.summaries()
            ));
        }
        _ => {}
    }
    if state::schema_exists(&tx).await? {
        tx.execute(
            "delete from trace_summarizer.state where target_schema = $1",
            &[&target.schema],
        )
        .await
        .ctx("removing state")?;
        let left: i64 = tx
            .query_one("select count(*) from trace_summarizer.state", &[])
            .await
            .ctx("counting")?
            .get(0);
        if left == 0 {
            tx.batch_execute(sqltext::STATE_DOWN)
                .await
                .ctx("dropping schema trace_summarizer")?;
            done.push("dropped schema trace_summarizer".into());
        }
    }
    tx.commit().await.ctx("committing uninstall")?;
    if let Some(index) = current.and_then(|s| s.tailing_index) {
        drop_tailing_index(client, Some(index.clone())).await?;
        done.push(format!("dropped index {index}"));
    }
    Ok(done)
}
