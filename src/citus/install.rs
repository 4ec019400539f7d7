//! `install --mode incremental` when otel_traces is distributed by trace_id with Citus.
//!
//! On the coordinator: the installation's state row; the stamp column and its index on the
//! distributed table (Citus propagates both to every shard, and to shards created later), with no
//! default (the coordinator would evaluate it); `otel_trace_summaries` as a table distributed by
//! trace_id and co-located with otel_traces, with the contract's indexes and the readers' grants.
//! Then, on every node that holds shards (the coordinator too, when it does): the node's part
//! (`node.rs`) and a full refresh of its shards, in place, on that node.

use crate::citus::{node, nodes};
use crate::db::connect::ConnectOptions;
use crate::db::quote;
use crate::db::source::{self, SummaryKind, Target};
use crate::db::sqltext;
use crate::error::{DbContext, Error, Result};
use crate::install::capture::{self, STAMP, STAMP_INDEX};
use crate::install::InstallReport;
use crate::maintain::rebuild::{self, Method};
use crate::maintain::relation;
use crate::state::{self, Mode, State};
use tokio_postgres::Client;

const TABLE: &str = include_str!("../../sql/summary_table.sql");

/// Installs (or updates) the incremental mode on a Citus coordinator.
pub async fn incremental(
    client: &mut Client,
    opts: &ConnectOptions,
    target: &Target,
    def: &crate::definition::Definition,
    roles: &[String],
    current: Option<&State>,
) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    let (kind, oid) = source::summary_relation(&*client, target).await?;
    let ours = current.is_some_and(|s| s.relation_oid == Some(oid));
    match (kind, ours) {
        (SummaryKind::Absent, _) | (SummaryKind::Table, true) => {}
        _ => {
            return Err(Error::precondition(
                format!(
                    "{} exists and is not a table trace-summarizer made on this Citus cluster",
                    target.summaries()
                ),
                format!(
                    "drop or rename it first (it can be rebuilt by install), e.g. alter table {} rename to otel_trace_summaries_old",
                    target.summaries()
                ),
            ))
        }
    }
    let st = {
        let tx = client.transaction().await.ctx("begin")?;
        let st = state::upsert_installation(
            &tx,
            &target.schema,
            Mode::Incremental,
            &def.window,
            def.error_rule,
        )
        .await?;
        tx.commit().await.ctx("commit")?;
        st
    };
    let traces = target.traces();
    let col = quote::ident(STAMP);
    capture::with_short_locks(
        client,
        &[format!(
            "alter table {traces} add column if not exists {col} bigint"
        )],
        "adding the column otel_traces.trace_summarizer_xid",
    )
    .await?;
    if source::shape(&*client, target).await? == source::Shape::Partitioned {
        // CONCURRENTLY refuses a partitioned table: the index on the parent alone, then each
        // partition's concurrently, attached (Citus propagates each statement to the shards).
        let oid = source::traces_oid(&*client, target).await?;
        capture::partitioned_index(&*client, oid, &target.schema, STAMP_INDEX).await?;
    } else {
        client
            .batch_execute(&format!(
                "create index concurrently if not exists {} on {traces} ({col})",
                quote::ident(STAMP_INDEX)
            ))
            .await
            .ctx("creating the index on otel_traces (trace_summarizer_xid)")
            .map_err(capture::owner_hint)?;
    }
    if kind == SummaryKind::Absent {
        create_summaries(client, target, def, roles).await?;
        report.changes.push(format!(
            "created {} as a table distributed by trace_id, co-located with {}",
            target.summaries(),
            target.traces()
        ));
    } else {
        relation::grant_select(&*client, target, roles).await?;
    }
    let (_, relation_oid) = source::summary_relation(&*client, target).await?;
    let source_oid = source::traces_oid(&*client, target).await?;
    client
        .execute(
            "update trace_summarizer.state set relation_oid = $2, source_oid = coalesce(source_oid, $3)
             where target_schema = $1",
            &[&target.schema, &relation_oid, &source_oid],
        )
        .await
        .ctx("recording the relation")?;
    let st = State {
        relation_oid: Some(relation_oid),
        ..st
    };
    for n in nodes::with_shards(&*client, target).await? {
        let mut session = node::connect(&n.options(opts), &target.schema).await?;
        node::install(&session.client, &session.target, &st).await?;
        let stats = rebuild::run(
            &mut session.client,
            &session.target,
            "install",
            None,
            Method::Auto,
            None,
        )
        .await?;
        report.changes.push(format!(
            "node {}: {} shards of otel_traces stamped and summarized ({} summaries in {:.1}s)",
            n.label(),
            session.target.local.as_ref().map_or(0, |l| l.pairs.len()),
            stats.rows,
            stats.duration.as_secs_f64()
        ));
    }
    Ok(report)
}

/// Creates otel_trace_summaries as a table distributed by trace_id, co-located with otel_traces,
/// with the contract's indexes, its comment and the readers' grants.
async fn create_summaries(
    client: &Client,
    target: &Target,
    def: &crate::definition::Definition,
    roles: &[String],
) -> Result<()> {
    let summaries = target.summaries();
    crate::db::ddl::run(
        client,
        &crate::db::sqltext::strip_comments(TABLE).replace("{{table}}", &summaries),
        "creating otel_trace_summaries",
    )
    .await
    .map_err(relation::owner_hint)?;
    crate::db::ddl::run(
        client,
        &sqltext::indexes(&summaries, ""),
        "creating the indexes of otel_trace_summaries",
    )
    .await?;
    client
        .execute(
            "select create_distributed_table($1::text::regclass, 'trace_id', colocate_with => $2::text)",
            &[&summaries, &target.traces()],
        )
        .await
        .ctx("distributing otel_trace_summaries by trace_id")?;
    client
        .batch_execute(&format!(
            "comment on table {summaries} is {}",
            quote::literal(&relation::comment_for(Mode::Incremental, def))
        ))
        .await
        .ctx("setting the comment")?;
    relation::grant_select(client, target, roles).await
}

/// Removes every node's part of the installation (`uninstall` on a Citus coordinator, before the
/// coordinator's own part): on each node holding shards, the shards' triggers and stamp default,
/// the node's state row, side tables and functions, and the schema trace_summarizer when no
/// installation is left there. Waits for a running worker's step on each node first.
pub async fn uninstall_nodes(
    client: &Client,
    opts: &ConnectOptions,
    target: &Target,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for n in nodes::with_shards(client, target).await? {
        let mut session = node::connect(&n.options(opts), &target.schema).await?;
        if !state::schema_exists(&session.client).await? {
            continue;
        }
        let Some(st) = state::load(&session.client, &target.schema).await? else {
            continue;
        };
        crate::db::locks::wait_work(&session.client, &target.schema).await?;
        let removed = async {
            capture::remove(&session.client, &session.target, &st.names()).await?;
            let tx = session.client.transaction().await.ctx("begin")?;
            state::delete_installation(&tx, &st).await?;
            if state::count(&tx).await? == 0 {
                state::drop_schema(&tx).await?;
            }
            tx.commit().await.ctx("committing the node's uninstall")
        }
        .await;
        let _ = crate::db::locks::release_work(&session.client, &target.schema).await;
        removed?;
        done.push(format!(
            "node {}: removed the triggers and stamp default of its shards, its state and side tables",
            n.label()
        ));
    }
    Ok(done)
}
