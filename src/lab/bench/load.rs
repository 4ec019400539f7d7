//! Synthetic data for the bench: the initial load of N spans spread over the 7-day window
//! (generated on a blocking thread in chunks and streamed through binary COPY, so 10M spans
//! never sit in memory at once), copies of it in other schemas (a plain table for the ingest
//! comparison, a never-analyzed one), and batches of new spans stamped "now" for live ingest.

use super::env::join_error;
use super::stats::{count, say};
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::lab::spangen::{self, Span, SpanGen};
use chrono::{Duration as ChronoDuration, Utc};
use std::time::Instant;
use tokio_postgres::Client;

/// Spans generated and copied per chunk.
pub const CHUNK: usize = 200_000;

/// The secondary indexes of `sql/otel_traces.sql`, dropped during the bulk load and rebuilt by
/// running `create_source` again (its statements are `if not exists`).
const SECONDARY_INDEXES: [&str; 3] = [
    "otel_traces_timestamp_idx",
    "otel_traces_trace_id_idx",
    "otel_traces_service_timestamp_idx",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub spans: u64,
    pub copy_s: f64,
    pub index_s: f64,
    pub vacuum_s: f64,
}

/// The columns of CONTRACT.md's otel_traces (copies name them: the product adds one of its own).
const SOURCE_COLUMNS: &str = "\"timestamp\", trace_id, span_id, parent_span_id, name, kind, \
     start_time_unix_nano, end_time_unix_nano, service_name, service_version, service_instance, \
     scope_name, scope_version, status_code, status_message, attributes, resource_attributes, \
     events, links, created_at";

/// Creates otel_traces and loads about `n` spans with history-like `created_at` values, traces
/// of `mean_spans` spans on average.
pub async fn load(
    client: &Client,
    target: &Target,
    n: u64,
    seed: u64,
    mean_spans: f64,
) -> Result<Loaded> {
    spangen::create_source(client, target).await?;
    for index in SECONDARY_INDEXES {
        client
            .batch_execute(&format!("drop index if exists {}", target.rel(index)))
            .await
            .ctx("dropping indexes for the bulk load")?;
    }
    let now = Utc::now();
    let from = now - ChronoDuration::days(7);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Span>>(2);
    let producer = tokio::task::spawn_blocking(move || {
        let mut gen = SpanGen::with_mean_spans(seed, mean_spans);
        let mut made = 0u64;
        while made < n {
            let want = (n - made).min(CHUNK as u64) as usize;
            let chunk = gen.history(want, from, now, now);
            made += chunk.len() as u64;
            if tx.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut loaded = Loaded::default();
    let mut last_report = Instant::now();
    while let Some(chunk) = rx.recv().await {
        loaded.spans += spangen::copy_spans(client, target, &chunk).await?;
        if last_report.elapsed().as_secs() >= 10 || loaded.spans >= n {
            last_report = Instant::now();
            let rate = loaded.spans as f64 / started.elapsed().as_secs_f64().max(1e-3);
            say(format!(
                "  loaded {} of {} spans ({} spans/s)",
                count(loaded.spans),
                count(n),
                count(rate as u64)
            ));
        }
    }
    producer.await.map_err(join_error)?;
    loaded.copy_s = started.elapsed().as_secs_f64();

    say("  building the indexes of otel_traces");
    let t = Instant::now();
    spangen::create_source(client, target).await?;
    loaded.index_s = t.elapsed().as_secs_f64();

    say("  vacuum (analyze) otel_traces, then checkpoint");
    let t = Instant::now();
    client
        .batch_execute(&format!("vacuum (analyze) {}", target.traces()))
        .await
        .ctx("vacuuming otel_traces")?;
    loaded.vacuum_s = t.elapsed().as_secs_f64();
    // Start the measurements without a pending checkpoint of the load. Needs superuser or
    // pg_checkpoint; without it the measurements only get noisier.
    if let Err(e) = client.batch_execute("checkpoint").await {
        say(format!("  (checkpoint skipped: {e})"));
    }
    Ok(loaded)
}

/// `n` new spans of new traces starting now, with `created_at` left to the column default.
/// The last trace may be cut short so the count is exact.
pub fn fresh_spans(gen: &mut SpanGen, n: usize) -> Vec<Span> {
    let mut out = Vec::with_capacity(n);
    let now = Utc::now();
    while out.len() < n {
        let mut trace = gen.trace(now, 0);
        trace.truncate(n - out.len());
        out.extend(trace);
    }
    out
}

/// Copies every span of `from` into `to` in one statement.
async fn copy_spans(client: &Client, from: &Target, to: &Target) -> Result<()> {
    client
        .batch_execute(&format!(
            "insert into {} ({SOURCE_COLUMNS}) select {SOURCE_COLUMNS} from {}",
            to.traces(),
            from.traces()
        ))
        .await
        .ctx("copying the spans")
}

/// A plain copy of `from`'s spans in `to` (a schema it creates): the same table, the same
/// indexes built after the copy, then VACUUM ANALYZE, and nothing of trace-summarizer's.
/// Returns seconds.
pub async fn plain_copy(client: &Client, from: &Target, to: &Target) -> Result<f64> {
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "create schema {}",
            crate::db::quote::ident(&to.schema)
        ))
        .await
        .ctx("creating the schema of the plain copy")?;
    spangen::create_source(client, to).await?;
    for index in SECONDARY_INDEXES {
        client
            .batch_execute(&format!("drop index if exists {}", to.rel(index)))
            .await
            .ctx("dropping indexes for the bulk copy")?;
    }
    copy_spans(client, from, to).await?;
    spangen::create_source(client, to).await?;
    client
        .batch_execute(&format!("vacuum (analyze) {}", to.traces()))
        .await
        .ctx("vacuuming the copy")?;
    Ok(t.elapsed().as_secs_f64())
}

/// What the never-analyzed copy looks like to the planner.
#[derive(Debug, Clone, Default)]
pub struct Statistics {
    /// pg_class.reltuples: -1 means never vacuumed or analyzed.
    pub reltuples: f64,
    /// Rows of pg_statistic about the table.
    pub stat_rows: i64,
    pub autovacuum_enabled: bool,
    /// pg_stat_user_tables: last_analyze and last_autoanalyze are both null.
    pub never_analyzed_per_stats: bool,
}

impl Statistics {
    /// The planner has nothing about the table: what every new partition or chunk looks like.
    pub fn never_analyzed(&self) -> bool {
        self.reltuples < 0.0 && self.stat_rows == 0 && self.never_analyzed_per_stats
    }
}

pub async fn statistics(client: &Client, target: &Target) -> Result<Statistics> {
    let row = client
        .query_one(
            "select c.reltuples::float8,
                    (select count(*) from pg_statistic s where s.starelid = c.oid),
                    not exists (select 1 from unnest(c.reloptions) o
                                where lower(o) in ('autovacuum_enabled=off', 'autovacuum_enabled=false')),
                    coalesce((select last_analyze is null and last_autoanalyze is null
                              from pg_stat_user_tables u where u.relid = c.oid), true)
             from pg_class c where c.oid = $1::text::regclass",
            &[&target.traces()],
        )
        .await
        .ctx("reading the statistics of otel_traces")?;
    Ok(Statistics {
        reltuples: row.get(0),
        stat_rows: row.get(1),
        autovacuum_enabled: row.get(2),
        never_analyzed_per_stats: row.get(3),
    })
}

/// The time each part of the never-analyzed copy took.
#[derive(Debug, Clone, Default)]
pub struct NeverAnalyzedLoad {
    /// Inserting the spans into the table with its indexes in place.
    pub insert_s: f64,
    /// The product's full refresh absorbing them.
    pub rebuild_s: f64,
    /// Right after loading.
    pub stats: Statistics,
}

/// The same spans as `from`, in `to` (a schema it creates), as a table that was never
/// analyzed: created with its indexes and with autovacuum off, the product installed while it
/// is empty (an index build on a non-empty table would set reltuples), the spans inserted in
/// one statement, absorbed by a full refresh, and the table's activity counters reset.
/// Nothing runs ANALYZE. `client` must be a session of its own (the scratch tables follow the
/// target).
pub async fn never_analyzed_copy(
    client: &mut Client,
    from: &Target,
    to: &Target,
    window: &crate::definition::Window,
) -> Result<NeverAnalyzedLoad> {
    let mut out = NeverAnalyzedLoad::default();
    client
        .batch_execute(&format!(
            "create schema {}",
            crate::db::quote::ident(&to.schema)
        ))
        .await
        .ctx("creating the schema of the never-analyzed copy")?;
    spangen::create_source(&*client, to).await?;
    client
        .batch_execute(&format!(
            "alter table {} set (autovacuum_enabled = off, toast.autovacuum_enabled = off)",
            to.traces()
        ))
        .await
        .ctx("turning autovacuum off on the copy")?;
    super::refresh::install_incremental(client, to, window).await?;
    let t = Instant::now();
    copy_spans(client, from, to).await?;
    out.insert_s = t.elapsed().as_secs_f64();
    out.rebuild_s = super::refresh::rebuild(client, to).await?;
    client
        .execute(
            "select pg_stat_reset_single_table_counters($1::text::regclass)",
            &[&to.traces()],
        )
        .await
        .ctx("resetting the copy's activity counters")?;
    out.stats = statistics(client, to).await?;
    Ok(out)
}
