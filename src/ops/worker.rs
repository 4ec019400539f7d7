//! The `run` daemon: `Worker::start` spawns one loop per installation (schema) and returns a
//! handle with `shutdown()` and `wait()`, in the way supabase/etl structures its lifecycle.
//!
//! Each loop owns one dedicated session. It waits to become the schema's leader (a session
//! advisory lock), then runs steps through that session (`maintain::cycle::run`), falls back
//! to a full refresh when the incremental path cannot be trusted or would cost more, checks a
//! slice of the audit every few seconds, and reconnects with capped backoff. Loops of
//! different schemas share nothing but the process: one failing does not stop another.

use crate::citus;
use crate::db::connect::ConnectOptions;
use crate::db::locks;
use crate::db::source::{self, Target};
use crate::db::statements::Statements;
use crate::error::{DbContext, Disposition, Error, Result};
use crate::maintain::audit::Pace;
use crate::maintain::cycle::{self, Extras, Limits, Outcome};
use crate::maintain::parallel::{Jobs, Parallel};
use crate::maintain::probe::{self, Found, Probe};
use crate::maintain::rebuild::{self, Method};
use crate::maintain::scratch;
use crate::ops::metrics::{Health, Metrics, SchemaMetrics};
use crate::ops::shutdown::Shutdown;
use crate::state;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Validated settings of `run`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The installations to serve; empty: the first schema on the search_path.
    pub schemas: Vec<String>,
    /// Run steps until caught up, then exit.
    pub once: bool,
    /// How often an idle worker checks for new spans, and the shortest pause between steps.
    pub interval: Duration,
    /// The longest pause after a step that absorbed spans (see `Pacing`).
    pub max_interval: Duration,
    /// How often the idle check runs once it found nothing (the first spans after a quiet
    /// period wait at most this long).
    pub idle_interval: Duration,
    /// New spans a step aims to absorb at once: after a step, the worker pauses about as long as
    /// the current rate takes to bring that many (between `interval` and `max_interval`).
    pub step_batch: u32,
    /// statement_timeout of steps.
    pub statement_timeout: Duration,
    /// statement_timeout of a full refresh (None: no limit).
    pub rebuild_timeout: Option<Duration>,
    /// Connections a full refresh aggregates on.
    pub rebuild_jobs: Jobs,
    /// One full audit pass takes this long (None: no audit).
    pub audit_period: Option<Duration>,
    pub limits: Limits,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            schemas: Vec::new(),
            once: false,
            interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(2),
            idle_interval: Duration::from_millis(250),
            step_batch: 1000,
            statement_timeout: Duration::from_secs(300),
            rebuild_timeout: Some(Duration::from_secs(4 * 3600)),
            rebuild_jobs: Jobs::Auto,
            audit_period: Some(Duration::from_secs(24 * 3600)),
            limits: Limits::default(),
        }
    }
}

/// How long `run --once` waits for the leader lock (a leader that just died releases it).
const ONCE_LEADER_WAIT: Duration = Duration::from_secs(10);
/// How often an idle loop records that it checked (for `status`).
const HEARTBEAT: Duration = Duration::from_secs(5);

pub struct Worker;

/// The running loops.
pub struct WorkerHandle {
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<(String, JoinHandle<Result<()>>)>,
}

impl Worker {
    /// Starts one loop per schema. `outer` (signals) stops them too.
    pub fn start(
        opts: ConnectOptions,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        outer: Shutdown,
    ) -> WorkerHandle {
        let (stop, shutdown) = Shutdown::manual();
        {
            let stop = stop.clone();
            let outer = outer.clone();
            tokio::spawn(async move {
                outer.wait().await;
                let _ = stop.send(true);
            });
        }
        let schemas: Vec<Option<String>> = if settings.schemas.is_empty() {
            vec![None]
        } else {
            settings.schemas.iter().cloned().map(Some).collect()
        };
        health.expected.store(schemas.len(), Ordering::Relaxed);
        let loops = schemas
            .into_iter()
            .map(|schema| {
                let label = schema.clone().unwrap_or_else(|| "(search_path)".into());
                let l = Loop {
                    opts: opts.clone(),
                    schema,
                    settings: settings.clone(),
                    metrics: metrics.clone(),
                    health: health.clone(),
                    shutdown: shutdown.clone(),
                    node: None,
                };
                let schema = label.clone();
                (
                    label,
                    tokio::spawn(async move {
                        let result = l.run().await;
                        if let Err(e) = &result {
                            // Said now, not only at exit: the other installations go on.
                            tracing::error!(
                                schema = %schema,
                                error = %e.chain(),
                                hint = e.hint().unwrap_or_default(),
                                "this installation's loop stopped; the others go on"
                            );
                        }
                        result
                    }),
                )
            })
            .collect();
        WorkerHandle { stop, loops }
    }
}

impl WorkerHandle {
    /// Asks every loop to stop: the running query is cancelled on the server, locks released.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for every loop, in the order started, and returns every error together.
    pub async fn wait(self) -> Result<()> {
        let mut errors = Vec::new();
        for (schema, handle) in self.loops {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e.in_schema(&schema)),
                Err(join) => errors.push(Error::Config(format!(
                    "the worker loop of schema {schema} panicked: {join}"
                ))),
            }
        }
        Error::combine(errors)
    }
}

/// One installation's loop.
struct Loop {
    opts: ConnectOptions,
    schema: Option<String>,
    settings: WorkerSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Shutdown,
    /// On Citus: the node this loop serves, with the coordinator's installation (None: a plain
    /// server, or the coordinator's loop, which supervises the node loops).
    node: Option<Arc<NodeRole>>,
}

/// A Citus node served by a loop of its own (`citus` module: each node summarizes its shards).
struct NodeRole {
    node: citus::nodes::Node,
    coordinator: state::State,
}

/// How often the coordinator's loop looks for nodes that gained shards.
const NODES_PACE: Duration = Duration::from_secs(30);

/// Why the leader loop ended.
enum LoopEnd {
    Shutdown,
    CaughtUp,
}

impl Loop {
    /// Runs until shutdown (or until caught up with `--once`). Transient errors reconnect with
    /// capped exponential backoff; configuration errors end the loop.
    async fn run(&self) -> Result<()> {
        let mut backoff = Duration::from_millis(250);
        let mut failures = 0u32;
        let mut metrics: Option<SchemaMetrics> = None;
        loop {
            if self.shutdown.requested() {
                return Ok(());
            }
            let began = Instant::now();
            let result = self.session(&mut metrics).await;
            if began.elapsed() > Duration::from_secs(30) {
                // A session that worked for a while starts the backoff over.
                backoff = Duration::from_millis(250);
                failures = 0;
            }
            let m = metrics.clone();
            match result {
                Ok(LoopEnd::Shutdown) | Ok(LoopEnd::CaughtUp) => return Ok(()),
                Err(Error::Cancelled) => return Ok(()),
                // `--once` (cron) gives up after a few attempts; the daemon never does.
                Err(e)
                    if e.disposition() == Disposition::Retry
                        && (!self.settings.once || failures < 5) =>
                {
                    failures += 1;
                    if let Some(m) = &m {
                        m.error(e.kind());
                        m.leader.set(0);
                    }
                    tracing::warn!(error = %e.chain(), retry_in_s = backoff.as_secs_f64(), attempt = failures, "worker session lost; reconnecting");
                    tokio::select! {
                        biased;
                        _ = self.shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    if let Some(m) = &m {
                        m.error(e.kind());
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One database session: connect, check, wait for leadership, run steps.
    async fn session(&self, metrics: &mut Option<SchemaMetrics>) -> Result<LoopEnd> {
        let standby_name = format!("trace-summarizer standby {}", host_label());
        let mut client = self
            .opts
            .with_application_name(&standby_name)
            .connect()
            .await?;
        self.health.contact();
        check_session_pooling(&self.opts, &client).await?;
        let mut target = source::resolve(&client, self.schema.as_deref()).await?;
        if let Some(role) = &self.node {
            citus::node_session(&client).await?;
            target.local = Some(Arc::new(citus::shards::local(&client, &target).await?));
            if state::load(&client, &target.schema).await?.is_none() {
                citus::node::install(&client, &target, &role.coordinator).await?;
            }
        } else if citus::distribution(&client, &target).await? == citus::Distribution::ByTraceId {
            return self.supervise(&client, &target).await;
        }
        let label = match &self.node {
            Some(role) => format!("{}@{}", target.schema, role.node.label()),
            None => target.schema.clone(),
        };
        let m = metrics
            .get_or_insert_with(|| self.metrics.for_schema(&label))
            .clone();
        source::check_traces(&client, &target).await?;
        let st = installed_state(&client, &target).await?;
        crate::ops::privileges::check_worker(&client, &target, &st.names()).await?;
        self.configure_session(&client).await?;
        if let Some(at) = st.reflected_at {
            m.reflected(at.timestamp_micros() as f64 / 1e6);
        }
        self.health.initialised.fetch_add(1, Ordering::Relaxed);
        let mut result = self.lead_when_elected(&mut client, &target, &m).await;
        if let (Some(role), Err(e)) = (&self.node, &result) {
            // A shard moved away (and dropped) or arrived during a step: the error is the move's,
            // and a new session over the node's current shards goes on.
            if e.disposition() == Disposition::Stop {
                if let Ok(now) = citus::shards::local(&client, &target).await {
                    if target.local.as_deref() != Some(&now) {
                        result = Err(Error::Transient(format!(
                            "the shards of Citus node {} changed during a step ({})",
                            role.node.label(),
                            e.chain()
                        )));
                    }
                }
            }
        }
        if result.as_ref().is_err_and(|e| e.is_privilege_error()) {
            // A privilege lost while running (upstream's application sets the owner of every
            // table in its schema at each start): say which grant is missing.
            result = Err(self
                .missing_grant(&client, &target)
                .await
                .unwrap_or_else(|| result.err().expect("an error")));
        }
        self.health.initialised.fetch_sub(1, Ordering::Relaxed);
        m.leader.set(0);
        result
    }

    /// `run` as a boxed future of a named type (a node's loop is spawned from the coordinator's).
    fn run_boxed(self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> {
        Box::pin(async move { self.run().await })
    }

    /// On a Citus coordinator: runs one loop per node that holds shards of otel_traces (each
    /// leads, steps and refreshes on its node), and starts loops for nodes that gain shards
    /// later. Ends when shutdown is asked for, when every loop ended (`--once`), or with the
    /// first loop's error.
    async fn supervise(&self, client: &Client, target: &Target) -> Result<LoopEnd> {
        let coordinator = installed_state(client, target).await?;
        let mut loops: Vec<(citus::nodes::Node, JoinHandle<Result<()>>)> = Vec::new();
        loop {
            for node in citus::nodes::with_shards(client, target).await? {
                if loops.iter().any(|(n, _)| *n == node) {
                    continue;
                }
                tracing::info!(schema = %target.schema, node = %node.label(), "serving a Citus node");
                let child = Loop {
                    opts: node.options(&self.opts),
                    schema: Some(target.schema.clone()),
                    settings: self.settings.clone(),
                    metrics: self.metrics.clone(),
                    health: self.health.clone(),
                    shutdown: self.shutdown.clone(),
                    node: Some(Arc::new(NodeRole {
                        node: node.clone(),
                        coordinator: coordinator.clone(),
                    })),
                };
                loops.push((node, tokio::spawn(child.run_boxed())));
            }
            if let Some(i) = loops.iter().position(|(_, h)| h.is_finished()) {
                let (node, handle) = loops.remove(i);
                match handle.await {
                    Ok(Ok(())) if self.settings.once => {}
                    Ok(Ok(())) => return Ok(LoopEnd::Shutdown),
                    Ok(Err(e)) => {
                        return Err(e.in_schema(&format!("{}@{}", target.schema, node.label())))
                    }
                    Err(join) => {
                        return Err(Error::Config(format!(
                            "the loop of Citus node {} panicked: {join}",
                            node.label()
                        )))
                    }
                }
                if self.settings.once && loops.is_empty() {
                    return Ok(LoopEnd::CaughtUp);
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => {
                    for (_, handle) in loops {
                        let _ = handle.await;
                    }
                    return Ok(LoopEnd::Shutdown);
                }
                _ = tokio::time::sleep(if self.settings.once { Duration::from_millis(100) } else { NODES_PACE }) => {}
            }
        }
    }

    /// The precondition that names the missing grant, when the checks made at start find one.
    async fn missing_grant(&self, client: &Client, target: &Target) -> Option<Error> {
        if let Err(e) = source::check_traces(client, target).await {
            return Some(e);
        }
        let st = state::load(client, &target.schema).await.ok()??;
        crate::ops::privileges::check_worker(client, target, &st.names())
            .await
            .err()
    }

    async fn lead_when_elected(
        &self,
        client: &mut Client,
        target: &Target,
        m: &SchemaMetrics,
    ) -> Result<LoopEnd> {
        // Standby: poll for the leader lock; the poll doubles as the heartbeat.
        let mut announced = false;
        let started = Instant::now();
        loop {
            if locks::try_leader(&*client, &target.schema).await? {
                break;
            }
            self.health.contact();
            m.leader.set(0);
            if !announced {
                tracing::info!(schema = %target.schema, "another worker leads; standing by");
                announced = true;
            }
            if self.settings.once && started.elapsed() >= ONCE_LEADER_WAIT {
                // The leader is doing the work; for cron that is success.
                tracing::info!(
                    "another worker leads and keeps the summaries current; nothing to do"
                );
                return Ok(LoopEnd::CaughtUp);
            }
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ok(LoopEnd::Shutdown),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let leader_name = format!("trace-summarizer leader {}", host_label());
        client
            .execute(
                "select set_config('application_name', $1, false)",
                &[&leader_name],
            )
            .await
            .ctx("setting application_name")?;
        m.leader.set(1);
        tracing::info!(schema = %target.schema, "leading");
        let st = installed_state(&*client, target).await?;
        scratch::prepare(&*client, target, &rebuild::definition(&st)).await?;
        self.lead(client, target, m).await
    }

    /// Session settings that keep a step from hanging and make a dead peer visible. The time
    /// zone is the database's default: the window edge is computed as pg_cron computes the
    /// view's. The plans are pinned to index lookups for the whole session (the idle check
    /// runs outside any step); a full refresh gives the planner its choices back. The idle
    /// check reads no columnar (compressed) TimescaleDB data; steps turn it on where they need
    /// it (`tailing::COLUMNAR_OFF`).
    async fn configure_session(&self, client: &Client) -> Result<()> {
        configure_session(client, self.settings.statement_timeout).await
    }

    /// The leader's loop: one `select!` whose branches are numbered by priority, shutdown first.
    /// Between steps, the idle check (`maintain::probe`) decides whether the next step has
    /// anything to do; a step runs when it has, when the audit, the window edge or the catalog
    /// check is due, and at once after a step that left work.
    async fn lead(
        &self,
        client: &mut Client,
        target: &Target,
        m: &SchemaMetrics,
    ) -> Result<LoopEnd> {
        let pace = self.settings.audit_period.map(|period| Pace { period });
        let mut last_slice: Option<Instant> = None;
        let mut idle = Idle::new(session_pid(client).await?);
        // Prepared once per session, for every step.
        let statements = Statements::new();
        let mut limits = self.settings.limits;
        let mut step_now = true;
        let mut pacing = Pacing::new(&self.settings);
        // A Citus node's shards can move: listed again at most every second.
        let mut target = target.clone();
        let mut shards_listed = Instant::now();
        // When a step last checked what install put on otel_traces (`Extras::skip_capture_check`).
        let mut capture_checked: Option<Instant> = None;
        loop {
            self.health.tick();
            if self.node.is_some() && shards_listed.elapsed() >= Duration::from_secs(1) {
                shards_listed = Instant::now();
                if citus::node::refresh_shards(client, &mut target).await? {
                    tracing::info!(schema = %target.schema, shards = target.local.as_ref().map_or(0, |l| l.pairs.len()), "this node's shards changed");
                    idle.forget_probe();
                    step_now = true;
                }
            }
            let target = &target;
            let audit = pace.filter(|p| last_slice.is_none_or(|t| t.elapsed() >= p.every()));
            if !step_now && audit.is_none() {
                // 1. Shutdown; 2. the idle check.
                let checked = {
                    let check = idle.check(client, &statements, target);
                    tokio::pin!(check);
                    tokio::select! {
                        biased;
                        _ = self.shutdown.wait() => return Ok(LoopEnd::Shutdown),
                        r = &mut check => r?,
                    }
                };
                self.health.contact();
                if let Some(found) = checked {
                    m.success_now();
                    if !found.pending() {
                        m.reflected(found.now.timestamp_micros() as f64 / 1e6);
                    }
                    if idle.last_heartbeat.elapsed() >= HEARTBEAT {
                        state::record_check(
                            &*client,
                            &target.schema,
                            (!found.pending()).then_some(found.now),
                        )
                        .await?;
                        idle.last_heartbeat = Instant::now();
                    }
                    tokio::select! {
                        biased;
                        _ = self.shutdown.wait() => return Ok(LoopEnd::Shutdown),
                        _ = tokio::time::sleep(self.settings.idle_interval) => {}
                    }
                    continue;
                }
            }
            let skip_capture_check = capture_checked.is_some_and(|t| t.elapsed() < CATALOG_PACE);
            let extras = Extras {
                audit,
                heartbeat: idle.last_heartbeat.elapsed() >= HEARTBEAT,
                skip_capture_check,
            };
            let token = client.cancel_token();
            let outcome = {
                let work = cycle::run(client, &statements, target, &limits, &extras, false);
                tokio::pin!(work);
                tokio::select! {
                    biased;
                    // 1. Shutdown: cancel the running statement on the server.
                    _ = self.shutdown.wait() => {
                        self.health.shutting_down.store(true, Ordering::Relaxed);
                        self.opts.cancel(&token).await;
                        return Ok(LoopEnd::Shutdown);
                    }
                    // 3. The step.
                    r = &mut work => r?,
                }
            };
            self.health.contact();
            idle.stepped();
            idle.steps += 1;
            if let Some(Outcome::Done(stats)) = &outcome {
                idle.scratch_rows += stats.scratch_rows();
            }
            if idle.scratch_rows >= scratch::VACUUM_ROWS || idle.steps % scratch::VACUUM_EVERY == 0
            {
                scratch::vacuum(client).await?;
                idle.scratch_rows = 0;
            }
            step_now = match outcome {
                // A manual command (rebuild, verify, install) holds the work lock.
                None => false,
                Some(Outcome::Done(stats)) => {
                    if !skip_capture_check {
                        capture_checked = Some(Instant::now());
                    }
                    if extras.audit.is_some() && stats.audit.is_some() {
                        last_slice = Some(Instant::now());
                    }
                    if stats.changed || extras.heartbeat {
                        idle.last_heartbeat = Instant::now();
                    }
                    if stats.bounded.is_empty() {
                        // Caught up once: a later capped step is ordinary catch-up.
                        limits.check_backlog = false;
                    }
                    self.record_step(m, &stats);
                    pacing.stepped(stats.spans, stats.duration);
                    stats.more()
                }
                // 4. A full refresh instead.
                Some(Outcome::NeedsRebuild(fallback)) => {
                    let reason = fallback.reason();
                    tracing::warn!(reason = %reason, "falling back to a full refresh");
                    m.fallback(&reason);
                    let started_at = chrono::Utc::now();
                    let parallel = Parallel {
                        connect: self.opts.clone(),
                        jobs: self.settings.rebuild_jobs,
                    };
                    let stats = rebuild::run(
                        client,
                        target,
                        &reason,
                        self.settings.rebuild_timeout,
                        Method::Auto,
                        Some(&parallel),
                    )
                    .await?;
                    tracing::info!(rows = stats.rows, swapped = stats.swapped, jobs = stats.jobs, inserted = stats.inserted, updated = stats.updated, deleted = stats.deleted, seconds = stats.duration.as_secs_f64(), reason = %reason, "full refresh done");
                    m.success_now();
                    m.reflected(started_at.timestamp_micros() as f64 / 1e6);
                    idle.forget_probe();
                    capture_checked = None;
                    true
                }
            };
            if !step_now {
                if self.settings.once {
                    return Ok(LoopEnd::CaughtUp);
                }
                // 5. Wait as the ingest rate asks (or for shutdown).
                if self.pause(client, &idle, &pacing).await? {
                    return Ok(LoopEnd::Shutdown);
                }
            }
        }
    }

    /// The pause after a step: `pacing`'s, or shorter when a step's worth of spans arrived
    /// before it ends. A pause longer than the interval (a low rate) is cut in slices of the
    /// idle interval, each followed by a count of the waiting spans (at most `step_batch`
    /// index entries), so a jump from a trickle to a high rate is served within a slice rather
    /// than after the whole pause. Returns true when shutdown was asked for.
    async fn pause(&self, client: &Client, idle: &Idle, pacing: &Pacing) -> Result<bool> {
        let pause = pacing.pause();
        let sliced = pause > self.settings.interval && idle.probe.is_some();
        // Slices of at least half the pause: a long pause checks once in its middle.
        let slice = if sliced {
            self.settings
                .idle_interval
                .max(self.settings.interval)
                .max(pause / 2)
        } else {
            pause
        };
        let deadline = Instant::now() + pause;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ok(true),
                _ = tokio::time::sleep(slice.min(left)) => {}
            }
            if !sliced || Instant::now() >= deadline {
                return Ok(false);
            }
            let batch = i64::from(self.settings.step_batch.max(1));
            match idle.probe.as_ref().map(|p| p.waiting(client, batch)) {
                Some(count) => match count.await {
                    Ok(n) if n < batch => {}
                    // A lost connection is the loop's to handle; anything else (say, uninstalled
                    // under the worker), the step's to explain.
                    Err(e) if e.disposition() == Disposition::Retry => return Err(e),
                    _ => return Ok(false),
                },
                None => return Ok(false),
            }
        }
    }

    fn record_step(&self, m: &SchemaMetrics, stats: &cycle::StepStats) {
        m.success_now();
        if let Some(at) = stats.reflects {
            m.reflected(at.timestamp_micros() as f64 / 1e6);
        }
        for bound in &stats.bounded {
            m.bounded(bound);
            tracing::info!(bound, "step bounded; the rest follows at once");
        }
        if let Some(a) = &stats.audit {
            m.audit_traces_checked.inc_by(a.checked.max(0) as u64);
            m.audit_mismatches.inc_by(a.mismatches.max(0) as u64);
            if a.pass_done {
                m.audit_passes.inc();
                tracing::info!(
                    checked = a.record.pass_checked,
                    mismatches = a.record.pass_mismatches,
                    "audit pass done"
                );
            }
        }
        if !stats.changed {
            return;
        }
        m.cycle_duration_seconds
            .observe(stats.duration.as_secs_f64());
        m.spans_processed.inc_by(stats.spans.max(0) as u64);
        m.traces_upserted.inc_by(stats.upserted.max(0) as u64);
        m.traces_pruned.inc_by(stats.pruned.max(0) as u64);
        tracing::info!(
            spans = stats.spans,
            recomputed = stats.recomputed,
            upserted = stats.upserted,
            pruned = stats.pruned,
            ms = (stats.duration.as_secs_f64() * 1000.0).round(),
            "cycle done"
        );
    }
}

/// The installation of `target`, ready for the worker: our schema is current and it is in
/// incremental mode.
async fn installed_state(client: &Client, target: &Target) -> Result<state::State> {
    if !state::schema_exists(client).await? {
        return Err(not_installed(target));
    }
    let Some(st) = state::load(client, &target.schema).await? else {
        return Err(not_installed(target));
    };
    if st.mode != state::Mode::Incremental {
        return Err(Error::precondition(
            format!(
                "schema {:?} is installed in mv mode; the worker only runs in incremental mode",
                target.schema
            ),
            "switch with `trace-summarizer install --mode incremental`, or let pg_cron refresh the view",
        ));
    }
    // What install put on otel_traces is checked by every step: when it is missing or was
    // changed, the step falls back to a full refresh, which puts it back (as the owner of
    // otel_traces) or stops with what to run.
    Ok(st)
}

/// The worker's leadership and scratch tables live on its server session, so it needs one
/// server session for the whole of its client connection. A pooler in transaction (or
/// statement) mode breaks that: it hands the server session to other clients between
/// transactions. Detected by asking a second client for its backend: in session mode it can
/// never get the first client's server session; behind a transaction-mode PgBouncer it gets
/// that idle session back at once (PgBouncer reuses the most recently released one).
async fn check_session_pooling(opts: &ConnectOptions, client: &Client) -> Result<()> {
    // The simple protocol only: an extended-protocol query leaves a Close message behind, which
    // a transaction pooler would serve with the session it is about to hand to the probe.
    let mine = session_pid(client).await?;
    let probe = opts
        .with_application_name("trace-summarizer pooler probe")
        .connect()
        .await?;
    let theirs = session_pid(&probe).await?;
    drop(probe);
    if mine == theirs {
        return Err(pooler_error());
    }
    Ok(())
}

fn not_installed(target: &Target) -> Error {
    Error::precondition(
        format!(
            "trace-summarizer is not installed for schema {:?}",
            target.schema
        ),
        "run `trace-summarizer install --mode incremental` first",
    )
}

fn host_label() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        });
    format!("{host} pid {}", std::process::id())
}

/// How often an idle worker compares the catalog (partitions, what install put on otel_traces,
/// otel_traces itself) with what the last step saw: a change is reconciled within this.
const CATALOG_PACE: Duration = Duration::from_secs(3);
/// How often an idle worker recomputes the traces whose spans crossed the window edge. A step
/// that runs for new spans handles the edge anyway.
const EDGE_PACE: Duration = Duration::from_secs(5);

/// The idle check's state: the prepared probe and the paces of the slower checks.
struct Idle {
    pid: i32,
    /// Steps run in this session.
    steps: u32,
    /// Rows the steps put in the scratch tables since they were last vacuumed.
    scratch_rows: i64,
    probe: Option<Probe>,
    last_catalog: Instant,
    last_step: Instant,
    last_heartbeat: Instant,
}

impl Idle {
    fn new(pid: i32) -> Idle {
        Idle {
            pid,
            steps: 0,
            scratch_rows: 0,
            probe: None,
            last_catalog: Instant::now(),
            last_step: Instant::now(),
            last_heartbeat: Instant::now(),
        }
    }

    fn stepped(&mut self) {
        self.last_step = Instant::now();
        self.last_catalog = Instant::now();
    }

    /// After a full refresh (or a reinstall) the probe is prepared again.
    fn forget_probe(&mut self) {
        self.probe = None;
    }

    /// Returns what the probe found when no step is needed, or None when one is.
    async fn check(
        &mut self,
        client: &Client,
        statements: &Statements,
        target: &Target,
    ) -> Result<Option<Found>> {
        if self.probe.is_none() {
            let Some(st) = state::load(client, &target.schema).await? else {
                return Ok(None);
            };
            match Probe::prepare(client, target, &st.names(), st.id).await {
                Ok(p) => self.probe = Some(p),
                Err(e) if e.disposition() == Disposition::Retry => return Err(e),
                // Something the step will explain better (a missing table, say).
                Err(_) => return Ok(None),
            }
        }
        let probe = self.probe.as_ref().expect("prepared above");
        let found = match probe.run(client).await {
            Ok(f) => f,
            Err(e) if e.sqlstate() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME) => {
                return Err(pooler_error());
            }
            Err(e) if e.disposition() == Disposition::Retry => return Err(e),
            Err(_) => {
                self.probe = None;
                return Ok(None);
            }
        };
        if found.pid != self.pid {
            return Err(pooler_error());
        }
        if found.pending() || (found.edge && self.last_step.elapsed() >= EDGE_PACE) {
            return Ok(None);
        }
        if self.last_catalog.elapsed() >= CATALOG_PACE {
            self.last_catalog = Instant::now();
            let st_names = crate::state::Names::for_id(probe.installation_id);
            let db = crate::db::statements::Db::new(client, statements);
            if probe::catalog_changed(&db, target, &st_names, &found).await? {
                return Ok(None);
            }
        }
        Ok(Some(found))
    }
}

/// The backend pid of the worker's session.
async fn session_pid(client: &Client) -> Result<i32> {
    let rows = client
        .simple_query("select pg_backend_pid()")
        .await
        .ctx("reading the backend pid")?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| Error::Config("the server did not say its backend pid".into()))
}

fn pooler_error() -> Error {
    Error::precondition(
        "the worker's statements reached another PostgreSQL session than its own: a pooler in transaction or statement mode (PgBouncer pool_mode = transaction) sits between the worker and PostgreSQL, and the worker's leader lock and scratch tables would be shared with other clients",
        "connect the worker directly to PostgreSQL, or through a pool in session mode (PgBouncer pool_mode = session); readers may keep using the transaction pool",
    )
}

/// How long to pause after a step: steps grow with the ingest rate instead of running on a fixed
/// clock. A step has a fixed cost (a transaction of about a dozen statements) besides what its
/// spans cost; at a low rate, steps every `interval` would pay it ten times a second for a
/// handful of spans each. So after a step that absorbed N spans, T after the previous one, the
/// worker pauses about as long as the rate N/T takes to bring `step_batch` spans, never less
/// than `interval` nor more than `max_interval`, counted from the step's start. At 10k spans/s with the defaults that is the
/// 100 ms interval; at 1k spans/s, a second. The first spans after a quiet period are found by the
/// idle check within `interval`.
struct Pacing {
    min: Duration,
    max: Duration,
    batch: f64,
    last_step: Option<Instant>,
    pause: Duration,
    /// How long the last step took: the pause counts from its start.
    took: Duration,
    /// The ingest rate seen by the last steps (spans per second), smoothed.
    rate: Option<f64>,
}

impl Pacing {
    fn new(settings: &WorkerSettings) -> Pacing {
        Pacing {
            min: settings.interval,
            max: settings.max_interval.max(settings.interval),
            batch: settings.step_batch.max(1) as f64,
            last_step: None,
            pause: settings.interval,
            took: Duration::ZERO,
            rate: None,
        }
    }

    /// A step that left nothing pending absorbed `spans` in `took`.
    fn stepped(&mut self, spans: i64, took: Duration) {
        let now = Instant::now();
        self.took = took;
        self.pause = match self.last_step {
            Some(at) if spans > 0 => {
                // Ingest commits in batches, so one step's rate is noisy: smoothed over steps
                // (a jump in the rate is caught by the sliced pause, `Loop::pause`).
                let now_rate = spans as f64 / now.duration_since(at).as_secs_f64().max(1e-3);
                let rate = match self.rate {
                    Some(old) => (now_rate + old) / 2.0,
                    None => now_rate,
                };
                self.rate = Some(rate);
                stretched(self.batch / rate, self.min).clamp(self.min, self.max)
            }
            _ => {
                self.rate = None;
                self.min
            }
        };
        if spans > 0 {
            self.last_step = Some(now);
        }
    }

    /// What is left of the pause once the step's own time is counted: steps start about every
    /// pause, and a step that took longer than the pause is followed by the next at once.
    fn pause(&self) -> Duration {
        self.pause.saturating_sub(self.took)
    }
}

/// The pause for a rate that brings `step_batch` spans in `linear` seconds: the interval at or
/// above the rate `step_batch / interval` (10k spans/s with the defaults); below it, growing
/// faster than the rate falls, as `interval × (linear / interval)^1.5`. A step's fixed cost
/// (a dozen statements, a few milliseconds of server CPU) weighs most at a trickle, where the
/// new spans cost little: at 1k spans/s the pause is about 3 s (capped by `max_interval`, 2 s
/// by default) instead of the 1 s a pause proportional to the rate gives, which halves what a
/// low ingest rate costs the server for a second more of staleness; at 5k spans/s it is 280 ms.
fn stretched(linear: f64, interval: Duration) -> Duration {
    let min = interval.as_secs_f64().max(1e-3);
    if linear <= min {
        return Duration::from_secs_f64(linear.max(0.0));
    }
    Duration::from_secs_f64((min * (linear / min).powf(1.5)).min(86_400.0))
}

/// The worker's session settings (see `Loop::configure_session`), for whoever runs steps as the
/// worker does (the bench's Citus steps).
pub async fn configure_session(client: &Client, statement_timeout: Duration) -> Result<()> {
    let ms = statement_timeout.as_millis().max(1);
    crate::db::ddl::run(client, &format!(
            "set statement_timeout = {ms};
             set lock_timeout = '10s';
             set idle_in_transaction_session_timeout = '5min';
             set jit = off;
             set enable_seqscan = off;
             set enable_hashjoin = off;
             set enable_mergejoin = off;
             set timescaledb.enable_columnarscan = off;
             set timezone to default;
             set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; set tcp_keepalives_count = 3;
             set client_connection_check_interval = '2s';"
        ), "configuring the worker session").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing() -> Pacing {
        Pacing::new(&WorkerSettings::default())
    }

    #[test]
    fn the_pause_follows_the_rate_between_the_interval_and_its_maximum() {
        let mut p = pacing();
        p.stepped(500, Duration::ZERO);
        assert_eq!(p.pause(), Duration::from_millis(100), "the first step");
        // 1,000 spans in a second: the linear pause (1 s) stretched to about 3 s, capped at 2 s.
        p.last_step = Some(Instant::now() - Duration::from_secs(1));
        p.stepped(1000, Duration::ZERO);
        assert!(p.pause() > Duration::from_millis(1900), "{:?}", p.pause());
        // 5,000 spans a second: 200 ms stretched to about 280 ms.
        p.rate = None;
        p.last_step = Some(Instant::now() - Duration::from_millis(200));
        p.stepped(1000, Duration::ZERO);
        assert!(
            p.pause() > Duration::from_millis(250) && p.pause() < Duration::from_millis(300),
            "{:?}",
            p.pause()
        );
        // 10,000 spans a second: the interval (the rate seen alone, not smoothed).
        p.rate = None;
        p.last_step = Some(Instant::now() - Duration::from_millis(100));
        p.stepped(1000, Duration::ZERO);
        assert!(p.pause() <= Duration::from_millis(110), "{:?}", p.pause());
        // A trickle: never more than the maximum.
        p.rate = None;
        p.last_step = Some(Instant::now() - Duration::from_secs(30));
        p.stepped(3, Duration::ZERO);
        assert_eq!(p.pause(), Duration::from_secs(2));
        // A step with no spans (the edge, the audit): back to the idle check's pace.
        p.stepped(0, Duration::ZERO);
        assert_eq!(p.pause(), Duration::from_millis(100));
    }

    #[test]
    fn the_rate_is_smoothed_over_steps() {
        let mut p = pacing();
        p.last_step = Some(Instant::now() - Duration::from_millis(100));
        p.stepped(1000, Duration::ZERO);
        // A step that found only a third of a batch: the smoothed rate falls by a third (the
        // linear pause, 150 ms, stretched to about 184 ms), not threefold.
        p.last_step = Some(Instant::now() - Duration::from_millis(100));
        p.stepped(330, Duration::ZERO);
        let pause = p.pause();
        assert!(
            pause > Duration::from_millis(160) && pause < Duration::from_millis(210),
            "{pause:?}"
        );
    }

    #[test]
    fn the_pause_counts_from_the_steps_start() {
        let mut p = pacing();
        p.last_step = Some(Instant::now() - Duration::from_millis(100));
        p.stepped(1000, Duration::from_millis(60));
        assert!(p.pause() <= Duration::from_millis(45), "{:?}", p.pause());
        // A step longer than the pause: the next follows at once.
        p.last_step = Some(Instant::now() - Duration::from_millis(100));
        p.stepped(1000, Duration::from_millis(250));
        assert_eq!(p.pause(), Duration::ZERO);
    }
}
