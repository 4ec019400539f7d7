//! Upstream's habit at every start of its application: `ALTER ... OWNER TO <app user>` on every
//! table, view, sequence and materialized view in its schema. When the owner of
//! `otel_trace_summaries` (and of `otel_traces`) changes under a running worker, the worker either
//! goes on (it still has the grants it needs; its full refreshes then write in place) or stops
//! with exit 2 and a hint that names the missing grant. It never goes silently stale.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::time::Duration;
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

const WORKER_ARGS: &[&str] = &["--interval", "100ms", "--audit-period", "0"];

/// A database whose otel_traces belongs to `owner` (a login role), installed by that role.
async fn owned_by(owner: &str, seed: u64) -> TestDb {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "create role {owner} login password 'owner';
             grant create, connect, temporary on database {dbname} to {owner};
             grant create, usage on schema public to {owner};
             alter table otel_traces owner to {owner};",
            dbname = db.name
        ))
        .await
        .unwrap();
    load_history(&db, 3_000, 48, seed).await;
    let out = bin()
        .env("DATABASE_URL", url_as(&db.url, owner))
        .env("TRACE_SUMMARIZER_SCHEMA", "public")
        .arg("install")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

async fn drop_roles(db: &TestDb, roles: &[&str]) {
    for r in roles {
        // A stopped worker's backends may still be exiting (dropping their temporary tables),
        // and REASSIGN OWNED then fails to open a relation dropped under it: wait for them, and
        // retry.
        eventually(
            Duration::from_secs(20),
            "the role's sessions end",
            || async {
                db.count(&format!(
                    "select count(*) from pg_stat_activity where usename = '{r}'"
                ))
                .await
                    == 0
            },
        )
        .await;
        let sql = format!("reassign owned by {r} to postgres; drop owned by {r}; drop role {r};");
        let mut attempt = 0;
        while let Err(e) = db.client.batch_execute(&sql).await {
            attempt += 1;
            assert!(attempt < 5, "dropping role {r}: {e:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_change_under_a_running_worker_stops_it_with_the_grant_to_run() {
    let db = TestDb::new().await;
    let (owner, app) = (format!("o_{}", db.name), format!("a_{}", db.name));
    drop(db);
    let db = owned_by(&owner, 401).await;
    let mut g = SpanGen::new(401);
    let mut worker = worker(&url_as(&db.url, &owner), WORKER_ARGS);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 8))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the worker catches up", || async {
        db.oracle_diff("7 days").await == 0
    })
    .await;

    // The application's start: its user owns everything in its schema now.
    db.client
        .batch_execute(&format!(
            "create role {app} login password 'app';
             alter table otel_traces owner to {app};
             alter table otel_trace_summaries owner to {app};"
        ))
        .await
        .unwrap();
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 5))
        .await
        .unwrap();
    let status = tokio::task::block_in_place(|| worker.wait());
    let log = worker.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("hint:") || log.contains("hint="), "{log}");
    assert!(
        log.contains("grant select"),
        "the hint names no grant:\n{log}"
    );

    // The grants it names, and the worker goes on: its refreshes write in place now.
    db.client
        .batch_execute(&format!(
            "grant select on otel_traces to {owner};
             grant select, insert, update, delete on otel_trace_summaries to {owner};"
        ))
        .await
        .unwrap();
    let mut worker = common::worker(&url_as(&db.url, &owner), WORKER_ARGS);
    eventually(
        Duration::from_secs(20),
        "the worker catches up again",
        || async { db.oracle_diff("7 days").await == 0 },
    )
    .await;
    db.client
        .batch_execute("update trace_summarizer.state set rebuild_reason = 'manual'")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the full refresh runs in place",
        || async { worker.log_text().contains("full refresh done") },
    )
    .await;
    assert!(
        worker.log_text().contains("swapped=false"),
        "{}",
        worker.log_text()
    );
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::seconds(1), 6),
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(20),
        "exact after the refresh",
        || async { db.oracle_diff("7 days").await == 0 },
    )
    .await;
    worker.stop(libc::SIGTERM);
    drop_roles(&db, &[&owner, &app]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_its_own_grants_goes_on_when_the_owner_changes() {
    let db = TestDb::new().await;
    let (owner, app, role) = (
        format!("o_{}", db.name),
        format!("a_{}", db.name),
        format!("w_{}", db.name),
    );
    drop(db);
    let db = owned_by(&owner, 402).await;
    db.client
        .batch_execute(&format!(
            "create role {role} login password 'worker';
             grant connect, temporary on database {dbname} to {role};
             grant usage on schema public to {role};
             grant select on otel_traces to {role};
             grant select, insert, update, delete on otel_trace_summaries to {role};
             grant usage on schema trace_summarizer to {role};
             grant all on all tables in schema trace_summarizer to {role};",
            dbname = db.name
        ))
        .await
        .unwrap();
    let mut g = SpanGen::new(402);
    let mut worker = worker(&url_as(&db.url, &role), WORKER_ARGS);
    db.client
        .batch_execute(&format!(
            "create role {app} login password 'app';
             alter table otel_traces owner to {app};
             alter table otel_trace_summaries owner to {app};"
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 7))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(Duration::from_secs(20), "the worker goes on", || async {
        db.oracle_diff("7 days").await == 0
    })
    .await;
    assert!(
        !worker.log_text().contains("ERROR"),
        "{}",
        worker.log_text()
    );
    worker.stop(libc::SIGTERM);
    drop_roles(&db, &[&owner, &app, &role]).await;
}
