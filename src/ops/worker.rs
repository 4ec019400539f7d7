//! The `run` loop: one dedicated session per process. It waits to become the leader (advisory
//! lock), then runs cycles through that same session, falls back to a full refresh when the
//! incremental path cannot be trusted or would cost more, and reconnects with capped backoff.

use crate::db::connect::ConnectOptions;
use crate::db::locks;
use crate::db::source::{self, Target};
use crate::error::{DbContext, Disposition, Error, Result};
use crate::maintain::cycle::{self, Outcome};
use crate::maintain::deletes;
use crate::maintain::horizon;
use crate::maintain::rebuild;
use crate::maintain::recompute;
use crate::ops::metrics::{Health, Metrics};
use crate::ops::shutdown::Shutdown;
use crate::state;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub schema: Option<String>,
    pub once: bool,
    pub interval: Duration,
    pub reconcile_interval: Duration,
    pub statement_timeout: Duration,
}

/// Backlog (spans) beyond which a full refresh is cheaper than absorbing it incrementally: a
/// tenth of the source's estimated rows, and never less than this floor. Per span, a cycle
/// costs roughly ten times what a full aggregation does (index lookups per trace instead of
/// one sequential scan), so past ~10% of the table the full refresh wins.
const BACKLOG_FLOOR: i64 = 100_000;
/// The backlog is measured only when the position is this far behind (after an outage).
const BACKLOG_CHECK_AFTER: Duration = Duration::from_secs(60);
/// How long `run --once` waits for the leader lock (a leader that just died releases it).
const ONCE_LEADER_WAIT: Duration = Duration::from_secs(10);

pub struct Worker {
    opts: ConnectOptions,
    cfg: WorkerConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Shutdown,
}

/// Why the leader loop ended.
enum LoopEnd {
    Shutdown,
    CaughtUp,
}

impl Worker {
    pub fn new(
        opts: ConnectOptions,
        cfg: WorkerConfig,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> Self {
        Worker {
            opts,
            cfg,
            metrics,
            health,
            shutdown,
        }
    }

    /// Runs until shutdown (or until caught up with `--once`). Transient errors reconnect with
    /// capped exponential backoff; configuration errors end the run.
    pub async fn run(&self) -> Result<()> {
        let mut backoff = Duration::from_millis(250);
        let mut failures = 0u32;
        loop {
            if self.shutdown.requested() {
                return Ok(());
            }
            let began = Instant::now();
            let result = self.session().await;
            if began.elapsed() > Duration::from_secs(30) {
                // A session that worked for a while starts the backoff over.
                backoff = Duration::from_millis(250);
                failures = 0;
            }
            match result {
                Ok(LoopEnd::Shutdown) | Ok(LoopEnd::CaughtUp) => return Ok(()),
                Err(Error::Cancelled) => return Ok(()),
                // `--once` (cron) gives up after a few attempts; the daemon never does.
                Err(e)
                    if e.disposition() == Disposition::Retry
                        && (!self.cfg.once || failures < 5) =>
                {
                    failures += 1;
                    self.metrics.error(e.kind());
                    self.metrics.leader.set(0);
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs_f64(), attempt = failures, "worker session lost; reconnecting");
                    tokio::select! {
                        biased;
                        _ = self.shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    self.metrics.error(e.kind());
                    return Err(e);
                }
            }
        }
    }

    /// One database session: connect, wait for leadership, run cycles.
    async fn session(&self) -> Result<LoopEnd> {
        let standby_name = format!("trace-summarizer standby {}", host_label());
        let mut client = self
            .opts
            .with_application_name(&standby_name)
            .connect()
            .await?;
        self.health.contact();
        let target = source::resolve(&client, self.cfg.schema.as_deref()).await?;
        source::check_traces(&client, &target, true).await?;
        crate::db::privileges::check_worker(&client, &target).await?;
        self.configure_session(&client).await?;
        self.health
            .initialised
            .store(true, std::sync::atomic::Ordering::Relaxed);

        // Standby: poll for the leader lock; the poll doubles as the heartbeat.
        let mut announced = false;
        let started = Instant::now();
        loop {
            if locks::try_leader(&client, &target.schema).await? {
                break;
            }
            self.health.contact();
            self.metrics.leader.set(0);
            if !announced {
                tracing::info!(schema = %target.schema, "another worker leads; standing by");
                announced = true;
            }
            if self.cfg.once && started.elapsed() >= ONCE_LEADER_WAIT {
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
        self.metrics.leader.set(1);
        tracing::info!(schema = %target.schema, "leading");
        recompute::prepare_session(&client).await?;
        let result = self.lead(&mut client, &target).await;
        self.metrics.leader.set(0);
        result
    }

    /// Session settings that keep a cycle from hanging and make a dead peer visible.
    async fn configure_session(&self, client: &Client) -> Result<()> {
        let ms = self.cfg.statement_timeout.as_millis().max(1);
        client
            .batch_execute(&format!(
                "set statement_timeout = {ms};
                 set lock_timeout = '10s';
                 set idle_in_transaction_session_timeout = '5min';
                 set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; set tcp_keepalives_count = 3;
                 set client_connection_check_interval = '2s';"
            ))
            .await
            .ctx("configuring the worker session")
    }

    /// The leader's loop: numbered by priority, shutdown first.
    async fn lead(&self, client: &mut Client, target: &Target) -> Result<LoopEnd> {
        // The first check runs at once (a --once run checks too).
        let mut last_reconcile = Instant::now()
            .checked_sub(self.cfg.reconcile_interval)
            .unwrap_or_else(Instant::now);
        loop {
            self.health.tick();
            // 1. Shutdown.
            if self.shutdown.requested() {
                return Ok(LoopEnd::Shutdown);
            }
            // 2. Deletes that retention does not explain are checked every reconcile interval,
            // inside the step (under the work lock, so a manual rebuild never races it).
            let reconcile = last_reconcile.elapsed() >= self.cfg.reconcile_interval;
            // 3. A cycle (or the fallback it asks for), cancelled on the server at shutdown.
            let token = client.cancel_token();
            let work = self.step(client, target, reconcile);
            tokio::pin!(work);
            let busy = tokio::select! {
                biased;
                _ = self.shutdown.wait() => {
                    self.health.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.opts.cancel(&token).await;
                    return Ok(LoopEnd::Shutdown);
                }
                r = &mut work => r?,
            };
            if reconcile && busy.1 {
                last_reconcile = Instant::now();
            }
            let busy = busy.0;
            self.health.contact();
            if !busy {
                if self.cfg.once {
                    return Ok(LoopEnd::CaughtUp);
                }
                // 4. Idle: wait for the interval (or shutdown).
                tokio::select! {
                    biased;
                    _ = self.shutdown.wait() => return Ok(LoopEnd::Shutdown),
                    _ = tokio::time::sleep(self.cfg.interval) => {}
                }
            }
        }
    }

    /// One step: a cycle, or a full refresh when the cycle cannot be trusted or the backlog is
    /// too large. Returns whether there was work (so the loop goes on without pausing).
    async fn step(
        &self,
        client: &mut Client,
        target: &Target,
        reconcile: bool,
    ) -> Result<(bool, bool)> {
        let Some(st) = state::load(&*client, &target.schema).await? else {
            return Err(Error::precondition(
                format!(
                    "trace-summarizer is not installed for schema {:?}",
                    target.schema
                ),
                "run `trace-summarizer install --mode incremental` first",
            ));
        };
        if st.mode != "incremental" {
            return Err(Error::precondition(
                format!("schema {:?} is installed in {} mode; the worker only runs in incremental mode", target.schema, st.mode),
                "switch with `trace-summarizer install --mode incremental`, or let pg_cron refresh the view",
            ));
        }
        if !locks::try_work(&*client, &target.schema).await? {
            // A rebuild (or verify, or a switch) is running; it stores the position we resume from.
            return Ok((false, false));
        }
        // Every write to the state row happens under the work lock, so a manual rebuild or
        // verify (which waits for that lock) never meets a concurrent update.
        if st.has_position {
            let large = self.backlog_too_large(client, target).await;
            match large {
                Ok(true) => {
                    state::request_rebuild(&*client, &target.schema, "backlog").await?;
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = locks::release_work(&*client, &target.schema).await;
                    return Err(e);
                }
            }
        }
        if reconcile {
            let checked = deletes::check(&*client, target).await;
            let checked = match checked {
                Ok(c) => c,
                Err(e) => {
                    let _ = locks::release_work(&*client, &target.schema).await;
                    return Err(e);
                }
            };
            if let Some(reason) = checked {
                tracing::warn!(reason, "deletes or updates in otel_traces that retention does not explain; full refresh");
                state::request_rebuild(&*client, &target.schema, reason).await?;
            }
        }
        let outcome = self.cycle_locked(client, target).await;
        let _ = locks::release_work(&*client, &target.schema).await;
        match outcome? {
            Outcome::Done(stats) => {
                self.metrics
                    .cycle_duration_seconds
                    .observe(stats.duration.as_secs_f64());
                self.metrics
                    .spans_processed
                    .inc_by(stats.spans.max(0) as u64);
                self.metrics
                    .traces_upserted
                    .inc_by(stats.upserted.max(0) as u64);
                self.metrics
                    .traces_pruned
                    .inc_by(stats.pruned.max(0) as u64);
                self.metrics.lag_seconds.set(stats.duration.as_secs_f64());
                self.metrics.success_now();
                if stats.spans > 0 || stats.pruned > 0 || stats.upserted > 0 {
                    tracing::info!(
                        spans = stats.spans,
                        traces = stats.affected,
                        upserted = stats.upserted,
                        pruned = stats.pruned,
                        ms = (stats.duration.as_secs_f64() * 1000.0).round(),
                        "cycle done"
                    );
                } else {
                    tracing::debug!(
                        ms = (stats.duration.as_secs_f64() * 1000.0).round(),
                        "idle cycle"
                    );
                }
                Ok((stats.spans > 0, reconcile))
            }
            Outcome::NeedsRebuild(fallback) => {
                let reason = fallback.reason();
                tracing::warn!(reason = %reason, "falling back to a full refresh");
                self.metrics.fallback(&reason);
                if matches!(fallback, cycle::Fallback::StateVersion) {
                    state::ensure_schema(&*client).await?;
                    client
                        .execute(
                            "update trace_summarizer.state set version = $2 where target_schema = $1",
                            &[&target.schema, &crate::db::sqltext::STATE_VERSION],
                        )
                        .await
                        .ctx("updating the state version")?;
                }
                let stats = rebuild::run(client, target, &target.summaries(), &reason).await?;
                tracing::info!(inserted = stats.inserted, updated = stats.updated, deleted = stats.deleted, seconds = stats.duration.as_secs_f64(), reason = %reason, "full refresh done");
                self.metrics.success_now();
                Ok((true, reconcile))
            }
        }
    }

    async fn cycle_locked(&self, client: &mut Client, target: &Target) -> Result<Outcome> {
        let horizon = horizon::read(&*client).await?;
        let tx = cycle::begin(client).await?;
        let outcome = cycle::run(&tx, target, &horizon).await?;
        match outcome {
            Outcome::Done(_) => tx.commit().await.ctx("committing the cycle")?,
            Outcome::NeedsRebuild(_) => tx.rollback().await.ctx("rolling back")?,
        }
        Ok(outcome)
    }

    /// After an outage: is the backlog so large that a full refresh is cheaper?
    async fn backlog_too_large(&self, client: &Client, target: &Target) -> Result<bool> {
        let row = client
            .query_one(
                "select extract(epoch from clock_timestamp() - tail_from)::float8 from trace_summarizer.state where target_schema = $1",
                &[&target.schema],
            )
            .await
            .ctx("reading the position")?;
        let behind: Option<f64> = row.get(0);
        if behind.unwrap_or(0.0) < BACKLOG_CHECK_AFTER.as_secs_f64() {
            return Ok(false);
        }
        let estimated: f64 = client
            .query_one(
                "with rel as (select to_regclass(quote_ident($1) || '.otel_traces') as oid)
                 select coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 from pg_class c, rel
                 where c.oid = rel.oid or c.oid in (select inhrelid from pg_inherits where inhparent = rel.oid)",
                &[&target.schema],
            )
            .await
            .ctx("estimating the size of otel_traces")?
            .get(0);
        let limit = ((estimated / 10.0) as i64).max(BACKLOG_FLOOR);
        let count: i64 = client
            .query_one(
                &format!(
                    "select count(*) from (select 1 from {} where created_at >= (select tail_from from trace_summarizer.state where target_schema = $1) limit $2) b",
                    target.traces()
                ),
                &[&target.schema, &(limit + 1)],
            )
            .await
            .ctx("measuring the backlog")?
            .get(0);
        if count > limit {
            tracing::warn!(
                backlog_spans = count,
                limit,
                "backlog larger than a full refresh costs"
            );
            return Ok(true);
        }
        Ok(false)
    }
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
