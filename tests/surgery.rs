//! Everyday data surgery on `otel_traces`, the commands operators run when they fix or move
//! spans: spans put back from a backup table with `INSERT ... SELECT *`, a `TRUNCATE` and reload,
//! an `UPDATE` that moves spans to another partition and trace, a partition detached, edited and
//! attached again in one transaction, a `COPY` round trip, a partition attached with frozen rows
//! while a step runs, `otel_traces` replaced under a running worker, triggers disabled and enabled
//! again, the window edge moving back at a DST fall-back, spans without a trace_id, a worker role
//! with only the documented grants when a new partition appears, and logical replication on both
//! sides (a publisher install must not break, a subscriber whose publisher is ahead in ids).
//!
//! Each test ends with the table equal to the view's definition (the oracle), in both
//! directions, after the worker's next step, with the continuous audit off: the mechanism under
//! test made it exact, not the safety net.
mod common;
use chrono::{Datelike, Duration as CD, Timelike, Utc};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_postgres::Client;
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};

/// `run --once` with the continuous audit off; must succeed. Returns its log.
fn step(db: &TestDb) -> String {
    let out = db.cli(&["run", "--once", "--audit-period", "0"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run --once failed:\n{log}");
    log
}

/// A step that must not need a full refresh.
fn incremental_step(db: &TestDb) -> String {
    let log = step(db);
    assert!(
        !log.contains("falling back to a full refresh"),
        "the step fell back to a full refresh:\n{log}"
    );
    log
}

/// A plain otel_traces with 6k spans over 8 days, installed and caught up.
async fn plain(seed: u64) -> TestDb {
    let db = TestDb::new().await;
    load_history(&db, 6_000, 24 * 8, seed).await;
    db.cli_ok(&["install"]);
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after install");
    db
}

/// A partitioned otel_traces (a partition per day, 10 days back, and a default one), 6k spans
/// over 8 days, installed and caught up.
async fn partitioned(seed: u64) -> TestDb {
    let db = TestDb::partitioned(10).await;
    load_history(&db, 6_000, 24 * 8, seed).await;
    db.cli_ok(&["install"]);
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after install");
    db
}

/// The name of the daily partition `days` days back.
async fn partition(client: &Client, days: i32) -> String {
    client
        .query_one(
            "select 'otel_traces_p' || to_char(current_date - $1::int, 'YYYYMMDD')",
            &[&days],
        )
        .await
        .unwrap()
        .get(0)
}

/// A service name with at least `min` spans in the window.
async fn busy_service(db: &TestDb, min: i64) -> String {
    db.client
        .query_one(
            "select service_name from otel_traces where \"timestamp\" > now() - interval '6 days'
             group by 1 having count(*) >= $1 order by count(*) desc limit 1",
            &[&min],
        )
        .await
        .expect("a busy service")
        .get(0)
}

async fn put_back_from_a_backup_table(db: TestDb) {
    let service = busy_service(&db, 50).await;
    db.client
        .execute(
            "create table otel_traces_backup as select * from otel_traces where service_name = $1",
            &[&service],
        )
        .await
        .unwrap();
    let deleted = db
        .client
        .execute(
            "delete from otel_traces where service_name = $1",
            &[&service],
        )
        .await
        .unwrap();
    assert!(deleted >= 50);
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after the delete");
    // Put back as operators do: every column, the stamp included.
    db.client
        .batch_execute("insert into otel_traces select * from otel_traces_backup")
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "spans put back with INSERT ... SELECT * from a backup table"
    );
    // Put back once more with ON CONFLICT DO NOTHING: nothing changes.
    db.client
        .batch_execute(
            "insert into otel_traces select * from otel_traces_backup on conflict do nothing",
        )
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "a second, empty put-back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_put_back_from_a_backup_table_are_exact_at_the_next_step() {
    put_back_from_a_backup_table(plain(301).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_put_back_from_a_backup_table_into_partitions_are_exact_at_the_next_step() {
    put_back_from_a_backup_table(partitioned(302).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncate_and_reload_in_one_transaction_is_exact_at_the_next_step() {
    let db = plain(303).await;
    let service = busy_service(&db, 50).await;
    db.client
        .execute(
            "create table keep as select * from otel_traces where service_name <> $1",
            &[&service],
        )
        .await
        .unwrap();
    db.client
        .batch_execute(
            "begin; truncate otel_traces; insert into otel_traces select * from keep; commit;",
        )
        .await
        .unwrap();
    step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "a TRUNCATE and reload of the rows to keep"
    );
    // And a reload in a later transaction than the truncate.
    db.client
        .batch_execute("truncate otel_traces")
        .await
        .unwrap();
    step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after a TRUNCATE");
    db.client
        .batch_execute("insert into otel_traces select * from keep")
        .await
        .unwrap();
    step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after the reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_truncated_and_reloaded_in_one_transaction_is_exact_at_the_next_step() {
    let db = partitioned(304).await;
    let p = partition(&db.client, 2).await;
    db.client
        .batch_execute(&format!(
            "create table keep as select * from {p} where span_id > '8';
             begin; truncate {p}; insert into otel_traces select * from keep; commit;"
        ))
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "a partition truncated and reloaded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_that_move_spans_to_another_partition_and_trace_are_exact_at_the_next_step() {
    let db = partitioned(305).await;
    // Spans of one day move to the next day's partition and to another trace.
    let moved = db
        .client
        .execute(
            "update otel_traces set \"timestamp\" = \"timestamp\" + interval '1 day', trace_id = trace_id || 'm'
             where ctid in (select ctid from otel_traces
                            where \"timestamp\" > now() - interval '4 days' and \"timestamp\" < now() - interval '3 days'
                            limit 30)",
            &[],
        )
        .await
        .unwrap();
    assert!(moved > 0);
    // Spans of 8 days ago (outside the window) move into it.
    let back = db
        .client
        .execute(
            "update otel_traces set \"timestamp\" = \"timestamp\" + interval '6 days'
             where \"timestamp\" < now() - interval '7 days 2 hours'
               and trace_id in (select trace_id from otel_traces where \"timestamp\" < now() - interval '7 days 2 hours' limit 5)",
            &[],
        )
        .await
        .unwrap();
    assert!(back > 0, "no span 8 days old to move");
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "spans moved to another partition (and trace), and from outside the window into it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_detached_edited_and_attached_again_in_one_transaction_is_exact() {
    let db = partitioned(306).await;
    let p = partition(&db.client, 3).await;
    let bound: String = db
        .client
        .query_one(
            &format!(
                "select pg_get_expr(relpartbound, oid) from pg_class where oid = '{p}'::regclass"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The copies are a minute later than their originals: none may leave the day (a span in the
    // partition's last minute would violate its bound at ATTACH).
    db.client
        .batch_execute(&format!(
            "begin;
             alter table otel_traces detach partition {p};
             delete from {p} where span_id < '6';
             update {p} set name = 'edited while detached' where span_id > 'c';
             insert into {p} select \"timestamp\" + interval '1 minute', trace_id, span_id || 'x', parent_span_id, name, kind,
                    start_time_unix_nano, end_time_unix_nano, service_name, service_version, service_instance, scope_name,
                    scope_version, status_code, status_message, attributes, resource_attributes, events, links, created_at,
                    trace_summarizer_xid
               from {p} where span_id between '8' and '9'
                and (\"timestamp\" + interval '1 minute')::date = \"timestamp\"::date;
             alter table otel_traces attach partition {p} {bound};
             commit;"
        ))
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "a partition detached, edited and attached again"
    );
}

/// `COPY otel_traces TO` (every column, the stamp included), then `COPY otel_traces FROM` it.
async fn copy_round_trip(db: TestDb) {
    let service = busy_service(&db, 30).await;
    let sql =
        format!("copy (select * from otel_traces where service_name = '{service}') to stdout");
    let stream = db.client.copy_out(sql.as_str()).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    assert!(!data.is_empty());
    db.client
        .execute(
            "delete from otel_traces where service_name = $1",
            &[&service],
        )
        .await
        .unwrap();
    incremental_step(&db);
    let sink = db
        .client
        .copy_in("copy otel_traces from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    sink.finish().await.unwrap();
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "spans deleted, then loaded back from a COPY TO file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_round_trip_is_exact_at_the_next_step() {
    copy_round_trip(plain(307).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_round_trip_into_partitions_is_exact_at_the_next_step() {
    copy_round_trip(partitioned(308).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_attached_with_frozen_rows_while_a_step_runs_is_counted_once() {
    use trace_summarizer::maintain::cycle::{self, Extras, Limits, Outcome};
    use trace_summarizer::maintain::{rebuild, scratch};
    let db = partitioned(309).await;
    // A month ahead: a day of its own, loaded with COPY ... FREEZE into a table created in the
    // same transaction (its rows are visible to every snapshot at once), then attached.
    let writer = connect(&db.url).await;
    writer
        .batch_execute(
            "begin;
             create table otel_traces_ahead (like otel_traces including defaults);",
        )
        .await
        .unwrap();
    let at = Utc::now() + CD::days(30);
    let mut rows = String::new();
    for i in 0..40 {
        rows += &format!(
            "{}\tfrozen{:04}\ts{i:04}\t{}\top\tsvc\t1\n",
            (at + CD::milliseconds(i)).to_rfc3339(),
            i % 7,
            if i < 7 { "" } else { "p" }
        );
    }
    {
        let sink = writer
            .copy_in("copy otel_traces_ahead (\"timestamp\", trace_id, span_id, parent_span_id, name, service_name, status_code) from stdin (freeze)")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(rows)).await.unwrap();
        sink.finish().await.unwrap();
    }
    writer
        .batch_execute(
            "alter table otel_traces attach partition otel_traces_ahead
               for values from (current_date + 30) to (current_date + 31)",
        )
        .await
        .unwrap();
    // The worker's step takes its snapshot while that transaction runs...
    let mut worker = connect(&db.url).await;
    let st = trace_summarizer::state::load(&worker, "public")
        .await
        .unwrap()
        .unwrap();
    scratch::prepare(&worker, &db.target, &rebuild::definition(&st))
        .await
        .unwrap();
    let tx = cycle::begin(&mut worker).await.unwrap();
    tx.batch_execute("select 1").await.unwrap();
    // ...which commits before the step reads otel_traces: the step's plans see the partition,
    // and its frozen rows, of a transaction its snapshot says is running.
    writer.batch_execute("commit").await.unwrap();
    match cycle::step(
        &trace_summarizer::db::statements::Db::once(&tx),
        &db.target,
        &Limits::default(),
        &Extras::default(),
    )
    .await
    .unwrap()
    {
        Outcome::Done(_) => tx.commit().await.unwrap(),
        Outcome::NeedsRebuild(f) => panic!("the step fell back: {}", f.reason()),
    }
    incremental_step(&db);
    incremental_step(&db);
    assert_eq!(
        db.count("select span_count from otel_trace_summaries where trace_id = 'frozen0001'")
            .await,
        db.count("select count(*) from otel_traces where trace_id = 'frozen0001'")
            .await,
    );
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "frozen rows of a partition attached while a step ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_span_without_a_trace_id_is_in_no_summary_and_its_delete_succeeds() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(
            "alter table otel_traces drop constraint otel_traces_pkey;
             alter table otel_traces alter column trace_id drop not null;",
        )
        .await
        .unwrap();
    load_history(&db, 3_000, 24 * 3, 310).await;
    db.cli_ok(&["install"]);
    let mut g = SpanGen::new(310);
    let mut spans = g.trace(Utc::now() - CD::seconds(30), 6);
    spans.extend(g.trace(Utc::now() - CD::seconds(20), 4));
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    db.client
        .batch_execute(
            "update otel_traces set trace_id = null where span_id in (select span_id from otel_traces order by \"timestamp\" desc limit 3);
             insert into otel_traces (\"timestamp\", trace_id, span_id) values (now(), null, 'orphan');",
        )
        .await
        .expect("spans without a trace_id");
    for _ in 0..2 {
        incremental_step(&db);
    }
    assert_eq!(
        db.count("select count(*) from otel_trace_summaries where trace_id is null")
            .await,
        0
    );
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "spans without a trace_id"
    );
    let deleted = db
        .client
        .execute("delete from otel_traces where trace_id is null", &[])
        .await
        .expect("the writer's delete of spans without a trace_id");
    assert_eq!(deleted, 4);
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after their delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_of_the_stamp_is_refused_with_what_to_do() {
    let db = plain(311).await;
    let err = db
        .client
        .batch_execute(
            "update otel_traces set trace_summarizer_xid = 123456789
             where ctid in (select ctid from otel_traces limit 3)",
        )
        .await
        .expect_err("a hand-made stamp is refused");
    let text = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(text.contains("trace_summarizer_xid"), "{err:?}");
    // Updates of anything else go through, and are tracked.
    db.client
        .batch_execute(
            "update otel_traces set status_code = 2 where ctid in (select ctid from otel_traces order by \"timestamp\" desc limit 20)",
        )
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_disabled_and_enabled_again_are_noticed_and_repaired() {
    // On a plain table: a full refresh (what install put on otel_traces changed).
    let db = plain(312).await;
    db.client
        .batch_execute(
            "alter table otel_traces disable trigger all;
             delete from otel_traces where ctid in (select ctid from otel_traces where \"timestamp\" > now() - interval '2 days' limit 40);
             alter table otel_traces enable trigger all;",
        )
        .await
        .unwrap();
    let log = step(&db);
    assert!(log.contains("capture_changed"), "{log}");
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "deletes made with the triggers disabled"
    );
    // On one partition: its traces are recomputed, no full refresh.
    let db = partitioned(313).await;
    let p = partition(&db.client, 2).await;
    db.client
        .batch_execute(&format!(
            "alter table {p} disable trigger all;
             delete from {p} where span_id < '5';
             alter table {p} enable trigger all;"
        ))
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "deletes made with one partition's triggers disabled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_traces_replaced_under_a_running_worker_is_refreshed_and_its_deletes_tracked() {
    let db = plain(314).await;
    let mut worker = worker(&db.url, &["--interval", "100ms", "--audit-period", "0"]);
    let port = worker.http_port(Duration::from_secs(20)).await;
    // Replaced by a rename swap, the way a table is rebuilt: a copy with every row.
    db.client
        .batch_execute(
            "begin;
             create table otel_traces_new (like otel_traces including all);
             insert into otel_traces_new select * from otel_traces;
             alter table otel_traces rename to otel_traces_old;
             alter table otel_traces_new rename to otel_traces;
             commit;
             delete from otel_traces where ctid in (select ctid from otel_traces where \"timestamp\" > now() - interval '3 days' limit 60);",
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the worker refreshes the replaced table",
        || async {
            metric_sum(
                &http_get(port, "/metrics")
                    .map(|(_, b)| b)
                    .unwrap_or_default(),
                "trace_summarizer_fallbacks_total{schema=\"public\",reason=\"source_replaced\"",
            ) >= 1.0
        },
    )
    .await;
    // The new table gets our triggers: its deletes are tracked.
    eventually(Duration::from_secs(30), "the replaced table gets the triggers", || async {
        db.count("select count(*) from pg_trigger where tgrelid = 'otel_traces'::regclass and tgname like 'trace_summarizer_%'")
            .await
            == 3
    })
    .await;
    db.client
        .batch_execute(
            "delete from otel_traces where ctid in (select ctid from otel_traces where \"timestamp\" > now() - interval '3 days' limit 60);",
        )
        .await
        .unwrap();
    let mut g = SpanGen::new(314);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 9))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the table equals the definition",
        || async { db.oracle_diff("7 days").await == 0 },
    )
    .await;
    worker.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_cannot_repair_a_replaced_table_stops_with_exit_2_and_status_is_not_fresh() {
    let db = plain(315).await;
    let role = format!("w_{}", db.name);
    grant_worker_role(&db, &role).await;
    db.client
        .batch_execute(
            "begin;
             create table otel_traces_new (like otel_traces including all);
             insert into otel_traces_new select * from otel_traces;
             alter table otel_traces rename to otel_traces_old;
             alter table otel_traces_new rename to otel_traces;
             commit;",
        )
        .await
        .unwrap();
    db.client
        .batch_execute(&format!("grant select on otel_traces to {role}"))
        .await
        .unwrap();
    let status = db.cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_ne!(json["verdict"], "FRESH", "{json}");
    assert!(
        json["unreconciled"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{json}"
    );
    let out = bin()
        .env("DATABASE_URL", url_as(&db.url, &role))
        .env("TRACE_SUMMARIZER_SCHEMA", "public")
        .args(["run", "--once", "--audit-period", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("hint:") && err.contains("install"), "{err}");
    // As the owner, the next step puts the triggers back and refreshes.
    step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    drop_role(&db, &role).await;
}

/// The worker role exactly as deploy/README.md grants it.
async fn grant_worker_role(db: &TestDb, role: &str) {
    let dbname = &db.name;
    db.client
        .batch_execute(&format!(
            "create role {role} login password 'surgery-test';
             grant connect, temporary on database {dbname} to {role};
             grant usage on schema public to {role};
             grant select on public.otel_traces to {role};
             grant select, insert, update, delete on public.otel_trace_summaries to {role};
             grant usage on schema trace_summarizer to {role};
             grant all on all tables in schema trace_summarizer to {role};"
        ))
        .await
        .expect("create the worker role");
}

async fn drop_role(db: &TestDb, role: &str) {
    db.client
        .batch_execute(&format!("drop owned by {role}; drop role {role};"))
        .await
        .expect("drop the role");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_worker_role_keeps_working_when_a_new_partition_appears() {
    let db = partitioned(316).await;
    let role = format!("w_{}", db.name);
    grant_worker_role(&db, &role).await;
    let worker_url = url_as(&db.url, &role);
    // pg_partman makes tomorrow's partition ahead, as the owner, with no grant of its own.
    let next: String = db
        .client
        .query_one(
            "select 'otel_traces_p' || to_char(current_date + 2, 'YYYYMMDD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.client
        .batch_execute(&format!(
            "create table {next} partition of otel_traces for values from (current_date + 2) to (current_date + 3)"
        ))
        .await
        .unwrap();
    let mut g = SpanGen::new(316);
    let mut spans = g.trace(
        Utc::now() + CD::days(2) - CD::hours(Utc::now().hour() as i64),
        8,
    );
    spans.extend(g.trace(Utc::now() - CD::seconds(5), 5));
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    // And drops an old day, and detaches another.
    let old = partition(&db.client, 8).await;
    let mid = partition(&db.client, 4).await;
    db.client
        .batch_execute(&format!(
            "drop table {old}; alter table otel_traces detach partition {mid};"
        ))
        .await
        .unwrap();
    let run = || {
        bin()
            .env("DATABASE_URL", &worker_url)
            .env("TRACE_SUMMARIZER_SCHEMA", "public")
            .args(["run", "--once", "--audit-period", "0"])
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(run);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("permission denied"), "{log}");
    assert!(!log.contains("full refresh"), "{log}");
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "the worker role after a new partition, a drop and a detach"
    );
    drop_role(&db, &role).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn install_refuses_a_publication_that_would_replicate_the_stamp_and_can_fix_it() {
    let db = TestDb::new().await;
    load_history(&db, 2_000, 24 * 2, 317).await;
    db.client
        .batch_execute(
            "create table other_table (id int primary key);
             create publication spans_pub for table otel_traces, other_table;",
        )
        .await
        .unwrap();
    // A subscriber in another database of the same cluster, on its own slot.
    let sub = TestDb::new().await;
    sub.client
        .batch_execute("create table other_table (id int primary key);")
        .await
        .unwrap();
    db.client
        .batch_execute(&format!(
            "select pg_create_logical_replication_slot('sub_{}', 'pgoutput')",
            sub.name
        ))
        .await
        .unwrap();
    let conninfo = db.url.replace("postgresql://", "").replace('?', " ");
    let _ = conninfo;
    let port = server().url("x");
    let port = port
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap()
        .to_string();
    sub.client
        .batch_execute(&format!(
            "create subscription sub_{n} connection 'host=127.0.0.1 port={port} user=postgres dbname={pubdb}'
             publication spans_pub with (create_slot = false, slot_name = 'sub_{n}', copy_data = true)",
            n = sub.name,
            pubdb = db.name
        ))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the subscriber copies otel_traces",
        || async {
            sub.count("select count(*) from otel_traces").await
                == db.count("select count(*) from otel_traces").await
        },
    )
    .await;

    let out = db.cli(&["install"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("spans_pub"), "{err}");
    assert!(err.contains("alter publication"), "{err}");
    assert_eq!(
        db.count("select count(*) from pg_attribute where attrelid = 'otel_traces'::regclass and attname = 'trace_summarizer_xid'")
            .await,
        0,
        "a refused install changed otel_traces"
    );
    db.cli_ok(&["install", "--alter-publications"]);
    assert_eq!(
        db.count("select count(*) from pg_publication_tables where pubname = 'spans_pub'")
            .await,
        2,
        "the publication lost a table"
    );
    assert_eq!(
        db.count("select count(*) from pg_publication_tables where pubname = 'spans_pub' and 'trace_summarizer_xid' = any(attnames)").await,
        0
    );
    // Inserts go on replicating to the subscriber.
    let mut g = SpanGen::new(317);
    insert_spans(&db.client, &db.target, &g.trace(Utc::now(), 10))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the subscriber keeps applying",
        || async {
            sub.count("select count(*) from otel_traces").await
                == db.count("select count(*) from otel_traces").await
        },
    )
    .await;
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    sub.client
        .batch_execute(&format!("drop subscription sub_{}", sub.name))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_whose_publisher_is_ahead_in_ids_restamps_and_never_falls_back() {
    // The publisher replicates a stamp column of its own, far ahead of the subscriber's ids.
    let publisher = TestDb::new().await;
    publisher
        .client
        .batch_execute(
            "alter table otel_traces add column trace_summarizer_xid bigint default txid_current() + 50000000;
             create publication ahead_pub for table otel_traces;",
        )
        .await
        .unwrap();
    let sub = TestDb::new().await;
    load_history(&sub, 1_000, 24, 318).await;
    sub.cli_ok(&["install"]);
    let port = server().url("x");
    let port = port
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap()
        .to_string();
    publisher
        .client
        .batch_execute(&format!(
            "select pg_create_logical_replication_slot('ahead_{}', 'pgoutput')",
            sub.name
        ))
        .await
        .unwrap();
    sub.client
        .batch_execute(&format!(
            "create subscription ahead_{n} connection 'host=127.0.0.1 port={port} user=postgres dbname={pubdb}'
             publication ahead_pub with (create_slot = false, slot_name = 'ahead_{n}', copy_data = false)",
            n = sub.name,
            pubdb = publisher.name
        ))
        .await
        .unwrap();
    let mut g = SpanGen::new(318);
    let mut expected = sub.count("select count(*) from otel_traces").await;
    for round in 0..4 {
        let spans = g.trace(Utc::now() - CD::seconds(2), 6 + round);
        expected += spans.len() as i64;
        insert_spans(&publisher.client, &publisher.target, &spans)
            .await
            .unwrap();
        eventually(
            Duration::from_secs(30),
            "the subscriber applies",
            || async { sub.count("select count(*) from otel_traces").await == expected },
        )
        .await;
        incremental_step(&sub);
        assert_eq!(sub.oracle_diff("7 days").await, 0, "round {round}");
    }
    assert_eq!(
        sub.count("select count(*) from otel_traces where trace_summarizer_xid >= 50000000")
            .await,
        0,
        "rows kept the publisher's stamps"
    );
    sub.client
        .batch_execute(&format!("drop subscription ahead_{}", sub.name))
        .await
        .unwrap();
}

/// A POSIX time zone whose daylight saving time (one hour ahead) ends `after` from now: at
/// that instant local clocks go back one hour, and so does the edge of a calendar window.
fn zone_falling_back_in(after: Duration) -> String {
    let at = Utc::now() + CD::from_std(after).unwrap() + CD::hours(1);
    let mut day = at.ordinal();
    let leap = chrono::NaiveDate::from_ymd_opt(at.year(), 2, 29).is_some();
    if leap && day > 59 {
        day -= 1; // Jn never counts February 29
    }
    format!(
        "STD0DST-1,J1/0,J{day}/{:02}:{:02}:{:02}",
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_edge_moving_back_at_a_dst_fall_back_gives_its_spans_back() {
    let db = TestDb::new().await;
    let zone = zone_falling_back_in(Duration::from_secs(35));
    db.client
        .batch_execute(&format!(
            "alter database {} set timezone to '{zone}'",
            db.name
        ))
        .await
        .unwrap();
    let db = TestDb {
        client: connect(&db.url).await,
        ..db
    };
    let now = Utc::now();
    if now.ordinal() < 10 {
        eprintln!("skipping: the zone's daylight saving time must have begun this year");
        return;
    }
    let mut g = SpanGen::new(319);
    let mut spans = Vec::new();
    // Traces whose spans all cross the edge within 15 s, and traces 10 to 40 minutes beyond it:
    // after the fall-back, both are in the window again for an hour.
    for i in 0..10 {
        spans.extend(g.trace(now - CD::days(7) + CD::seconds(8 + i), 3));
    }
    for i in 0..10 {
        spans.extend(g.trace(now - CD::days(7) - CD::minutes(10 + 3 * i), 3));
    }
    spans.extend(g.trace(now - CD::hours(1), 5));
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    db.cli_ok(&["install"]);
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "before the crossing");
    tokio::time::sleep(Duration::from_secs(20)).await;
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "after the crossing");
    let before = db.count("select count(*) from otel_trace_summaries").await;
    // Past the fall-back.
    loop {
        let back: bool = db
            .client
            .query_one(
                "select now() - interval '7 days' < clock_timestamp() - interval '168 hours 30 minutes'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if back {
            break;
        }
        assert!(
            Utc::now() < now + CD::seconds(90),
            "the fall-back never came ({zone})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    incremental_step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "after the DST fall-back ({zone})"
    );
    assert!(
        db.count("select count(*) from otel_trace_summaries").await >= before + 15,
        "the traces the edge gave back are not summarized"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_timescaledb_copies_and_a_chunk_truncated_and_reloaded_are_exact() {
    let Some(db) = TestDb::hypertable().await else {
        return;
    };
    load_history(&db, 5_000, 24 * 6, 320).await;
    db.cli_ok(&["install"]);
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    let service = busy_service(&db, 30).await;
    db.client
        .execute(
            "create table bk as select * from otel_traces where service_name = $1",
            &[&service],
        )
        .await
        .unwrap();
    db.client
        .execute(
            "delete from otel_traces where service_name = $1",
            &[&service],
        )
        .await
        .unwrap();
    db.client
        .batch_execute("insert into otel_traces select * from bk")
        .await
        .unwrap();
    incremental_step(&db);
    assert_eq!(db.oracle_diff("7 days").await, 0, "put back with SELECT *");
    let chunk: String = db
        .client
        .query_one(
            "select c::text from show_chunks('otel_traces', older_than => now() - interval '2 days') c order by 1 desc limit 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.client
        .batch_execute(&format!(
            "create table keep as select * from {chunk} where span_id > '7';
             begin; truncate {chunk}; insert into otel_traces select * from keep; commit;"
        ))
        .await
        .unwrap();
    step(&db);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "a chunk truncated and reloaded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_timescaledb_spans_compressed_before_a_step_read_them_are_recomputed() {
    let Some(db) = TestDb::hypertable().await else {
        return;
    };
    load_history(&db, 4_000, 24 * 5, 321).await;
    db.cli_ok(&["install"]);
    incremental_step(&db);
    db.client
        .batch_execute(
            "alter table otel_traces set (timescaledb.compress, timescaledb.compress_segmentby = 'service_name',
                                          timescaledb.compress_orderby = '\"timestamp\" desc')",
        )
        .await
        .unwrap();
    let compress_old = "select compress_chunk(c, if_not_compressed => true)
                        from show_chunks('otel_traces', older_than => now() - interval '1 day') c";
    // Late spans into a day-old chunk, compressed before any step reads them: tailing reads no
    // columnar data; the chunk's new compressed batches are what finds them.
    let mut g = SpanGen::new(321);
    let late = g.trace(Utc::now() - CD::days(3), 7);
    insert_spans(&db.client, &db.target, &late).await.unwrap();
    db.client.batch_execute(compress_old).await.unwrap();
    let log = incremental_step(&db);
    assert!(log.contains("compressed before a step read them"), "{log}");
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "spans compressed before a step read them"
    );

    // Late spans into a compressed chunk (now partial), of a new trace and of a summarized one,
    // recompressed before any step reads them: TimescaleDB moves them into new batches with
    // plain deletes and inserts (segmentwise recompression), the chunk keeps its relfilenode.
    let old: String = db
        .client
        .query_one(
            "select trace_id from otel_trace_summaries where \"timestamp\" < now() - interval '3 days'
             order by trace_id limit 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut late = g.trace(Utc::now() - CD::days(3) - CD::hours(2), 3);
    for mut s in g.trace(Utc::now() - CD::days(4), 2) {
        s.trace_id = old.clone();
        late.push(s);
    }
    insert_spans(&db.client, &db.target, &late).await.unwrap();
    let partial = db
        .count(
            "select count(*) from _timescaledb_catalog.chunk where status & 8 <> 0 and not dropped",
        )
        .await;
    assert!(
        partial >= 1,
        "the late spans made a compressed chunk partial"
    );
    let relfilenodes = || async {
        db.client
            .query_one(
                "select string_agg(c::regclass::oid::text || ':' || pg_relation_filenode(c), ',' order by c)
                 from show_chunks('otel_traces') c",
                &[],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let before = relfilenodes().await;
    db.client.batch_execute(compress_old).await.unwrap();
    assert_eq!(relfilenodes().await, before, "recompressed in place");
    let log = incremental_step(&db);
    assert!(log.contains("compressed before a step read them"), "{log}");
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "spans recompressed before a step read them"
    );

    // Compressing what was already read queues nothing.
    insert_spans(
        &db.client,
        &db.target,
        &g.trace(Utc::now() - CD::days(2), 5),
    )
    .await
    .unwrap();
    incremental_step(&db);
    db.client.batch_execute(compress_old).await.unwrap();
    let log = incremental_step(&db);
    assert!(!log.contains("compressed before a step read them"), "{log}");
    assert_eq!(db.oracle_diff("7 days").await, 0);
}
