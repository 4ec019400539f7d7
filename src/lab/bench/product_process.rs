//! The product as a separate process, for the comparison: `trace-summarizer run` started from
//! this very binary (`std::env::current_exe()`), with the product's default settings unless a
//! flag is given, so that its own CPU time can be read from procfs apart from the bench's
//! threads. Its output goes to a log file in the temporary directory, kept when it fails.
//! Stopped with SIGTERM (then SIGKILL after 15 s); a process left over on an error path is
//! killed when its handle is dropped.

use super::procfs;
use super::spans::fresh_spans;
use crate::db::connect::ConnectOptions;
use crate::db::source::Target;
use crate::db::tls::SslMode;
use crate::error::{DbContext, Error, Result};
use crate::lab::spangen::{self, SpanGen};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

pub struct ProductProcess {
    child: Option<Child>,
    pub pid: i32,
    pub log: PathBuf,
}

/// libpq key=value settings of `opts` (the password goes in the environment, not the args).
fn conninfo(opts: &ConnectOptions) -> String {
    use tokio_postgres::config::Host;
    let mut parts = Vec::new();
    if let Some(Host::Tcp(h)) = opts.config.get_hosts().first() {
        parts.push(format!("host={h}"));
    } else if let Some(Host::Unix(p)) = opts.config.get_hosts().first() {
        parts.push(format!("host={}", p.display()));
    }
    if let Some(p) = opts.config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = opts.config.get_user() {
        parts.push(format!("user={u}"));
    }
    if let Some(d) = opts.config.get_dbname() {
        parts.push(format!("dbname={d}"));
    }
    parts.push(format!(
        "sslmode={}",
        match opts.ssl_mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    ));
    parts.join(" ")
}

impl ProductProcess {
    /// Starts `trace-summarizer run <extra>` on the database of `opts`.
    pub fn start(opts: &ConnectOptions, extra: &[&str], label: &str) -> Result<ProductProcess> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("finding the bench's own executable", e))?;
        let log = std::env::temp_dir().join(format!("trace-summarizer-bench-{label}.log"));
        let out = std::fs::File::create(&log)
            .map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--database-url")
            .arg(conninfo(opts))
            .arg("--quiet")
            .arg("run")
            .args(extra)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(pw) = opts.config.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io("starting `trace-summarizer run`", e))?;
        Ok(ProductProcess {
            pid: child.id() as i32,
            child: Some(child),
            log,
        })
    }

    /// The process's CPU seconds so far (user and system, its own threads).
    pub fn cpu_s(&self) -> Option<f64> {
        procfs::stat(self.pid).map(|s| s.own_s())
    }

    /// Fails when the process has exited (it should run until stopped).
    pub fn check(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(Error::precondition(
                    format!("bench: `trace-summarizer run` exited ({status})"),
                    format!("see its log, {}", self.log.display()),
                ))
            }
            Err(e) => Err(Error::io("checking `trace-summarizer run`", e)),
        }
    }

    /// SIGTERM, then waits up to 15 s (SIGKILL after that); returns the CPU seconds read just
    /// before the signal.
    pub async fn stop(mut self) -> Option<f64> {
        let cpu = self.cpu_s();
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill with a pid we started and have not waited for yet.
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
            }
            let t = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if t.elapsed() > Duration::from_secs(15) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        // TRACE_SUMMARIZER_BENCH_KEEP_LOGS keeps it (with RUST_LOG=trace_summarizer=info the
        // worker logs every step and its duration), for a look at a cell's steps.
        if std::env::var_os("TRACE_SUMMARIZER_BENCH_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
        cpu
    }
}

/// Inserts one new trace and waits until its summary appears in otel_trace_summaries: the
/// process runs and has caught up with everything committed before (a backlog it absorbs by a
/// full refresh included). Returns the seconds it took.
pub async fn wait_caught_up(
    client: &Client,
    target: &Target,
    gen: &mut SpanGen,
    product: &mut ProductProcess,
    timeout: Duration,
) -> Result<f64> {
    let spans = fresh_spans(gen, 1);
    let id = spans[0].trace_id.clone();
    let t = Instant::now();
    spangen::insert_spans(client, target, &spans).await?;
    let sql = format!("select 1 from {} where trace_id = $1", target.summaries());
    loop {
        product.check()?;
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
                    "bench: `trace-summarizer run` did not absorb a probe span within {} s",
                    timeout.as_secs()
                ),
                "the machine may be overloaded",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for ProductProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
