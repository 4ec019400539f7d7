//! Operations: status and its exit code, the HTTP endpoints and metrics, failover between two
//! workers, recovery after a server restart, a clean SIGTERM, and JSON logs.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::time::{Duration, Instant};
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

async fn wait_http(port: u16, path: &str, code: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((c, body)) = http_get(port, path) {
            if c == code {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer {code} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_fresh_after_a_cycle_and_stale_with_exit_1_when_the_worker_stops() {
    let db = TestDb::new().await;
    load_history(&db, 5_000, 48, 30).await;
    db.cli_ok(&["install"]);
    db.cli_ok(&["run", "--once"]);
    let out = db.cli(&["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"], "FRESH");
    assert_eq!(json["mode"], "incremental");
    assert_eq!(json["window_seconds"], 604800.0);
    assert!(json["rows"].as_i64().unwrap() > 0);
    for field in [
        "watermark",
        "reflected_at",
        "lag_seconds",
        "last_cycle",
        "leader",
        "age_seconds",
        "newest_summary_timestamp",
    ] {
        assert!(json.get(field).is_some(), "status --json lacks {field}");
    }
    let text = String::from_utf8_lossy(&db.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("verdict:") && text.contains("FRESH"),
        "{text}"
    );

    // The worker stops while spans keep arriving: the lag grows until STALE.
    let mut g = SpanGen::new(1);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 5))
        .await
        .unwrap();
    db.client
        .batch_execute("update trace_summarizer.state set reflected_at = now() - interval '10 minutes', last_cycle_at = now() - interval '10 minutes'")
        .await
        .unwrap();
    let out = db.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"], "STALE");
    assert!(json["lag_seconds"].as_f64().unwrap() >= 590.0);
    // Thresholds are configurable: the same state is only a WARNING with a long stale limit.
    let out = db.cli(&["status", "--stale-after", "1h", "--warn-after", "1m"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WARNING"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoints_serve_metrics_liveness_and_readiness() {
    let db = TestDb::new().await;
    load_history(&db, 3_000, 24, 31).await;
    db.cli_ok(&["install"]);
    let mut w = worker(&db.url, &["--interval", "200ms"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    wait_http(port, "/readyz", 200, Duration::from_secs(20)).await;
    assert_eq!(http_get(port, "/livez").unwrap().0, 200);
    let mut g = SpanGen::new(2);
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::seconds(1), 10),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let body = http_get(port, "/metrics").unwrap().1;
        if metric(&body, "trace_summarizer_spans_processed_total").unwrap_or(0.0) >= 10.0 {
            break body;
        }
        assert!(Instant::now() < deadline, "spans never counted:\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for name in [
        "trace_summarizer_lag_seconds",
        "trace_summarizer_cycle_duration_seconds",
        "trace_summarizer_spans_processed_total",
        "trace_summarizer_traces_upserted_total",
        "trace_summarizer_traces_pruned_total",
        "trace_summarizer_fallbacks_total",
        "trace_summarizer_errors_total",
        "trace_summarizer_leader",
        "trace_summarizer_last_success_timestamp_seconds",
        "trace_summarizer_build_info",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
    assert_eq!(metric(&body, "trace_summarizer_leader"), Some(1.0));
    assert!(body.contains("trace_summarizer_cycle_duration_seconds_bucket"));
    assert!(w.stop(libc::SIGTERM).success());
}

/// How long a standby may take to lead after the leader is killed, in this test. The design
/// figure is a few seconds (the standby polls the lock every second and the server drops the
/// dead session's lock at once); the margin here is for a loaded 2-core CI machine. `bench`
/// measures the real figure.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(30);

/// The leader's application_name in this test's database (other tests run their own workers on
/// the same cluster, so the query is scoped to the current database).
async fn leader_app(db: &TestDb) -> Option<String> {
    db.client
        .query_opt("select application_name from pg_stat_activity where datname = current_database() and application_name like 'trace-summarizer leader%'", &[])
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_when_the_leader_is_killed() {
    let db = TestDb::new().await;
    load_history(&db, 3_000, 24, 32).await;
    db.cli_ok(&["install"]);
    let mut a = worker(&db.url, &["--interval", "200ms"]);
    let p1 = a.http_port(Duration::from_secs(20)).await;
    wait_http(p1, "/readyz", 200, Duration::from_secs(20)).await;
    // `a` leads before `b` starts (the leader's application_name says so), so the roles are known.
    eventually(
        Duration::from_secs(20),
        "the first worker leads",
        || async { leader_app(&db).await.is_some() },
    )
    .await;
    let b = worker(&db.url, &["--interval", "200ms"]);
    let p2 = b.http_port(Duration::from_secs(20)).await;
    wait_http(p2, "/readyz", 200, Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "the standby reports itself as such",
        || async {
            metric(
                &http_get(p2, "/metrics").unwrap().1,
                "trace_summarizer_leader",
            ) == Some(0.0)
        },
    )
    .await;
    let la = metric(
        &http_get(p1, "/metrics").unwrap().1,
        "trace_summarizer_leader",
    );
    assert_eq!(la, Some(1.0));
    let app = leader_app(&db).await.expect("a leader");
    assert!(app.contains(&format!("pid {}", a.id())), "{app}");
    // The status names the leader.
    let json: serde_json::Value =
        serde_json::from_slice(&db.cli(&["status", "--json"]).stdout).unwrap();
    assert!(json["leader"]["application_name"]
        .as_str()
        .unwrap()
        .contains("leader"));

    a.stop(libc::SIGKILL);
    let killed = Instant::now();
    let mut g = SpanGen::new(3);
    let trace = g.trace(Utc::now() - CD::seconds(1), 7);
    insert_spans(&db.client, &db.target, &trace).await.unwrap();
    loop {
        let lb = metric(
            &http_get(p2, "/metrics").unwrap().1,
            "trace_summarizer_leader",
        );
        if lb == Some(1.0) {
            break;
        }
        assert!(
            killed.elapsed() < TAKEOVER_MARGIN,
            "the standby did not take over within {TAKEOVER_MARGIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = trace[0].trace_id.clone();
    eventually(TAKEOVER_MARGIN, "the new leader absorbs new spans", || {
        let db = &db;
        let id = id.clone();
        async move { db.count(&format!("select count(*) from otel_trace_summaries where trace_id = '{id}' and span_count = 7")).await == 1 }
    })
    .await;
    let mut b = b;
    assert!(b.stop(libc::SIGTERM).success());
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_quickly_and_releases_the_lock() {
    let db = TestDb::new().await;
    load_history(&db, 2_000, 24, 33).await;
    db.cli_ok(&["install"]);
    let mut w = worker(&db.url, &["--interval", "200ms"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    wait_http(port, "/readyz", 200, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), "the worker holds the leader lock", || async {
        db.count("select count(*) from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())").await == 1
    })
    .await;
    let t = Instant::now();
    let status = w.stop(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    eventually(Duration::from_secs(5), "the leader lock is released", || async {
        db.count("select count(*) from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_with_log_format_json() {
    let db = TestDb::new().await;
    load_history(&db, 1_000, 24, 34).await;
    db.cli_ok(&["install"]);
    let mut g = SpanGen::new(4);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 3))
        .await
        .unwrap();
    let out = db.cli(&["--log-format", "json", "run", "--once"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("message").is_some(), "{line}");
    }
    assert!(err.contains("\"cycle done\""), "{err}");
    assert!(!err.contains("password"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_recovers_after_the_server_restarts_mid_run() {
    // This test restarts its own server, so it does not share the binary's cluster.
    let Some(OwnServer {
        cluster,
        url,
        client,
        target,
    }) = OwnServer::start("restart").await
    else {
        return;
    };
    let mut g = SpanGen::new(5);
    insert_spans(&client, &target, &g.trace(Utc::now() - CD::minutes(1), 20))
        .await
        .unwrap();
    let out = bin()
        .env("DATABASE_URL", &url)
        .args(["install"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut w = worker(&url, &["--interval", "200ms"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    wait_http(port, "/readyz", 200, Duration::from_secs(20)).await;
    drop(client);
    cluster.restart().unwrap();
    let client = connect(&url).await;
    let trace = g.trace(Utc::now() - CD::seconds(1), 9);
    insert_spans(&client, &target, &trace).await.unwrap();
    let id = trace[0].trace_id.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = client
            .query_one(
                "select count(*) from otel_trace_summaries where trace_id = $1 and span_count = 9",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not recover after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_http(port, "/readyz", 200, Duration::from_secs(10)).await;
    let body = http_get(port, "/metrics").unwrap().1;
    let errors: f64 = body
        .lines()
        .filter(|l| l.starts_with("trace_summarizer_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        errors >= 1.0,
        "the lost connection was not counted:\n{body}"
    );
    assert!(w.stop(libc::SIGTERM).success());
    let stderr = w.log_text();
    assert!(
        stderr.contains("WARN") && stderr.contains("reconnecting"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ERROR"),
        "retries must log at WARN: {stderr}"
    );
}
