//! Where the bench's databases live: a throwaway durable cluster started for the run (the
//! default), or the server named by `--database-url`, on which one database per scale,
//! `trace_summarizer_bench_<spans>`, is created and dropped again. Also describes the machine
//! and the server settings for the report, and cleans up on Ctrl-C or SIGTERM.

use super::stats::say;
use crate::db::connect::ConnectOptions;
use crate::db::quote;
use crate::error::{DbContext, Error, Result};
use crate::lab::cluster::{Cluster, ClusterOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The database name used for one scale.
pub fn database_name(spans: u64) -> String {
    format!("trace_summarizer_bench_{spans}")
}

pub struct Env {
    cluster: Option<Cluster>,
    admin: ConnectOptions,
    /// For the report: where the databases were.
    pub server: String,
    /// The bench database that exists right now (dropped on Ctrl-C).
    current: Arc<Mutex<Option<String>>>,
    pub server_version_num: i32,
}

/// Maps a failed background task to our error type.
pub fn join_error(e: tokio::task::JoinError) -> Error {
    Error::io(
        "a background task of the bench failed",
        std::io::Error::other(e.to_string()),
    )
}

impl Env {
    /// Starts the throwaway cluster, or checks the server given by `url`.
    pub async fn start(url: Option<&str>) -> Result<Env> {
        let (cluster, admin, server) = match url {
            None => {
                say("starting a throwaway PostgreSQL cluster (durable: fsync and synchronous_commit on, shared_buffers 1GB)");
                let cluster = tokio::task::spawn_blocking(|| {
                    Cluster::start(&ClusterOptions {
                        shared_buffers: "1GB".into(),
                        durable: true,
                        logical: false,
                        stat_statements: true,
                        ..Default::default()
                    })
                })
                .await
                .map_err(join_error)??;
                let admin = ConnectOptions::parse(Some(&cluster.url("postgres")))?;
                let server = format!(
                    "a throwaway local cluster started by the bench (127.0.0.1:{}, data in a temporary directory, removed afterwards)",
                    cluster.port
                );
                (Some(cluster), admin, server)
            }
            Some(u) => {
                let admin = ConnectOptions::parse(Some(u))?;
                let server = format!(
                    "the server at {} given by --database-url; each scale ran in a database `trace_summarizer_bench_<spans>` created for it and dropped afterwards",
                    admin.target()
                );
                (None, admin, server)
            }
        };
        let client = admin.connect().await?;
        if cluster.is_some() {
            // Larger WAL between checkpoints so that loading 10M spans does not checkpoint every
            // few seconds; the same setting applies to both sides of every comparison.
            for sql in [
                "alter system set max_wal_size = '4GB'",
                "select pg_reload_conf()",
            ] {
                client
                    .batch_execute(sql)
                    .await
                    .ctx("configuring the throwaway cluster")?;
            }
        }
        let server_version_num: i32 = client
            .query_one("select current_setting('server_version_num')::int", &[])
            .await
            .ctx("reading the server version")?
            .get(0);
        let env = Env {
            cluster,
            admin,
            server,
            current: Arc::new(Mutex::new(None)),
            server_version_num,
        };
        env.on_signal();
        Ok(env)
    }

    /// Creates a fresh database (dropping a leftover of an earlier interrupted bench with the
    /// same name) and returns connection options for it.
    pub async fn create_db(&self, name: &str) -> Result<ConnectOptions> {
        self.drop_db(name).await?;
        let client = self.admin.connect().await?;
        client
            .batch_execute(&format!("create database {}", quote::ident(name)))
            .await
            .ctx(&format!(
                "creating database {name} (the role needs CREATEDB)"
            ))?;
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(name.to_string());
        }
        let mut opts = self.admin.clone();
        opts.config.dbname(name);
        Ok(opts)
    }

    /// Drops a bench database if it exists.
    pub async fn drop_db(&self, name: &str) -> Result<()> {
        drop_database(&self.admin, name, self.server_version_num).await?;
        if let Ok(mut cur) = self.current.lock() {
            if cur.as_deref() == Some(name) {
                *cur = None;
            }
        }
        Ok(())
    }

    /// A connection to the maintenance database (for `select version()` and settings).
    pub async fn admin(&self) -> Result<tokio_postgres::Client> {
        self.admin.connect().await
    }

    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// After a failure: keeps a copy of the throwaway server's log (the cluster's directory is
    /// removed when it stops) and says where it is.
    pub fn keep_server_log(&self) {
        let Some(cluster) = &self.cluster else { return };
        let Some(root) = cluster.data_dir().parent().map(|p| p.to_path_buf()) else {
            return;
        };
        let kept = std::env::temp_dir().join("trace-summarizer-bench-server.log");
        if std::fs::copy(root.join("server.log"), &kept).is_ok() {
            say(format!("the server's log is kept in {}", kept.display()));
        }
    }

    /// Stops the throwaway cluster (dropping it stops the server and removes its directory).
    pub fn finish(self) {
        if let Some(cluster) = self.cluster {
            say("stopping the throwaway cluster");
            drop(cluster);
        }
    }

    /// On Ctrl-C or SIGTERM: stop the throwaway server and remove its directory, or drop the
    /// bench database on a given server; then exit 130.
    fn on_signal(&self) {
        let stop: Option<(PathBuf, PathBuf)> = self
            .cluster
            .as_ref()
            .map(|c| (c.bindir().to_path_buf(), c.data_dir()));
        let admin = self.admin.clone();
        let current = self.current.clone();
        let version = self.server_version_num;
        tokio::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("trace-summarizer: bench interrupted; cleaning up");
            match stop {
                Some((bindir, data_dir)) => {
                    crate::lab::cluster::stop_data_dir(&bindir, &data_dir);
                    if let Some(root) = data_dir.parent() {
                        let _ = std::fs::remove_dir_all(root);
                    }
                }
                None => {
                    let name = current.lock().ok().and_then(|c| c.clone());
                    if let Some(name) = name {
                        let dropped = tokio::time::timeout(
                            Duration::from_secs(15),
                            drop_database(&admin, &name, version),
                        )
                        .await;
                        if !matches!(dropped, Ok(Ok(()))) {
                            eprintln!(
                                "trace-summarizer: could not drop database {name}; drop it by hand"
                            );
                        }
                    }
                }
            }
            std::process::exit(130);
        });
    }
}

async fn drop_database(admin: &ConnectOptions, name: &str, version: i32) -> Result<()> {
    let client = admin.connect().await?;
    // WITH (FORCE) (PostgreSQL 13+) ends sessions still closing; older servers wait up to 5 s.
    let force = if version >= 130000 {
        " with (force)"
    } else {
        ""
    };
    client
        .batch_execute(&format!(
            "drop database if exists {}{force}",
            quote::ident(name)
        ))
        .await
        .ctx(&format!("dropping database {name}"))
}

/// The machine and server, for the report.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub pg_version: String,
    pub settings: Vec<(String, String)>,
}

const SETTINGS: [&str; 12] = [
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_wal_size",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "jit",
    "max_parallel_workers_per_gather",
    "random_page_cost",
    "autovacuum",
];

pub async fn describe(env: &Env) -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let client = env.admin().await?;
    let pg_version: String = client
        .query_one("select version()", &[])
        .await
        .ctx("reading the server version")?
        .get(0);
    let names: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    let rows = client
        .query(
            "select n, coalesce(current_setting(n, true), 'n/a') from unnest($1::text[]) with ordinality as s(n, i) order by i",
            &[&names],
        )
        .await
        .ctx("reading server settings")?;
    let settings = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(Machine {
        cpu,
        cores,
        memory,
        kernel,
        pg_version,
        settings,
    })
}
