//! One randomized workload that interleaves normal batches, late spans, transactions that stay
//! open across cycles (written at once, or written late), retention deletes, window-edge
//! crossings and worker restarts (clean and kill -9), then requires zero differing rows.
//! The seed is printed; set RANDOMIZED_SEED to replay a run.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

#[tokio::test(flavor = "multi_thread")]
async fn a_randomized_interleaving_converges_to_the_definition() {
    let seed: u64 = std::env::var("RANDOMIZED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("RANDOMIZED_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = SpanGen::new(seed);
    let db = TestDb::new().await;
    load_history(&db, 20_000, 24 * 8, seed).await;
    db.cli_ok(&["install", "--mode", "incremental"]);

    let mut open: Vec<(tokio_postgres::Client, u32)> = Vec::new(); // (connection, steps left)
    let mut worker: Option<Proc> = None;
    let mut last_edge_insert = std::time::Instant::now();
    let mut known: Vec<String> = db
        .client
        .query(
            "select trace_id from otel_traces tablesample system (5) limit 200",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for step in 0..40 {
        let action = rng.random_range(0..100);
        let now = Utc::now();
        match action {
            0..=29 => {
                // A normal batch of new traces.
                let mut spans = Vec::new();
                for _ in 0..rng.random_range(1..30) {
                    spans.extend(g.trace(now - CD::seconds(rng.random_range(0..10)), 0));
                }
                known.extend(spans.iter().take(3).map(|s| s.trace_id.clone()));
                insert_spans(&db.client, &db.target, &spans).await.unwrap();
            }
            30..=44 => {
                // Late spans for known traces, minutes to days back (some beyond the window).
                let mut spans = Vec::new();
                for _ in 0..rng.random_range(1..10) {
                    let trace_id = known[rng.random_range(0..known.len())].clone();
                    let back = CD::seconds(rng.random_range(60..(9 * 86_400)));
                    for mut s in g.trace(now - back, rng.random_range(1..4)) {
                        s.trace_id = trace_id.clone();
                        spans.push(s);
                    }
                }
                insert_spans(&db.client, &db.target, &spans).await.unwrap();
            }
            45..=54 => {
                // A transaction that stays open for a few steps; it writes now or later.
                let c = connect(&db.url).await;
                c.batch_execute("begin; select 1").await.unwrap();
                if rng.random_bool(0.5) {
                    insert_spans(&c, &db.target, &g.trace(now - CD::seconds(1), 0))
                        .await
                        .unwrap();
                }
                open.push((c, rng.random_range(1..6)));
            }
            55..=62 => {
                // Spans just inside the window edge: they cross it during the run.
                let mut spans = Vec::new();
                for _ in 0..rng.random_range(1..5) {
                    let mut t =
                        g.trace(now - CD::days(7) + CD::seconds(rng.random_range(2..15)), 0);
                    if rng.random_bool(0.5) {
                        // ...in a trace that also has recent spans.
                        let id = t[0].trace_id.clone();
                        t.extend(g.trace(now - CD::seconds(5), 2).into_iter().map(|mut s| {
                            s.trace_id = id.clone();
                            s
                        }));
                    }
                    spans.extend(t);
                }
                insert_spans(&db.client, &db.target, &spans).await.unwrap();
                last_edge_insert = std::time::Instant::now();
            }
            63..=69 => {
                // Retention: drop the oldest spans.
                let keep_days = rng.random_range(3..8);
                db.client
                    .execute(&format!("delete from otel_traces where timestamp < now() - interval '{keep_days} days'"), &[])
                    .await
                    .unwrap();
            }
            70..=84 => {
                // A catch-up run.
                db.cli_ok(&["run", "--once"]);
            }
            85..=92 => {
                // Start a background worker (or kill -9 the running one).
                match worker.take() {
                    Some(mut child) => {
                        child.stop(libc::SIGKILL);
                    }
                    None => worker = Some(common::worker(&db.url, &["--interval", "200ms"])),
                }
            }
            _ => {
                // A clean restart of the background worker.
                if let Some(mut child) = worker.take() {
                    child.stop(libc::SIGTERM);
                }
            }
        }
        // Age the open transactions; commit (or roll back) the ones whose time has come.
        let mut still = Vec::new();
        for (c, left) in open.drain(..) {
            if left <= 1 {
                if rng.random_bool(0.85) {
                    insert_spans(&c, &db.target, &g.trace(Utc::now() - CD::seconds(2), 0))
                        .await
                        .unwrap();
                    c.batch_execute("commit").await.unwrap();
                } else {
                    c.batch_execute("rollback").await.unwrap();
                }
            } else {
                still.push((c, left - 1));
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        if step % 10 == 9 {
            eprintln!(
                "step {step}: {} open transactions, worker running: {}",
                open.len(),
                worker.is_some()
            );
        }
    }
    for (c, _) in open.drain(..) {
        c.batch_execute("commit").await.unwrap();
    }
    if let Some(mut child) = worker.take() {
        child.stop(libc::SIGKILL);
    }
    // Let every edge span cross the edge, so the comparison instant is not racing a crossing.
    let since = last_edge_insert.elapsed();
    if since < Duration::from_secs(17) {
        tokio::time::sleep(Duration::from_secs(17) - since).await;
    }
    db.cli_ok(&["run", "--once"]);
    let diff = db.oracle_diff("7 days").await;
    assert_eq!(
        diff, 0,
        "{diff} rows differ from the definition (RANDOMIZED_SEED={seed})"
    );
}
