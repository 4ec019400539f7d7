//! The connections of a parallel full refresh, and the ranges of trace_ids they compare.
//!
//! The refresh's own session (the leader) holds the work lock and the one REPEATABLE READ
//! transaction that writes the summaries and stores the position. Helper sessions share its
//! snapshot: the leader exports it (`pg_export_snapshot()`), each helper begins a REPEATABLE
//! READ transaction with `SET TRANSACTION SNAPSHOT`, so every session sees exactly the rows the
//! leader sees, and all compute the window from the edge the leader read (not from their own
//! `now()`). Helpers write only their own temporary tables, which `relay` streams into the
//! leader's transaction; then they roll back.
//!
//! The trace_ids are cut into ranges at quantiles of a small sample of `otel_traces`
//! (`TABLESAMPLE SYSTEM`, about `SAMPLE_PAGES` pages): a range is read through the trace_id
//! index in order, as the whole window is, so each session reads only its part. Any boundaries
//! are correct (the ranges cover every trace_id exactly once); the sample only balances them.
//!
//! If any session fails (an error, its statement_timeout, its backend terminated), the
//! statements still running on the others are cancelled on the server and the first error is
//! returned: the leader then rolls back.

use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, Client, GenericClient};

/// The most connections `--jobs` accepts.
pub const MAX_JOBS: u32 = 64;

/// About how many pages of otel_traces the sample for the slice boundaries reads.
const SAMPLE_PAGES: f64 = 2000.0;

/// The application_name of helper sessions.
pub const HELPER_NAME: &str = "trace-summarizer rebuild helper";

/// A range of trace_ids, from the first bound (inclusive) to the second (exclusive); `None`
/// is open.
pub type Range = (Option<String>, Option<String>);

/// How many connections a full refresh aggregates on (the leader's own included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// The server's `max_parallel_workers_per_gather` + 1, capped by its free connections
    /// (never below 1).
    Auto,
    /// This many (fewer if helper sessions cannot connect).
    Exactly(u32),
}

impl Jobs {
    /// Parses `auto` or a number of connections from 1 to `MAX_JOBS`, for the flag `flag`.
    pub fn parse(flag: &str, value: &str) -> Result<Jobs> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("auto") {
            return Ok(Jobs::Auto);
        }
        match v.parse::<u32>() {
            Ok(n) if (1..=MAX_JOBS).contains(&n) => Ok(Jobs::Exactly(n)),
            _ => Err(Error::Config(format!(
                "invalid {flag} {value:?}: give a number of connections from 1 to {MAX_JOBS}, or auto"
            ))),
        }
    }
}

impl std::fmt::Display for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Jobs::Auto => f.write_str("auto"),
            Jobs::Exactly(n) => write!(f, "{n}"),
        }
    }
}

/// Where helper sessions connect (the leader's own settings) and how many connections to use.
#[derive(Debug, Clone)]
pub struct Parallel {
    pub connect: ConnectOptions,
    pub jobs: Jobs,
}

/// `Jobs::Auto` on this server: `max_parallel_workers_per_gather` + 1, at most the connections
/// still free (max_connections less the client sessions and the reserved slots, and the
/// role's and the database's connection limits), and at least 1.
pub async fn auto_jobs<C: GenericClient>(client: &C) -> Result<u32> {
    let row = client
        .query_one(
            "select current_setting('max_parallel_workers_per_gather')::int + 1,
                    least(
                      current_setting('max_connections')::int
                        - current_setting('superuser_reserved_connections')::int
                        - coalesce(current_setting('reserved_connections', true)::int, 0)
                        - (select count(*) from pg_stat_activity where backend_type = 'client backend')::int,
                      (select case when r.rolconnlimit < 0 then null
                                   else r.rolconnlimit - (select count(*) from pg_stat_activity a
                                                          where a.usename = r.rolname and a.backend_type = 'client backend')::int end
                       from pg_roles r where r.rolname = current_user),
                      (select case when d.datconnlimit < 0 then null
                                   else d.datconnlimit - (select count(*) from pg_stat_activity a
                                                          where a.datname = d.datname and a.backend_type = 'client backend')::int end
                       from pg_database d where d.datname = current_database()))",
            &[],
        )
        .await
        .ctx("reading the server's parallelism and free connections")?;
    let wanted: i32 = row.get(0);
    let free: i32 = row.get(1);
    Ok(wanted.min(free).clamp(1, MAX_JOBS as i32) as u32)
}

/// The number of connections `jobs` asks for on this server.
pub async fn resolve<C: GenericClient>(client: &C, jobs: Jobs) -> Result<u32> {
    match jobs {
        Jobs::Exactly(n) => Ok(n),
        Jobs::Auto => auto_jobs(client).await,
    }
}

/// A helper session.
pub struct Helper {
    pub client: Client,
    token: CancelToken,
}

/// Opens up to `n` helper sessions, each configured with `setup` (session-level SETs). A helper
/// that cannot connect is left out with a warning: the refresh runs on fewer connections.
pub async fn open_helpers(opts: &ConnectOptions, n: u32, setup: &str) -> Vec<Helper> {
    let opts = opts.with_application_name(HELPER_NAME);
    let attempts = (0..n).map(|_| async {
        let client = opts.connect().await?;
        client
            .batch_execute(setup)
            .await
            .ctx("configuring a helper session")?;
        let token = client.cancel_token();
        Ok::<_, Error>(Helper { client, token })
    });
    let mut helpers = Vec::new();
    for r in futures_util::future::join_all(attempts).await {
        match r {
            Ok(h) => helpers.push(h),
            Err(e) => tracing::warn!(
                error = %e.chain(),
                "a helper session of the full refresh could not connect; continuing with fewer connections"
            ),
        }
    }
    helpers
}

/// Boundaries that cut the trace_ids into at most `n` ranges of about equal size: quantiles of a
/// sample of otel_traces (distinct, in the column's order). Fewer when the sample is small.
pub async fn boundaries<C: GenericClient>(
    client: &C,
    target: &Target,
    n: u32,
) -> Result<Vec<String>> {
    if n <= 1 {
        return Ok(Vec::new());
    }
    let pages: f64 = client
        .query_one(
            "with recursive tree(oid) as (
                 select to_regclass(quote_ident($1) || '.otel_traces')::oid
                 union all select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid)
             select (coalesce(sum(pg_relation_size(t.oid)), 0) / current_setting('block_size')::bigint)::float8
             from tree t join pg_class c on c.oid = t.oid where c.relkind in ('r', 'm', 't')",
            &[&target.schema],
        )
        .await
        .ctx("measuring otel_traces")?
        .get(0);
    let percent = if pages <= SAMPLE_PAGES {
        100.0
    } else {
        100.0 * SAMPLE_PAGES / pages
    };
    let fractions: Vec<f64> = (1..n).map(|k| k as f64 / n as f64).collect();
    let bounds: Option<Vec<Option<String>>> = client
        .query_one(
            &format!(
                "select percentile_disc($1::float8[]) within group (order by trace_id)
                 from (select trace_id from {} tablesample system ($2::real) where trace_id is not null) s",
                target.traces()
            ),
            &[&fractions, &(percent as f32)],
        )
        .await
        .ctx("sampling trace_ids for the slices of the refresh")?
        .get(0);
    let mut out: Vec<String> = Vec::new();
    for b in bounds.unwrap_or_default().into_iter().flatten() {
        // Sorted already; equal neighbours would make an empty range.
        if out.last() != Some(&b) {
            out.push(b);
        }
    }
    Ok(out)
}

/// The ranges the boundaries make: `[None, b1)`, `[b1, b2)`, ..., `[bn, None)`.
pub fn ranges(bounds: &[String]) -> Vec<Range> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for b in bounds {
        out.push((lo.take(), Some(b.clone())));
        lo = Some(b.clone());
    }
    out.push((lo, None));
    out
}

/// Starts each helper's transaction on the leader's exported snapshot.
pub async fn import_snapshot(helpers: &[Helper], snapshot: &str) -> Result<()> {
    let sql = format!(
        "begin isolation level repeatable read; set transaction snapshot {}",
        crate::db::quote::literal(snapshot)
    );
    let all = helpers.iter().map(|h| h.client.batch_execute(&sql));
    for r in futures_util::future::join_all(all).await {
        r.ctx("importing the refresh's snapshot in a helper session")?;
    }
    Ok(())
}

/// One session's part of the window: its statement, with the window's edge as `$1` and the
/// bounds of its range of trace_ids (those it has) as the next parameters.
pub struct Slice {
    pub sql: String,
    pub edge: chrono::DateTime<chrono::Utc>,
    pub bounds: Vec<String>,
}

impl Slice {
    /// `render` gets the condition on trace_id (empty for the whole range) and returns the
    /// statement.
    pub fn new(
        edge: chrono::DateTime<chrono::Utc>,
        range: &Range,
        render: impl Fn(&str) -> String,
    ) -> Slice {
        let mut cond = String::new();
        let mut bounds = Vec::new();
        if let Some(lo) = &range.0 {
            bounds.push(lo.clone());
            cond += &format!(" and trace_id >= ${}", bounds.len() + 1);
        }
        if let Some(hi) = &range.1 {
            bounds.push(hi.clone());
            cond += &format!(" and trace_id < ${}", bounds.len() + 1);
        }
        Slice {
            sql: render(&cond),
            edge,
            bounds,
        }
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![&self.edge];
        p.extend(self.bounds.iter().map(|b| b as &(dyn ToSql + Sync)));
        p
    }
}

impl Helper {
    pub fn token(&self) -> &CancelToken {
        &self.token
    }
}

/// Runs every session's work at the same time (`tokens[k]` cancels the statement of
/// `work[k]`). The first failure cancels what still runs on the other sessions and is
/// returned; otherwise each session's result, in order.
pub async fn run_all<'a, T>(
    opts: &ConnectOptions,
    tokens: &[&CancelToken],
    work: Vec<BoxFuture<'a, Result<T>>>,
) -> Result<Vec<T>> {
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<Error>> = Mutex::new(None);
    let runs = work.into_iter().enumerate().map(|(k, w)| {
        let (failed, first) = (&failed, &first);
        async move {
            match w.await {
                Ok(v) => Some(v),
                Err(e) => {
                    if !failed.swap(true, Ordering::SeqCst) {
                        if let Ok(mut f) = first.lock() {
                            *f = Some(e);
                        }
                        for (i, t) in tokens.iter().enumerate() {
                            if i != k {
                                opts.cancel(t).await;
                            }
                        }
                    }
                    None
                }
            }
        }
    });
    let results = futures_util::future::join_all(runs).await;
    if failed.load(Ordering::SeqCst) {
        return Err(first
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_else(|| {
                Error::io(
                    "a session of the full refresh failed",
                    std::io::Error::other("no error recorded"),
                )
            }));
    }
    Ok(results.into_iter().flatten().collect())
}

/// Copies the temporary table `table` of a helper session (`who`) into the same table of the
/// refresh transaction: binary COPY, streamed through this process.
pub async fn relay(
    from: &Client,
    to: &tokio_postgres::Transaction<'_>,
    table: &str,
    who: &str,
) -> Result<u64> {
    use futures_util::{SinkExt, StreamExt};
    let what = format!("bringing {table} of {who} into the refresh");
    let out = from
        .copy_out(&format!("copy {table} to stdout (format binary)"))
        .await
        .ctx(&what)?;
    let sink = to
        .copy_in(&format!("copy {table} from stdin (format binary)"))
        .await
        .ctx(&what)?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        sink.send(chunk.ctx(&what)?).await.ctx(&what)?;
    }
    sink.as_mut().finish().await.ctx(&what)
}

/// Ends the helpers' transactions (they wrote only temporary tables).
pub async fn finish(helpers: &[Helper]) {
    let all = helpers.iter().map(|h| h.client.batch_execute("rollback"));
    for r in futures_util::future::join_all(all).await {
        if let Err(e) = r {
            tracing::debug!(error = %e, "ending a helper session's transaction");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_parse_auto_and_counts() {
        assert_eq!(Jobs::parse("--jobs", "auto").unwrap(), Jobs::Auto);
        assert_eq!(Jobs::parse("--jobs", " 2 ").unwrap(), Jobs::Exactly(2));
        for bad in ["0", "-1", "65", "two", "", "1.5"] {
            let e = Jobs::parse("--jobs", bad).unwrap_err().to_string();
            assert!(e.contains("--jobs") && e.contains("1 to 64"), "{bad}: {e}");
        }
    }

    #[test]
    fn ranges_cover_every_trace_id_once() {
        assert_eq!(ranges(&[]), vec![(None, None)]);
        let r = ranges(&["b".into(), "m".into()]);
        assert_eq!(
            r,
            vec![
                (None, Some("b".into())),
                (Some("b".into()), Some("m".into())),
                (Some("m".into()), None)
            ]
        );
    }
}
