//! `status`: how fresh the summaries are, for people (text) and monitors (`--json`, stable).
//! The verdict is FRESH, WARNING or STALE from the lag and from the age of the last cycle (or,
//! in mv mode, of the last refresh); STALE exits 1.

use crate::db::connect::ConnectOptions;
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

#[derive(Debug, Serialize, Default)]
pub struct LastCycle {
    pub at: Option<DateTime<Utc>>,
    pub duration_ms: Option<f64>,
    pub spans: Option<i64>,
    pub upserted: Option<i64>,
    pub pruned: Option<i64>,
}

#[derive(Debug, Serialize, Default)]
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

#[derive(Debug, Serialize)]
pub struct Audit {
    /// The continuous audit's last full pass: when it ended, traces checked, differences found
    /// (and repaired).
    pub last_pass_at: Option<DateTime<Utc>>,
    pub last_pass_checked: Option<i64>,
    pub last_pass_mismatches: Option<i64>,
    /// The pass under way.
    pub pass_started_at: Option<DateTime<Utc>>,
    pub pass_checked: i64,
    pub pass_mismatches: i64,
}

/// The JSON document of `status --json`. Field names are stable; new fields may be added.
#[derive(Debug, Serialize)]
pub struct Status {
    pub schema: String,
    pub mode: String,
    pub relation: &'static str,
    pub window_seconds: f64,
    /// The window as the definition states it (`7 days`).
    pub window: Option<String>,
    /// `not-ok` or `error`.
    pub error_rule: Option<String>,
    /// Every span committed before this moment is summarized (incremental mode).
    pub watermark: Option<DateTime<Utc>>,
    /// The moment (snapshot) the summaries reflect.
    pub reflected_at: Option<DateTime<Utc>>,
    /// created_at of a span of the newest transaction that wrote otel_traces.
    pub newest_span_created_at: Option<DateTime<Utc>>,
    /// Seconds since `reflected_at` when committed spans (or queued changes) are not summarized
    /// yet; 0 when every committed span is summarized.
    pub lag_seconds: f64,
    /// Traces waiting in the recompute queue (deleted or updated spans, removed partitions).
    pub queued_traces: i64,
    pub last_cycle: LastCycle,
    pub last_rebuild: LastRebuild,
    pub pending_rebuild_reason: Option<String>,
    pub rows: i64,
    pub newest_summary_timestamp: Option<DateTime<Utc>>,
    pub leader: Option<Leader>,
    pub cron_job: Option<cron::JobInfo>,
    /// mv mode: when the view was last refreshed (pg_cron history or `rebuild`).
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Seconds since the last check (incremental) or refresh (mv).
    pub age_seconds: Option<f64>,
    pub audit: Option<Audit>,
    /// What `install --adopt` replaced (the SQL that recreates it).
    pub adopted: Option<String>,
    /// Changes to otel_traces the summaries do not reflect yet, which the worker repairs with a
    /// targeted recompute or a full refresh (a replaced table, what install put on it missing
    /// or changed, partitions or chunks dropped, truncated, attached or re-attached), and
    /// publications that would replicate the stamp column. Any of them makes the verdict at
    /// least WARNING.
    pub unreconciled: Vec<String>,
    /// On a Citus coordinator: each node holding shards of otel_traces, with its own watermark,
    /// lag and queue (the fields above are then the worst node's, the queue their sum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<crate::citus::status::NodeStatus>>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// `opts`: the connection settings, to ask Citus nodes (None: the coordinator alone).
pub async fn collect(
    client: &Client,
    target: &Target,
    opts: Option<&ConnectOptions>,
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
        (Some(s), _) => s.mode.name().to_string(),
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
    let now: DateTime<Utc> = client
        .query_one("select clock_timestamp()", &[])
        .await
        .ctx("reading the clock")?
        .get(0);
    let mut status = Status {
        schema: target.schema.clone(),
        mode: mode.clone(),
        relation,
        window_seconds: st
            .as_ref()
            .map(|s| s.window.approx().as_secs_f64())
            .unwrap_or(0.0),
        window: st.as_ref().map(|s| s.window.interval_text()),
        error_rule: st.as_ref().map(|s| s.error_rule.name().to_string()),
        watermark: None,
        reflected_at: st.as_ref().and_then(|s| s.reflected_at),
        newest_span_created_at: None,
        lag_seconds: 0.0,
        queued_traces: 0,
        last_cycle: LastCycle::default(),
        last_rebuild: LastRebuild::default(),
        pending_rebuild_reason: st.as_ref().and_then(|s| s.rebuild_reason.clone()),
        rows: rel.get(0),
        newest_summary_timestamp: rel.get(1),
        leader: locks::leader_of(client, &target.schema)
            .await?
            .map(|(application_name, pid)| Leader {
                application_name,
                pid,
            }),
        cron_job: None,
        last_refresh_at: None,
        age_seconds: None,
        audit: None,
        adopted: st.as_ref().and_then(|s| s.adopted.clone()),
        unreconciled: Vec::new(),
        nodes: None,
        verdict: Verdict::Fresh,
        reasons: Vec::new(),
    };
    if let Some(s) = &st {
        status.last_cycle = LastCycle {
            at: s.last_cycle.at,
            duration_ms: s.last_cycle.ms,
            spans: s.last_cycle.spans,
            upserted: s.last_cycle.upserted,
            pruned: s.last_cycle.pruned,
        };
        status.last_rebuild = LastRebuild {
            at: s.last_rebuild.at,
            duration_ms: s.last_rebuild.ms,
            reason: s.last_rebuild.reason.clone(),
        };
    }
    let secs = |t: DateTime<Utc>| (now - t).num_milliseconds() as f64 / 1000.0;
    match st.as_ref().filter(|s| s.mode == state::Mode::Incremental) {
        Some(s) => {
            status.watermark = s.reflected_at;
            status.audit = Some(Audit {
                last_pass_at: s.audit.last_pass_at,
                last_pass_checked: s.audit.last_pass_checked,
                last_pass_mismatches: s.audit.last_pass_mismatches,
                pass_started_at: s.audit.pass_started_at,
                pass_checked: s.audit.pass_checked,
                pass_mismatches: s.audit.pass_mismatches,
            });
            let citus = opts.is_some()
                && crate::citus::distribution(client, target).await?
                    == crate::citus::Distribution::ByTraceId;
            if !citus {
                status.unreconciled = unreconciled(client, target, s).await?;
                let pending = pending(client, target, s).await?;
                status.queued_traces = pending.queued;
                status.newest_span_created_at = pending.newest_created_at;
                if pending.unread || pending.queued > 0 {
                    status.lag_seconds = s.reflected_at.map(secs).unwrap_or(0.0).max(0.0);
                }
            }
            let last = [s.last_checked_at, s.last_cycle.at, s.last_rebuild.at]
                .into_iter()
                .flatten()
                .max();
            status.age_seconds = last.map(secs);
            if last.is_none() {
                status.reasons.push("no cycle has run yet".into());
            }
            if let (true, Some(opts)) = (citus, opts) {
                // Each node keeps its own position, queue and capture (citus::status).
                let nodes = crate::citus::status::nodes(client, target, opts, now).await?;
                crate::citus::status::fold(&mut status, nodes, now);
            }
        }
        None => {
            status.cron_job = cron::job(client, target).await?;
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
    }
    status.verdict = verdict(&status, warn_after, stale_after);
    Ok(status)
}

/// What changed on otel_traces that the summaries do not reflect yet (see `Status`).
pub(crate) async fn unreconciled(
    client: &Client,
    target: &Target,
    s: &state::State,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let names = s.names();
    let source_oid = source::traces_oid(client, target).await?;
    if s.source_oid.is_some_and(|o| o != source_oid) {
        found.push("otel_traces is not the table the summaries were made from (replaced under its name, or restored); the worker refreshes them".to_string());
    }
    let capture = crate::install::capture::status(
        &crate::db::statements::Db::once(client),
        target,
        &names,
        s.stamp_offset,
    )
    .await?;
    if !capture.complete() {
        found.push(format!(
            "otel_traces lacks {}; the worker puts it back (as the owner of otel_traces) or stops: run `trace-summarizer install`",
            capture.missing().join(", ")
        ));
    } else if s.capture_version.as_deref() != Some(capture.version.as_str()) {
        found.push("what install put on otel_traces was changed (a trigger disabled or recreated, the default replaced); the worker refreshes the summaries".to_string());
    }
    if s.source_oid == Some(source_oid) {
        let leaves = crate::maintain::leaves::unreconciled(
            &crate::db::statements::Db::once(client),
            target,
            &names,
            source_oid,
        )
        .await?;
        if leaves > 0 {
            found.push(format!(
                "{leaves} partition(s) or chunk(s) of otel_traces were dropped, truncated, attached or re-attached since the last step"
            ));
        }
    }
    for p in crate::install::publications::replicating_stamp(client, target).await? {
        found.push(format!(
            "publication {p:?} replicates the column trace_summarizer_xid; leave it out (install --alter-publications)"
        ));
    }
    Ok(found)
}

pub(crate) struct Pending {
    /// Committed spans beyond the position.
    pub unread: bool,
    pub queued: i64,
    pub newest_created_at: Option<DateTime<Utc>>,
}

/// What the worker has not absorbed yet, read through the stamp index (never a scan).
pub(crate) async fn pending(client: &Client, target: &Target, s: &state::State) -> Result<Pending> {
    let traces = target.traces();
    let has_created_at: bool = client
        .query_one(
            "select exists (select 1 from pg_attribute where attrelid = to_regclass(quote_ident($1) || '.otel_traces') and attname = 'created_at' and not attisdropped)",
            &[&target.schema],
        )
        .await
        .ctx("looking at otel_traces")?
        .get(0);
    let newest = if has_created_at {
        format!("(select created_at from {traces} where trace_summarizer_xid = (select max(trace_summarizer_xid) from {traces}) limit 1)")
    } else {
        "null::timestamptz".to_string()
    };
    let (xmax, xip) = s
        .position
        .as_ref()
        .map(|p| (p.xmax, p.xip.clone()))
        .unwrap_or((i64::MAX, Vec::new()));
    let row = client
        .query_one(
            &format!(
                "select exists (select 1 from {traces} where trace_summarizer_xid >= $1)
                     or exists (select 1 from {traces} where trace_summarizer_xid = any($2::bigint[])),
                        (select count(*) from {queue}),
                        {newest}",
                queue = s.names().queue
            ),
            &[&xmax, &xip],
        )
        .await
        .ctx("reading what is not summarized yet")?;
    Ok(Pending {
        unread: row.get(0),
        queued: row.get(1),
        newest_created_at: row.get(2),
    })
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
    if s.pending_rebuild_reason.is_some() || !s.unreconciled.is_empty() {
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
        self.reasons.extend(self.unreconciled.iter().cloned());
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
            "window:             {}{}\n",
            self.window
                .clone()
                .unwrap_or_else(|| humantime::format_duration(Duration::from_secs_f64(
                    self.window_seconds.max(0.0)
                ))
                .to_string()),
            self.error_rule
                .as_ref()
                .map(|r| format!(" (error rule {r})"))
                .unwrap_or_default()
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
        for n in self.nodes.iter().flatten() {
            out +=
                &format!(
                "citus node:         {} ({} shard pairs): watermark {}, lag {:.1}s, queued {}{}\n",
                n.node,
                n.shards,
                t(n.watermark),
                n.lag_seconds,
                n.queued_traces,
                n.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            );
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
