//! A Citus cluster for the Citus tests: a coordinator and two workers, three throwaway
//! PostgreSQL clusters on 127.0.0.1 with Citus preloaded, started once per test binary. Each
//! test gets its own database on all three, with the workers registered in it and
//! `otel_traces` distributed by trace_id. `None` (the test skips) when Citus is not installed.
#![allow(dead_code)]

use super::{connect, unique_name};
use std::sync::{Mutex, OnceLock};
use tokio_postgres::Client;
use trace_summarizer::db::source::Target;
use trace_summarizer::lab::cluster::{self, Cluster, ClusterOptions};

pub struct Citus {
    pub coordinator: Cluster,
    pub workers: Vec<Cluster>,
}

static CITUS: OnceLock<Option<Citus>> = OnceLock::new();
/// Tests share the three servers; a test that restarts one holds this exclusively.
static SHARED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum Guard {
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(tokio::sync::RwLockWriteGuard<'static, ()>),
}
static DIRS: Mutex<Vec<(std::path::PathBuf, std::path::PathBuf)>> = Mutex::new(Vec::new());

extern "C" fn stop_citus_at_exit() {
    if let Ok(dirs) = DIRS.lock() {
        for (bindir, data) in dirs.iter() {
            cluster::stop_data_dir(bindir, data);
            if let Some(root) = data.parent() {
                let _ = std::fs::remove_dir_all(root);
            }
        }
    }
}

/// The test binary's Citus cluster, or None when Citus is not installed (said once).
pub fn citus() -> Option<&'static Citus> {
    CITUS
        .get_or_init(|| {
            if std::env::var("TEST_DATABASE_URL").is_ok() {
                eprintln!("TEST_DATABASE_URL is set: the Citus tests start clusters of their own; skipping");
                return None;
            }
            let options = ClusterOptions {
                citus: true,
                ..Default::default()
            };
            let start = || Cluster::start(&options);
            let coordinator = match start() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("Citus is not available ({}): skipping", e.chain());
                    return None;
                }
            };
            let workers: Vec<Cluster> = (0..2)
                .map(|_| start().expect("start a Citus worker"))
                .collect();
            // SAFETY: registering a plain extern "C" function with no captured state.
            unsafe {
                libc::atexit(stop_citus_at_exit);
            }
            let mut dirs = DIRS.lock().unwrap();
            for c in std::iter::once(&coordinator).chain(&workers) {
                dirs.push((c.bindir().to_path_buf(), c.data_dir()));
            }
            Some(Citus {
                coordinator,
                workers,
            })
        })
        .as_ref()
}

/// A fresh database on the Citus cluster, with `workers` workers registered and otel_traces
/// distributed by trace_id.
pub struct CitusDb {
    pub name: String,
    pub url: String,
    pub client: Client,
    pub target: Target,
    pub citus: &'static Citus,
    _guard: Guard,
}

impl CitusDb {
    pub async fn new(workers: usize) -> Option<CitusDb> {
        let guard = Guard::Shared(SHARED.read().await);
        Self::with_guard(workers, guard, None).await
    }

    /// As `new`, with otel_traces partitioned by day on "timestamp" (from `days_back` days ago
    /// to tomorrow, and a default partition) before it is distributed.
    pub async fn partitioned(workers: usize, days_back: i64) -> Option<CitusDb> {
        let guard = Guard::Shared(SHARED.read().await);
        Self::with_guard(workers, guard, Some(days_back)).await
    }

    /// As `new`, alone on the cluster: the test may restart its servers.
    pub async fn exclusive(workers: usize) -> Option<CitusDb> {
        let guard = Guard::Exclusive(SHARED.write().await);
        Self::with_guard(workers, guard, None).await
    }

    async fn with_guard(workers: usize, guard: Guard, days: Option<i64>) -> Option<CitusDb> {
        let citus = citus()?;
        let name = unique_name("c");
        for c in std::iter::once(&citus.coordinator).chain(&citus.workers) {
            let admin = connect(&c.url("postgres")).await;
            admin
                .batch_execute(&format!("create database {name}"))
                .await
                .unwrap();
            let db = connect(&c.url(&name)).await;
            db.batch_execute("create extension citus").await.unwrap();
        }
        let url = citus.coordinator.url(&name);
        let client = connect(&url).await;
        client
            .execute(
                "select citus_set_coordinator_host('127.0.0.1', $1)",
                &[&(citus.coordinator.port as i32)],
            )
            .await
            .unwrap();
        for w in citus.workers.iter().take(workers) {
            // Adding a node takes locks that a test's setup in another database can hold for a
            // moment (a deadlock there is Citus's, not ours): retry a few times.
            let mut attempt = 0;
            loop {
                match client
                    .execute(
                        "select citus_add_node('127.0.0.1', $1)",
                        &[&(w.port as i32)],
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        eprintln!("citus_add_node failed ({e}), retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
                    }
                    Err(e) => panic!("citus_add_node 127.0.0.1:{}: {e:?}", w.port),
                }
            }
        }
        let target = Target::new("public");
        match days {
            None => trace_summarizer::lab::spangen::create_source(&client, &target)
                .await
                .unwrap(),
            Some(days_back) => client
                .batch_execute(&format!(
                    "{}
                     do $$ declare d date; begin
                       for i in -1..{days_back} loop
                         d := current_date - i;
                         execute format('create table otel_traces_p%s partition of otel_traces for values from (%L) to (%L)',
                                        to_char(d, 'YYYYMMDD'), d, d + 1);
                       end loop;
                     end $$;
                     create table otel_traces_default partition of otel_traces default;",
                    super::partitioned_traces_sql()
                ))
                .await
                .unwrap(),
        }
        client
            .batch_execute("select create_distributed_table('otel_traces', 'trace_id')")
            .await
            .unwrap();
        Some(CitusDb {
            name,
            url,
            client,
            target,
            citus,
            _guard: guard,
        })
    }

    /// Adds the second worker (and rebalances when asked).
    pub async fn add_worker(&self, index: usize) {
        self.client
            .execute(
                "select citus_add_node('127.0.0.1', $1)",
                &[&(self.citus.workers[index].port as i32)],
            )
            .await
            .unwrap();
    }

    /// The URL of this database on worker `index`.
    pub fn worker_url(&self, index: usize) -> String {
        self.citus.workers[index].url(&self.name)
    }

    /// Rows that differ between otel_trace_summaries and the oracle, both ways.
    pub async fn oracle_diff(&self, window: &str) -> i64 {
        let sql = format!(
            "with oracle as ({}),
                  actual as (select * from public.otel_trace_summaries)
             select (select count(*) from (select * from actual except all select * from oracle) a)
                  + (select count(*) from (select * from oracle except all select * from actual) b)",
            super::oracle_sql("public", window)
        );
        self.client
            .query_one(&sql, &[])
            .await
            .expect("oracle query")
            .get(0)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Runs the CLI against the coordinator's database.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = super::bin();
        cmd.env("DATABASE_URL", &self.url)
            .env("TRACE_SUMMARIZER_SCHEMA", "public")
            .args(args);
        cmd.output().expect("run trace-summarizer")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "trace-summarizer {args:?} failed ({:?}):\n{log}",
            out.status.code()
        );
        log
    }
}
