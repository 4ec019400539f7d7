//! Relations under the name `otel_trace_summaries` that trace-summarizer did not create: the
//! seed's materialized view, upstream's table (migration 20260210120000, upserted by
//! `RefreshTraceSummariesWorker`), or anything else. Install refuses to replace them unless
//! told to (`--adopt`); with `--adopt` it records how to recreate the old relation, so the
//! takeover can be rolled back, and says what it changed.

use crate::db::source::{SummaryKind, Target};
use crate::error::{DbContext, Error, Result};
use tokio_postgres::GenericClient;

/// What an adopted relation was.
#[derive(Debug, Clone)]
pub struct Adopted {
    kind: &'static str,
    rows: i64,
    grants: Vec<String>,
    has_comment: bool,
    upstream_table: bool,
    /// SQL that recreates the old relation (empty, without data) with its indexes and grants.
    ddl: String,
}

fn kind_word(kind: SummaryKind) -> &'static str {
    match kind {
        SummaryKind::MaterializedView => "materialized view",
        SummaryKind::Table => "table",
        _ => "relation",
    }
}

/// Upstream's table has a `refreshed_at` column besides the contract's 14.
async fn looks_like_upstream_table<C: GenericClient>(client: &C, target: &Target) -> Result<bool> {
    Ok(client
        .query_one(
            "select exists (select 1 from pg_attribute
                             where attrelid = to_regclass(quote_ident($1) || '.otel_trace_summaries')
                               and attname = 'refreshed_at' and not attisdropped)",
            &[&target.schema],
        )
        .await
        .ctx("looking at otel_trace_summaries")?
        .get(0))
}

/// The error install gives for a relation it did not create.
pub async fn refusal<C: GenericClient>(
    client: &C,
    target: &Target,
    kind: SummaryKind,
) -> Result<Error> {
    let what = if kind == SummaryKind::Table && looks_like_upstream_table(client, target).await? {
        " (it looks like upstream's table, upserted by RefreshTraceSummariesWorker)".to_string()
    } else if kind == SummaryKind::MaterializedView {
        " (a materialized view, like the seed's)".to_string()
    } else {
        String::new()
    };
    Ok(Error::precondition(
        format!(
            "{} is a {} that trace-summarizer did not create{what}; install never replaces a relation it did not create",
            target.summaries(),
            kind_word(kind)
        ),
        "to take it over, run install again with --adopt: it keeps the grants and the comment, swaps the new relation in without blocking readers, and prints how to roll back. Stop whatever writes the old relation first (upstream: the TRACE_SUMMARIES_REFRESH_CRON schedule of RefreshTraceSummariesWorker; the seed: its pg_cron refresh job, which --adopt unschedules)",
    ))
}

/// Describes the relation about to be adopted, with the SQL that recreates it.
pub async fn describe<C: GenericClient>(
    client: &C,
    target: &Target,
    kind: SummaryKind,
) -> Result<Adopted> {
    let rel = target.summaries();
    let rows: i64 = client
        .query_one(
            "select greatest(reltuples, 0)::bigint from pg_class where oid = $1::text::regclass",
            &[&rel],
        )
        .await
        .ctx("sizing otel_trace_summaries")?
        .get(0);
    let grants: Vec<String> = client
        .query(
            "select format('grant %s on %s to %s;', a.privilege_type, $1::text,
                           case when a.grantee = 0 then 'public' else a.grantee::regrole::text end)
             from pg_class c, aclexplode(c.relacl) a
             where c.oid = $1::text::regclass and a.grantee <> c.relowner",
            &[&rel],
        )
        .await
        .ctx("reading grants")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let body: String = match kind {
        SummaryKind::MaterializedView => client
            .query_one(
                "select format('create materialized view %s as %s', $1::text, pg_get_viewdef($1::text::regclass, true))",
                &[&rel],
            )
            .await
            .ctx("reading the view's definition")?
            .get(0),
        SummaryKind::Table => client
            .query_one(
                "select format('create table %s (%s);', $1::text,
                   string_agg(format('%I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                     case when a.attnotnull then ' not null' else '' end,
                                     coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')), ', ' order by a.attnum))
                 from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                 where a.attrelid = $1::text::regclass and a.attnum > 0 and not a.attisdropped",
                &[&rel],
            )
            .await
            .ctx("reading the table's columns")?
            .get(0),
        _ => client
            .query_one(
                "select format('create view %s as %s', $1::text, pg_get_viewdef($1::text::regclass, true))",
                &[&rel],
            )
            .await
            .ctx("reading the view's definition")?
            .get(0),
    };
    let constraints: Vec<String> = client
        .query(
            "select format('alter table %s add constraint %I %s;', $1::text, conname, pg_get_constraintdef(oid))
             from pg_constraint where conrelid = $1::text::regclass order by conname",
            &[&rel],
        )
        .await
        .ctx("reading constraints")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let indexes: Vec<String> = client
        .query(
            "select pg_get_indexdef(i.indexrelid) || ';' from pg_index i
             where i.indrelid = $1::text::regclass
               and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid)
             order by i.indexrelid",
            &[&rel],
        )
        .await
        .ctx("reading indexes")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let comment: Option<String> = client
        .query_opt(
            "select format('comment on %s %s is %L;', $2::text, $1::text, obj_description($1::text::regclass, 'pg_class'))
             where obj_description($1::text::regclass, 'pg_class') is not null",
            &[&rel, &match kind {
                SummaryKind::MaterializedView => "materialized view",
                SummaryKind::Table => "table",
                _ => "view",
            }],
        )
        .await
        .ctx("reading the comment")?
        .map(|r| r.get(0));
    let mut ddl = vec![body];
    ddl.extend(constraints);
    ddl.extend(indexes);
    ddl.extend(grants.iter().cloned());
    ddl.extend(comment.iter().cloned());
    Ok(Adopted {
        kind: kind_word(kind),
        rows,
        grants,
        has_comment: comment.is_some(),
        upstream_table: kind == SummaryKind::Table
            && looks_like_upstream_table(client, target).await?,
        ddl: ddl.join("\n"),
    })
}

impl Adopted {
    /// What the state keeps (shown again by uninstall).
    pub fn record(&self) -> String {
        self.ddl.clone()
    }

    /// What install prints.
    pub fn report_lines(&self, target: &Target) -> Vec<String> {
        let mut lines = vec![format!(
            "adopted {} {} (about {} rows): replaced it with trace-summarizer's relation; kept {} grant(s){}",
            self.kind,
            target.summaries(),
            self.rows,
            self.grants.len(),
            if self.has_comment { " and its comment" } else { "" }
        )];
        if self.upstream_table {
            lines.push("stop the job that wrote the old table now: upstream's RefreshTraceSummariesWorker (the TRACE_SUMMARIES_REFRESH_CRON schedule); its upserts fail against the new table".into());
        } else {
            lines.push("stop whatever refreshed or wrote the old relation (a pg_cron job that refreshed it was unscheduled)".into());
        }
        lines.push(format!(
            "to roll back: `trace-summarizer --schema {} uninstall`, then run this SQL (also kept in trace_summarizer.state.adopted and printed again by uninstall) and restart the old job:\n{}",
            target.schema, self.ddl
        ));
        lines
    }
}
