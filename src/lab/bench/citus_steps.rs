//! Steps on every Citus node at once, as the worker runs them: one session per node holding
//! shards of otel_traces (`citus::node::connect`, the coordinator's credentials pointed at the
//! node), set up as the worker sets up a node loop's session (the node's part of the
//! installation when it has none yet, `ops::worker::configure_session`, the scratch tables),
//! then `maintain::cycle::run` on each node's own shards, the nodes in parallel. A step that
//! asks for a full refresh (a node that gained shards: `shard_moved`) gets one, as the worker's
//! fallback does, and is marked so that a timed run can refuse it. No worker may be running.

use crate::citus::node::{self, NodeSession};
use crate::citus::nodes;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::db::statements::Statements;
use crate::error::{Error, Result};
use crate::maintain::cycle::{self, Extras, Limits, Outcome};
use crate::maintain::rebuild::{self, Method};
use crate::maintain::scratch;
use crate::state;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// One node's session and its prepared statements.
struct NodeStepper {
    label: String,
    session: NodeSession,
    statements: Statements,
}

/// Every node's session.
pub struct Nodes {
    nodes: Vec<NodeStepper>,
}

/// One node's step.
#[derive(Debug, Clone, Default)]
pub struct NodeStep {
    pub node: String,
    pub seconds: f64,
    /// New spans the step absorbed.
    pub spans: i64,
    /// The step asked for a full refresh, which ran instead (`seconds` includes it).
    pub rebuilt: Option<String>,
}

/// The nodes' steps run together: the time until the last one committed, and each.
#[derive(Debug, Clone, Default)]
pub struct AllSteps {
    pub seconds: f64,
    pub nodes: Vec<NodeStep>,
}

impl AllSteps {
    pub fn spans(&self) -> i64 {
        self.nodes.iter().map(|n| n.spans).sum()
    }
    /// The first full refresh a node ran instead of a step, if any.
    pub fn rebuilt(&self) -> Option<String> {
        self.nodes
            .iter()
            .find_map(|n| n.rebuilt.as_ref().map(|r| format!("{}: {r}", n.node)))
    }
}

impl Nodes {
    /// A session on every node holding shards of otel_traces (listed by the coordinator).
    pub async fn connect(
        coordinator: &Client,
        opts: &ConnectOptions,
        target: &Target,
        statement_timeout: Duration,
    ) -> Result<Nodes> {
        let installed = state::load(coordinator, &target.schema)
            .await?
            .ok_or_else(|| Error::Config("bench: nothing installed on the coordinator".into()))?;
        let mut out = Vec::new();
        for n in nodes::with_shards(coordinator, target).await? {
            let session = node::connect(&n.options(opts), &target.schema).await?;
            let st = match state::load(&session.client, &target.schema).await? {
                Some(st) => st,
                None => node::install(&session.client, &session.target, &installed).await?,
            };
            crate::ops::worker::configure_session(&session.client, statement_timeout).await?;
            scratch::prepare(&session.client, &session.target, &rebuild::definition(&st)).await?;
            out.push(NodeStepper {
                label: n.label(),
                session,
                statements: Statements::new(),
            });
        }
        Ok(Nodes { nodes: out })
    }

    /// One step on every node, in parallel.
    pub async fn step(&mut self) -> Result<AllSteps> {
        let t = Instant::now();
        let steps = futures_util::future::try_join_all(self.nodes.iter_mut().map(step_one)).await?;
        Ok(AllSteps {
            seconds: t.elapsed().as_secs_f64(),
            nodes: steps,
        })
    }
}

/// One step on one node, with bounds large enough to absorb everything at once (as the
/// single-server bench's `steps::cycle_once`).
async fn step_one(n: &mut NodeStepper) -> Result<NodeStep> {
    let limits = Limits {
        max_spans: 100_000_000,
        max_traces: 100_000_000,
        check_backlog: false,
        refresh_when_cheaper: false,
    };
    let t = Instant::now();
    let outcome = cycle::run(
        &mut n.session.client,
        &n.statements,
        &n.session.target,
        &limits,
        &Extras::default(),
        true,
    )
    .await?;
    let (spans, rebuilt) = match outcome {
        Some(Outcome::Done(stats)) => (stats.spans, None),
        Some(Outcome::NeedsRebuild(fallback)) => {
            let reason = fallback.reason();
            node::refresh_shards(&n.session.client, &mut n.session.target).await?;
            rebuild::run(
                &mut n.session.client,
                &n.session.target,
                &reason,
                None,
                Method::Auto,
                None,
            )
            .await?;
            (0, Some(reason))
        }
        None => unreachable!("cycle::run waits for the work lock"),
    };
    Ok(NodeStep {
        node: n.label.clone(),
        seconds: t.elapsed().as_secs_f64(),
        spans,
        rebuilt,
    })
}
