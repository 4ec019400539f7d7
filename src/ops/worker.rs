//! The `run` daemon: `Worker::start` spawns one loop per installation (schema) and returns a
//! handle with `shutdown()` and `wait()`, in the way supabase/etl structures its lifecycle.
//!
//! Each loop owns one dedicated session. It waits to become the schema's leader (a session
//! advisory lock), then runs steps through that session (`maintain::cycle::run`), falls back
//! to a full refresh when the incremental path cannot be trusted or would cost more, checks a
//! slice of the audit every few seconds, and reconnects with capped backoff. Loops of
//! different schemas share nothing but the process: one failing does not stop another.

use crate::db::connect::ConnectOptions;
use crate::db::locks;
use crate::db::source::{self, Target};
use crate::error::{DbContext, Disposition, Error, Result};
use crate::install::capture;
use crate::maintain::audit::Pace;
use crate::maintain::cycle::{self, Extras, Limits, Outcome};
use crate::maintain::rebuild::{self, Method};
use crate::maintain::scratch;
use crate::ops::metrics::{Health, Metrics, SchemaMetrics};
use crate::ops::shutdown::Shutdown;
use crate::state;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// Validated settings of `run`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The installations to serve; empty: the first schema on the search_path.
    pub schemas: Vec<String>,
    /// Run steps until caught up, then exit.
    pub once: bool,
    /// Pause after a step that found nothing to do.
    pub interval: Duration,
    /// statement_timeout of steps.
    pub statement_timeout: Duration,
    /// statement_timeout of a full refresh (None: no limit).
    pub rebuild_timeout: Option<Duration>,
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
            statement_timeout: Duration::from_secs(300),
            rebuild_timeout: Some(Duration::from_secs(4 * 3600)),
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
}

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
        let target = source::resolve(&client, self.schema.as_deref()).await?;
        let m = metrics
            .get_or_insert_with(|| self.metrics.for_schema(&target.schema))
            .clone();
        source::check_traces(&client, &target).await?;
        let st = installed_state(&client, &target).await?;
        crate::ops::privileges::check_worker(&client, &target, &st.names()).await?;
        self.configure_session(&client).await?;
        if let Some(at) = st.reflected_at {
            m.reflected(at.timestamp_micros() as f64 / 1e6);
        }
        self.health.initialised.fetch_add(1, Ordering::Relaxed);
        let result = self.lead_when_elected(&mut client, &target, &m).await;
        self.health.initialised.fetch_sub(1, Ordering::Relaxed);
        m.leader.set(0);
        result
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
    /// view's.
    async fn configure_session(&self, client: &Client) -> Result<()> {
        let ms = self.settings.statement_timeout.as_millis().max(1);
        client
            .batch_execute(&format!(
                "set statement_timeout = {ms};
                 set lock_timeout = '10s';
                 set idle_in_transaction_session_timeout = '5min';
                 set jit = off;
                 set timezone to default;
                 set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; set tcp_keepalives_count = 3;
                 set client_connection_check_interval = '2s';"
            ))
            .await
            .ctx("configuring the worker session")
    }

    /// The leader's loop: one `select!` whose branches are numbered by priority, shutdown first.
    async fn lead(
        &self,
        client: &mut Client,
        target: &Target,
        m: &SchemaMetrics,
    ) -> Result<LoopEnd> {
        let pace = self.settings.audit_period.map(|period| Pace { period });
        let mut last_slice: Option<Instant> = None;
        let mut last_heartbeat = Instant::now();
        let mut limits = self.settings.limits;
        loop {
            self.health.tick();
            let extras = Extras {
                audit: pace.filter(|p| last_slice.is_none_or(|t| t.elapsed() >= p.every())),
                heartbeat: last_heartbeat.elapsed() >= HEARTBEAT,
            };
            let token = client.cancel_token();
            let outcome = {
                let work = cycle::run(client, target, &limits, &extras, false);
                tokio::pin!(work);
                tokio::select! {
                    biased;
                    // 1. Shutdown: cancel the running statement on the server.
                    _ = self.shutdown.wait() => {
                        self.health.shutting_down.store(true, Ordering::Relaxed);
                        self.opts.cancel(&token).await;
                        return Ok(LoopEnd::Shutdown);
                    }
                    // 2. The step.
                    r = &mut work => r?,
                }
            };
            self.health.contact();
            let busy = match outcome {
                // 3. A manual command (rebuild, verify, install) holds the work lock.
                None => false,
                Some(Outcome::Done(stats)) => {
                    if extras.audit.is_some() && stats.audit.is_some() {
                        last_slice = Some(Instant::now());
                    }
                    if stats.changed || extras.heartbeat {
                        last_heartbeat = Instant::now();
                    }
                    if stats.bounded.is_empty() {
                        // Caught up once: a later capped step is ordinary catch-up.
                        limits.check_backlog = false;
                    }
                    self.record_step(m, &stats);
                    stats.more()
                }
                // 4. A full refresh instead.
                Some(Outcome::NeedsRebuild(fallback)) => {
                    let reason = fallback.reason();
                    tracing::warn!(reason = %reason, "falling back to a full refresh");
                    m.fallback(&reason);
                    let started_at = chrono::Utc::now();
                    let stats = rebuild::run(
                        client,
                        target,
                        &reason,
                        self.settings.rebuild_timeout,
                        Method::Auto,
                    )
                    .await?;
                    tracing::info!(rows = stats.rows, swapped = stats.swapped, inserted = stats.inserted, updated = stats.updated, deleted = stats.deleted, seconds = stats.duration.as_secs_f64(), reason = %reason, "full refresh done");
                    m.success_now();
                    m.reflected(started_at.timestamp_micros() as f64 / 1e6);
                    true
                }
            };
            if !busy {
                if self.settings.once {
                    return Ok(LoopEnd::CaughtUp);
                }
                // 5. Idle: wait for the interval (or shutdown).
                tokio::select! {
                    biased;
                    _ = self.shutdown.wait() => return Ok(LoopEnd::Shutdown),
                    _ = tokio::time::sleep(self.settings.interval) => {}
                }
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

/// The installation of `target`, ready for the worker: our schema is current, the relation is
/// the maintained table, and the capture on otel_traces is complete.
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
    if !capture::status(client, target, &st.names())
        .await?
        .complete()
    {
        return Err(Error::precondition(
            format!(
                "otel_traces in schema {:?} lacks what the worker reads (the column trace_summarizer_xid, its index or the triggers)",
                target.schema
            ),
            "run `trace-summarizer install --mode incremental` (as the owner of otel_traces); it restores them and refreshes the summaries",
        ));
    }
    Ok(st)
}

/// The worker's leadership and scratch tables live on its server session, so it needs one
/// server session for the whole of its client connection. A pooler in transaction (or
/// statement) mode breaks that: it hands the server session to other clients between
/// transactions. Detected by asking a second client for its backend: in session mode it can
/// never get the first client's server session; behind a transaction-mode PgBouncer it gets
/// that idle session back at once (PgBouncer reuses the most recently released one).
async fn check_session_pooling(opts: &ConnectOptions, client: &Client) -> Result<()> {
    let mine: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .ctx("reading the backend pid")?
        .get(0);
    let probe = opts
        .with_application_name("trace-summarizer pooler probe")
        .connect()
        .await?;
    let theirs: i32 = probe
        .query_one("select pg_backend_pid()", &[])
        .await
        .ctx("reading the backend pid")?
        .get(0);
    drop(probe);
    if mine == theirs {
        return Err(Error::precondition(
            "two client connections got the same PostgreSQL session: a pooler in transaction or statement mode (PgBouncer pool_mode = transaction) sits between the worker and PostgreSQL, and the worker's leader lock and scratch tables would be shared with other clients",
            "connect the worker directly to PostgreSQL, or through a pool in session mode (PgBouncer pool_mode = session); readers may keep using the transaction pool",
        ));
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
