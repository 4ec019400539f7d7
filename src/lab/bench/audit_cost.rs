//! The continuous audit's cost: consecutive slices run by the product's own `run_slice`, each in
//! a step-like transaction (REPEATABLE READ, plans pinned as a step pins them), rolled back so
//! the installation's progress is untouched; the cursor is carried from one slice to the next.
//! At the default period (24h) a slice runs every 10 s over total/8640 traces; a slice of a 1h
//! period (24 times larger, every 10 s too) shows what each further trace costs.

use super::stats::{median, say, secs};
use crate::db::source::Target;
use crate::db::statements::Db;
use crate::error::{DbContext, Error, Result};
use crate::maintain::audit::{self, Pace};
use crate::maintain::{cycle, scratch};
use crate::state;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, Clone, Default)]
pub struct AuditRuns {
    pub period: Duration,
    pub every: Duration,
    /// Summaries the slice size is computed from (the table's reltuples, as the audit reads it).
    pub summaries_estimate: i64,
    pub seconds: Vec<f64>,
    pub checked: Vec<i64>,
    pub mismatches: i64,
}

impl AuditRuns {
    /// Share of one core: a slice's time over the time between slices.
    pub fn core_share(&self) -> f64 {
        median(&self.seconds) / self.every.as_secs_f64()
    }
    /// Seconds per audited trace.
    pub fn per_trace(&self) -> f64 {
        let checked: i64 = self.checked.iter().sum();
        self.seconds.iter().sum::<f64>() / checked.max(1) as f64
    }
    /// What one more trace costs: from the medians of a run with smaller slices and this one.
    pub fn marginal_per_trace(&self, smaller: &AuditRuns) -> f64 {
        (median(&self.seconds) - median(&smaller.seconds))
            / (self.checked_median() - smaller.checked_median())
    }
    pub fn checked_median(&self) -> f64 {
        median(&self.checked.iter().map(|&c| c as f64).collect::<Vec<_>>())
    }
}

/// Runs `slices` consecutive slices at `period`. No worker may be running.
pub async fn measure(
    client: &mut Client,
    target: &Target,
    period: Duration,
    slices: usize,
) -> Result<AuditRuns> {
    let Some(st) = state::load(&*client, &target.schema).await? else {
        return Err(Error::precondition(
            "bench: no installation to audit",
            "please report it",
        ));
    };
    let def = crate::maintain::rebuild::definition(&st);
    let names = st.names();
    let summaries = target.summaries();
    let pace = Pace { period };
    let mut record = st.audit.clone();
    let mut out = AuditRuns {
        period,
        every: pace.every(),
        ..Default::default()
    };
    for _ in 0..slices {
        let tx = cycle::begin(client).await?;
        scratch::pin_plans(&tx).await?;
        let edge = def.window.edge(&tx).await?;
        let covers = st.position.clone().unwrap_or(state::Position {
            xmax: i64::MAX,
            xip: Vec::new(),
        });
        let t = Instant::now();
        let slice = audit::run_slice(
            &Db::once(&tx),
            target,
            &def,
            &names,
            edge,
            &covers,
            &pace,
            &record,
        )
        .await?;
        let s = t.elapsed().as_secs_f64();
        if out.summaries_estimate == 0 {
            out.summaries_estimate = tx
                .query_one(
                    "select greatest(reltuples, 0)::bigint from pg_class where oid = $1::text::regclass",
                    &[&summaries],
                )
                .await
                .ctx("reading the summaries' reltuples")?
                .get(0);
        }
        tx.rollback().await.ctx("rolling back the audit slice")?;
        out.seconds.push(s);
        out.checked.push(slice.checked);
        out.mismatches += slice.mismatches;
        record = slice.record;
    }
    say(format!(
        "  audit period {}: a slice every {} s checks {:.0} traces in {} (median of {slices}); {} differed",
        period_text(period),
        out.every.as_secs(),
        out.checked_median(),
        secs(median(&out.seconds)),
        out.mismatches
    ));
    Ok(out)
}

/// A period as `24h`, `1h` or `90s`.
pub fn period_text(period: Duration) -> String {
    let s = period.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        humantime::format_duration(period).to_string()
    }
}
