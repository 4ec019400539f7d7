//! Switching what stands under `otel_trace_summaries`, atomically: one short transaction drops
//! the old relation, renames the new one (built beside it by `install.rs`) and its indexes,
//! carries grants and comment over, and schedules or unschedules the pg_cron job. It waits for
//! its lock with a short `lock_timeout` and retries, so a slow reader never stalls it and
//! readers queued behind it wait milliseconds at most.

use crate::cli::Mode;
use crate::db::quote;
use crate::db::source::{SummaryKind, Target, SUMMARIES};
use crate::error::{DbContext, Error, Result};
use crate::install::cron;
use crate::install::{
    comment_for, comment_of, drop_leftovers, grant_readers, is_our_comment, mode_name,
    schedule_or_notice, InstallPlan, INDEXES, NEW,
};
use crate::state;
use std::time::Duration;
use tokio_postgres::{Client, GenericClient};

/// Swaps, and on failure removes the new relation so nothing is left half-made.
pub(crate) async fn swap_or_clean(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    roles: &[String],
    old: SummaryKind,
    notices: &mut Vec<String>,
) -> Result<()> {
    let result = swap(client, target, plan, roles, old, notices).await;
    if result.is_err() {
        let _ = drop_leftovers(client, target).await;
    }
    result
}

/// Replaces whatever stands under the final name with the new relation, atomically.
async fn swap(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    roles: &[String],
    old: SummaryKind,
    notices: &mut Vec<String>,
) -> Result<()> {
    let mut delay = Duration::from_millis(50);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match swap_once(client, target, plan, roles, old, notices).await {
            Err(e) if e.sqlstate().is_some_and(|c| c.code() == "55P03") && std::time::Instant::now() < deadline => {
                tracing::info!(retry_in_ms = delay.as_millis() as u64, "a reader holds otel_trace_summaries; retrying the switch");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) if e.sqlstate().is_some_and(|c| c.code() == "55P03") => {
                return Err(Error::precondition(
                    "could not switch otel_trace_summaries: long-running readers kept it locked for 2 minutes",
                    "find them in pg_stat_activity and retry install; nothing was changed",
                ))
            }
            other => return other,
        }
    }
}

async fn swap_once(
    client: &mut Client,
    target: &Target,
    plan: &InstallPlan,
    roles: &[String],
    old: SummaryKind,
    notices: &mut Vec<String>,
) -> Result<()> {
    let mut tx = client.transaction().await.ctx("begin")?;
    tx.batch_execute("set local lock_timeout = '200ms'")
        .await
        .ctx("setting lock_timeout")?;
    let mut carried_grants = Vec::new();
    let mut comment = comment_for(plan.mode, plan.window);
    if old != SummaryKind::Absent {
        // Work lock first (so no cycle writes into the relation being dropped). The DROP below
        // takes the relation's lock under lock_timeout (LOCK TABLE refuses materialized views).
        tx.query_one(
            "select pg_advisory_xact_lock(hashtextextended('trace-summarizer-work:' || $1, 0))",
            &[&target.schema],
        )
        .await
        .ctx("waiting for the work lock")?;
        carried_grants = grants_of(&tx, target).await?;
        if let Some(c) = comment_of(&tx, target).await? {
            if !is_our_comment(&c) {
                comment = c;
            }
        }
        let drop = match old {
            SummaryKind::MaterializedView => "drop materialized view",
            _ => "drop table",
        };
        tx.batch_execute(&format!("{drop} {}", target.summaries()))
            .await
            .ctx("dropping the old relation")
            .map_err(owner_hint)?;
    }
    let kind_word = if plan.mode == Mode::Mv {
        "materialized view"
    } else {
        "table"
    };
    tx.batch_execute(&format!(
        "alter {kind_word} {} rename to {}",
        target.rel(NEW),
        quote::ident(SUMMARIES)
    ))
    .await
    .ctx("renaming the new relation")?;
    for name in INDEXES {
        tx.batch_execute(&format!(
            "alter index {} rename to {}",
            target.rel(&format!("{name}_new")),
            quote::ident(name)
        ))
        .await
        .ctx("renaming indexes")?;
    }
    for (grantee, privilege) in carried_grants {
        tx.batch_execute(&format!(
            "grant {privilege} on {} to {grantee}",
            target.summaries()
        ))
        .await
        .ctx("carrying grants over")?;
    }
    grant_readers(&tx, target, roles).await?;
    tx.batch_execute(&format!(
        "comment on {kind_word} {} is {}",
        target.summaries(),
        quote::literal(&comment)
    ))
    .await
    .ctx("setting the comment")?;
    match plan.mode {
        Mode::Mv => schedule_or_notice(&mut tx, target, plan, notices).await?,
        Mode::Incremental => {
            let removed = cron::unschedule_all(&tx).await?;
            if removed > 0 {
                notices.push(format!(
                    "unscheduled {removed} pg_cron job(s) that refreshed the materialized view"
                ));
            }
        }
    }
    state::ensure_schema(&tx).await?;
    state::upsert(&tx, &target.schema, mode_name(plan.mode), plan.window).await?;
    if plan.mode == Mode::Mv {
        tx.batch_execute("truncate trace_summarizer.trace_oldest_span")
            .await
            .ctx("clearing worker state")?;
        tx.execute(
            "update trace_summarizer.state set tail_from = null, tail_snapshot = null, tail_pending = '{}', tailing_index = null where target_schema = $1",
            &[&target.schema],
        )
        .await
        .ctx("clearing the tailing position")?;
    }
    tx.commit().await.ctx("committing the switch")?;
    Ok(())
}

pub(crate) fn owner_hint(e: Error) -> Error {
    match e.sqlstate() {
        Some(c) if c.code() == "42501" => Error::precondition(
            e.to_string(),
            "run install as the owner of otel_trace_summaries (or a member of the owning role)",
        ),
        _ => e,
    }
}

/// Non-owner grants on the current relation, as (grantee, privilege) ready for GRANT.
async fn grants_of<C: GenericClient>(client: &C, target: &Target) -> Result<Vec<(String, String)>> {
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
