//! One Citus node's part of an installation: its copy of the state (the coordinator's
//! installation id, mode, window and error rule, its own position), its side tables and
//! functions, and, on each of its shards of otel_traces, the stamp default and the three
//! triggers (`install::capture` with a node target). All of it is created with DDL propagation
//! off, so it stays on the node.

use crate::citus::{node_session, shards};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{Error, Result};
use crate::install::capture;
use crate::state::{self, State};
use std::sync::Arc;
use tokio_postgres::Client;

/// A connection to a node, set up for node-local work, and the node's target (its shards).
pub struct NodeSession {
    pub client: Client,
    pub target: Target,
}

/// Connects to a node and lists its shards.
pub async fn connect(opts: &ConnectOptions, schema: &str) -> Result<NodeSession> {
    let client = opts.connect().await?;
    node_session(&client).await?;
    let mut target = Target::new(schema);
    target.local = Some(Arc::new(shards::local(&client, &target).await?));
    Ok(NodeSession { client, target })
}

/// Refreshes the node's list of shards; returns whether it changed.
pub async fn refresh_shards(client: &Client, target: &mut Target) -> Result<bool> {
    let now = shards::local(client, target).await?;
    let changed = target.local.as_deref() != Some(&now);
    if changed {
        target.local = Some(Arc::new(now));
    }
    Ok(changed)
}

/// Puts the node's part of `coordinator`'s installation in place (idempotent), on a node
/// session whose target lists the node's shards. Returns the node's state.
pub async fn install(client: &Client, target: &Target, coordinator: &State) -> Result<State> {
    state::migrate(client).await?;
    let st = state::upsert_node_installation(client, coordinator).await?;
    if st.id != coordinator.id {
        return Err(Error::precondition(
            format!(
                "the Citus node's installation for schema {:?} has id {} where the coordinator's has {}",
                coordinator.schema, st.id, coordinator.id
            ),
            "run `trace-summarizer uninstall` then `install` against the coordinator",
        ));
    }
    capture::ensure(client, target, &st.names(), &st.window, st.stamp_offset).await?;
    Ok(st)
}
