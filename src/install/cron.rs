//! The pg_cron job that refreshes the materialized view (mv mode): scheduling it idempotently
//! (pg_cron replaces a job of the same name), removing every job that refreshes our view, and
//! reading the job and its run history for `status`.
//!
//! pg_cron lives in one database per cluster (`cron.database_name`); it is "usable" here when
//! the extension exists in the current database, or can be created in it.

use crate::db::quote;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

/// The job's name in schema `public` (the seed's name); elsewhere the schema is appended, so
/// installations in several schemas of one database each have their own job.
pub const JOB_NAME: &str = "refresh_otel_trace_summaries";

/// The job name for `target`.
pub fn job_name(target: &Target) -> String {
    if target.schema == "public" {
        JOB_NAME.to_string()
    } else {
        format!("{JOB_NAME}:{}", target.schema)
    }
}

/// Whether pg_cron can be used in this database; creates the extension when that is possible
/// (it is preloaded and this is its database). Runs inside the caller's transaction, in a
/// savepoint, so a refusal leaves nothing behind.
pub async fn usable(tx: &mut tokio_postgres::Transaction<'_>) -> Result<Result<(), String>> {
    let installed: bool = tx
        .query_one(
            "select exists (select 1 from pg_extension where extname = 'pg_cron')",
            &[],
        )
        .await
        .ctx("looking for pg_cron")?
        .get(0);
    if installed {
        return Ok(Ok(()));
    }
    let row = tx
        .query_one(
            "select exists (select 1 from pg_available_extensions where name = 'pg_cron'),
                    coalesce(current_setting('cron.database_name', true), '') = current_database()",
            &[],
        )
        .await
        .ctx("looking for pg_cron")?;
    let (available, here): (bool, bool) = (row.get(0), row.get(1));
    if !available {
        return Ok(Err(
            "the pg_cron extension is not installed on this server".into()
        ));
    }
    if !here {
        return Ok(Err(
            "pg_cron is not loaded for this database (shared_preload_libraries and cron.database_name)".into(),
        ));
    }
    let sp = tx.savepoint("create_pg_cron").await.ctx("savepoint")?;
    match sp
        .batch_execute("create extension if not exists pg_cron")
        .await
    {
        Ok(()) => {
            sp.commit().await.ctx("creating pg_cron")?;
            Ok(Ok(()))
        }
        Err(e) => {
            sp.rollback().await.ctx("rolling back")?;
            Ok(Err(format!(
                "cannot create extension pg_cron here: {}",
                e.as_db_error().map(|d| d.message()).unwrap_or("error")
            )))
        }
    }
}

/// The refresh command for the target's view: schema-qualified unless the schema is public.
pub async fn refresh_command<C: GenericClient>(client: &C, target: &Target) -> Result<String> {
    if target.schema == "public" {
        return Ok("REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries".into());
    }
    let q: String = client
        .query_one("select quote_ident($1)", &[&target.schema])
        .await
        .ctx("quoting")?
        .get(0);
    Ok(format!(
        "REFRESH MATERIALIZED VIEW CONCURRENTLY {q}.otel_trace_summaries"
    ))
}

/// Schedules (or replaces) the refresh job.
pub async fn schedule<C: GenericClient>(
    client: &C,
    target: &Target,
    schedule: &str,
) -> Result<i64> {
    let command = refresh_command(client, target).await?;
    Ok(client
        .query_one(
            "select cron.schedule($1, $2, $3)",
            &[&job_name(target), &schedule, &command],
        )
        .await
        .ctx("scheduling the pg_cron refresh job (check the --cron-schedule syntax)")?
        .get(0))
}

/// Removes every job in this database that refreshes `target`'s `otel_trace_summaries` (the
/// seed's migration may have named it differently): ours by name, and any other whose command
/// refreshes that view (unqualified names count as schema public). Tolerates a missing pg_cron.
pub async fn unschedule<C: GenericClient>(client: &C, target: &Target) -> Result<u64> {
    if !installed(client).await? {
        return Ok(0);
    }
    let rows = client
        .query(&unschedule_sql(target), &[])
        .await
        .ctx("unscheduling the pg_cron refresh job")?;
    Ok(rows.len() as u64)
}

/// The statement `unschedule` runs (also run inside a swap, so the job and the view go
/// together). Only for a database where pg_cron is installed.
pub fn unschedule_sql(target: &Target) -> String {
    let name = quote::literal(&job_name(target));
    let schema = quote::literal(&target.schema);
    format!(
        "select cron.unschedule(jobid) from cron.job
         where database = current_database()
           and (jobname = {name}
                or (command ~* 'refresh\\s+materialized\\s+view'
                    and (position(lower(quote_ident({schema}) || '.otel_trace_summaries') in lower(command)) > 0
                         or ({schema} = 'public' and command !~* '\\.\\s*\"?otel_trace_summaries' and command ~* 'otel_trace_summaries'))))"
    )
}

pub async fn installed<C: GenericClient>(client: &C) -> Result<bool> {
    Ok(client
        .query_one(
            "select exists (select 1 from pg_extension where extname = 'pg_cron')",
            &[],
        )
        .await
        .ctx("looking for pg_cron")?
        .get(0))
}

/// The job as status reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobInfo {
    pub jobid: i64,
    pub schedule: String,
    pub command: String,
    pub active: bool,
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    pub last_status: Option<String>,
}

pub async fn job<C: GenericClient>(client: &C, target: &Target) -> Result<Option<JobInfo>> {
    if !installed(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "select j.jobid, j.schedule, j.command, j.active,
                    (select max(end_time) from cron.job_run_details d where d.jobid = j.jobid and d.status = 'succeeded'),
                    (select d.status from cron.job_run_details d where d.jobid = j.jobid order by d.start_time desc limit 1)
             from cron.job j where j.jobname = $1 and j.database = current_database()",
            &[&job_name(target)],
        )
        .await
        .ctx("reading the pg_cron job")?;
    Ok(row.map(|r| JobInfo {
        jobid: r.get(0),
        schedule: r.get(1),
        command: r.get(2),
        active: r.get(3),
        last_success: r.get(4),
        last_status: r.get(5),
    }))
}
