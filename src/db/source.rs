//! The target schema and the source table: which schema we work in, and whether `otel_traces`
//! there has what the contract needs. Failures are preconditions with a fix in the hint.

use crate::db::quote;
use crate::error::{DbContext, Error, Result};
use tokio_postgres::GenericClient;

pub const SUMMARIES: &str = "otel_trace_summaries";
pub const TRACES: &str = "otel_traces";

/// The schema we work in, with the quoted names of the relations in it.
#[derive(Debug, Clone)]
pub struct Target {
    pub schema: String,
}

impl Target {
    pub fn traces(&self) -> String {
        quote::qualified(&self.schema, TRACES)
    }
    pub fn summaries(&self) -> String {
        quote::qualified(&self.schema, SUMMARIES)
    }
    /// A relation in the target schema, quoted.
    pub fn rel(&self, name: &str) -> String {
        quote::qualified(&self.schema, name)
    }
}

/// What currently stands under the name `otel_trace_summaries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryKind {
    Absent,
    MaterializedView,
    Table,
    Other,
}

/// Resolves `--schema`, or the first existing schema on the search_path.
pub async fn resolve<C: GenericClient>(client: &C, requested: Option<&str>) -> Result<Target> {
    match requested {
        Some(schema) => {
            let found = client
                .query_opt("select 1 from pg_namespace where nspname = $1", &[&schema])
                .await
                .ctx("looking up the schema")?;
            if found.is_none() {
                return Err(Error::precondition(
                    format!("schema {schema:?} does not exist"),
                    "check --schema (TRACE_SUMMARIZER_SCHEMA); it names the schema that holds otel_traces",
                ));
            }
            Ok(Target {
                schema: schema.to_string(),
            })
        }
        None => {
            let row = client
                .query_one("select (current_schemas(false))[1]", &[])
                .await
                .ctx("reading search_path")?;
            let schema: Option<String> = row.get(0);
            let schema = schema.ok_or_else(|| {
                Error::precondition(
                    "no schema on the search_path exists",
                    "pass --schema (the schema that holds otel_traces) or fix search_path",
                )
            })?;
            Ok(Target { schema })
        }
    }
}

/// Columns the definition reads, with their types.
const REQUIRED_COLUMNS: &[(&str, &str)] = &[
    ("timestamp", "timestamp with time zone"),
    ("trace_id", "text"),
    ("span_id", "text"),
    ("parent_span_id", "text"),
    ("name", "text"),
    ("kind", "integer"),
    ("start_time_unix_nano", "bigint"),
    ("end_time_unix_nano", "bigint"),
    ("service_name", "text"),
    ("status_code", "integer"),
    ("status_message", "text"),
];

/// Checks that `otel_traces` exists with the contract's columns and that we may read it.
pub async fn check_traces<C: GenericClient>(client: &C, target: &Target) -> Result<()> {
    let exists = client
        .query_opt(
            "select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p', 'v', 'f')",
            &[&target.schema, &TRACES],
        )
        .await
        .ctx("looking up otel_traces")?;
    if exists.is_none() {
        return Err(Error::precondition(
            format!("table otel_traces does not exist in schema {:?}", target.schema),
            "pass --schema naming the schema that holds otel_traces (upstream uses \"platform\"), or create the table first",
        ));
    }
    let rows = client
        .query(
            "select a.attname::text, format_type(a.atttypid, a.atttypmod)
             from pg_attribute a
             where a.attrelid = to_regclass(quote_ident($1) || '.otel_traces') and a.attnum > 0 and not a.attisdropped",
            &[&target.schema],
        )
        .await
        .ctx("reading the columns of otel_traces")?;
    let have: std::collections::HashMap<String, String> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    for &(name, ty) in REQUIRED_COLUMNS {
        match have.get(name) {
            None => {
                return Err(Error::precondition(
                    format!(
                        "column otel_traces.{name} is missing in schema {:?}",
                        target.schema
                    ),
                    format!(
                        "add it: alter table {} add column {} {ty}",
                        target.traces(),
                        quote::ident(name)
                    ),
                ))
            }
            Some(actual) if actual != ty => {
                return Err(Error::precondition(
                    format!("column otel_traces.{name} has type {actual}, expected {ty}"),
                    "the contract (CONTRACT.md) fixes the source column types",
                ))
            }
            _ => {}
        }
    }
    let can_read: bool = client
        .query_one(
            "select has_table_privilege(to_regclass(quote_ident($1) || '.otel_traces'), 'select')",
            &[&target.schema],
        )
        .await
        .ctx("checking privileges on otel_traces")?
        .get(0);
    if !can_read {
        return Err(Error::precondition(
            format!("this role may not read {}", target.traces()),
            format!(
                "grant select on {} to current_user's role, e.g. grant select on {} to <role>",
                target.traces(),
                target.traces()
            ),
        ));
    }
    Ok(())
}

/// What stands under the name otel_trace_summaries in the target schema.
pub async fn summary_kind<C: GenericClient>(client: &C, target: &Target) -> Result<SummaryKind> {
    Ok(summary_relation(client, target).await?.0)
}

/// What stands under the name otel_trace_summaries, with its oid (0 when absent).
pub async fn summary_relation<C: GenericClient>(
    client: &C,
    target: &Target,
) -> Result<(SummaryKind, u32)> {
    let row = client
        .query_opt(
            "select c.relkind::text, c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = $1 and c.relname = $2",
            &[&target.schema, &SUMMARIES],
        )
        .await
        .ctx("looking up otel_trace_summaries")?;
    Ok(match row {
        None => (SummaryKind::Absent, 0),
        Some(r) => {
            let kind = match r.get::<_, String>(0).as_str() {
                "m" => SummaryKind::MaterializedView,
                "r" => SummaryKind::Table,
                _ => SummaryKind::Other,
            };
            (kind, r.get(1))
        }
    })
}

/// The oid of otel_traces (it changes when the database is restored elsewhere).
pub async fn traces_oid<C: GenericClient>(client: &C, target: &Target) -> Result<u32> {
    let oid: Option<u32> = client
        .query_one(
            "select to_regclass(quote_ident($1) || '.otel_traces')::oid",
            &[&target.schema],
        )
        .await
        .ctx("looking up otel_traces")?
        .get(0);
    oid.ok_or_else(|| {
        Error::precondition(
            format!(
                "table otel_traces does not exist in schema {:?}",
                target.schema
            ),
            "pass --schema naming the schema that holds otel_traces",
        )
    })
}

/// How otel_traces is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A plain table.
    Plain,
    /// Declarative partitions (pg_partman or by hand), possibly several levels deep.
    Partitioned,
    /// A TimescaleDB hypertable (chunks are inheritance children).
    Hypertable,
}

/// The shape of otel_traces.
pub async fn shape<C: GenericClient>(client: &C, target: &Target) -> Result<Shape> {
    if is_hypertable(client, target).await? {
        return Ok(Shape::Hypertable);
    }
    let kind: String = client
        .query_one(
            "select relkind::text from pg_class where oid = to_regclass(quote_ident($1) || '.otel_traces')",
            &[&target.schema],
        )
        .await
        .ctx("looking up otel_traces")?
        .get(0);
    Ok(if kind == "p" {
        Shape::Partitioned
    } else {
        Shape::Plain
    })
}

/// Whether otel_traces is a TimescaleDB hypertable (checked only where TimescaleDB exists).
pub async fn is_hypertable<C: GenericClient>(client: &C, target: &Target) -> Result<bool> {
    let has_view: bool = client
        .query_one(
            "select to_regclass('timescaledb_information.hypertables') is not null",
            &[],
        )
        .await
        .ctx("looking for TimescaleDB")?
        .get(0);
    if !has_view {
        return Ok(false);
    }
    let row = client
        .query_one(
            "select exists (select 1 from timescaledb_information.hypertables
                            where hypertable_schema = $1 and hypertable_name = $2)",
            &[&target.schema, &TRACES],
        )
        .await
        .ctx("checking whether otel_traces is a hypertable")?;
    Ok(row.get(0))
}
