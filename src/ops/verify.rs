//! `verify`: compares otel_trace_summaries with its definition computed fresh, in both
//! directions and on every column.
//!
//! To compare like with like, verify first brings the relation up to date *inside its own
//! REPEATABLE READ transaction* (catch-up steps in incremental mode, a concurrent refresh in
//! mv mode), then computes the definition from the same snapshot and the same `now()`. Without
//! `--repair` that transaction is rolled back, so verify changes nothing but, on drift, asks the
//! worker for a full refresh; with `--repair` the differing traces are recomputed and committed.

use crate::db::locks;
use crate::db::source::{self, SummaryKind, Target};
use crate::db::sqltext;
use crate::db::statements::Db;
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::maintain::{cycle, recompute, scratch};
use crate::state;
use serde::Serialize;
use std::time::Duration;
use tokio_postgres::{Client, Transaction};

/// What `verify` compares.
#[derive(Debug, Clone)]
pub enum Scope {
    Whole,
    Sample(u32),
    Since(Duration),
}

#[derive(Debug, Serialize, Clone)]
pub struct Mismatch {
    pub trace_id: String,
    /// `missing` (in the definition, not in the relation), `extra` (the reverse) or `differs`.
    pub kind: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub expected_rows: i64,
    pub mismatches: i64,
    pub first: Vec<Mismatch>,
    pub repaired: i64,
}

pub async fn run(
    client: &mut Client,
    target: &Target,
    scope: &Scope,
    repair: bool,
) -> Result<Report> {
    let kind = source::summary_kind(&*client, target).await?;
    let st = state::load(&*client, &target.schema)
        .await?
        .ok_or_else(|| {
            Error::precondition(
                format!(
                    "trace-summarizer is not installed for schema {:?}",
                    target.schema
                ),
                "run `trace-summarizer install` first",
            )
        })?;
    let def = Definition {
        window: st.window.clone(),
        error_rule: st.error_rule,
    };
    match kind {
        SummaryKind::Table => {
            // Under the work lock: a worker beside us waits, and never meets our writes.
            locks::wait_work(&*client, &target.schema).await?;
            let result = verify_table(client, target, &def, scope, repair).await;
            let result = match result {
                Ok(report) if report.mismatches > 0 && !repair => {
                    state::request_rebuild(&*client, &target.schema, "verify_drift")
                        .await
                        .map(|_| report)
                }
                other => other,
            };
            let _ = locks::release_work(&*client, &target.schema).await;
            result
        }
        SummaryKind::MaterializedView => {
            let tx = begin(client).await?;
            tx.batch_execute(&format!(
                "refresh materialized view concurrently {}",
                target.summaries()
            ))
            .await
            .ctx("refreshing the view before comparing")?;
            let mut report = compare(&tx, target, &def, scope).await?;
            if repair && report.mismatches > 0 {
                report.repaired = report.mismatches;
                tx.commit().await.ctx("committing the refresh")?;
            } else {
                tx.rollback().await.ctx("rolling back")?;
            }
            Ok(report)
        }
        _ => Err(Error::precondition(
            format!(
                "otel_trace_summaries is not installed in schema {:?}",
                target.schema
            ),
            "run `trace-summarizer install` first",
        )),
    }
}

async fn begin(client: &mut Client) -> Result<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .ctx("starting the verify transaction")
}

async fn verify_table(
    client: &mut Client,
    target: &Target,
    def: &Definition,
    scope: &Scope,
    repair: bool,
) -> Result<Report> {
    scratch::prepare(&*client, target, def).await?;
    let tx = begin(client).await?;
    // Catch up first, so what differs is drift and not lag.
    if let Some(f) = cycle::catch_up(&Db::once(&tx), target).await? {
        tracing::warn!(reason = %f.reason(), "the worker's state asks for a full refresh; comparing as is");
    }
    scratch::unpin_plans(&tx).await?;
    let mut report = compare(&tx, target, def, scope).await?;
    if repair && report.mismatches > 0 {
        crate::db::ddl::run(&tx, "delete from ts_affected; insert into ts_affected select trace_id from ts_mismatch on conflict do nothing", "collecting the traces to repair").await?;
        let st = state::load_for_update(&Db::once(&tx), &target.schema)
            .await?
            .expect("verified above");
        let edge = def.window.edge(&tx).await?;
        // The position catch_up stored: the rows the summaries now cover.
        let covers = st.position.clone().ok_or_else(|| {
            Error::precondition(
                "the summaries have no tailing position",
                "run `trace-summarizer rebuild` first",
            )
        })?;
        recompute::apply(&Db::once(&tx), target, def, &st.names(), edge, &covers).await?;
        report.repaired = report.mismatches;
        tx.commit().await.ctx("committing the repair")?;
    } else {
        tx.rollback().await.ctx("rolling back")?;
    }
    Ok(report)
}

/// Fills `ts_expected` for the scope and compares it with the relation.
async fn compare(
    tx: &Transaction<'_>,
    target: &Target,
    def: &Definition,
    scope: &Scope,
) -> Result<Report> {
    let window = def.window.literal();
    let summaries = target.summaries();
    let cols = sqltext::column_list(None);
    tx.batch_execute(
        "create temp table if not exists ts_scope (trace_id text primary key) on commit drop",
    )
    .await
    .ctx("creating scratch tables")?;
    let actual_filter = match scope {
        Scope::Whole => {
            tx.batch_execute(&format!(
                "create temp table ts_expected on commit drop as {}",
                def.query(target, "")
            ))
            .await
            .ctx("computing the definition")?;
            "true".to_string()
        }
        Scope::Sample(n) => {
            tx.execute(
                &format!("insert into ts_scope select trace_id from {summaries} order by random() limit $1"),
                &[&(*n as i64)],
            )
            .await
            .ctx("sampling traces")?;
            expected_for_scope(tx, target, def).await?;
            "trace_id in (select trace_id from ts_scope)".to_string()
        }
        Scope::Since(d) => {
            let since = format!("interval '{} microseconds'", d.as_micros());
            tx.batch_execute(&format!(
                "insert into ts_scope
                   select distinct trace_id from {traces} where \"timestamp\" > greatest(now() - {since}, now() - {window})
                   union select trace_id from {summaries} where \"timestamp\" > now() - {since}
                 on conflict do nothing",
                traces = target.traces()
            ))
            .await
            .ctx("finding recent traces")?;
            expected_for_scope(tx, target, def).await?;
            "trace_id in (select trace_id from ts_scope)".to_string()
        }
    };
    let differs = sqltext::COLUMNS[1..]
        .iter()
        .map(|c| {
            let q = crate::db::quote::ident(c);
            format!("case when a.{q} is distinct from e.{q} then '{c}' end")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let a_cols = sqltext::column_list(Some("a"));
    let e_cols = sqltext::column_list(Some("e"));
    tx.batch_execute(&format!(
        "create temp table ts_mismatch on commit drop as
         select coalesce(a.trace_id, e.trace_id) as trace_id,
                case when a.trace_id is null then 'missing' when e.trace_id is null then 'extra' else 'differs' end as kind,
                array_remove(array[{differs}], null) as columns
         from (select {cols} from {summaries} where {actual_filter}) a
         full join (select {cols} from ts_expected) e on a.trace_id = e.trace_id
         where a.trace_id is null or e.trace_id is null or ({a_cols}) is distinct from ({e_cols})"
    ))
    .await
    .ctx("comparing with the definition")?;
    let expected_rows: i64 = tx
        .query_one("select count(*) from ts_expected", &[])
        .await
        .ctx("counting")?
        .get(0);
    let mismatches: i64 = tx
        .query_one("select count(*) from ts_mismatch", &[])
        .await
        .ctx("counting")?
        .get(0);
    let first = tx
        .query(
            "select trace_id, kind, columns from ts_mismatch order by trace_id limit 20",
            &[],
        )
        .await
        .ctx("reading mismatches")?
        .iter()
        .map(|r| Mismatch {
            trace_id: r.get(0),
            kind: r.get(1),
            columns: r.get(2),
        })
        .collect();
    Ok(Report {
        expected_rows,
        mismatches,
        first,
        repaired: 0,
    })
}

/// The definition for the traces in `ts_scope`, one index lookup per trace.
async fn expected_for_scope(tx: &Transaction<'_>, target: &Target, def: &Definition) -> Result<()> {
    let window = def.window.literal();
    tx.batch_execute(&format!(
        "create temp table ts_expected on commit drop as
         select s.trace_id, x.* from ts_scope s
         cross join lateral (
             select {aggregates} from {traces}
             where trace_id = s.trace_id and \"timestamp\" > now() - {window}
         ) x
         where x.span_count > 0",
        aggregates = def.aggregates(),
        traces = target.traces()
    ))
    .await
    .ctx("computing the definition for the scope")
}
