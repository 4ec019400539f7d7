//! Failover: two workers on one installation, one leading and one standing by, under a light
//! ingest. The leader is killed the way SIGKILL kills a process (`RunningWorker::kill`: its
//! sockets close, nothing is cancelled or released by it), and the bench measures the time
//! until the standby leads (its session shows `trace-summarizer leader …` in
//! pg_stat_activity, which it sets right after taking the leader lock) and until a span
//! committed just after the kill is in the summaries. Then a new standby starts, and the next
//! kill hits the new leader.

use super::env::join_error;
use super::spans::fresh_spans;
use super::stats::{median, say, secs};
use super::worker_thread::{self, RunningWorker};
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::lab::spangen::{self, SpanGen};
use crate::ops::worker::WorkerSettings;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Background ingest while the workers fail over (spans per second).
pub const INGEST_RATE: u32 = 1_000;
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Default)]
pub struct FailoverRuns {
    /// Seconds from the kill until the standby led.
    pub to_leader: Vec<f64>,
    /// Seconds from the kill until a span committed just after it was summarized.
    pub to_absorbed: Vec<f64>,
}

const LEADERS: &str = "select pid from pg_stat_activity
     where datname = current_database() and application_name like 'trace-summarizer leader%' and pid <> $1";
const STANDBYS: &str = "select count(*) from pg_stat_activity
     where datname = current_database() and application_name like 'trace-summarizer standby%'";

pub async fn measure(
    opts: &ConnectOptions,
    target: &Target,
    settings: &WorkerSettings,
    mut gen: SpanGen,
    ingest_gen: SpanGen,
    kills: usize,
) -> Result<FailoverRuns> {
    let monitor = opts.connect().await?;
    let mut leader = worker_thread::start(opts.clone(), settings.clone())?;
    let first = wait_for_leader(&monitor, 0, Duration::from_secs(120)).await;
    if let Err(e) = first {
        leader.stop().await?;
        return Err(e);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = tokio::spawn(ingest(
        opts.connect().await?,
        target.clone(),
        ingest_gen,
        stop.clone(),
    ));
    let result = kill_loop(
        opts,
        target,
        settings,
        &monitor,
        &mut gen,
        &mut leader,
        kills,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let ingested = ingest.await.map_err(join_error);
    leader.stop().await?;
    ingested??;
    let out = result?;
    say(format!(
        "  failover: the standby led {} after SIGKILL of the leader (median of {kills}; max {}), a span committed at the kill was summarized after {}",
        secs(median(&out.to_leader)),
        secs(out.to_leader.iter().copied().fold(0.0, f64::max)),
        secs(median(&out.to_absorbed))
    ));
    Ok(out)
}

async fn kill_loop(
    opts: &ConnectOptions,
    target: &Target,
    settings: &WorkerSettings,
    monitor: &Client,
    gen: &mut SpanGen,
    leader: &mut RunningWorker,
    kills: usize,
) -> Result<FailoverRuns> {
    let mut out = FailoverRuns::default();
    // The backend of the leader killed last: it may linger a moment, still named leader.
    let mut previous = 0;
    let probe_sql = format!("select 1 from {} where trace_id = $1", target.summaries());
    for k in 0..kills {
        let standby = worker_thread::start(opts.clone(), settings.clone())?;
        let waited = Instant::now();
        loop {
            let n: i64 = monitor
                .query_one(STANDBYS, &[])
                .await
                .ctx("looking for the standby")?
                .get(0);
            if n > 0 {
                break;
            }
            if waited.elapsed() > Duration::from_secs(60) {
                standby.stop().await?;
                return Err(Error::precondition(
                    "bench: the standby worker did not connect within 60 s",
                    "see the warnings above",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Land the kills evenly over the standby's once-a-second poll for the lock: after
        // 0.5 s plus (k + 0.5)/kills of a second.
        let phase = ((k as f64 + 0.5) / kills.max(1) as f64 * 1000.0) as u64;
        tokio::time::sleep(Duration::from_millis(500 + phase)).await;
        let old = wait_for_leader(monitor, previous, Duration::from_secs(10)).await?;
        previous = old;
        let killed = std::mem::replace(leader, standby);
        let t0 = Instant::now();
        killed.kill().await;
        let probe = fresh_spans(gen, 1);
        spangen::insert_spans(monitor, target, &probe).await?;
        let mut to_leader = None;
        let mut to_absorbed = None;
        while to_leader.is_none() || to_absorbed.is_none() {
            if to_leader.is_none()
                && monitor
                    .query_opt(LEADERS, &[&old])
                    .await
                    .ctx("looking for the new leader")?
                    .is_some()
            {
                to_leader = Some(t0.elapsed().as_secs_f64());
            }
            if to_absorbed.is_none()
                && monitor
                    .query_opt(&probe_sql, &[&probe[0].trace_id])
                    .await
                    .ctx("looking for the probe span")?
                    .is_some()
            {
                to_absorbed = Some(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(Error::precondition(
                    "bench: no worker led within 120 s of killing the leader",
                    "see the warnings above",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let (l, a) = (
            to_leader.unwrap_or(f64::NAN),
            to_absorbed.unwrap_or(f64::NAN),
        );
        say(format!(
            "  kill {}/{kills}: a standby led after {}, the span committed at the kill was summarized after {}",
            k + 1,
            secs(l),
            secs(a)
        ));
        out.to_leader.push(l);
        out.to_absorbed.push(a);
    }
    Ok(out)
}

/// Waits until a backend other than `not` leads; returns its pid.
async fn wait_for_leader(client: &Client, not: i32, timeout: Duration) -> Result<i32> {
    let t = Instant::now();
    loop {
        if let Some(row) = client
            .query_opt(LEADERS, &[&not])
            .await
            .ctx("looking for the leader")?
        {
            return Ok(row.get(0));
        }
        if t.elapsed() > timeout {
            return Err(Error::precondition(
                format!("bench: no worker led within {} s", timeout.as_secs()),
                "see the warnings above",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// New traces at `INGEST_RATE`, in batches every 100 ms, until `stop`.
async fn ingest(
    client: Client,
    target: Target,
    mut gen: SpanGen,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let per_batch = (INGEST_RATE / 10) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        spangen::insert_spans(&client, &target, &fresh_spans(&mut gen, per_batch)).await?;
    }
    Ok(())
}
