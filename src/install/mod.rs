//! `install` and `uninstall`, in both modes, for one target schema: creating the relation,
//! switching a live deployment between the materialized view and the maintained table, taking
//! over a relation trace-summarizer did not create (`--adopt`), and changing the window or the
//! error rule. A new relation is always built beside the one readers use and swapped in
//! (`maintain::relation`).
//!
//! Install holds the work lock from its first change to its last, so a running worker never
//! writes to a relation that is about to be replaced.

pub mod adopt;
pub mod capture;
pub mod cron;
pub mod publications;

use crate::db::connect::ConnectOptions;
use crate::db::locks;
use crate::db::quote;
use crate::db::source::{self, SummaryKind, Target};
use crate::db::statements::Db;
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::maintain::rebuild::{self, Method};
use crate::maintain::relation::{self, Swap};
use crate::state::{self, Mode, State, FORMAT_VERSION};
use tokio_postgres::{Client, GenericClient};

/// Validated install settings.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    pub mode: Mode,
    pub def: Definition,
    /// Reader roles asked for (empty: `spire`, if it exists).
    pub reader_roles: Vec<String>,
    pub cron_schedule: String,
    /// Take over a relation trace-summarizer did not create.
    pub adopt: bool,
    /// Leave the stamp column out of publications of otel_traces that would replicate it.
    pub alter_publications: bool,
    /// How to reach the server (and, on Citus, each node with the same settings).
    pub connect: Option<crate::db::connect::ConnectOptions>,
}

/// What install did, for the operator.
#[derive(Debug, Default)]
pub struct InstallReport {
    /// Notices (no pg_cron, ...).
    pub notices: Vec<String>,
    /// Lines saying what changed.
    pub changes: Vec<String>,
}

/// Runs install.
pub async fn install(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
) -> Result<InstallReport> {
    source::check_traces(&*client, target).await?;
    let roles = reader_roles(client, &plan.reader_roles).await?;
    // A relation we did not create is refused before anything is written (with no state
    // schema, nothing under the name can be ours).
    let (kind, _) = source::summary_relation(&*client, target).await?;
    if kind != SummaryKind::Absent && !plan.adopt && !state::schema_exists(&*client).await? {
        return Err(adopt::refusal(&*client, target, kind).await?);
    }
    {
        let tx = client.transaction().await.ctx("begin")?;
        state::migrate(&tx).await?;
        tx.commit().await.ctx("commit")?;
    }
    locks::wait_work(&*client, &target.schema).await?;
    let result = install_locked(client, target, plan, &roles).await;
    let _ = locks::release_work(&*client, &target.schema).await;
    result
}

async fn install_locked(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    roles: &[String],
) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    let (kind, oid) = source::summary_relation(&*client, target).await?;
    let current = state::load(&*client, &target.schema).await?;
    let ours = is_ours(&*client, target, kind, oid, current.as_ref()).await?;
    let mut adopted = None;
    if kind != SummaryKind::Absent && !ours {
        if !plan.adopt {
            return Err(adopt::refusal(&*client, target, kind).await?);
        }
        adopted = Some(adopt::describe(&*client, target, kind).await?);
    }
    if ours && kind == SummaryKind::Other {
        return Err(Error::precondition(
            format!(
                "{} is neither a table nor a materialized view",
                target.summaries()
            ),
            format!("drop or rename it first (drop view {})", target.summaries()),
        ));
    }
    let unchanged = ours
        && current.as_ref().is_some_and(|s| {
            s.mode == plan.mode
                && s.window == plan.def.window
                && s.error_rule == plan.def.error_rule
                && s.version == FORMAT_VERSION
                && (plan.mode == Mode::Mv || s.position.is_some())
        });
    if plan.mode == Mode::Incremental
        && crate::citus::distribution(&*client, target).await?
            == crate::citus::Distribution::ByTraceId
    {
        let Some(opts) = &plan.connect else {
            return Err(Error::Config(
                "installing on a Citus cluster needs the connection settings to reach its nodes"
                    .into(),
            ));
        };
        let mut citus_report = crate::citus::install::incremental(
            client,
            opts,
            target,
            &plan.def,
            roles,
            current.as_ref(),
        )
        .await?;
        citus_report.notices.extend(report.notices);
        return Ok(citus_report);
    }
    match plan.mode {
        Mode::Incremental => {
            let st = {
                let tx = client.transaction().await.ctx("begin")?;
                let st = state::upsert_installation(
                    &tx,
                    &target.schema,
                    Mode::Incremental,
                    &plan.def.window,
                    plan.def.error_rule,
                )
                .await?;
                tx.commit().await.ctx("commit")?;
                st
            };
            let names = st.names();
            let before =
                capture::status(&Db::once(&*client), target, &names, st.stamp_offset).await?;
            publications::check(&*client, target, plan.alter_publications).await?;
            capture::ensure(client, target, &names, &plan.def.window, st.stamp_offset).await?;
            let window_changed = current
                .as_ref()
                .is_some_and(|s| s.window != plan.def.window);
            if before.complete() && window_changed {
                // The delete trigger's condition follows the window.
                capture::set_triggers(client, target, &names, &plan.def.window, st.stamp_offset)
                    .await?;
            }
            if !before.complete() {
                report
                    .changes
                    .push(format!("added to {}: the column {} (set by the server, no rewrite), its index, and triggers on insert (restamping copied rows only), delete and update", target.traces(), capture::STAMP));
            }
            drop_legacy_index(client, &st).await?;
            if unchanged && before.complete() && kind == SummaryKind::Table {
                finish_in_place(client, target, plan, roles).await?;
            } else {
                let swap = Swap {
                    new_mode: Mode::Incremental,
                    old: kind,
                    comment: relation::comment_for(Mode::Incremental, &plan.def),
                    readers: roles.to_vec(),
                    after: cron_unschedule_sql(&*client, target).await?,
                };
                let stats =
                    rebuild::run(client, target, "install", None, Method::Replace(swap), None)
                        .await?;
                report.changes.push(format!(
                    "built {} as a table ({} summaries in {:.1}s) and swapped it in",
                    target.summaries(),
                    stats.rows,
                    stats.duration.as_secs_f64()
                ));
                if kind == SummaryKind::MaterializedView {
                    report
                        .changes
                        .push("unscheduled the pg_cron job that refreshed the view".into());
                }
            }
        }
        Mode::Mv => {
            if unchanged && kind == SummaryKind::MaterializedView {
                finish_in_place(client, target, plan, roles).await?;
                let mut tx = client.transaction().await.ctx("begin")?;
                schedule_or_notice(&mut tx, target, plan, &mut report.notices).await?;
                tx.commit().await.ctx("commit")?;
            } else {
                relation::drop_leftovers(&*client, target).await?;
                let mut tx = client.transaction().await.ctx("begin")?;
                let st = state::upsert_installation(
                    &tx,
                    &target.schema,
                    Mode::Mv,
                    &plan.def.window,
                    plan.def.error_rule,
                )
                .await?;
                relation::create_view_beside(&tx, target, &plan.def).await?;
                let swap = Swap {
                    new_mode: Mode::Mv,
                    old: kind,
                    comment: relation::comment_for(Mode::Mv, &plan.def),
                    readers: roles.to_vec(),
                    after: None,
                };
                let oid = relation::swap(&mut tx, target, &swap).await?;
                // One refresh job per view: any other that refreshed it (the seed's) goes.
                cron::unschedule(&tx, target).await?;
                schedule_or_notice(&mut tx, target, plan, &mut report.notices).await?;
                state::clear_position(&tx, &target.schema, oid).await?;
                clear_side_tables(&tx, &st).await?;
                tx.commit().await.ctx("committing the switch")?;
                report.changes.push(format!(
                    "built {} as a materialized view and swapped it in",
                    target.summaries()
                ));
                // The worker's capture on otel_traces is not needed by the view.
                if capture::status(&Db::once(&*client), target, &st.names(), st.stamp_offset)
                    .await?
                    .column
                {
                    capture::remove(client, target, &st.names()).await?;
                    report.changes.push(format!(
                        "removed from {}: the column {} and the triggers (the view does not need them)",
                        target.traces(),
                        capture::STAMP
                    ));
                }
                drop_legacy_index(client, &st).await?;
            }
        }
    }
    if let Some(what) = adopted {
        let tx = client.transaction().await.ctx("begin")?;
        state::record_adopted(&tx, &target.schema, &what.record()).await?;
        tx.commit().await.ctx("commit")?;
        report.changes.extend(what.report_lines(target));
    }
    Ok(report)
}

/// Whether the relation under the name is one trace-summarizer made: the one its state
/// records (version 1 recorded none; its comment says so).
async fn is_ours<C: GenericClient>(
    client: &C,
    target: &Target,
    kind: SummaryKind,
    oid: u32,
    current: Option<&State>,
) -> Result<bool> {
    if kind == SummaryKind::Absent {
        return Ok(false);
    }
    let Some(st) = current else {
        return Ok(false);
    };
    if st.relation_oid == Some(oid) {
        return Ok(true);
    }
    if st.relation_oid.is_none() {
        let comment = relation::comment_of(client, target).await?;
        return Ok(comment.as_deref().is_some_and(relation::is_our_comment));
    }
    Ok(false)
}

/// The SQL that unschedules the view's refresh jobs, run inside the swap (None without pg_cron).
async fn cron_unschedule_sql<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<Option<String>> {
    if !cron::installed(client).await? {
        return Ok(None);
    }
    Ok(Some(cron::unschedule_sql(target)))
}

/// Explicit roles must exist; by default `spire` is granted when it exists.
async fn reader_roles(client: &Client, requested: &[String]) -> Result<Vec<String>> {
    let (names, explicit) = if requested.is_empty() {
        (vec!["spire".to_string()], false)
    } else {
        (requested.to_vec(), true)
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

/// Schedules the pg_cron job when pg_cron is usable; otherwise adds the notice.
async fn schedule_or_notice(
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

/// Re-applies grants and the comment to an installed relation (install run twice).
async fn finish_in_place(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    roles: &[String],
) -> Result<()> {
    let tx = client.transaction().await.ctx("begin")?;
    relation::grant_select(&tx, target, roles).await?;
    let kind_word = if plan.mode == Mode::Mv {
        "materialized view"
    } else {
        "table"
    };
    if relation::comment_of(&tx, target)
        .await?
        .is_none_or(|c| relation::is_our_comment(&c))
    {
        tx.batch_execute(&format!(
            "comment on {kind_word} {} is {}",
            target.summaries(),
            quote::literal(&relation::comment_for(plan.mode, &plan.def))
        ))
        .await
        .ctx("setting the comment")?;
    }
    tx.commit().await.ctx("commit")?;
    Ok(())
}

async fn clear_side_tables<C: GenericClient>(client: &C, st: &State) -> Result<()> {
    let n = st.names();
    crate::db::ddl::run(
        client,
        &format!(
            "delete from {}; delete from {}; delete from {};",
            n.oldest, n.queue, n.leaves
        ),
        "clearing the worker's side tables",
    )
    .await
}

/// Version 1 tailed by created_at through an index of its own; it is not needed any more.
async fn drop_legacy_index(client: &Client, st: &State) -> Result<()> {
    if let Some(index) = &st.legacy_index {
        client
            .batch_execute(&format!("drop index concurrently if exists {index}"))
            .await
            .ctx("dropping version 1's index on otel_traces (created_at)")?;
        state::forget_legacy_index(client, &st.schema).await?;
    }
    Ok(())
}

/// Removes what install made for `target`: the relation (only when trace-summarizer made it),
/// its pg_cron job, the column, index and triggers on otel_traces, the installation's state and
/// side tables, and the schema trace_summarizer when no installation is left.
///
/// On a Citus coordinator (`opts` names how to reach the nodes), every node's part goes first.
pub async fn uninstall(
    client: &mut Client,
    target: &Target,
    opts: Option<&ConnectOptions>,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !state::schema_exists(&*client).await? {
        return Ok(done);
    }
    {
        let tx = client.transaction().await.ctx("begin")?;
        state::migrate(&tx).await?;
        tx.commit().await.ctx("commit")?;
    }
    let current = state::load(&*client, &target.schema).await?;
    let Some(st) = current else {
        return Ok(done);
    };
    if crate::citus::distribution(&*client, target).await? == crate::citus::Distribution::ByTraceId
    {
        let opts = opts.ok_or_else(|| {
            Error::Config(
                "uninstalling on a Citus coordinator needs the connection settings".into(),
            )
        })?;
        done.extend(crate::citus::install::uninstall_nodes(&*client, opts, target).await?);
    }
    locks::wait_work(&*client, &target.schema).await?;
    let result = uninstall_locked(client, target, &st, &mut done).await;
    let _ = locks::release_work(&*client, &target.schema).await;
    result?;
    Ok(done)
}

async fn uninstall_locked(
    client: &mut Client,
    target: &Target,
    st: &State,
    done: &mut Vec<String>,
) -> Result<()> {
    let names = st.names();
    relation::drop_leftovers(&*client, target).await?;
    let now = capture::status(&Db::once(&*client), target, &names, st.stamp_offset).await?;
    if now.any {
        capture::remove(client, target, &names).await?;
        done.push(format!(
            "removed from {}: the column {}, its index and the triggers",
            target.traces(),
            capture::STAMP
        ));
    }
    let (kind, oid) = source::summary_relation(&*client, target).await?;
    let ours = is_ours(&*client, target, kind, oid, Some(st)).await?;
    let tx = client.transaction().await.ctx("begin")?;
    let removed = cron::unschedule(&tx, target).await?;
    if removed > 0 {
        done.push(format!("unscheduled {removed} pg_cron job(s)"));
    }
    match (kind, ours) {
        (SummaryKind::MaterializedView, true) => {
            tx.batch_execute(&format!("drop materialized view {}", target.summaries()))
                .await
                .ctx("dropping the view")
                .map_err(relation::owner_hint)?;
            done.push(format!(
                "dropped materialized view {} and its indexes",
                target.summaries()
            ));
        }
        (SummaryKind::Table, true) => {
            tx.batch_execute(&format!("drop table {}", target.summaries()))
                .await
                .ctx("dropping the table")
                .map_err(relation::owner_hint)?;
            done.push(format!(
                "dropped table {} and its indexes",
                target.summaries()
            ));
        }
        (SummaryKind::Absent, _) => {}
        (_, false) => done.push(format!(
            "left {} alone: trace-summarizer did not create it",
            target.summaries()
        )),
        _ => {}
    }
    state::delete_installation(&tx, st).await?;
    if state::count(&tx).await? == 0 {
        state::drop_schema(&tx).await?;
        done.push("dropped schema trace_summarizer".into());
    }
    tx.commit().await.ctx("committing uninstall")?;
    if let Some(index) = &st.legacy_index {
        client
            .batch_execute(&format!("drop index concurrently if exists {index}"))
            .await
            .ctx("dropping version 1's index")?;
        done.push(format!("dropped index {index}"));
    }
    if let Some(adopted) = &st.adopted {
        done.push(format!(
            "this installation had adopted an earlier relation; to restore it, run:\n{adopted}"
        ));
    }
    Ok(())
}
