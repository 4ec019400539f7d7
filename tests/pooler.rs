//! The worker behind a real PgBouncer: in transaction mode (which would share its leader lock
//! and scratch tables with other clients) it refuses to run, with exit 2 and what to do; in
//! session mode it works. The refusal at start compares the backends of two clients (simple
//! protocol only, so no Close message of the first can hold its server session); the pooler
//! here has one server connection in transaction mode, so the second client must get the
//! first's session. Behind a larger pool the worker also compares its backend pid at every idle
//! check and stops with the same message once a statement lands on another session. Skipped when pgbouncer is not installed (CI installs it).
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::time::Duration;
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

/// A PgBouncer in front of the test cluster, stopped when dropped.
struct Bouncer {
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The uid and gid of `postgres`, when running as root (pgbouncer refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam's result is read at once on this thread.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = std::ffi::CString::new("postgres").unwrap();
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

async fn start_bouncer(mode: &str) -> Option<Bouncer> {
    let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pgbouncer is not installed, but CI installs it"
        );
        eprintln!("pgbouncer is not installed: skipping");
        return None;
    };
    let Some(cluster) = server().cluster else {
        eprintln!("TEST_DATABASE_URL is set: this test starts a pooler in front of its own cluster; skipping");
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("trace-summarizer-test-pgbouncer-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host=127.0.0.1 port={pg}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = {mode}\ndefault_pool_size = {pool}\n\
             max_client_conn = 100\nignore_startup_parameters = extra_float_digits,options\n\
             logfile = {log}\npidfile = {pid}\n",
            pg = cluster.port,
            // One server connection in transaction mode: the worker's second client must get
            // the first one's session, so the refusal cannot depend on timing.
            pool = if mode == "transaction" { 1 } else { 4 },
            users = users.display(),
            log = dir.path().join("pgbouncer.log").display(),
            pid = dir.path().join("pgbouncer.pid").display(),
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(bin);
    if let Some((uid, gid)) = postgres_user() {
        for path in [dir.path(), ini.as_path(), users.as_path()] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
        cmd.arg("-u").arg("postgres");
    }
    cmd.arg(&ini);
    let proc = Proc::spawn(cmd);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "pgbouncer did not start: {}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(Bouncer {
        port,
        _proc: proc,
        _dir: dir,
    })
}

fn through(db: &TestDb, bouncer: &Bouncer) -> String {
    format!(
        "postgresql://postgres@127.0.0.1:{}/{}?sslmode=disable",
        bouncer.port, db.name
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_mode_pooler_is_refused_with_exit_2_and_what_to_do() {
    let Some(bouncer) = start_bouncer("transaction").await else {
        return;
    };
    let db = TestDb::new().await;
    load_history(&db, 500, 24, 71).await;
    db.cli_ok(&["install"]);
    let out = bin()
        .env("DATABASE_URL", through(&db, &bouncer))
        .args(["run", "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("transaction"), "{err}");
    assert!(err.contains("pool_mode = session"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_mode_pooler_works() {
    let Some(bouncer) = start_bouncer("session").await else {
        return;
    };
    let db = TestDb::new().await;
    load_history(&db, 500, 24, 72).await;
    db.cli_ok(&["install"]);
    let mut g = SpanGen::new(73);
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::seconds(3), 6),
    )
    .await
    .unwrap();
    let out = bin()
        .env("DATABASE_URL", through(&db, &bouncer))
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}
