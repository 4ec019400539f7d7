//! The full refresh on several connections (`rebuild --jobs N`, `run --rebuild-jobs N`): exact
//! on a plain and a partitioned otel_traces, in place and built beside, without blocking
//! readers; a helper session that fails (terminated, cancelled, timed out) leaves the old table,
//! the side table and the pending state as they were; `--jobs 1` still works; bad values exit 2.
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HELPER: &str = "trace-summarizer rebuild helper";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `rebuild ARGS` under a reader loop: its output, and what the reader saw.
async fn rebuild_under_readers(db: &TestDb, args: &[&str]) -> (String, Reads) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = reader_loop(db.url.clone(), stop.clone());
    // Let the reader run before and after, so it is reading when the refresh writes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut all = vec!["rebuild"];
    all.extend_from_slice(args);
    let out = db.cli_ok(&all);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    (out, reader.await.unwrap())
}

fn assert_readers_not_blocked(reads: &Reads) {
    assert!(reads.errors.is_empty(), "{:?}", reads.errors);
    assert_eq!(reads.empty, 0, "a reader saw an empty table");
    assert!(reads.reads > 3, "the reader ran {} times", reads.reads);
    assert!(
        reads.longest < Duration::from_millis(300),
        "a read waited {:?} during the rebuild",
        reads.longest
    );
}

/// Every row of the table and of the side table is in each of their indexes (amcheck's
/// heapallindexed), and an index scan finds as many rows as a sequential scan: the rows the
/// refresh wrote are all visible and all indexed. Skipped without amcheck.
async fn assert_indexes_hold_every_row(db: &TestDb) {
    let has_amcheck = db
        .count("select count(*) from pg_available_extensions where name = 'amcheck'")
        .await
        == 1;
    if has_amcheck {
        db.client
            .batch_execute("create extension if not exists amcheck")
            .await
            .unwrap();
        let indexes: Vec<String> = db
            .client
            .query(
                "select i.indexrelid::regclass::text from pg_index i join pg_class c on c.oid = i.indrelid
                 join pg_namespace n on n.oid = c.relnamespace
                 where (n.nspname = 'public' and c.relname = 'otel_trace_summaries')
                    or (n.nspname = 'trace_summarizer' and c.relname like 'oldest%')",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(indexes.len(), 4, "{indexes:?}");
        for index in indexes {
            db.client
                .execute("select bt_index_check($1::text::regclass, true)", &[&index])
                .await
                .unwrap_or_else(|e| panic!("{index}: {e}"));
        }
    } else {
        eprintln!("amcheck is not available: checking the indexes by counts only");
    }
    let seq = db.count("select count(*) from otel_trace_summaries").await;
    db.client
        .batch_execute("set enable_seqscan = off; set enable_bitmapscan = off")
        .await
        .unwrap();
    let by_trace = db
        .count("select count(*) from otel_trace_summaries where trace_id >= ''")
        .await;
    let by_time = db
        .count("select count(*) from otel_trace_summaries where \"timestamp\" > '-infinity'")
        .await;
    db.client
        .batch_execute("reset enable_seqscan; reset enable_bitmapscan")
        .await
        .unwrap();
    assert!(seq > 1000, "{seq}");
    assert_eq!((by_trace, by_time), (seq, seq));
}

/// Small damage (written in place), then large damage (built beside and swapped in), each
/// repaired by `rebuild --jobs 2` under readers, exactly.
async fn two_connections_are_exact(db: &TestDb) {
    db.client
        .batch_execute(
            "update otel_trace_summaries set span_count = span_count + 1 where trace_id in (select trace_id from otel_trace_summaries order by trace_id limit 10);
             update otel_trace_summaries set error_count = error_count + 1 where trace_id in (select trace_id from otel_trace_summaries order by trace_id desc limit 10);
             delete from otel_trace_summaries where trace_id in (select trace_id from otel_trace_summaries order by md5(trace_id) limit 5);
             insert into otel_trace_summaries (trace_id, timestamp, span_count, error_count) values ('bogus', now(), 1, 0);
             delete from trace_summarizer.oldest_1;",
        )
        .await
        .unwrap();
    let (out, reads) = rebuild_under_readers(db, &["--jobs", "2"]).await;
    // Both ends of the trace_ids were damaged: the leader's range and the helper's.
    assert!(
        out.contains("inserted") && out.contains("(2 connections)") && !out.contains("swapped"),
        "{out}"
    );
    assert_readers_not_blocked(&reads);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    // The side table was emptied by hand: every summarized trace has its entry again.
    assert_eq!(
        db.count(
            "select count(*) from otel_trace_summaries t
             where not exists (select from trace_summarizer.oldest_1 o where o.trace_id = t.trace_id)"
        )
        .await,
        0
    );

    db.client
        .batch_execute("delete from otel_trace_summaries where trace_id in (select trace_id from otel_trace_summaries order by md5(trace_id) limit (select count(*) / 2 from otel_trace_summaries))")
        .await
        .unwrap();
    let (out, reads) = rebuild_under_readers(db, &["--jobs", "2"]).await;
    assert!(
        out.contains("built beside the table and swapped in") && out.contains("(2 connections)"),
        "{out}"
    );
    assert_readers_not_blocked(&reads);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_contract_indexes(db).await;
    assert_indexes_hold_every_row(db).await;
    assert_eq!(
        db.count(&format!(
            "select count(*) from pg_stat_activity where application_name = '{HELPER}' and datname = current_database()"
        ))
        .await,
        0,
        "helper sessions outlived the rebuild"
    );
    // The worker goes on from the position the refresh stored.
    let mut g = trace_summarizer::lab::spangen::SpanGen::new(77);
    trace_summarizer::lab::spangen::insert_spans(
        &db.client,
        &db.target,
        &g.trace(chrono::Utc::now(), 8),
    )
    .await
    .unwrap();
    db.run_once();
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_connections_are_exact_on_a_plain_table() {
    let db = TestDb::new().await;
    load_history(&db, 120_000, 24 * 8, 71).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    two_connections_are_exact(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_connections_are_exact_on_a_partitioned_table() {
    let db = TestDb::partitioned(9).await;
    load_history(&db, 120_000, 24 * 8, 72).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    two_connections_are_exact(&db).await;
}

/// What must not change when a refresh fails: the state row, the table (its oid and rows), the
/// side table, the queue, and no relation left beside.
async fn everything(db: &TestDb) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "select row_to_json(s)::text from trace_summarizer.state s",
        "select 'otel_trace_summaries'::regclass::oid::text",
        "select md5(string_agg(t::text, ',' order by trace_id)) from otel_trace_summaries t",
        "select md5(string_agg(o::text, ',' order by trace_id, oldest)) from trace_summarizer.oldest_1 o",
        "select count(*)::text from trace_summarizer.recompute_1",
        "select string_agg(relname, ',' order by relname) from pg_class where relname like '%\\_new' escape '\\'",
    ] {
        let v: Option<String> = db
            .client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        out.push(v.unwrap_or_default());
    }
    out
}

/// Runs `rebuild --jobs 2 EXTRA` with the side table locked, so that every session's comparison
/// waits on that lock in its own active statement, however fast it would be (the statement's
/// text in pg_stat_activity is cut before its name for the temporary tables, so the wait is what
/// tells it); once a helper session waits there, runs `action` on its backend and releases the lock (`None`: the extra flags make it
/// fail while it waits). Returns the rebuild's output, or None when no helper was seen comparing.
async fn rebuild_with_a_failing_helper(
    db: &TestDb,
    action: Option<&str>,
    extra: &[&str],
) -> Option<std::process::Output> {
    let locker = connect(&db.url).await;
    locker
        .batch_execute("begin; lock table trace_summarizer.oldest_1 in access exclusive mode")
        .await
        .unwrap();
    let child = bin()
        .env("DATABASE_URL", &db.url)
        .args(["rebuild", "--jobs", "2"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait = || tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let Some(action) = action else {
        let out = wait().await.unwrap();
        locker.batch_execute("rollback").await.unwrap();
        return Some(out);
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut hit = false;
    while !hit && Instant::now() < deadline {
        hit = db
            .client
            .query_opt(
                &format!(
                    "select {action}(pid) from pg_stat_activity
                     where datname = current_database() and application_name = '{HELPER}'
                       and state = 'active' and wait_event_type = 'Lock'"
                ),
                &[],
            )
            .await
            .unwrap()
            .is_some();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if !hit {
        let sessions: Vec<String> = db
            .client
            .query(
                "select coalesce(application_name, '') || ' ' || coalesce(state, '') || ' ' || coalesce(wait_event_type, '') || ' ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
                 from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        eprintln!(
            "no helper seen comparing; the sessions:\n{}",
            sessions.join("\n")
        );
    }
    locker.batch_execute("rollback").await.unwrap();
    let out = wait().await.unwrap();
    if !hit {
        eprintln!(
            "the rebuild then said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Not seen, or the helper had finished its comparison when the signal came.
    (hit && !out.status.success()).then_some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_helper_leaves_the_old_table_and_the_pending_state() {
    let db = TestDb::new().await;
    load_history(&db, 60_000, 24 * 8, 73).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    // Damage only a full refresh repairs, and a full refresh pending.
    let damage = "update otel_trace_summaries set span_count = span_count + 1 where trace_id in (select trace_id from otel_trace_summaries order by trace_id desc limit 50);
                  update trace_summarizer.state set rebuild_reason = 'verify_drift';";
    db.client.batch_execute(damage).await.unwrap();
    for (action, extra, expect) in [
        // The helper's backend terminated (as by an operator, or a crash of that backend).
        (
            Some("pg_terminate_backend"),
            &[][..],
            "terminating connection",
        ),
        // The helper's statement cancelled, as its statement_timeout would.
        (Some("pg_cancel_backend"), &[][..], "canceling statement"),
        // Every session's statement_timeout.
        (None, &["--timeout", "300ms"][..], "statement timeout"),
    ] {
        let mut attempt = None;
        for _ in 0..5 {
            let before = everything(&db).await;
            if let Some(out) = rebuild_with_a_failing_helper(&db, action, extra).await {
                attempt = Some((before, out));
                break;
            }
            // The refresh won the race and repaired everything: damage again and retry.
            db.client.batch_execute(damage).await.unwrap();
        }
        let (before, out) = attempt.expect("a helper session was never seen comparing");
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        // A terminated backend says why before it closes; the client may see only the close.
        assert!(
            err.contains(expect)
                || (action == Some("pg_terminate_backend") && err.contains("connection closed")),
            "{action:?}: {err}"
        );
        if action.is_some() {
            assert!(err.contains("helper session 1"), "{err}");
        }
        // No session lingers, nothing is left beside, nothing changed.
        eventually(
            Duration::from_secs(20),
            "the refresh's sessions have ended",
            || async {
                db.count(&format!(
                    "select count(*) from pg_stat_activity where datname = current_database() and application_name = '{HELPER}'"
                ))
                .await
                    == 0
            },
        )
        .await;
        assert_eq!(everything(&db).await, before, "{action:?}");
        assert_eq!(
            db.count(
                "select count(*) from trace_summarizer.state where rebuild_reason = 'verify_drift'"
            )
            .await,
            1,
            "{action:?}: the pending full refresh was forgotten"
        );
        assert!(db.oracle_diff("7 days").await > 0);
    }
    // Then one that commits: exact, and nothing pending.
    let out = db.cli_ok(&["rebuild", "--jobs", "2"]);
    assert!(out.contains("(2 connections)"), "{out}");
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_eq!(
        db.count("select count(*) from trace_summarizer.state where rebuild_reason is null")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_still_works_and_the_worker_refreshes_on_several() {
    let db = TestDb::new().await;
    load_history(&db, 30_000, 24 * 8, 74).await;
    db.cli_ok(&["install", "--mode", "incremental"]);
    db.client
        .batch_execute("update otel_trace_summaries set duration_ms = -1 where trace_id in (select trace_id from otel_trace_summaries limit 7)")
        .await
        .unwrap();
    let out = db.cli_ok(&["rebuild", "--jobs", "1"]);
    assert!(
        out.contains("7 updated") && out.contains("(1 connection)"),
        "{out}"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
    // Much damage on one connection: built beside and swapped in.
    db.client
        .batch_execute("update otel_trace_summaries set duration_ms = -1")
        .await
        .unwrap();
    let out = db.cli_ok(&["rebuild", "--jobs", "1"]);
    assert!(
        out.contains("swapped in") && out.contains("(1 connection)"),
        "{out}"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_indexes_hold_every_row(&db).await;

    // The worker's fallback (another format version) on two connections, from the env.
    db.client
        .batch_execute(
            "update trace_summarizer.state set version = 1;
             update otel_trace_summaries set span_count = 0 where trace_id in (select trace_id from otel_trace_summaries limit 3);",
        )
        .await
        .unwrap();
    let out = bin()
        .env("DATABASE_URL", &db.url)
        .env("TRACE_SUMMARIZER_REBUILD_JOBS", "2")
        .args(["run", "--once"])
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("state_version")
            && log.contains("full refresh done")
            && log.contains("jobs=2"),
        "{log}"
    );
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[test]
fn bad_jobs_values_exit_2_with_a_clear_message() {
    let url = "postgresql://nobody@127.0.0.1:1/none";
    for (args, env) in [
        (vec!["rebuild", "--jobs", "0"], None),
        (vec!["rebuild", "--jobs", "65"], None),
        (vec!["rebuild", "--jobs=-1"], None),
        (vec!["rebuild", "--jobs", "many"], None),
        (vec!["rebuild"], Some("1.5")),
        (vec!["run", "--rebuild-jobs", "0"], None),
        (vec!["run"], Some("x")),
    ] {
        let mut cmd = bin();
        cmd.env("DATABASE_URL", url).args(&args);
        if let Some(v) = env {
            cmd.env("TRACE_SUMMARIZER_REBUILD_JOBS", v);
        }
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains("jobs") && err.contains("from 1 to 64, or auto"),
            "{args:?} {env:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
