//! The Citus nodes that hold shards of otel_traces, and how to connect to each: the worker runs
//! one loop per node (`ops/worker.rs`), with the coordinator's credentials and TLS settings and
//! the node's host and port as Citus itself reaches it (`pg_dist_node`).

use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

/// A node holding shards of otel_traces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub host: String,
    pub port: u16,
    /// Citus' group id of the node (0: the coordinator).
    pub group: i32,
}

impl Node {
    /// A label for logs and metrics.
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The coordinator's connection settings pointed at this node.
    pub fn options(&self, coordinator: &ConnectOptions) -> ConnectOptions {
        coordinator.with_host(&self.host, self.port)
    }
}

/// The active primary nodes with a placement of a shard of otel_traces (asked of the
/// coordinator), in a stable order.
pub async fn with_shards<C: GenericClient>(client: &C, target: &Target) -> Result<Vec<Node>> {
    let rows = client
        .query(
            "select distinct n.nodename::text, n.nodeport, n.groupid
             from pg_dist_node n
             join pg_dist_placement p on p.groupid = n.groupid
             join pg_dist_shard s on s.shardid = p.shardid
             where s.logicalrelid = to_regclass(quote_ident($1) || '.otel_traces')
               and n.isactive and n.noderole = 'primary'
             order by 3",
            &[&target.schema],
        )
        .await
        .ctx("listing the Citus nodes that hold otel_traces")?;
    Ok(rows
        .iter()
        .map(|r| Node {
            host: r.get(0),
            port: r.get::<_, i32>(1) as u16,
            group: r.get(2),
        })
        .collect())
}
