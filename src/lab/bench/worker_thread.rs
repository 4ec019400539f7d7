//! The incremental worker, run in-process for the freshness, ingest and failover measurements:
//! the library's `Worker` on a thread of its own, with its own single-threaded runtime (its
//! connections live there too) and a thread-local log subscriber that shows warnings only, so
//! its per-cycle lines do not drown the bench's progress. `kill` ends it the way SIGKILL ends a
//! process: its runtime is dropped with every task in it, so its sockets close with no goodbye
//! to the server and no statement cancelled. `wait_caught_up` waits until the running worker
//! has absorbed everything committed before.

use super::spans::fresh_spans;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::lab::spangen::{self, SpanGen};
use crate::ops::metrics::{Health, Metrics};
use crate::ops::shutdown::Shutdown;
use crate::ops::worker::{Worker, WorkerSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio_postgres::Client;

/// How often `wait_caught_up` looks for its probe trace.
const PROBE_POLL: Duration = Duration::from_millis(20);

pub struct RunningWorker {
    stop: watch::Sender<bool>,
    kill: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<Result<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a worker with `cfg` on the database `opts` points at.
pub fn start(opts: ConnectOptions, cfg: WorkerSettings) -> Result<RunningWorker> {
    let (stop, shutdown) = Shutdown::manual();
    let (done_tx, done_rx) = oneshot::channel();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bench-worker".into())
        .spawn(move || {
            let quiet = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "trace_summarizer=warn,warn",
                ))
                .with_writer(std::io::stderr)
                .with_target(false)
                .finish();
            let _guard = tracing::subscriber::set_default(quiet);
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let r = rt.block_on(async move {
                        let handle = Worker::start(
                            opts,
                            cfg,
                            Metrics::new(),
                            Arc::new(Health::default()),
                            shutdown,
                        );
                        tokio::select! {
                            r = handle.wait() => Some(r),
                            Ok(()) = kill_rx => None,
                        }
                    });
                    match r {
                        Some(r) => {
                            rt.shutdown_timeout(Duration::from_millis(200));
                            r
                        }
                        // Killed: drop every task (and so every socket) without running it again.
                        None => {
                            rt.shutdown_background();
                            Ok(())
                        }
                    }
                }
                Err(e) => Err(Error::io("starting the worker's runtime", e)),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| Error::io("starting the worker thread", e))?;
    Ok(RunningWorker {
        stop,
        kill: Some(kill_tx),
        done: Some(done_rx),
        thread: Some(thread),
    })
}

impl RunningWorker {
    /// Fails when the worker has stopped on its own (it should run until told to stop).
    pub fn check(&mut self) -> Result<()> {
        let Some(done) = self.done.as_mut() else {
            return Ok(());
        };
        match done.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => Ok(()),
            Ok(Err(e)) => {
                self.done = None;
                Err(e)
            }
            Ok(Ok(())) | Err(oneshot::error::TryRecvError::Closed) => {
                self.done = None;
                Err(Error::precondition(
                    "bench: the worker stopped unexpectedly",
                    "see the warnings above",
                ))
            }
        }
    }

    /// Asks the worker to stop (it cancels its running query) and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let result = match self.done.take() {
            Some(done) => match tokio::time::timeout(Duration::from_secs(60), done).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(Error::precondition(
                    "bench: the worker thread ended abnormally",
                    "see the messages above",
                )),
                Err(_) => Err(Error::precondition(
                    "bench: the worker did not stop within 60 s",
                    "",
                )),
            },
            None => Ok(()),
        };
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }

    /// Ends the worker abruptly, as SIGKILL would: no statement is cancelled, no lock released
    /// by the worker; the server finds the connections closed. Waits for the thread to end.
    pub async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.done = None;
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        // On error paths: the thread stops by itself and is not waited for.
        let _ = self.stop.send(true);
    }
}

/// Inserts one new trace and waits until its summary appears: the worker is running and has
/// caught up with everything committed before. Returns the seconds it took.
pub async fn wait_caught_up(
    client: &Client,
    target: &Target,
    gen: &mut SpanGen,
    worker: &mut RunningWorker,
    timeout: Duration,
) -> Result<f64> {
    let spans = fresh_spans(gen, 1);
    let id = spans[0].trace_id.clone();
    let t = Instant::now();
    spangen::insert_spans(client, target, &spans).await?;
    let sql = format!("select 1 from {} where trace_id = $1", target.summaries());
    loop {
        worker.check()?;
        if client
            .query_opt(&sql, &[&id])
            .await
            .ctx("looking for the probe trace")?
            .is_some()
        {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > timeout {
            return Err(Error::precondition(
                format!(
                    "bench: the worker did not absorb a probe span within {} s",
                    timeout.as_secs()
                ),
                "the machine may be overloaded; try lower --rates or smaller --scales",
            ));
        }
        tokio::time::sleep(PROBE_POLL).await;
    }
}
