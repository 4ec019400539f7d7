//! Logical replication publications of otel_traces, checked before install adds its column.
//!
//! A publication that replicates every column of otel_traces (no column list, `FOR ALL TABLES`
//! or `FOR TABLES IN SCHEMA`) would start sending `trace_summarizer_xid` once install adds it.
//! A subscriber without that column stops applying ("missing replicated column") while the
//! publisher retains WAL, and a subscriber with it would receive stamps of another server. So
//! install refuses (exit 2), naming each publication and the `ALTER PUBLICATION` that leaves the
//! stamp out; with `--alter-publications` it applies that change itself, in one transaction per
//! publication. Publications with a column list that leaves the stamp out are fine.

use crate::db::quote;
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::install::capture::STAMP;
use tokio_postgres::{Client, GenericClient};

/// A publication that would replicate the stamp column.
#[derive(Debug, Clone)]
struct Offending {
    name: String,
    /// FOR ALL TABLES or FOR TABLES IN SCHEMA: no column list is possible.
    whole: bool,
    /// Other tables in the publication (SET TABLE would drop them).
    others: i64,
    /// The row filter on otel_traces, kept by the change.
    row_filter: Option<String>,
}

/// Refuses (or, with `alter`, fixes) publications that would replicate the stamp column.
pub async fn check(client: &Client, target: &Target, alter: bool) -> Result<()> {
    let found = offending(client, target).await?;
    if found.is_empty() {
        return Ok(());
    }
    let columns = columns_without_stamp(client, target).await?;
    if alter && found.iter().all(|p| !p.whole) {
        for p in &found {
            let sql = fix(target, p, &columns);
            client
                .batch_execute("begin")
                .await
                .ctx("changing a publication")?;
            for s in &sql {
                if let Err(e) = client.batch_execute(s).await.ctx("changing a publication") {
                    let _ = client.batch_execute("rollback").await;
                    return Err(e);
                }
            }
            client
                .batch_execute("commit")
                .await
                .ctx("changing a publication")?;
            tracing::info!(publication = %p.name, "publication of otel_traces now leaves out {STAMP}");
        }
        return Ok(());
    }
    let mut what = Vec::new();
    for p in &found {
        if p.whole {
            what.push(format!(
                "publication {} replicates otel_traces through FOR ALL TABLES or FOR TABLES IN SCHEMA, which cannot leave a column out: publish otel_traces by name with a column list instead (create a publication FOR TABLE {} ({})) and point its subscribers at it, or use --mode mv",
                quote::ident(&p.name),
                target.traces(),
                columns.join(", ")
            ));
        } else {
            what.push(fix(target, p, &columns).join("; "));
        }
    }
    Err(Error::precondition(
        format!(
            "otel_traces is published for logical replication with every column ({}); install would add the column {STAMP}, and subscribers without it would stop applying",
            found
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "leave the column out of the publication, then run install again; run: {} (or pass --alter-publications and install does it)",
            what.join("; ")
        ),
    ))
}

/// The statements that leave the stamp out of one publication.
fn fix(target: &Target, p: &Offending, columns: &[String]) -> Vec<String> {
    let pubname = quote::ident(&p.name);
    let filter = p
        .row_filter
        .as_ref()
        .map(|f| format!(" where ({f})"))
        .unwrap_or_default();
    let table = format!("{} ({}){filter}", target.traces(), columns.join(", "));
    if p.others == 0 {
        vec![format!("alter publication {pubname} set table {table}")]
    } else {
        vec![
            format!("alter publication {pubname} drop table {}", target.traces()),
            format!("alter publication {pubname} add table {table}"),
        ]
    }
}

/// Publications that replicate otel_traces (or one of its partitions) with every column, or
/// with the stamp in their column list.
async fn offending<C: GenericClient>(client: &C, target: &Target) -> Result<Vec<Offending>> {
    let rows = client
        .query(
            "with recursive tree(oid) as (
                 select to_regclass(quote_ident($1) || '.otel_traces')::oid
                 union all select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid),
             stamp as (select attnum from pg_attribute
                       where attrelid = to_regclass(quote_ident($1) || '.otel_traces') and attname = $2 and not attisdropped)
             select p.pubname::text,
                    p.puballtables or exists (select 1 from pg_publication_namespace n join pg_class c on c.relnamespace = n.pnnspid
                                              join tree t on t.oid = c.oid where n.pnpubid = p.oid),
                    (select count(*) from pg_publication_rel r where r.prpubid = p.oid and r.prrelid not in (select oid from tree)),
                    (select pg_get_expr(r.prqual, r.prrelid) from pg_publication_rel r
                     where r.prpubid = p.oid and r.prrelid = (select oid from tree limit 1))
             from pg_publication p
             where p.puballtables
                or exists (select 1 from pg_publication_namespace n join pg_class c on c.relnamespace = n.pnnspid
                           join tree t on t.oid = c.oid where n.pnpubid = p.oid)
                or exists (select 1 from pg_publication_rel r join tree t on t.oid = r.prrelid
                           where r.prpubid = p.oid
                             and (r.prattrs is null or (select attnum from stamp) = any(r.prattrs::int2[])))
             order by 1",
            &[&target.schema, &STAMP],
        )
        .await
        .ctx("looking for publications of otel_traces")?;
    Ok(rows
        .iter()
        .map(|r| Offending {
            name: r.get(0),
            whole: r.get(1),
            others: r.get(2),
            row_filter: r.get(3),
        })
        .collect())
}

/// Every column of otel_traces but the stamp, quoted, in order.
async fn columns_without_stamp<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<Vec<String>> {
    Ok(client
        .query(
            "select attname::text from pg_attribute
             where attrelid = to_regclass(quote_ident($1) || '.otel_traces') and attnum > 0 and not attisdropped and attname <> $2
             order by attnum",
            &[&target.schema, &STAMP],
        )
        .await
        .ctx("reading the columns of otel_traces")?
        .iter()
        .map(|r| quote::ident(&r.get::<_, String>(0)))
        .collect())
}

/// Publications that would replicate the stamp now (for `status`): their names.
pub async fn replicating_stamp<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<Vec<String>> {
    Ok(offending(client, target)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect())
}
