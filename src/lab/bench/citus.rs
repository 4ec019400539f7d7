//! The Citus section: on a cluster of its own (`citus_cluster.rs`: a coordinator and two
//! worker clusters on 127.0.0.1), otel_traces distributed by trace_id with a history loaded
//! through the coordinator, `install --mode incremental` by the crate's install (which reaches
//! each node with the coordinator's credentials), and beside it `bench_mv`, the definition as a
//! materialized view on the coordinator over the distributed table. Then, with one worker node
//! and again after the second was added with `citus_add_node` and `rebalance_table_shards`
//! (block_writes) moved half the shards to it:
//!
//! 1. freshness under ingest: `trace-summarizer run` as a process against the coordinator (the
//!    product's defaults; it runs a loop per node), a writer at each rate (new traces, upstream's
//!    INSERT … ON CONFLICT DO NOTHING every 100 ms, `stream::steady`) and a poller of the
//!    coordinator's otel_trace_summaries (`stream::Poller`): commit to summarized, per batch;
//! 2. with the process stopped, a step absorbing 10k new spans copied in on the coordinator, on
//!    every node at once as the worker runs it (`citus_steps.rs`), timed until the last node's
//!    step committed, and REFRESH MATERIALIZED VIEW CONCURRENTLY of bench_mv on the same data.
//!
//! At the end, one more step per node and otel_trace_summaries compared with the definition
//! (EXCEPT ALL both ways). Never fails the bench: Citus missing, or an error, is recorded.

use super::citus_cluster::{self, CitusCluster, WORKERS};
use super::citus_steps::{AllSteps, Nodes};
use super::config::Settings;
use super::product_process::{self, ProductProcess};
use super::refresh::{self, Memory};
use super::spans::fresh_spans;
use super::stats::{count, median, ms, percentile, say, secs};
use super::stream::{self, LatePool, Poller};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::db::sqltext;
use crate::definition::Definition;
use crate::error::{DbContext, Error, Result};
use crate::install::{self, InstallPlan};
use crate::lab::spangen::{self, SpanGen};
use crate::state::Mode;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Days of history loaded (inside the 7-day window, so no trace crosses its edge while the
/// section runs).
const HISTORY_DAYS: i64 = 3;
/// How long the poller waits for the last probes after a writer stopped.
const DRAIN: Duration = Duration::from_secs(30);
/// How long the product gets to catch up before a freshness run.
const CATCH_UP: Duration = Duration::from_secs(300);

/// Everything the Citus section measured.
#[derive(Debug, Clone, Default)]
pub struct CitusRuns {
    /// Why it did not run (Citus not installed).
    pub skipped: Option<String>,
    /// Why it stopped before its end.
    pub error: Option<String>,
    /// `citus_version()`.
    pub version: String,
    pub spans: u64,
    pub load_s: f64,
    pub install_s: f64,
    pub create_mv_s: f64,
    /// One worker node, then two.
    pub counts: Vec<NodeCount>,
    /// `rebalance_table_shards` after the second node was added.
    pub rebalance_s: Option<f64>,
    /// Rows of otel_trace_summaries at the end, and rows that differ from the definition.
    pub compared: i64,
    pub differing: Option<i64>,
}

/// The measures with a given number of worker nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeCount {
    pub workers: usize,
    /// Shards of otel_traces per node ("host:port", shards).
    pub shards: Vec<(String, i64)>,
    pub freshness: Vec<CitusFreshness>,
    pub steps: Vec<AllSteps>,
    pub refresh_s: Vec<f64>,
}

/// One freshness run.
#[derive(Debug, Clone, Default)]
pub struct CitusFreshness {
    pub rate: u32,
    pub achieved: f64,
    /// Commit to summarized per batch, ms; unseen batches count as +inf.
    pub samples_ms: Vec<f64>,
    pub unseen: usize,
}

impl CitusFreshness {
    pub fn p50(&self) -> f64 {
        percentile(&self.samples_ms, 50.0)
    }
    pub fn p99(&self) -> f64 {
        percentile(&self.samples_ms, 99.0)
    }
}

impl NodeCount {
    /// The median time until every node's step committed.
    pub fn step_s(&self) -> Option<f64> {
        (!self.steps.is_empty())
            .then(|| median(&self.steps.iter().map(|s| s.seconds).collect::<Vec<_>>()))
    }
    /// Each node's median step, by node.
    pub fn node_steps(&self) -> Vec<(String, f64)> {
        let Some(first) = self.steps.first() else {
            return Vec::new();
        };
        (0..first.nodes.len())
            .map(|i| {
                let v: Vec<f64> = self
                    .steps
                    .iter()
                    .filter_map(|s| s.nodes.get(i).map(|n| n.seconds))
                    .collect();
                (first.nodes[i].node.clone(), median(&v))
            })
            .collect()
    }
    pub fn refresh_median_s(&self) -> Option<f64> {
        (!self.refresh_s.is_empty()).then(|| median(&self.refresh_s))
    }
}

/// Runs the whole section on clusters of its own, stopped afterwards.
pub async fn measure(s: &Settings) -> CitusRuns {
    let mut out = CitusRuns {
        spans: s.citus.spans,
        ..Default::default()
    };
    say(format!(
        "Citus: starting a coordinator and {WORKERS} worker clusters (Citus preloaded) on 127.0.0.1"
    ));
    let mut cluster = match CitusCluster::start().await {
        Ok(c) => c,
        Err(Error::Config(m)) if m.contains("Citus is not installed") => {
            say("  skipped: Citus not installed");
            out.skipped = Some("Citus not installed".into());
            return out;
        }
        Err(e) => {
            say(format!("  the Citus section stopped: {}", e.chain()));
            out.error = Some(e.chain());
            return out;
        }
    };
    if let Err(e) = run(&mut cluster, s, &mut out).await {
        say(format!("  the Citus section stopped: {}", e.chain()));
        out.error = Some(e.chain());
    }
    say("Citus: stopping its clusters");
    drop(cluster);
    out
}

async fn run(cluster: &mut CitusCluster, s: &Settings, out: &mut CitusRuns) -> Result<()> {
    let c = &s.citus;
    let opts = cluster.coordinator_opts()?;
    let mut client = opts.connect().await?;
    let target = Target::new("public");
    let def = refresh::definition(&s.window);
    let mean = s.spans_per_trace;
    let seed = 0xC17A5_u64;
    out.version = cluster.version().await?;

    say(format!(
        "  loading {} spans over the last {HISTORY_DAYS} days into otel_traces distributed by trace_id (one worker node)",
        count(c.spans)
    ));
    out.load_s = citus_cluster::load(&client, &target, c.spans, HISTORY_DAYS, mean, seed).await?;
    say(format!("  loaded in {}", secs(out.load_s)));

    say("  install --mode incremental on the coordinator (and its node)");
    out.install_s = install_incremental(&mut client, &opts, &target, &def).await?;
    say(format!("  installed in {}", secs(out.install_s)));
    say("  creating bench_mv, the definition as a materialized view over the distributed table");
    out.create_mv_s = refresh::create_mv_of(&client, &target, &def).await?;
    say(format!("  created in {}", secs(out.create_mv_s)));

    let mut gen = SpanGen::with_mean_spans(seed ^ 1, mean);
    for workers in 1..=WORKERS {
        if workers > cluster.registered {
            let port = cluster.add_worker().await?;
            say(format!(
                "  added the worker node 127.0.0.1:{port}; rebalance_table_shards('otel_traces', block_writes)"
            ));
            let t = Instant::now();
            client
                .batch_execute(
                    "select rebalance_table_shards('otel_traces', shard_transfer_mode := 'block_writes')",
                )
                .await
                .ctx("rebalancing otel_traces")?;
            out.rebalance_s = Some(t.elapsed().as_secs_f64());
            say(format!(
                "  rebalanced in {}",
                secs(t.elapsed().as_secs_f64())
            ));
        }
        let mut n = NodeCount {
            workers,
            shards: shards(&client).await?,
            ..Default::default()
        };
        say(format!(
            "  {workers} worker node(s): shards of otel_traces {}",
            n.shards
                .iter()
                .map(|(node, k)| format!("{node} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let result = freshness(&opts, &client, &target, s, &mut gen, &mut n).await;
        out.counts.push(n);
        result?;
        let n = out.counts.last_mut().expect("pushed");
        steps(&opts, &client, &target, s, &mut gen, n).await?;
        say(format!(
            "  REFRESH MATERIALIZED VIEW CONCURRENTLY bench_mv, {} times",
            c.refreshes
        ));
        for _ in 0..c.refreshes {
            let t = refresh::refresh(&client, &target, true, Memory::LikeRebuild).await?;
            say(format!("    {}", secs(t)));
            n.refresh_s.push(t);
        }
    }

    say("  one more step per node, then otel_trace_summaries against the definition (EXCEPT ALL both ways)");
    let mut nodes = Nodes::connect(&client, &opts, &target, s.worker.statement_timeout).await?;
    nodes.step().await?;
    let (compared, differing) = compare(&client, &target, &def).await?;
    out.compared = compared;
    out.differing = Some(differing);
    say(format!("  {compared} rows, {differing} differ"));
    Ok(())
}

/// `install --mode incremental` as the CLI runs it on a Citus coordinator; returns seconds.
async fn install_incremental(
    client: &mut Client,
    opts: &ConnectOptions,
    target: &Target,
    def: &Definition,
) -> Result<f64> {
    let plan = InstallPlan {
        mode: Mode::Incremental,
        def: def.clone(),
        reader_roles: vec![],
        cron_schedule: "*/2 * * * *".into(),
        adopt: false,
        alter_publications: false,
        connect: Some(opts.clone()),
    };
    let t = Instant::now();
    install::install(client, target, &plan).await?;
    Ok(t.elapsed().as_secs_f64())
}

/// Shards of otel_traces per node.
async fn shards(client: &Client) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "select nodename || ':' || nodeport, count(*) from citus_shards
             where table_name = 'otel_traces'::regclass group by 1 order by 1",
            &[],
        )
        .await
        .ctx("counting the shards per node")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The product as a process against the coordinator, caught up; then, per rate, a writer and
/// the poller for `duration`.
async fn freshness(
    opts: &ConnectOptions,
    client: &Client,
    target: &Target,
    s: &Settings,
    gen: &mut SpanGen,
    n: &mut NodeCount,
) -> Result<()> {
    let label = format!("citus-{}", n.workers);
    let mut product = ProductProcess::start(opts, &[], &label)?;
    for &rate in &s.citus.rates {
        let waited =
            product_process::wait_caught_up(client, target, gen, &mut product, CATCH_UP).await?;
        say(format!(
            "  `trace-summarizer run` caught up ({}); ingesting {} spans/s for {}",
            secs(waited),
            count(rate as u64),
            humantime::format_duration(s.citus.duration)
        ));
        let poller = Poller::start(opts, target.summaries()).await?;
        let writer = stream::steady(
            opts,
            target,
            rate,
            s.citus.duration,
            SpanGen::with_mean_spans(gen.rng().random::<u64>(), s.spans_per_trace),
            Arc::new(LatePool::default()),
            Some(poller.pending.clone()),
        )
        .await?;
        tokio::time::sleep(s.citus.duration).await;
        let log = writer.finish().await?;
        let (mut samples_ms, unseen) = poller.finish(DRAIN).await?;
        samples_ms.extend(std::iter::repeat_n(f64::INFINITY, unseen));
        let run = CitusFreshness {
            rate,
            achieved: log.spans as f64 / log.seconds.max(1e-3),
            samples_ms,
            unseen,
        };
        say(format!(
            "    achieved {:.0} spans/s; commit to summarized p50 {}, p99 {}{}",
            run.achieved,
            ms(run.p50()),
            ms(run.p99()),
            if unseen > 0 {
                format!(", {unseen} batches unseen after {} s", DRAIN.as_secs())
            } else {
                String::new()
            }
        ));
        n.freshness.push(run);
        product.check()?;
    }
    product.stop().await;
    Ok(())
}

/// With no worker running: a warm-up step on every node, then `steps` times 10k new spans copied
/// in on the coordinator and one step on every node at once.
async fn steps(
    opts: &ConnectOptions,
    client: &Client,
    target: &Target,
    s: &Settings,
    gen: &mut SpanGen,
    n: &mut NodeCount,
) -> Result<()> {
    let c = &s.citus;
    let mut nodes = Nodes::connect(client, opts, target, s.worker.statement_timeout).await?;
    // Absorb what is pending (a full refresh where a node asks for one), then a warm-up.
    nodes.step().await?;
    spangen::copy_spans(client, target, &fresh_spans(gen, 1_000)).await?;
    nodes.step().await?;
    say(format!(
        "  a step absorbing {} new spans on every node at once, {} times",
        count(c.step_spans as u64),
        c.steps
    ));
    for _ in 0..c.steps {
        spangen::copy_spans(client, target, &fresh_spans(gen, c.step_spans)).await?;
        let all = nodes.step().await?;
        if let Some(r) = all.rebuilt() {
            return Err(Error::Config(format!(
                "bench: a timed Citus step asked for a full refresh ({r})"
            )));
        }
        if all.spans() != c.step_spans as i64 {
            return Err(Error::Config(format!(
                "bench: the nodes' steps absorbed {} spans where {} were inserted just before",
                all.spans(),
                c.step_spans
            )));
        }
        say(format!(
            "    {} ({})",
            secs(all.seconds),
            all.nodes
                .iter()
                .map(|x| format!("{} {} spans in {}", x.node, x.spans, secs(x.seconds)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        n.steps.push(all);
    }
    Ok(())
}

/// Rows of otel_trace_summaries, and rows that differ from the definition both ways.
async fn compare(client: &Client, target: &Target, def: &Definition) -> Result<(i64, i64)> {
    let cols = sqltext::column_list(None);
    let t = target.summaries();
    let d = def.query(target, "");
    let row = client
        .query_one(
            &format!(
                "with d as ({d})
                 select (select count(*) from {t}),
                        (select count(*) from (select {cols} from {t} except all select {cols} from d) a)
                      + (select count(*) from (select {cols} from d except all select {cols} from {t}) b)"
            ),
            &[],
        )
        .await
        .ctx("comparing otel_trace_summaries with the definition")?;
    Ok((row.get(0), row.get(1)))
}
