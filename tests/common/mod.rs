//! Shared test harness: one throwaway PostgreSQL cluster per test binary (or the server at
//! `TEST_DATABASE_URL`), a fresh database per test holding `otel_traces` as CONTRACT.md
//! describes it, the CLI binary, and the oracle: the view's definition, written here
//! independently from CONTRACT.md, compared row for row with EXCEPT ALL in both directions.
#![allow(dead_code)]

pub mod citus;

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};
use trace_summarizer::db::source::Target;
use trace_summarizer::lab::cluster::{self, Cluster, ClusterOptions};

pub struct Server {
    /// URL template: `{db}` is replaced by the database name.
    url_template: String,
    pub cluster: Option<&'static Cluster>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static STOP: OnceLock<(std::path::PathBuf, std::path::PathBuf)> = OnceLock::new();

extern "C" fn stop_cluster_at_exit() {
    if let Some((bindir, data)) = STOP.get() {
        cluster::stop_data_dir(bindir, data);
        if let Some(root) = data.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// The shared server of this test binary.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            let template = match url.rsplit_once('/') {
                Some((base, rest)) => {
                    let query = rest
                        .split_once('?')
                        .map(|(_, q)| format!("?{q}"))
                        .unwrap_or_default();
                    format!("{base}/{{db}}{query}")
                }
                None => url,
            };
            return Server {
                url_template: template,
                cluster: None,
            };
        }
        let c: &'static Cluster = Box::leak(Box::new(
            Cluster::start(&ClusterOptions::default()).expect("start a throwaway PostgreSQL"),
        ));
        let _ = STOP.set((c.bindir().to_path_buf(), c.data_dir()));
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(stop_cluster_at_exit);
        }
        Server {
            url_template: c.url("{db}"),
            cluster: Some(c),
        }
    })
}

impl Server {
    pub fn url(&self, db: &str) -> String {
        self.url_template.replace("{db}", db)
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh database with otel_traces in `schema`.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub target: Target,
    pub client: Client,
}

pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100_000
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::with_schema("public").await
    }

    pub async fn with_schema(schema: &str) -> TestDb {
        let server = server();
        let name = unique_name("t");
        let admin = connect(&server.url("postgres")).await;
        admin
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create test database");
        Self::open(name, schema).await
    }

    /// A fresh schema in the pg_cron database (pg_cron works in one database per cluster).
    /// Tests using it must hold `cron_lock()`.
    pub async fn in_cron_database(schema: &str) -> Option<TestDb> {
        let c = server().cluster?;
        if !c.has_cron {
            return None;
        }
        let url = server().url(cluster::CRON_DATABASE);
        let client = connect(&url).await;
        client.batch_execute(&format!("drop schema if exists {schema} cascade; drop schema if exists trace_summarizer cascade; create extension if not exists pg_cron; select cron.unschedule(jobid) from cron.job;")).await.expect("reset cron database");
        drop(client);
        Some(Self::open(cluster::CRON_DATABASE.to_string(), schema).await)
    }

    async fn open(name: String, schema: &str) -> TestDb {
        let url = server().url(&name);
        let client = connect(&url).await;
        client
            .batch_execute(&format!("create schema if not exists {schema}"))
            .await
            .unwrap();
        let target = Target::new(schema);
        trace_summarizer::lab::spangen::create_source(&client, &target)
            .await
            .expect("create otel_traces");
        TestDb {
            name,
            url,
            target,
            client,
        }
    }

    /// Runs the CLI against this database.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = bin();
        cmd.env("DATABASE_URL", &self.url)
            .env("TRACE_SUMMARIZER_SCHEMA", &self.target.schema)
            .args(args);
        cmd.output().expect("run trace-summarizer")
    }

    /// Runs the CLI and requires exit code 0.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "trace-summarizer {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Rows that differ between otel_trace_summaries and the oracle (both directions).
    pub async fn oracle_diff(&self, window: &str) -> i64 {
        let schema = &self.target.schema;
        let sql = format!(
            "with oracle as ({oracle}),
                  actual as (select * from {schema}.otel_trace_summaries)
             select (select count(*) from (select * from actual except all select * from oracle) a)
                  + (select count(*) from (select * from oracle except all select * from actual) b)",
            oracle = oracle_sql(schema, window)
        );
        self.client
            .query_one(&sql, &[])
            .await
            .expect("oracle query")
            .get(0)
    }

    /// Up to 10 rows that differ from the oracle, each marked `actual` or `oracle`, for a
    /// failure message.
    pub async fn oracle_diff_rows(&self, window: &str) -> String {
        let schema = &self.target.schema;
        let sql = format!(
            "with oracle as ({oracle}),
                  actual as (select * from {schema}.otel_trace_summaries)
             select side || ': ' || r::text from (
               (select 'actual' as side, a as r from (select * from actual except all select * from oracle) a limit 5)
               union all
               (select 'oracle', b from (select * from oracle except all select * from actual) b limit 5)) d",
            oracle = oracle_sql(schema, window)
        );
        match self.client.query(&sql, &[]).await {
            Ok(rows) => rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(diff rows unavailable: {e})"),
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

/// The view's definition straight from CONTRACT.md (independent of the crate's SQL).
pub fn oracle_sql(schema: &str, window: &str) -> String {
    format!(
        "select trace_id,
                max(timestamp) as timestamp,
                max(span_id) filter (where parent_span_id is null or parent_span_id = '') as root_span_id,
                max(name) filter (where parent_span_id is null or parent_span_id = '') as root_span_name,
                max(service_name) filter (where parent_span_id is null or parent_span_id = '') as root_service_name,
                max(kind) filter (where parent_span_id is null or parent_span_id = '') as root_span_kind,
                min(start_time_unix_nano) as start_time_unix_nano,
                max(end_time_unix_nano) as end_time_unix_nano,
                greatest(coalesce((max(end_time_unix_nano) - min(start_time_unix_nano))::double precision / 1000000.0, 0), 0) as duration_ms,
                max(status_code) filter (where parent_span_id is null or parent_span_id = '') as status_code,
                max(status_message) filter (where parent_span_id is null or parent_span_id = '') as status_message,
                array_agg(distinct service_name) filter (where service_name is not null) as service_set,
                count(*) as span_count,
                sum(case when coalesce(status_code, 0) <> 1 then 1 else 0 end)::bigint as error_count
         from {schema}.otel_traces
         where timestamp > now() - interval '{window}' and trace_id is not null
         group by trace_id"
    )
}

pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trace-summarizer"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGDATABASE");
    cmd.env("RUST_LOG", "trace_summarizer=info");
    cmd
}

/// Serializes tests that use the shared pg_cron database.
pub async fn cron_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Loads `n` spans of history over the last `hours`, with past created_at values.
pub async fn load_history(db: &TestDb, n: usize, hours: i64, seed: u64) {
    let now = chrono::Utc::now();
    let mut generator = trace_summarizer::lab::spangen::SpanGen::new(seed);
    // No span within an hour of the 7-day edge: a comparison made seconds after a cycle must not
    // race a span crossing it (the window-edge tests cover crossings on purpose).
    let edge = now - chrono::Duration::days(7);
    let band = chrono::Duration::hours(1);
    let spans: Vec<_> = generator
        .history(n, now - chrono::Duration::hours(hours), now, now)
        .into_iter()
        .filter(|s| s.timestamp < edge - band || s.timestamp > edge + band)
        .collect();
    trace_summarizer::lab::spangen::copy_spans(&db.client, &db.target, &spans)
        .await
        .expect("load spans");
    db.client
        .batch_execute(&format!("analyze {}.otel_traces", db.target.schema))
        .await
        .unwrap();
}

/// Waits until `check` is true (polling), failing after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The contract's three index names (spelled out here, from CONTRACT.md) exist.
pub async fn assert_contract_indexes(db: &TestDb) {
    for name in [
        "idx_trace_summaries_trace_id",
        "idx_trace_summaries_timestamp",
        "idx_trace_summaries_service_timestamp",
    ] {
        let n = db
            .count(&format!(
                "select count(*) from pg_indexes where indexname = '{name}'"
            ))
            .await;
        assert_eq!(n, 1, "{name}");
    }
}

/// A child process of the test (a worker, a switch): stopped with SIGKILL when dropped, also
/// when the test panics, so no process of the suite outlives it. Its stderr goes to a log file
/// in its own temp dir (a pipe nobody reads would fill and stall it), so names never collide.
pub struct Proc {
    child: Option<std::process::Child>,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("trace-summarizer-test-proc-")
            .tempdir()
            .expect("temp dir for a process log");
        let log = dir.path().join("stderr.log");
        let file = std::fs::File::create(&log).expect("process log");
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(file))
            .spawn()
            .expect("start trace-summarizer");
        Proc {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child process, which we have not reaped yet.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("process already reaped");
        child.wait().expect("wait for the process")
    }

    /// Sends `sig` and waits for the exit.
    pub fn stop(&mut self, sig: i32) -> std::process::ExitStatus {
        self.signal(sig);
        self.wait()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port the worker's HTTP server bound (it listens on port 0; the log names the port).
    pub async fn http_port(&self, timeout: Duration) -> u16 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(port) = text
                .lines()
                .filter(|l| l.contains("serving /metrics"))
                .find_map(|l| {
                    let at = l.find("127.0.0.1:")? + "127.0.0.1:".len();
                    l[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                        .parse()
                        .ok()
                })
            {
                return port;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never said which port it serves on:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `trace-summarizer run ARGS` against `url`, serving HTTP on a free port of 127.0.0.1.
pub fn worker(url: &str, args: &[&str]) -> Proc {
    let mut cmd = bin();
    cmd.env("DATABASE_URL", url)
        .arg("run")
        .args(args)
        .args(["--listen", "127.0.0.1:0"]);
    Proc::spawn(cmd)
}

impl TestDb {
    /// A fresh database whose `otel_traces` (in `public`) is declaratively partitioned by
    /// range on "timestamp", as pg_partman makes it: one partition per day from `days_back`
    /// days ago to tomorrow, and a default partition. The contract's indexes are on the parent.
    pub async fn partitioned(days_back: i64) -> TestDb {
        let server = server();
        let name = unique_name("p");
        let admin = connect(&server.url("postgres")).await;
        admin
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create test database");
        let url = server.url(&name);
        let client = connect(&url).await;
        client
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
                partitioned_traces_sql()
            ))
            .await
            .expect("create partitioned otel_traces");
        TestDb {
            name,
            url,
            target: Target::new("public"),
            client,
        }
    }

    /// A fresh database whose `otel_traces` is a TimescaleDB hypertable with 1-day chunks, or
    /// None when TimescaleDB is not installed on the test server (then the test skips).
    pub async fn hypertable() -> Option<TestDb> {
        let server = server();
        let admin = connect(&server.url("postgres")).await;
        let available: bool = admin
            .query_one(
                "select exists (select 1 from pg_available_extensions where name = 'timescaledb')
                        and current_setting('shared_preload_libraries') like '%timescaledb%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if !available {
            skip("TimescaleDB is not installed and preloaded on the test server");
            return None;
        }
        let db = TestDb::new().await;
        db.client
            .batch_execute(
                "create extension if not exists timescaledb;
                 drop table otel_traces;",
            )
            .await
            .unwrap();
        db.client
            .batch_execute(&format!(
                "{}
                 select create_hypertable('otel_traces', 'timestamp', chunk_time_interval => interval '1 day');",
                include_str!("../../sql/otel_traces.sql").replace("{{traces}}", "otel_traces")
            ))
            .await
            .expect("create the hypertable");
        Some(db)
    }

    /// `run --once`, which must succeed; returns its log.
    pub fn run_once(&self) -> String {
        let out = self.cli(&["run", "--once"]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "run --once failed: {log}");
        log
    }
}

/// otel_traces as CONTRACT.md describes it (the crate's `sql/otel_traces.sql`), partitioned by
/// range on "timestamp" (the partitions are the caller's), with the contract's indexes on the
/// parent.
pub fn partitioned_traces_sql() -> String {
    include_str!("../../sql/otel_traces.sql")
        .replace("{{traces}}", "otel_traces")
        .replace(
            "    primary key (\"timestamp\", trace_id, span_id)\n);",
            "    primary key (\"timestamp\", trace_id, span_id)\n) partition by range (\"timestamp\");",
        )
}

/// The oracle with upstream's error rule (`status_code = 2`) instead of the contract's.
pub fn oracle_sql_error_rule(schema: &str, window: &str) -> String {
    oracle_sql(schema, window).replace(
        "sum(case when coalesce(status_code, 0) <> 1 then 1 else 0 end)::bigint as error_count",
        "sum(case when status_code = 2 then 1 else 0 end)::bigint as error_count",
    )
}

impl TestDb {
    /// Rows that differ between `schema.otel_trace_summaries` and `oracle` (both directions).
    pub async fn diff_against(&self, schema: &str, oracle: &str) -> i64 {
        let sql = format!(
            "with oracle as ({oracle}),
                  actual as (select * from {schema}.otel_trace_summaries)
             select (select count(*) from (select * from actual except all select * from oracle) a)
                  + (select count(*) from (select * from oracle except all select * from actual) b)"
        );
        self.client
            .query_one(&sql, &[])
            .await
            .expect("oracle query")
            .get(0)
    }
}

/// A plain HTTP GET on 127.0.0.1 (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The sum of a metric's samples whose line starts with `prefix` (a name, optionally with
/// labels, e.g. `trace_summarizer_fallbacks_total{schema="public"`).
pub fn metric_sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The first sample of metric `name` (a name, optionally with labels) in a /metrics body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// What a reader loop saw.
#[derive(Debug, Default)]
pub struct Reads {
    /// The longest single read.
    pub longest: Duration,
    pub reads: u32,
    pub errors: Vec<String>,
    /// Reads that returned no row at all.
    pub empty: u32,
}

/// A reader loop like the traces tab (the newest 20 summaries every 10 ms) until `stop`.
pub fn reader_loop(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Reads> {
    tokio::spawn(async move {
        let client = connect(&url).await;
        let mut seen = Reads::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = std::time::Instant::now();
            match client
                .query("select trace_id, span_count from otel_trace_summaries order by timestamp desc limit 20", &[])
                .await
            {
                Ok(rows) if rows.is_empty() => seen.empty += 1,
                Ok(_) => {}
                Err(e) => seen.errors.push(e.to_string()),
            }
            seen.longest = seen.longest.max(t.elapsed());
            seen.reads += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    })
}

/// A throwaway cluster of the test's own (for a test that crashes or restarts its server), with
/// `otel_traces` created in its `postgres` database. `None` (the test skips, saying why) when
/// `TEST_DATABASE_URL` points the suite at a server the test may not `what` (crash, restart).
pub struct OwnServer {
    pub cluster: trace_summarizer::lab::cluster::Cluster,
    pub url: String,
    pub client: Client,
    pub target: trace_summarizer::db::source::Target,
}

impl OwnServer {
    pub async fn start(what: &str) -> Option<OwnServer> {
        if std::env::var("TEST_DATABASE_URL").is_ok() {
            eprintln!("TEST_DATABASE_URL is set: this test needs a server it may {what}; skipping");
            return None;
        }
        let cluster = trace_summarizer::lab::cluster::Cluster::start(&Default::default()).unwrap();
        let url = cluster.url("postgres");
        let client = connect(&url).await;
        let target = trace_summarizer::db::source::Target::new("public");
        trace_summarizer::lab::spangen::create_source(&client, &target)
            .await
            .unwrap();
        Some(OwnServer {
            cluster,
            url,
            client,
            target,
        })
    }
}

/// `url` with another user (and a password, ignored by trust authentication).
pub fn url_as(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgresql:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{role}:test-password@{host}{path}")
}

/// Says that the running test skips, naming it (libtest names each test's thread after it),
/// and why.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("this test");
    eprintln!("skipping {name}: {reason}");
}

/// Why the shared test server's bin directory cannot run `tools` (psql, pg_dump, ...): a
/// server-only build such as the npm package of another major has none of them. None when it has
/// them all, or when the suite runs against `TEST_DATABASE_URL` (the caller decides then).
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    let c = server().cluster?;
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !c.has_tool(t)).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "needs {} from the server's bin directory {}, which has none (a server-only build)",
            missing.join(" and "),
            c.bindir().display()
        )
    })
}
