//! What keeping the summaries costs the database over an interval: the cluster's CPU time from
//! procfs (`procfs::cluster`: the postmaster's own and exited children's time plus each live
//! child's), less the backends of the bench's own connections (ingest, polls, this meter); the
//! WAL written (`pg_current_wal_lsn()` at both ends) and, of it, what the bench's own
//! statements wrote (their `wal_bytes` in `pg_stat_statements`: the ingest's inserts with the
//! full-page images they cause, whenever the last checkpoint was); and the top
//! `pg_stat_statements` entries of the database (reset at the start), leaving out the bench's
//! own statements.
//!
//! CPU is read only when the server runs on this machine (the throwaway cluster); otherwise it
//! is NaN and the report says so.

use super::procfs::{self, ClusterSample};
use crate::db::connect::ConnectOptions;
use crate::error::{DbContext, Result};
use std::time::Instant;
use tokio_postgres::Client;

/// The comment that marks the meter's statements (and `stream::MARK` the bench's others).
const MARK: &str = "/* bench meter */";

pub struct Meter {
    client: Client,
    pub backend_pid: i32,
    postmaster: Option<i32>,
    statements: bool,
}

/// One `pg_stat_statements` entry.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub query: String,
    pub calls: i64,
    pub total_ms: f64,
    pub rows: i64,
    pub wal_bytes: i64,
}

/// The start of a measured interval.
pub struct Mark {
    at: Instant,
    cluster: Option<ClusterSample>,
    lsn: i64,
}

/// An interval measured.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub seconds: f64,
    /// The cluster's CPU seconds less the excluded backends'; NaN when not readable.
    pub cpu_s: f64,
    pub wal_bytes: i64,
    /// The WAL of the bench's own statements (None without pg_stat_statements).
    pub bench_wal_bytes: Option<i64>,
    /// Top entries by total execution time (empty without the extension).
    pub statements: Vec<Statement>,
    /// The cluster's processes at the end, for `spent`.
    end: Option<ClusterSample>,
}

/// The CPU seconds `pids` spent between `mark` and `reading` (NaN when not readable).
pub fn spent(mark: &Mark, reading: &Reading, pids: &[i32]) -> f64 {
    match (&mark.cluster, &reading.end) {
        (Some(a), Some(b)) => procfs::spent_by(a, b, pids),
        _ => f64::NAN,
    }
}

/// The backend pid of a connection.
pub async fn backend_pid(client: &Client) -> Result<i32> {
    Ok(client
        .query_one(&format!("{MARK} select pg_backend_pid()"), &[])
        .await
        .ctx("reading a backend pid")?
        .get(0))
}

/// How many statements a reading keeps.
const TOP: i64 = 4;

impl Meter {
    /// A connection of its own; finds the postmaster (its backend's parent) when the server's
    /// processes are visible here, and whether pg_stat_statements is usable.
    pub async fn connect(opts: &ConnectOptions) -> Result<Meter> {
        let client = opts.connect().await?;
        let backend_pid: i32 = client
            .query_one(&format!("{MARK} select pg_backend_pid()"), &[])
            .await
            .ctx("reading the meter's backend pid")?
            .get(0);
        let postmaster = procfs::stat(backend_pid)
            .map(|s| s.ppid)
            .filter(|&p| procfs::cluster(p).is_some());
        let statements = client
            .batch_execute(&format!(
                "{MARK} create extension if not exists pg_stat_statements; select count(*) from pg_stat_statements"
            ))
            .await
            .is_ok();
        Ok(Meter {
            client,
            backend_pid,
            postmaster,
            statements,
        })
    }

    /// Whether pg_stat_statements can be read.
    pub fn has_statements(&self) -> bool {
        self.statements
    }

    /// Whether CPU can be read (the server's processes are on this machine).
    pub fn reads_cpu(&self) -> bool {
        self.postmaster.is_some()
    }

    async fn lsn(&self) -> Result<i64> {
        Ok(self
            .client
            .query_one(
                &format!("{MARK} select (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"),
                &[],
            )
            .await
            .ctx("reading the WAL position")?
            .get(0))
    }

    /// A CHECKPOINT, so that the interval that follows starts with none pending (a timed one
    /// would otherwise fall in one system's cell or another's at random) and every system's
    /// first writes after it pay their full-page images alike. Needs superuser or pg_checkpoint;
    /// without it the figures only get noisier.
    pub async fn checkpoint(&self) {
        let _ = self
            .client
            .batch_execute(&format!("{MARK} checkpoint"))
            .await;
    }

    /// Starts an interval (resetting pg_stat_statements).
    pub async fn start(&self) -> Result<Mark> {
        if self.statements {
            let _ = self
                .client
                .batch_execute(&format!("{MARK} select pg_stat_statements_reset()"))
                .await;
        }
        let lsn = self.lsn().await?;
        Ok(Mark {
            at: Instant::now(),
            cluster: self.postmaster.and_then(procfs::cluster),
            lsn,
        })
    }

    /// Ends an interval: the cluster's CPU less the meter's backend and `exclude`'s.
    pub async fn read(&self, mark: &Mark, exclude: &[i32]) -> Result<Reading> {
        let end = self.postmaster.and_then(procfs::cluster);
        let seconds = mark.at.elapsed().as_secs_f64();
        let lsn = self.lsn().await?;
        let cpu_s = match (&mark.cluster, &end) {
            (Some(a), Some(b)) => {
                let mut pids = exclude.to_vec();
                pids.push(self.backend_pid);
                pids.sort_unstable();
                pids.dedup();
                (b.total_s - a.total_s) - procfs::spent_by(a, b, &pids)
            }
            _ => f64::NAN,
        };
        let (statements, bench_wal_bytes) = if self.statements {
            (
                self.top_statements().await.unwrap_or_default(),
                self.bench_wal().await.ok(),
            )
        } else {
            (Vec::new(), None)
        };
        Ok(Reading {
            seconds,
            cpu_s,
            wal_bytes: lsn - mark.lsn,
            bench_wal_bytes,
            statements,
            end,
        })
    }

    /// The client backends of this database other than `bench` and the meter's (the product's
    /// connections, when it is the only other client).
    pub async fn other_backends(&self, bench: &[i32]) -> Result<Vec<i32>> {
        let mut skip = bench.to_vec();
        skip.push(self.backend_pid);
        let rows = self
            .client
            .query(
                &format!(
                    "{MARK} select pid from pg_stat_activity
                     where datname = current_database() and backend_type = 'client backend'
                       and pid <> all($1)"
                ),
                &[&skip],
            )
            .await
            .ctx("listing the database's backends")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn bench_wal(&self) -> Result<i64> {
        Ok(self
            .client
            .query_one(
                &format!(
                    "{MARK} select coalesce(sum(wal_bytes), 0)::bigint from pg_stat_statements
                     where dbid = (select oid from pg_database where datname = current_database())
                       and query like '%/* bench %'"
                ),
                &[],
            )
            .await
            .ctx("reading pg_stat_statements")?
            .get(0))
    }

    async fn top_statements(&self) -> Result<Vec<Statement>> {
        let rows = self
            .client
            .query(
                &format!(
                    "{MARK} select regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time, rows, wal_bytes::bigint
                     from pg_stat_statements
                     where dbid = (select oid from pg_database where datname = current_database())
                       and query not like '%/* bench %'
                     order by total_exec_time desc limit {TOP}"
                ),
                &[],
            )
            .await
            .ctx("reading pg_stat_statements")?;
        Ok(rows
            .iter()
            .map(|r| Statement {
                query: r.get(0),
                calls: r.get(1),
                total_ms: r.get(2),
                rows: r.get(3),
                wal_bytes: r.get(4),
            })
            .collect())
    }
}
