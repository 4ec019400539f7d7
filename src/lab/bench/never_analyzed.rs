//! A step whose cost must not depend on what the planner knows: the never-analyzed copy of
//! otel_traces (schema `never_analyzed`: autovacuum off, the product installed while it was
//! empty, the spans inserted in one statement and absorbed by a full refresh, nothing ever
//! ANALYZEd), its statistics as the planner sees them, and a step absorbing 10k new spans on
//! it against the same step on the analyzed table, interleaved.

use super::load;
use super::refresh;
use super::spans::fresh_spans;
use super::stats::{count, say, secs};
use super::steps::{absorb, cycle_once};
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::lab::spangen::{self, SpanGen};
use std::time::Instant;
use tokio_postgres::Client;

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
pub async fn copy(
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
    refresh::install_incremental(client, to, window).await?;
    let t = Instant::now();
    load::copy_spans(client, from, to).await?;
    out.insert_s = t.elapsed().as_secs_f64();
    out.rebuild_s = refresh::rebuild_alone(client, to).await?;
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

/// The 10k-span step on both tables.
#[derive(Debug, Clone, Default)]
pub struct NeverAnalyzedRuns {
    pub spans: usize,
    pub analyzed: Vec<f64>,
    pub never_analyzed: Vec<f64>,
    /// The copy's statistics before the first and after the last step.
    pub before: Statistics,
    pub after: Statistics,
}

/// `pairs` times, in alternating order: 10k new spans into each table, one step on each.
/// `analyzed` and `never` are sessions of their own (one per installation).
pub async fn measure(
    analyzed: (&mut Client, &Target),
    never: (&mut Client, &Target),
    gen: &mut SpanGen,
    spans: usize,
    pairs: usize,
) -> Result<NeverAnalyzedRuns> {
    let (a_client, a_target) = analyzed;
    let (n_client, n_target) = never;
    let mut out = NeverAnalyzedRuns {
        spans,
        before: statistics(n_client, n_target).await?,
        ..Default::default()
    };
    // Unrecorded warm-up on each.
    cycle_once(a_client, a_target).await?;
    cycle_once(n_client, n_target).await?;
    absorb(a_client, a_target, &fresh_spans(gen, 1_000)).await?;
    absorb(n_client, n_target, &fresh_spans(gen, 1_000)).await?;
    for i in 0..pairs {
        for never_first in [i % 2 == 1, i % 2 == 0] {
            let batch = fresh_spans(gen, spans);
            if never_first {
                let (s, _) = absorb(n_client, n_target, &batch).await?;
                out.never_analyzed.push(s);
            } else {
                let (s, _) = absorb(a_client, a_target, &batch).await?;
                out.analyzed.push(s);
            }
        }
        say(format!(
            "  {} new spans: analyzed {}, never analyzed {} (pair {}/{pairs})",
            count(spans as u64),
            secs(*out.analyzed.last().unwrap_or(&f64::NAN)),
            secs(*out.never_analyzed.last().unwrap_or(&f64::NAN)),
            i + 1
        ));
    }
    out.after = statistics(n_client, n_target).await?;
    Ok(out)
}
