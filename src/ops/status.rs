//! `status`: how fresh the summaries are, for people (text) and monitors (`--json`, stable).
//! The verdict is FRESH, WARNING or STALE from the lag and from the age of the last cycle (or,
//! in mv mode, of the last refresh); STALE exits 1.

use crate::db::locks;
use crate::db::source::{self, SummaryKind, Target};
use crate::error::{DbContext, Error, Result};
use crate::install::cron;
use crate::state;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio_postgres::Client;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Fresh,
    Warning,
    Stale,
}

#[derive(Debug, Serialize)]
pub struct LastCycle {
    pub at: Option<DateTime<Utc>>,
    pub duration_ms: Option<f64>,
    pub spans: Option<i64>,
    pub upserted: Option<i64>,
    pub pruned: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct LastRebuild {
    pub at: Option<DateTime<Utc>>,
    pub duration_ms: Option<f64>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Leader {
    pub application_name: String,
    pub pid: i32,
}

/// The JSON document of `status --json`. Field names are stable; new fields may be added.
#[derive(Debug, Serialize)]
pub struct Status {
    pub schema: String,
    pub mode: String,
    pub relation: &'static str,
    pub window_seconds: f64,
    /// Lower bound of created_at still to read (incremental mode).
    pub watermark: Option<DateTime<Utc>>,
    /// The moment (snapshot) the summaries reflect.
    pub reflected_at: Option<DateTime<Utc>>,
    pub newest_span_created_at: Option<DateTime<Utc>>,
    /// Seconds between the newest committed span and what the summaries reflect (0 when
    /// every committed span is summarized).
    pub lag_seconds: f64,
    pub last_cycle: LastCycle,
    pub last_rebuild: LastRebuild,
    pub pending_rebuild_reason: Option<String>,
    pub rows: i64,
    pub newest_summary_timestamp: Option<DateTime<Utc>>,
    pub leader: Option<Leader>,
    pub cron_job: Option<cron::JobInfo>,
    /// mv mode: when the view was last refreshed (pg_cron history or `rebuild`).
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Seconds since the last cycle (incremental) or refresh (mv).
    pub age_seconds: Option<f64>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

pub async fn collect(
    client: &Client,
    target: &Target,
    warn_after: Duration,
    stale_after: Duration,
) -> Result<Status> {
    let kind = source::summary_kind(client, target).await?;
    let st = state::load(client, &target.schema).await?;
    let relation = match kind {
        SummaryKind::Table => "table",
        SummaryKind::MaterializedView => "materialized_view",
        SummaryKind::Absent => "absent",
        SummaryKind::Other => "other",
    };
    if kind == SummaryKind::Absent || kind == SummaryKind::Other {
        return Err(Error::precondition(
            format!(
                "otel_trace_summaries is not installed in schema {:?}",
                target.schema
            ),
            "run `trace-summarizer install` (or pass --schema)",
        ));
    }
    let mode = match (&st, kind) {
        (Some(s), _) => s.mode.clone(),
        (None, SummaryKind::MaterializedView) => "mv".to_string(),
        (None, _) => "unmanaged".to_string(),
    };
    let summaries = target.summaries();
    let rel = client
        .query_one(
            &format!("select count(*), max(\"timestamp\") from {summaries}"),
            &[],
        )
        .await
        .ctx("reading otel_trace_summaries")?;
    let rows: i64 = rel.get(0);
    let newest_summary_timestamp: Option<DateTime<Utc>> = rel.get(1);
    let now: DateTime<Utc> = client
        .query_one("select clock_timestamp()", &[])
        .await
        .ctx("reading the clock")?
        .get(0);

    let mut status = Status {
        schema: target.schema.clone(),
        mode: mode.clone(),
        relation,
        window_seconds: st.as_ref().map(|s| s.window.as_secs_f64()).unwrap_or(0.0),
        watermark: None,
        reflected_at: None,
        newest_span_created_at: None,
        lag_seconds: 0.0,
        last_cycle: LastCycle {
            at: None,
            duration_ms: None,
            spans: None,
            upserted: None,
            pruned: None,
        },
        last_rebuild: LastRebuild {
            at: None,
            duration_ms: None,
            reason: None,
        },
        pending_rebuild_reason: st.as_ref().and_then(|s| s.rebuild_reason.clone()),
        rows,
        newest_summary_timestamp,
        leader: locks::leader_of(client, &target.schema)
            .await?
            .map(|(application_name, pid)| Leader {
                application_name,
                pid,
            }),
        cron_job: None,
        last_refresh_at: None,
        age_seconds: None,
        verdict: Verdict::Fresh,
        reasons: Vec::new(),
    };
    if st.is_some() {
        let r = client
            .query_one(
                "select tail_from, reflected_at, last_cycle_at, last_cycle_ms, last_spans, last_upserted, last_pruned,
                        last_rebuild_at, last_rebuild_ms, last_rebuild_reason
                 from trace_summarizer.state where target_schema = $1",
                &[&target.schema],
            )
            .await
            .ctx("reading trace_summarizer.state")?;
        status.watermark = r.get(0);
        status.reflected_at = r.get(1);
        status.last_cycle = LastCycle {
            at: r.get(2),
            duration_ms: r.get(3),
            spans: r.get(4),
            upserted: r.get(5),
            pruned: r.get(6),
        };
        status.last_rebuild = LastRebuild {
            at: r.get(7),
            duration_ms: r.get(8),
            reason: r.get(9),
        };
    }
    let secs = |t: DateTime<Utc>| (now - t).num_milliseconds() as f64 / 1000.0;
    if mode == "incremental" {
        status.newest_span_created_at = client
            .query_one(
                &format!("select max(created_at) from {}", target.traces()),
                &[],
            )
            .await
            .ctx("reading the newest span")?
            .get(0);
        if let (Some(newest), Some(reflected)) =
            (status.newest_span_created_at, status.reflected_at)
        {
            if newest > reflected {
                status.lag_seconds = secs(reflected).max(0.0);
            }
        }
        let last = [status.last_cycle.at, status.last_rebuild.at]
            .into_iter()
            .flatten()
            .max();
        status.age_seconds = last.map(secs);
        if last.is_none() {
            status.reasons.push("no cycle has run yet".into());
        }
    } else {
        status.cron_job = cron::job(client).await?;
        let from_cron = status.cron_job.as_ref().and_then(|j| j.last_success);
        status.last_refresh_at = [from_cron, status.last_rebuild.at]
            .into_iter()
            .flatten()
            .max();
        status.age_seconds = status.last_refresh_at.map(secs);
        if status.cron_job.is_none() {
            status
                .reasons
                .push("no pg_cron job refreshes the view".into());
        } else if status.cron_job.as_ref().is_some_and(|j| !j.active) {
            status.reasons.push("the pg_cron job is inactive".into());
        }
        if status.last_refresh_at.is_none() {
            status
                .reasons
                .push("no refresh recorded since install (pg_cron history or rebuild)".into());
        }
    }
    status.verdict = verdict(&status, warn_after, stale_after);
    Ok(status)
}

fn verdict(s: &Status, warn_after: Duration, stale_after: Duration) -> Verdict {
    let grade = |secs: f64| {
        if secs >= stale_after.as_secs_f64() {
            Verdict::Stale
        } else if secs >= warn_after.as_secs_f64() {
            Verdict::Warning
        } else {
            Verdict::Fresh
        }
    };
    let by_lag = grade(s.lag_seconds);
    let by_age = match s.age_seconds {
        Some(age) => grade(age),
        None if s.mode == "incremental" => Verdict::Stale,
        None => Verdict::Warning,
    };
    let mut v = by_lag.max(by_age);
    if s.pending_rebuild_reason.is_some() {
        v = v.max(Verdict::Warning);
    }
    v
}

impl Status {
    pub fn reasons_for_verdict(&mut self, warn_after: Duration, stale_after: Duration) {
        if self.lag_seconds >= warn_after.as_secs_f64() {
            self.reasons.push(format!(
                "summaries lag the newest span by {:.0}s",
                self.lag_seconds
            ));
        }
        if let Some(age) = self.age_seconds {
            if age >= warn_after.as_secs_f64() {
                let what = if self.mode == "incremental" {
                    "last cycle"
                } else {
                    "last refresh"
                };
                self.reasons.push(format!(
                    "{what} was {age:.0}s ago (warn after {}s, stale after {}s)",
                    warn_after.as_secs(),
                    stale_after.as_secs()
                ));
            }
        }
        if let Some(r) = &self.pending_rebuild_reason {
            self.reasons
                .push(format!("a full refresh is pending ({r})"));
        }
    }

    pub fn render_text(&self) -> String {
        let t = |v: Option<DateTime<Utc>>| v.map(|d| d.to_rfc3339()).unwrap_or_else(|| "-".into());
        let n = |v: Option<i64>| v.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
        let mut out = String::new();
        out += &format!(
            "verdict:            {}\n",
            format!("{:?}", self.verdict).to_uppercase()
        );
        out += &format!(
            "schema:             {}\nmode:               {} ({})\n",
            self.schema, self.mode, self.relation
        );
        out += &format!(
            "window:             {}\n",
            humantime::format_duration(Duration::from_secs_f64(self.window_seconds.max(0.0)))
        );
        out += &format!(
            "rows:               {}\nnewest summary:     {}\n",
            self.rows,
            t(self.newest_summary_timestamp)
        );
        if self.mode == "incremental" {
            out += &format!(
                "watermark:          {}\nreflects:           {}\n",
                t(self.watermark),
                t(self.reflected_at)
            );
            out += &format!(
                "newest span:        {}\nlag:                {:.1}s\n",
                t(self.newest_span_created_at),
                self.lag_seconds
            );
            out += &format!(
                "last cycle:         {} ({} ms, {} spans, {} upserted, {} pruned)\n",
                t(self.last_cycle.at),
                self.last_cycle
                    .duration_ms
                    .map(|m| format!("{m:.0}"))
                    .unwrap_or_else(|| "-".into()),
                n(self.last_cycle.spans),
                n(self.last_cycle.upserted),
                n(self.last_cycle.pruned)
            );
            out += &format!(
                "leader:             {}\n",
                self.leader
                    .as_ref()
                    .map(|l| format!("{} (pid {})", l.application_name, l.pid))
                    .unwrap_or_else(|| "none".into())
            );
        } else {
            out += &format!("last refresh:       {}\n", t(self.last_refresh_at));
            match &self.cron_job {
                Some(j) => {
                    out += &format!(
                        "cron job:           {} {:?} ({})\n",
                        j.schedule,
                        j.command,
                        if j.active { "active" } else { "inactive" }
                    )
                }
                None => out += "cron job:           none\n",
            }
        }
        out += &format!(
            "last rebuild:       {}{}\n",
            t(self.last_rebuild.at),
            self.last_rebuild
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        if let Some(age) = self.age_seconds {
            out += &format!("age:                {age:.1}s\n");
        }
        for r in &self.reasons {
            out += &format!("note:               {r}\n");
        }
        out
    }
}
