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
    /// On a Citus worker node: the node's own shards, which its steps read and write instead of
    /// the distributed tables (`citus::shards`). None everywhere else.
    pub local: Option<std::sync::Arc<LocalShards>>,
}

/// One node's shards of otel_traces and of otel_trace_summaries (co-located: a trace's spans
/// and its summary live in the pair of shards that cover its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalShards {
    pub pairs: Vec<ShardPair>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPair {
    /// The shard of otel_traces (quoted, qualified) and its oid.
    pub traces: String,
    pub traces_oid: u32,
    /// Whether that shard is partitioned (its rows live in partitions of its own).
    pub partitioned: bool,
    /// The co-located shard of otel_trace_summaries (quoted, qualified).
    pub summaries: String,
    /// The range of Citus' hash of trace_id this pair covers.
    pub min_hash: i32,
    pub max_hash: i32,
}

/// Where a write of summaries goes: a relation, and the condition a trace must meet to belong
/// there (`{trace}` stands for the trace_id expression).
#[derive(Debug, Clone)]
pub struct SummaryShard {
    pub relation: String,
    pub condition: String,
}

impl SummaryShard {
    /// The condition for the trace_id expression `trace`.
    pub fn holds(&self, trace: &str) -> String {
        self.condition.replace("{trace}", trace)
    }
}

impl Target {
    pub fn new(schema: &str) -> Target {
        Target {
            schema: schema.to_string(),
            local: None,
        }
    }

    /// The spans to read: otel_traces, or on a Citus node the union of its local shards (with
    /// each row's `tableoid`), as a FROM item named otel_traces.
    pub fn traces(&self) -> String {
        match &self.local {
            None => quote::qualified(&self.schema, TRACES),
            Some(local) => {
                let branches: Vec<String> = local
                    .pairs
                    .iter()
                    .map(|p| {
                        if p.partitioned {
                            format!("select *, tableoid from {}", p.traces)
                        } else {
                            format!(
                                "select *, {}::oid as tableoid from {}",
                                p.traces_oid, p.traces
                            )
                        }
                    })
                    .collect();
                if branches.is_empty() {
                    format!(
                        "(select *, tableoid from {} where false) as {TRACES}",
                        quote::qualified(&self.schema, TRACES)
                    )
                } else {
                    format!("({}) as {TRACES}", branches.join(" union all "))
                }
            }
        }
    }

    /// Where the relations holding otel_traces' rows hang from: otel_traces itself, or a Citus
    /// node's local shards of it.
    pub fn roots(&self, source_oid: u32) -> Vec<u32> {
        match &self.local {
            None => vec![source_oid],
            Some(local) => local.pairs.iter().map(|p| p.traces_oid).collect(),
        }
    }

    /// otel_trace_summaries as the readers see it (the distributed table on a Citus
    /// coordinator).
    pub fn summaries(&self) -> String {
        quote::qualified(&self.schema, SUMMARIES)
    }

    /// The summaries to read in a step: otel_trace_summaries, or on a Citus node the union of
    /// its local shards; the caller gives it an alias.
    pub fn summaries_read(&self) -> String {
        match &self.local {
            None => self.summaries(),
            Some(local) if local.pairs.is_empty() => {
                format!("(select * from {} where false)", self.summaries())
            }
            Some(local) => format!(
                "({})",
                local
                    .pairs
                    .iter()
                    .map(|p| format!("select * from {}", p.summaries))
                    .collect::<Vec<_>>()
                    .join(" union all ")
            ),
        }
    }

    /// Where a step writes summaries: otel_trace_summaries, or each local shard of it for the
    /// traces whose hash it covers.
    pub fn summary_writes(&self) -> Vec<SummaryShard> {
        match &self.local {
            None => vec![SummaryShard {
                relation: self.summaries(),
                condition: "true".into(),
            }],
            Some(local) => local
                .pairs
                .iter()
                .map(|p| SummaryShard {
                    relation: p.summaries.clone(),
                    condition: format!(
                        "worker_hash({{trace}}) between {} and {}",
                        p.min_hash, p.max_hash
                    ),
                })
                .collect(),
        }
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
            Ok(Target::new(schema))
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
            Ok(Target::new(&schema))
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
