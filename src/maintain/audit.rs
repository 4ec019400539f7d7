//! The continuous audit: every few seconds, the worker re-derives a slice of traces (the next
//! range of trace_ids) from the definition, inside the step's snapshot, compares every column
//! in both directions (a missing row, an invented row and a differing row all count), and
//! repairs what differs. The slices rotate through all traces once per `--audit-period`, so a
//! damaged, deleted or invented summary is repaired within one period, whatever damaged it.
//!
//! It runs only in a step that left nothing pending (no capped read, no queued or edge traces
//! beyond the batch), so in its snapshot the table must equal the definition: a difference is
//! drift, never lag.

use crate::db::source::Target;
use crate::db::sqltext;
use crate::db::statements::Db;
use crate::definition::Definition;
use crate::error::{DbContext, Result};
use crate::maintain::recompute;
use crate::maintain::tailing::covered;
use crate::state::{AuditRecord, Names, Position};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_postgres::GenericClient;

/// How often a slice runs and how many traces it covers, from the audit period.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub period: Duration,
}

impl Pace {
    /// Time between two slices: a hundredth of the period, between 1 s and 10 s.
    pub fn every(&self) -> Duration {
        (self.period / 100).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// Traces per slice so that `total` traces take one period.
    pub fn slice_rows(&self, total: i64) -> i64 {
        let share = self.every().as_secs_f64() / self.period.as_secs_f64().max(1e-3);
        ((total.max(1) as f64) * share).ceil().max(1.0) as i64
    }
}

/// What one slice did.
#[derive(Debug, Default, Clone)]
pub struct Slice {
    pub checked: i64,
    pub mismatches: i64,
    /// The slice reached the end of the traces: the pass is complete.
    pub pass_done: bool,
    /// The progress to store.
    pub record: AuditRecord,
}

/// Checks and repairs the next slice after `progress.cursor`.
#[allow(clippy::too_many_arguments)]
pub async fn run_slice<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    def: &Definition,
    names: &Names,
    edge: DateTime<Utc>,
    covers: &Position,
    pace: &Pace,
    progress: &AuditRecord,
) -> Result<Slice> {
    let summaries = target.summaries_read();
    // The summaries' size: the planner's estimate of each relation they live in, or a count.
    let estimate = target
        .summary_writes()
        .iter()
        .map(|w| {
            format!(
                "greatest((select reltuples::bigint from pg_class where oid = {}::regclass), 0)",
                crate::db::quote::literal(&w.relation)
            )
        })
        .collect::<Vec<_>>()
        .join(" + ");
    let total: i64 = client
        .query_one(
            &format!(
                "select coalesce(nullif({estimate}, 0), (select count(*) from {summaries} s))"
            ),
            &[],
        )
        .await
        .ctx("estimating the number of summaries")?
        .get(0);
    let rows = pace.slice_rows(total);
    let from = progress.cursor.clone();
    // The slice is (from, to]; `to` None means to the end.
    let to: Option<String> = client
        .query_opt(
            &format!(
                "select trace_id from {summaries} s where {after}
                 order by trace_id offset $2 limit 1",
                after = if from.is_some() {
                    "trace_id > $1"
                } else {
                    "$1::text is null"
                }
            ),
            &[&from, &(rows - 1)],
        )
        .await
        .ctx("choosing the audit slice")?
        .map(|r| r.get(0));
    // Bounds as index conditions (an `is null or` would hide them from the planner).
    let mut bounds = vec![
        "$1::text is not distinct from $1",
        "$2::text is not distinct from $2",
    ];
    if from.is_some() {
        bounds.push("trace_id > $1");
    }
    if to.is_some() {
        bounds.push("trace_id <= $2");
    }
    let in_range = bounds.join(" and ");
    crate::db::ddl::run(
        client.client(),
        "delete from ts_fresh; delete from ts_affected;",
        "clearing scratch rows",
    )
    .await?;
    client
        .execute(
            &format!(
                "insert into ts_fresh
                 select trace_id, {aggregates}, min(\"timestamp\")
                 from {traces} where {in_range} and \"timestamp\" > $3 and trace_id is not null and {covered}
                 group by trace_id",
                aggregates = def.aggregates(),
                traces = target.traces(),
                covered = covered("trace_summarizer_xid", "$4", "$5"),
            ),
            &[&from, &to, &edge, &covers.xmax, &covers.xip],
        )
        .await
        .ctx("computing the definition for the audit slice")?;
    let cols_t = sqltext::value_row("t");
    let cols_f = sqltext::value_row("f");
    // Missing or differing (from the definition's side), and invented (from the table's side).
    let found = client
        .query_one(
            &format!(
                "with bad as (
                     select f.trace_id from ts_fresh f left join {summaries} t on t.trace_id = f.trace_id
                     where t.trace_id is null or {cols_t} is distinct from {cols_f}
                     union
                     select t.trace_id from {summaries} t
                     where {in_range} and not exists (select 1 from ts_fresh f where f.trace_id = t.trace_id)
                 ), added as (insert into ts_affected select trace_id from bad on conflict do nothing)
                 select count(*), (select count(*) from ts_fresh) from bad"
            ),
            &[&from, &to],
        )
        .await
        .ctx("comparing the audit slice")?;
    let mismatches: i64 = found.get(0);
    let checked: i64 = found.get(1);
    if mismatches > 0 {
        let ids: Vec<String> = client
            .query(
                "select trace_id from ts_affected order by trace_id limit 5",
                &[],
            )
            .await
            .ctx("listing audit mismatches")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tracing::warn!(mismatches, first = ?ids, "the audit found summaries that differ from the definition; repairing them");
        recompute::apply(client, target, def, names, edge, covers).await?;
    }
    let pass_done = to.is_none();
    let record = AuditRecord {
        cursor: to,
        pass_checked: progress.pass_checked + checked,
        pass_mismatches: progress.pass_mismatches + mismatches,
        ..progress.clone()
    };
    Ok(Slice {
        checked,
        mismatches,
        pass_done,
        record,
    })
}
