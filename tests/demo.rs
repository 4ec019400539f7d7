//! `demo`, the README's first command, run as a user runs it: the binary, off a terminal.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn demo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trace-summarizer"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("TRACE_SUMMARIZER_SCHEMA")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGDATABASE");
    cmd.env("RUST_LOG", "trace_summarizer=warn");
    cmd.arg("demo");
    cmd
}

/// Runs `cmd`, killing it after `limit`.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            // SIGTERM first, so the demo stops the cluster it started; SIGKILL if it hangs.
            // SAFETY: signalling our own child process, not yet reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(15) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
            let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!("demo did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

#[test]
fn demo_ingests_live_for_its_duration_and_the_table_then_equals_the_definition() {
    let mut cmd = demo();
    cmd.args(["--spans", "50000", "--rate", "500", "--duration", "20s"]);
    let out = run_with_limit(cmd, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Verify ran at the end and found the table equal to the definition.
    let verify = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("verify"))
        .unwrap_or_else(|| panic!("no verify line:\n{stdout}"));
    assert!(
        verify.contains("ok:") && verify.contains(" 0 mismatches"),
        "{verify}"
    );

    // It loaded the history and ingested spans while the worker ran.
    assert!(stdout.contains("spans loaded"), "no load line:\n{stdout}");
    let ingested = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("ingested"))
        .unwrap_or_else(|| panic!("no ingested line:\n{stdout}"));
    let spans: u64 = ingested
        .split_whitespace()
        .nth(1)
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable: {ingested}"));
    assert!(
        spans >= 2_000,
        "only {spans} spans ingested in 20 s at 500/s: {ingested}"
    );
    // Off a terminal: summary lines, not the live view's escape codes.
    assert!(stdout.contains("lag"), "{stdout}");
    assert!(
        !stdout.contains("\x1b["),
        "escape codes off a terminal:\n{stdout}"
    );
    assert!(stdout.contains("removed the throwaway cluster"), "{stdout}");
}

#[test]
fn demo_with_an_unreachable_database_url_exits_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = demo();
    cmd.args([
        "--database-url",
        &format!("postgresql://demo:secretpw@127.0.0.1:{port}/demo?sslmode=disable"),
        "--duration",
        "5s",
    ]);
    let out = run_with_limit(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("secretpw"), "password leaked: {stderr}");
}

#[test]
fn demo_with_an_invalid_duration_exits_2_before_starting_anything() {
    let mut cmd = demo();
    cmd.args(["--duration", "soon"]);
    let out = run_with_limit(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--duration"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("starting"),
        "started a cluster for a bad flag"
    );
}

#[test]
fn demo_ignores_a_database_url_exported_in_the_environment_and_uses_a_throwaway_cluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = demo();
    cmd.env(
        "DATABASE_URL",
        format!("postgresql://app@127.0.0.1:{port}/prod?sslmode=disable"),
    );
    cmd.args(["--spans", "2000", "--rate", "200", "--duration", "2s"]);
    let out = run_with_limit(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("ignoring DATABASE_URL"), "{stdout}");
    assert!(stdout.contains("throwaway"), "{stdout}");
}
