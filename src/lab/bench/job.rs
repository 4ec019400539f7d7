//! The Job: a model of upstream's scheduled job, carverauto/serviceradar's
//! `RefreshTraceSummariesWorker`, written from its description only (no code of it is copied):
//!
//! - it runs every 2 minutes (`PERIOD`);
//! - on an empty summary table it backfills the window in 1-hour chunks (`CHUNK`): the traces
//!   with a span in each hour, recomputed from all their spans in the window;
//! - otherwise it takes the trace_ids with a span whose `timestamp` lies in the last 5 minutes
//!   (`LOOK_BACK`), recomputes each such trace from all of its spans in the window, and upserts
//!   the rows into a plain table (`job_trace_summaries`: trace_id primary key, the 13 other
//!   columns, `refreshed_at`), updating a row only where some column `IS DISTINCT FROM` the new
//!   value;
//! - then it deletes summaries older than the window (by their `timestamp`), 5,000 at a time
//!   (`DELETE_BATCH`), until a batch deletes fewer.
//!
//! The aggregates are the `Definition`'s, so its rows are the view's rows for the traces it
//! recomputes. It misses a span whose `timestamp` is already older than its look-back when the
//! span arrives (a late span): the trace keeps its old summary, or gets none. That is the
//! model's finding, not a bug of the bench. `sync` (the bench's, not the job's) makes the table
//! exact again between measurements.
//!
//! Its statements run in autocommit, one after the other, as an application's would.

use crate::db::source::Target;
use crate::db::sqltext::column_list;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The job's table.
pub const TABLE: &str = "job_trace_summaries";
/// How often the job runs.
pub const PERIOD: Duration = Duration::from_secs(120);
/// The spans whose trace a run recomputes: `timestamp` within this of now.
pub const LOOK_BACK: &str = "5 minutes";
/// The backfill's chunk.
pub const CHUNK: &str = "1 hour";
/// Rows deleted per statement when pruning.
pub const DELETE_BATCH: i64 = 5_000;

/// One run of the job.
#[derive(Debug, Clone, Default)]
pub struct JobRun {
    /// When the upsert statement was sent (its snapshot is taken then) and when it returned.
    pub upsert_sent: Option<Instant>,
    pub upsert_done: Option<Instant>,
    pub seconds: f64,
    /// Rows the upsert inserted or changed (unchanged rows are not written).
    pub upserted: u64,
    pub deleted: u64,
    /// The run found the table empty and backfilled it.
    pub backfill: bool,
    pub chunks: usize,
}

/// The 13 columns after trace_id, quoted.
fn other_columns() -> Vec<String> {
    column_list(None)
        .split(", ")
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Creates the job's table (dropping an old one).
pub async fn create(client: &Client, target: &Target) -> Result<()> {
    let t = target.rel(TABLE);
    client
        .batch_execute(&format!(
            "drop table if exists {t};
             create table {t} (
                 trace_id             text primary key,
                 \"timestamp\"          timestamptz not null,
                 root_span_id         text,
                 root_span_name       text,
                 root_service_name    text,
                 root_span_kind       integer,
                 start_time_unix_nano bigint,
                 end_time_unix_nano   bigint,
                 duration_ms          double precision,
                 status_code          integer,
                 status_message       text,
                 service_set          text[],
                 span_count           bigint,
                 error_count          bigint,
                 refreshed_at         timestamptz not null default now()
             );
             create index job_trace_summaries_timestamp on {t} (\"timestamp\" desc);
             create index job_trace_summaries_service_timestamp on {t} (root_service_name, \"timestamp\" desc);"
        ))
        .await
        .ctx("creating the job's table")
}

/// The upsert of the traces `ids` selects (a query returning trace_id), each recomputed from
/// all of its spans in the window; a row is written only where a column changed.
fn upsert_sql(target: &Target, def: &Definition, ids: &str) -> String {
    let cols = column_list(None);
    let others = other_columns();
    let set = others
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let old = others
        .iter()
        .map(|c| format!("j.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let new = others
        .iter()
        .map(|c| format!("excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "insert into {table} as j ({cols}, refreshed_at)
         select trace_id::text, {aggregates}, now()
         from {traces}
         where trace_id in ({ids}) and \"timestamp\" > now() - {window}
         group by trace_id
         on conflict (trace_id) do update set {set}, refreshed_at = excluded.refreshed_at
         where ({old}) is distinct from ({new})",
        table = target.rel(TABLE),
        aggregates = def.aggregates().replace('\n', " "),
        traces = target.traces(),
        window = def.window.literal(),
    )
}

/// One run: the backfill when the table is empty, otherwise the look-back upsert; then the
/// pruning. `statement_timeout` applies to each statement.
pub async fn run_once(client: &Client, target: &Target, def: &Definition) -> Result<JobRun> {
    let t = Instant::now();
    let mut run = JobRun::default();
    let empty = client
        .query_opt(&format!("select 1 from {} limit 1", target.rel(TABLE)), &[])
        .await
        .ctx("looking at the job's table")?
        .is_none();
    if empty {
        run.backfill = true;
        let edge: chrono::DateTime<chrono::Utc> = def.window.edge(client).await?;
        let now: chrono::DateTime<chrono::Utc> = client
            .query_one("select now()", &[])
            .await
            .ctx("reading now()")?
            .get(0);
        let sql = upsert_sql(
            target,
            def,
            &format!(
                "select trace_id from {} where \"timestamp\" >= $1 and \"timestamp\" < $1 + interval '{CHUNK}'",
                target.traces()
            ),
        );
        let mut from = edge;
        while from <= now {
            run.upserted += client
                .execute(&sql, &[&from])
                .await
                .ctx("the job's backfill")?;
            run.chunks += 1;
            from += chrono::Duration::hours(1);
        }
    } else {
        let sql = upsert_sql(
            target,
            def,
            &format!(
                "select distinct trace_id from {} where \"timestamp\" > now() - interval '{LOOK_BACK}'",
                target.traces()
            ),
        );
        run.upsert_sent = Some(Instant::now());
        run.upserted = client.execute(&sql, &[]).await.ctx("the job's upsert")?;
        run.upsert_done = Some(Instant::now());
    }
    let prune = format!(
        "delete from {t} where trace_id in (select trace_id from {t} where \"timestamp\" < now() - {w} limit {DELETE_BATCH})",
        t = target.rel(TABLE),
        w = def.window.literal()
    );
    loop {
        let n = client.execute(&prune, &[]).await.ctx("the job's pruning")?;
        run.deleted += n;
        if n < DELETE_BATCH as u64 {
            break;
        }
    }
    run.seconds = t.elapsed().as_secs_f64();
    Ok(run)
}

/// The bench's, not the job's: makes the table equal to the definition again after the job
/// was not running (other systems' cells) or missed spans, so that a measurement starts exact.
/// Every trace with a span written since `since` (`created_at`, the inserting transaction's
/// start: the bench's writers leave it to its default) is recomputed where it differs, then the
/// rows left behind the edge are deleted (with no span ever deleted from otel_traces, those are
/// exactly the traces with no span left in the window). Returns when this sync started, the
/// `since` of the next one (no writer runs while it does).
pub async fn sync(
    client: &Client,
    target: &Target,
    def: &Definition,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>> {
    let t = target.rel(TABLE);
    let started: chrono::DateTime<chrono::Utc> = client
        .query_one("select now()", &[])
        .await
        .ctx("reading now()")?
        .get(0);
    let touched = upsert_sql(
        target,
        def,
        &format!(
            "select trace_id from {} where created_at >= $1",
            target.traces()
        ),
    );
    client
        .execute(&touched, &[&since])
        .await
        .ctx("bringing the job's table up to date (bench)")?;
    client
        .batch_execute(&format!(
            "delete from {t} where \"timestamp\" <= now() - {}",
            def.window.literal()
        ))
        .await
        .ctx("bringing the job's table up to date (bench)")?;
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{ErrorRule, Window};

    #[test]
    fn the_upsert_writes_only_changed_rows() {
        let def = Definition {
            window: Window::parse("--window", "3d").unwrap(),
            error_rule: ErrorRule::Error,
        };
        let target = Target::new("public");
        let sql = upsert_sql(&target, &def, "select 'x'");
        assert!(sql.contains("on conflict (trace_id) do update"));
        assert!(sql.contains("is distinct from"));
        assert!(sql.contains("interval '3 days'"));
        assert!(sql.contains("status_code = 2"));
        assert_eq!(other_columns().len(), 13);
    }
}
