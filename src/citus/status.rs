//! `status` on a Citus coordinator: each node that holds shards keeps its own position, queue and
//! last cycle, so the coordinator's state row says nothing about lag. This asks every node (with
//! the coordinator's credentials) and folds the answers into the status: the lag and age are
//! the worst node's, the queue the sum, the watermark the oldest.

use crate::citus::{node, nodes};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::Result;
use crate::ops::status::{self, Status};
use crate::state;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

/// One node's part of `status --json` (`nodes`).
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    /// `host:port` as Citus reaches the node.
    pub node: String,
    pub shards: usize,
    /// Every span committed on this node before this moment is summarized.
    pub watermark: Option<DateTime<Utc>>,
    /// Seconds behind, as `lag_seconds`; 0 when everything committed here is summarized.
    pub lag_seconds: f64,
    /// Whether committed spans are not read yet (0 or 1; a count would need a scan).
    pub lag_spans: i64,
    pub queued_traces: i64,
    pub last_cycle_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub pending_rebuild_reason: Option<String>,
    /// As `unreconciled`, for this node's shards.
    pub unreconciled: Vec<String>,
    /// Set when the node could not be asked, or has no installation yet.
    pub error: Option<String>,
}

/// Asks every node holding shards of otel_traces how far its worker loop is.
pub async fn nodes(
    coordinator: &Client,
    target: &Target,
    opts: &ConnectOptions,
    now: DateTime<Utc>,
) -> Result<Vec<NodeStatus>> {
    let mut out = Vec::new();
    for n in nodes::with_shards(coordinator, target).await? {
        let mut ns = NodeStatus {
            node: n.label(),
            shards: 0,
            watermark: None,
            lag_seconds: 0.0,
            lag_spans: 0,
            queued_traces: 0,
            last_cycle_at: None,
            last_checked_at: None,
            pending_rebuild_reason: None,
            unreconciled: Vec::new(),
            error: None,
        };
        if let Err(e) = ask(&n.options(opts), target, now, &mut ns).await {
            ns.error = Some(e.to_string());
        }
        out.push(ns);
    }
    Ok(out)
}

async fn ask(
    opts: &ConnectOptions,
    target: &Target,
    now: DateTime<Utc>,
    ns: &mut NodeStatus,
) -> Result<()> {
    let session = node::connect(opts, &target.schema).await?;
    ns.shards = session
        .target
        .local
        .as_ref()
        .map(|l| l.pairs.len())
        .unwrap_or(0);
    let Some(st) = state::load(&session.client, &target.schema).await? else {
        ns.error = Some(
            "no installation on this node yet: the worker puts it in place when it starts".into(),
        );
        return Ok(());
    };
    let pending = status::pending(&session.client, &session.target, &st).await?;
    ns.unreconciled = status::unreconciled(&session.client, &session.target, &st).await?;
    ns.watermark = st.reflected_at;
    ns.queued_traces = pending.queued;
    ns.lag_spans = i64::from(pending.unread);
    if pending.unread || pending.queued > 0 {
        ns.lag_seconds = st
            .reflected_at
            .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(0.0)
            .max(0.0);
    }
    ns.last_cycle_at = st.last_cycle.at;
    ns.last_checked_at = st.last_checked_at;
    ns.pending_rebuild_reason = st.rebuild_reason.clone();
    Ok(())
}

/// Folds the nodes into the coordinator's status (before the verdict is taken).
pub fn fold(status: &mut Status, nodes: Vec<NodeStatus>, now: DateTime<Utc>) {
    let secs = |t: DateTime<Utc>| (now - t).num_milliseconds() as f64 / 1000.0;
    status.lag_seconds = nodes.iter().map(|n| n.lag_seconds).fold(0.0, f64::max);
    status.queued_traces = nodes.iter().map(|n| n.queued_traces).sum();
    status.watermark = nodes.iter().filter_map(|n| n.watermark).min();
    status.reflected_at = status.watermark;
    let ages: Vec<Option<f64>> = nodes
        .iter()
        .map(|n| {
            [n.last_checked_at, n.last_cycle_at]
                .into_iter()
                .flatten()
                .max()
                .map(secs)
        })
        .collect();
    status.age_seconds = if ages.iter().any(Option::is_none) {
        None
    } else {
        ages.into_iter().flatten().reduce(f64::max)
    };
    status.reasons.retain(|r| r != "no cycle has run yet");
    for n in &nodes {
        if let Some(e) = &n.error {
            status.reasons.push(format!("Citus node {}: {e}", n.node));
        } else if n.last_checked_at.is_none() && n.last_cycle_at.is_none() {
            status
                .reasons
                .push(format!("Citus node {}: no cycle has run yet", n.node));
        }
        status.unreconciled.extend(
            n.unreconciled
                .iter()
                .map(|u| format!("Citus node {}: {u}", n.node)),
        );
        if let Some(r) = &n.pending_rebuild_reason {
            status
                .pending_rebuild_reason
                .get_or_insert_with(|| r.clone());
        }
    }
    status.nodes = Some(nodes);
}
