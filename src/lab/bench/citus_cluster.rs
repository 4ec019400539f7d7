//! The Citus section's own cluster: a coordinator and two worker clusters, throwaway PostgreSQL
//! clusters on 127.0.0.1 with Citus preloaded (`lab::cluster`, `ClusterOptions { citus: true }`:
//! `Error::Config` when Citus is not installed beside the server binaries). One database on all
//! three with the extension; the coordinator registered with `citus_set_coordinator_host`, the
//! workers with `citus_add_node` one at a time (`add_worker`); otel_traces created by
//! `spangen::create_source` and distributed by trace_id before any node is added beyond the
//! first, so its shards start on the first worker only; and a history loaded through the
//! coordinator with binary COPY. The clusters stop and their directories go when this value is
//! dropped (an interrupted bench leaves them to the temporary directory's cleanup).

use super::env::join_error;
use super::stats::{count, say};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::lab::cluster::{Cluster, ClusterOptions};
use crate::lab::spangen;
use std::time::{Duration, Instant};

/// The database the section works in, on every cluster.
pub const DATABASE: &str = "trace_summarizer_bench_citus";
/// Worker clusters started (the section measures with the first, then with both).
pub const WORKERS: usize = 2;
/// Spans generated and copied per chunk of the load.
const CHUNK: usize = 100_000;

pub struct CitusCluster {
    pub coordinator: Cluster,
    pub workers: Vec<Cluster>,
    /// Workers registered with the coordinator so far.
    pub registered: usize,
}

impl CitusCluster {
    /// Starts the coordinator and the workers (durable, as the single-server bench's cluster),
    /// creates the database and the extension on each, and registers the coordinator and the
    /// first worker. `Error::Config` when Citus is not installed.
    pub async fn start() -> Result<CitusCluster> {
        let options = ClusterOptions {
            shared_buffers: "512MB".into(),
            durable: true,
            logical: false,
            citus: true,
            ..Default::default()
        };
        let started = tokio::task::spawn_blocking(move || {
            let coordinator = Cluster::start(&options)?;
            let workers = (0..WORKERS)
                .map(|_| Cluster::start(&options))
                .collect::<Result<Vec<_>>>()?;
            Ok::<_, crate::error::Error>((coordinator, workers))
        })
        .await
        .map_err(join_error)??;
        let (coordinator, workers) = started;
        let cluster = CitusCluster {
            coordinator,
            workers,
            registered: 0,
        };
        for c in cluster.all() {
            let admin = ConnectOptions::parse(Some(&c.url("postgres")))?
                .connect()
                .await?;
            admin
                .batch_execute(&format!("create database {DATABASE}"))
                .await
                .ctx("creating the Citus bench database")?;
            let db = ConnectOptions::parse(Some(&c.url(DATABASE)))?
                .connect()
                .await?;
            db.batch_execute("create extension citus")
                .await
                .ctx("creating the extension citus")?;
        }
        let client = cluster.coordinator_opts()?.connect().await?;
        client
            .execute(
                "select citus_set_coordinator_host('127.0.0.1', $1)",
                &[&(cluster.coordinator.port as i32)],
            )
            .await
            .ctx("citus_set_coordinator_host")?;
        let mut cluster = cluster;
        cluster.add_worker().await?;
        Ok(cluster)
    }

    fn all(&self) -> impl Iterator<Item = &Cluster> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// Connection settings for the coordinator's database.
    pub fn coordinator_opts(&self) -> Result<ConnectOptions> {
        ConnectOptions::parse(Some(&self.coordinator.url(DATABASE)))
    }

    /// Registers the next worker with `citus_add_node`; returns its port.
    pub async fn add_worker(&mut self) -> Result<u16> {
        let port = self.workers[self.registered].port;
        let client = self.coordinator_opts()?.connect().await?;
        client
            .execute("select citus_add_node('127.0.0.1', $1)", &[&(port as i32)])
            .await
            .ctx(&format!("citus_add_node('127.0.0.1', {port})"))?;
        self.registered += 1;
        Ok(port)
    }

    /// The Citus version on the coordinator (`citus_version()`'s first words).
    pub async fn version(&self) -> Result<String> {
        let client = self.coordinator_opts()?.connect().await?;
        let v: String = client
            .query_one("select citus_version()", &[])
            .await
            .ctx("reading citus_version()")?
            .get(0);
        Ok(v.split(" on ").next().unwrap_or(&v).to_string())
    }
}

/// Creates otel_traces, distributes it by trace_id and loads `n` spans spread over the last
/// `days` days (traces of `mean` spans on average), then `vacuum (analyze)`; returns seconds.
pub async fn load(
    client: &tokio_postgres::Client,
    target: &Target,
    n: u64,
    days: i64,
    mean: f64,
    seed: u64,
) -> Result<f64> {
    spangen::create_source(client, target).await?;
    client
        .batch_execute("select create_distributed_table('otel_traces', 'trace_id')")
        .await
        .ctx("distributing otel_traces by trace_id")?;
    let (mut rx, producer) = super::load::history_chunks(seed, mean, n, days, CHUNK);
    let started = Instant::now();
    let mut loaded = 0u64;
    let mut last = Instant::now();
    while let Some(chunk) = rx.recv().await {
        loaded += spangen::copy_spans(client, target, &chunk).await?;
        if last.elapsed() >= Duration::from_secs(10) || loaded >= n {
            last = Instant::now();
            say(format!(
                "  loaded {} of {} spans through the coordinator",
                count(loaded),
                count(n)
            ));
        }
    }
    producer.await.map_err(join_error)?;
    client
        .batch_execute(&format!("vacuum (analyze) {}", target.traces()))
        .await
        .ctx("vacuuming otel_traces")?;
    Ok(started.elapsed().as_secs_f64())
}
