//! Deployments beyond one schema and a fresh database: several installations in one database
//! (one per schema) served by one worker process, taking over an `otel_trace_summaries` that
//! trace-summarizer did not create (upstream's table today, the seed's view) with `--adopt` and
//! rolling that back, upstream's error rule and window (`--error-rule error --window 3d`) in
//! both modes, and `--schema` lists refused where they make no sense.
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use trace_summarizer::db::source::Target;
use trace_summarizer::lab::spangen::{copy_spans, create_source, insert_spans, SpanGen};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn target(schema: &str) -> Target {
    Target::new(schema)
}

/// Loads about `n` spans over the last `hours` into `schema.otel_traces`, with past created_at
/// values, leaving out an hour on each side of every window edge in `edges_days`: a comparison
/// made seconds after a step must not race a span crossing the edge.
async fn load_spans(
    db: &TestDb,
    schema: &str,
    n: usize,
    hours: i64,
    seed: u64,
    edges_days: &[i64],
) {
    let now = Utc::now();
    let band = CD::hours(1);
    let edges: Vec<_> = edges_days.iter().map(|d| now - CD::days(*d)).collect();
    let spans: Vec<_> = SpanGen::new(seed)
        .history(n, now - CD::hours(hours), now, now)
        .into_iter()
        .filter(|s| {
            edges
                .iter()
                .all(|e| s.timestamp < *e - band || s.timestamp > *e + band)
        })
        .collect();
    copy_spans(&db.client, &target(schema), &spans)
        .await
        .expect("load spans");
    db.client
        .batch_execute(&format!("analyze {schema}.otel_traces"))
        .await
        .unwrap();
}

/// Inserts one new trace of `n` spans (ingest time: now) and returns its trace_id.
async fn new_trace(db: &TestDb, schema: &str, seed: u64, n: usize) -> String {
    let trace = SpanGen::new(seed).trace(Utc::now() - CD::seconds(2), n);
    insert_spans(&db.client, &target(schema), &trace)
        .await
        .unwrap();
    trace[0].trace_id.clone()
}

/// Waits until `schema.otel_trace_summaries` holds `trace_id` with `spans` spans.
async fn absorbed(db: &TestDb, schema: &str, trace_id: &str, spans: i64, what: &str) {
    eventually(Duration::from_secs(30), what, || async move {
        db.count(&format!(
            "select count(*) from {schema}.otel_trace_summaries where trace_id = '{trace_id}' and span_count = {spans}"
        ))
        .await
            == 1
    })
    .await;
}

/// The value of `trace_summarizer_leader{schema="..."}` on the worker at `port`.
fn leader_gauge(port: u16, schema: &str) -> Option<f64> {
    let prefix = format!("trace_summarizer_leader{{schema=\"{schema}\"}} ");
    http_get(port, "/metrics")
        .map(|(_, body)| body)?
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// `trace-summarizer --schema SCHEMAS run --interval 100ms`, serving HTTP on a free port.
fn worker_for(url: &str, schemas: &str) -> Proc {
    let mut cmd = bin();
    cmd.env("DATABASE_URL", url).args([
        "--schema",
        schemas,
        "run",
        "--interval",
        "100ms",
        "--listen",
        "127.0.0.1:0",
    ]);
    Proc::spawn(cmd)
}

async fn exists(db: &TestDb, sql: &str) -> bool {
    db.client
        .query_one(&format!("select exists ({sql})"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn status_json(db: &TestDb, schema: &str) -> serde_json::Value {
    let out = db.cli(&["--schema", schema, "status", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", stdout(&out), stderr(&out)))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_serves_two_schemas_and_uninstalling_one_leaves_the_other_running() {
    let db = TestDb::with_schema("tenant_a").await;
    db.client
        .batch_execute("create schema tenant_b")
        .await
        .unwrap();
    create_source(&db.client, &target("tenant_b"))
        .await
        .unwrap();
    load_spans(&db, "tenant_a", 4_000, 24 * 8, 101, &[7]).await;
    load_spans(&db, "tenant_b", 4_000, 24 * 8, 102, &[7]).await;
    db.cli_ok(&["--schema", "tenant_a", "install"]);
    db.cli_ok(&["--schema", "tenant_b", "install"]);

    // One process serves both installations and leads both.
    let w = worker_for(&db.url, "tenant_a,tenant_b");
    let port = w.http_port(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(30),
        "the worker leads tenant_a and tenant_b",
        || async {
            leader_gauge(port, "tenant_a") == Some(1.0)
                && leader_gauge(port, "tenant_b") == Some(1.0)
        },
    )
    .await;
    let a = new_trace(&db, "tenant_a", 1, 6).await;
    let b = new_trace(&db, "tenant_b", 2, 9).await;
    absorbed(&db, "tenant_a", &a, 6, "tenant_a's new spans are absorbed").await;
    absorbed(&db, "tenant_b", &b, 9, "tenant_b's new spans are absorbed").await;
    for schema in ["tenant_a", "tenant_b"] {
        assert_eq!(
            db.diff_against(schema, &oracle_sql(schema, "7 days")).await,
            0,
            "{schema} differs from its definition\n{}",
            w.log_text()
        );
    }

    // A second process for tenant_b alone stands by while the first leads.
    let mut standby = worker_for(&db.url, "tenant_b");
    let standby_port = standby.http_port(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "the second worker stands by for tenant_b",
        || async { standby.log_text().contains("standing by") },
    )
    .await;
    assert_eq!(leader_gauge(standby_port, "tenant_b"), Some(0.0));
    assert_eq!(leader_gauge(port, "tenant_b"), Some(1.0));

    // Uninstalling tenant_a under the running worker touches nothing of tenant_b.
    let out = db.cli_ok(&["--schema", "tenant_a", "uninstall"]);
    assert!(
        !out.contains("dropped schema trace_summarizer"),
        "uninstall dropped the schema tenant_b still uses:\n{out}"
    );
    assert!(
        !exists(
            &db,
            "select 1 from pg_class where oid = to_regclass('tenant_a.otel_trace_summaries')"
        )
        .await,
        "tenant_a's relation is still there"
    );
    assert!(
        !exists(&db, "select 1 from pg_attribute where attrelid = 'tenant_a.otel_traces'::regclass and attname = 'trace_summarizer_xid' and not attisdropped").await,
        "tenant_a's otel_traces keeps the stamp column"
    );
    assert!(
        !exists(&db, "select 1 from pg_trigger where tgrelid = 'tenant_a.otel_traces'::regclass and not tgisinternal").await,
        "tenant_a's otel_traces keeps a trigger"
    );
    assert!(
        !exists(
            &db,
            "select 1 from trace_summarizer.state where target_schema = 'tenant_a'"
        )
        .await
    );
    assert!(
        exists(
            &db,
            "select 1 from trace_summarizer.state where target_schema = 'tenant_b'"
        )
        .await
    );
    assert!(
        exists(
            &db,
            "select 1 from pg_namespace where nspname = 'trace_summarizer'"
        )
        .await
    );
    eventually(
        Duration::from_secs(30),
        "the worker stops leading the uninstalled tenant_a",
        || async { leader_gauge(port, "tenant_a") == Some(0.0) },
    )
    .await;

    let b2 = new_trace(&db, "tenant_b", 3, 5).await;
    absorbed(
        &db,
        "tenant_b",
        &b2,
        5,
        "tenant_b's spans are still absorbed after tenant_a's uninstall",
    )
    .await;
    assert_eq!(
        db.diff_against("tenant_b", &oracle_sql("tenant_b", "7 days"))
            .await,
        0,
        "{}",
        w.log_text()
    );
    assert_eq!(
        leader_gauge(port, "tenant_b"),
        Some(1.0),
        "{}",
        w.log_text()
    );
    assert_eq!(leader_gauge(standby_port, "tenant_b"), Some(0.0));
    assert!(
        standby.stop(libc::SIGTERM).success(),
        "{}",
        standby.log_text()
    );
}

/// Upstream's table as its migration 20260210120000 makes it (a primary key instead of the
/// unique index, a nullable `timestamp`, `refreshed_at`), filled the way its job fills it, with a
/// grant to `reader` and a comment.
async fn create_upstream_table(db: &TestDb, reader: &str) {
    let schema = &db.target.schema;
    db.client
        .batch_execute(&format!(
            "create table {schema}.otel_trace_summaries (
                 trace_id             text primary key,
                 timestamp            timestamptz,
                 root_span_id         text,
                 root_span_name       text,
                 root_service_name    text,
                 root_span_kind       int,
                 start_time_unix_nano bigint,
                 end_time_unix_nano   bigint,
                 duration_ms          float8,
                 status_code          int,
                 status_message       text,
                 service_set          text[],
                 span_count           bigint,
                 error_count          bigint,
                 refreshed_at         timestamptz not null default now()
             );
             create index idx_trace_summaries_timestamp on {schema}.otel_trace_summaries (timestamp desc);
             create index idx_trace_summaries_service_timestamp on {schema}.otel_trace_summaries (root_service_name, timestamp desc);
             insert into {schema}.otel_trace_summaries (trace_id, timestamp, root_span_id, root_span_name,
                     root_service_name, root_span_kind, start_time_unix_nano, end_time_unix_nano, duration_ms,
                     status_code, status_message, service_set, span_count, error_count)
                 select * from ({oracle}) o;
             create role {reader};
             grant select on {schema}.otel_trace_summaries to {reader};
             comment on table {schema}.otel_trace_summaries is 'upstream: upserted by RefreshTraceSummariesWorker';",
            oracle = oracle_sql_error_rule(schema, "3 days")
        ))
        .await
        .expect("create upstream's table");
}

/// The relation's columns: name, type, not null, default.
async fn columns(db: &TestDb) -> Vec<(String, String, bool, Option<String>)> {
    db.client
        .query(
            &format!(
                "select a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
                 from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                 where a.attrelid = '{}.otel_trace_summaries'::regclass and a.attnum > 0 and not a.attisdropped
                 order by a.attnum",
                db.target.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn index_names(db: &TestDb) -> Vec<String> {
    db.client
        .query(
            &format!(
                "select indexrelid::regclass::text from pg_index where indrelid = '{}.otel_trace_summaries'::regclass order by 1",
                db.target.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn comment(db: &TestDb) -> Option<String> {
    db.client
        .query_one(
            &format!(
                "select obj_description('{}.otel_trace_summaries'::regclass, 'pg_class')",
                db.target.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn may_select(db: &TestDb, role: &str) -> bool {
    db.client
        .query_one(
            &format!(
                "select has_table_privilege('{role}', '{}.otel_trace_summaries', 'select')",
                db.target.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn install_refuses_to_replace_upstreams_table_and_changes_nothing() {
    let db = TestDb::new().await;
    load_spans(&db, "public", 5_000, 24 * 8, 110, &[3, 7]).await;
    let reader = format!("dash_{}", db.name);
    create_upstream_table(&db, &reader).await;
    let oid_before: u32 = db
        .client
        .query_one("select 'otel_trace_summaries'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let rows_before = db.count("select count(*) from otel_trace_summaries").await;
    assert!(rows_before > 0);
    let columns_before = columns(&db).await;

    let out = db.cli(&["install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let (message, hint) = err
        .split_once("hint:")
        .unwrap_or_else(|| panic!("no hint line:\n{err}"));
    assert!(message.contains("did not create"), "{err}");
    assert!(hint.contains("--adopt"), "{err}");
    assert!(hint.contains("RefreshTraceSummariesWorker"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Nothing changed: the same table, rows, columns, grant and comment; otel_traces untouched;
    // no installation recorded.
    let oid_after: u32 = db
        .client
        .query_one("select 'otel_trace_summaries'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(oid_after, oid_before);
    assert_eq!(
        db.count("select count(*) from otel_trace_summaries").await,
        rows_before
    );
    assert_eq!(
        db.count("select count(*) from otel_trace_summaries where refreshed_at is null")
            .await,
        0
    );
    assert_eq!(columns(&db).await, columns_before);
    assert!(may_select(&db, &reader).await);
    assert_eq!(
        comment(&db).await.as_deref(),
        Some("upstream: upserted by RefreshTraceSummariesWorker")
    );
    assert!(
        !exists(&db, "select 1 from pg_attribute where attrelid = 'otel_traces'::regclass and attname = 'trace_summarizer_xid' and not attisdropped").await,
        "a refused install altered otel_traces"
    );
    assert!(
        !exists(
            &db,
            "select 1 from pg_trigger where tgrelid = 'otel_traces'::regclass and not tgisinternal"
        )
        .await,
        "a refused install left a trigger on otel_traces"
    );
    assert!(
        !exists(
            &db,
            "select 1 from pg_namespace where nspname = 'trace_summarizer'"
        )
        .await,
        "a refused install left the schema trace_summarizer behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adopting_upstreams_table_under_readers_keeps_grants_and_comment_and_can_be_rolled_back() {
    let db = TestDb::new().await;
    load_spans(&db, "public", 40_000, 24 * 8, 111, &[3, 7]).await;
    let reader = format!("dash_{}", db.name);
    create_upstream_table(&db, &reader).await;
    let columns_before = columns(&db).await;
    let indexes_before = index_names(&db).await;
    assert!(
        columns_before.iter().any(|c| c.0 == "refreshed_at"),
        "{columns_before:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| reader_loop(db.url.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = db.cli_ok(&["install", "--adopt"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let Reads {
            longest,
            reads,
            errors,
            empty,
        } = r.await.unwrap();
        assert!(
            errors.is_empty(),
            "readers saw errors during the adoption: {errors:?}"
        );
        assert_eq!(empty, 0, "a reader saw an empty relation");
        assert!(reads > 10, "a reader ran only {reads} times");
        assert!(
            longest < Duration::from_secs(1),
            "a reader waited {longest:?} behind the adoption"
        );
    }

    // What changed, what to stop, and how to roll back.
    assert!(out.contains("adopted table"), "{out}");
    assert!(out.contains("RefreshTraceSummariesWorker"), "{out}");
    assert!(out.contains("TRACE_SUMMARIES_REFRESH_CRON"), "{out}");
    assert!(out.contains("roll back"), "{out}");
    assert!(out.contains("uninstall"), "{out}");
    assert!(out.contains("create table"), "{out}");

    // The new relation: the definition, the contract's indexes, the old grant and comment.
    assert!(exists(&db, "select 1 from pg_tables where schemaname = 'public' and tablename = 'otel_trace_summaries'").await);
    assert_eq!(db.oracle_diff("7 days").await, 0);
    assert_contract_indexes(&db).await;
    assert!(may_select(&db, &reader).await, "the grant was not kept");
    assert_eq!(
        comment(&db).await.as_deref(),
        Some("upstream: upserted by RefreshTraceSummariesWorker"),
        "the comment was not kept"
    );

    // status keeps the SQL that recreates the old table; uninstall prints it again.
    let json = status_json(&db, "public").await;
    let adopted = json["adopted"]
        .as_str()
        .unwrap_or_else(|| panic!("status --json has no adopted SQL: {json}"))
        .to_string();
    assert!(adopted.contains("create table"), "{adopted}");
    assert!(adopted.contains("refreshed_at"), "{adopted}");
    let out = db.cli_ok(&["uninstall"]);
    assert!(
        out.contains(&adopted),
        "uninstall did not print the rollback SQL:\n{out}"
    );
    assert!(
        !exists(
            &db,
            "select 1 from pg_class where oid = to_regclass('public.otel_trace_summaries')"
        )
        .await
    );

    // Rolling back: the SQL recreates upstream's table as it was (empty), for its job to fill.
    db.client
        .batch_execute(&adopted)
        .await
        .unwrap_or_else(|e| panic!("the rollback SQL fails: {e}\n{adopted}"));
    assert_eq!(columns(&db).await, columns_before);
    assert_eq!(index_names(&db).await, indexes_before);
    assert!(may_select(&db, &reader).await);
    assert_eq!(
        comment(&db).await.as_deref(),
        Some("upstream: upserted by RefreshTraceSummariesWorker")
    );
    db.client
        .batch_execute(
            "insert into otel_trace_summaries (trace_id, timestamp) values ('abc', now())",
        )
        .await
        .expect("upstream's job can write the recreated table (refreshed_at has its default)");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_view_made_by_hand_is_refused_then_adopted_and_its_cron_job_unscheduled() {
    let _guard = cron_lock().await;
    let (db, cron) = match TestDb::in_cron_database("seedmv").await {
        Some(db) => (db, true),
        None => {
            eprintln!("pg_cron is not installed: the cron job part is skipped (CI installs it)");
            (TestDb::with_schema("seedmv").await, false)
        }
    };
    load_spans(&db, "seedmv", 8_000, 24 * 8, 112, &[7]).await;
    // The seed's migration, by hand: the view, its three indexes, its refresh job.
    db.client
        .batch_execute(&format!(
            "create materialized view seedmv.otel_trace_summaries as {};
             create unique index idx_trace_summaries_trace_id on seedmv.otel_trace_summaries (trace_id);
             create index idx_trace_summaries_timestamp on seedmv.otel_trace_summaries (timestamp desc);
             create index idx_trace_summaries_service_timestamp on seedmv.otel_trace_summaries (root_service_name, timestamp desc);",
            oracle_sql("seedmv", "7 days")
        ))
        .await
        .expect("create the seed's view");
    let my_refresh = "select count(*) from cron.job where jobname = 'my-refresh'";
    if cron {
        db.client
            .batch_execute("select cron.schedule('my-refresh', '*/2 * * * *', 'REFRESH MATERIALIZED VIEW CONCURRENTLY seedmv.otel_trace_summaries')")
            .await
            .unwrap();
        assert_eq!(db.count(my_refresh).await, 1);
    }

    let out = db.cli(&["--schema", "seedmv", "install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let (message, hint) = err
        .split_once("hint:")
        .unwrap_or_else(|| panic!("no hint line:\n{err}"));
    assert!(message.contains("did not create"), "{err}");
    assert!(message.contains("materialized view"), "{err}");
    assert!(hint.contains("--adopt"), "{err}");
    assert!(exists(&db, "select 1 from pg_matviews where schemaname = 'seedmv' and matviewname = 'otel_trace_summaries'").await);
    if cron {
        assert_eq!(
            db.count(my_refresh).await,
            1,
            "a refused install touched the cron job"
        );
    }

    let out = db.cli_ok(&["--schema", "seedmv", "install", "--adopt"]);
    assert!(out.contains("adopted materialized view"), "{out}");
    assert!(out.contains("roll back"), "{out}");
    assert!(exists(&db, "select 1 from pg_tables where schemaname = 'seedmv' and tablename = 'otel_trace_summaries'").await);
    assert_eq!(
        db.diff_against("seedmv", &oracle_sql("seedmv", "7 days"))
            .await,
        0
    );
    assert_contract_indexes(&db).await;
    if cron {
        assert_eq!(
            db.count(my_refresh).await,
            0,
            "the hand-made job still refreshes a view that is now a table"
        );
        assert_eq!(
            db.count("select count(*) from cron.job where command ilike '%otel_trace_summaries%'")
                .await,
            0
        );
    }
    let json = status_json(&db, "seedmv").await;
    let adopted = json["adopted"].as_str().unwrap_or_default();
    assert!(adopted.contains("create materialized view"), "{json}");

    db.cli_ok(&["--schema", "seedmv", "uninstall"]);
    if cron {
        db.client
            .batch_execute("drop schema seedmv cascade")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_error_rule_and_window_hold_in_both_modes() {
    let db = TestDb::new().await;
    load_spans(&db, "public", 20_000, 24 * 8, 113, &[3, 7]).await;
    // The data has spans the two rules count differently (status unset or NULL).
    assert!(
        db.count("select count(*) from otel_traces where timestamp > now() - interval '3 days' and coalesce(status_code, 0) = 0").await
            > 0
    );
    let upstream = oracle_sql_error_rule("public", "3 days");
    db.cli_ok(&["install", "--error-rule", "error", "--window", "3d"]);
    assert_eq!(db.diff_against("public", &upstream).await, 0);
    assert!(
        db.diff_against("public", &oracle_sql("public", "3 days"))
            .await
            > 0,
        "error_count counted the contract's rule, not status_code = 2"
    );

    // New spans with every status, absorbed by a step.
    let mut trace = SpanGen::new(7).trace(Utc::now() - CD::seconds(2), 8);
    for (i, s) in trace.iter_mut().enumerate() {
        s.status_code = [None, Some(0), Some(1), Some(2)][i % 4];
    }
    insert_spans(&db.client, &db.target, &trace).await.unwrap();
    db.run_once();
    assert_eq!(db.diff_against("public", &upstream).await, 0);
    assert_eq!(
        db.count(&format!(
            "select error_count from otel_trace_summaries where trace_id = '{}'",
            trace[0].trace_id
        ))
        .await,
        2
    );

    let json = status_json(&db, "public").await;
    assert_eq!(json["error_rule"], "error", "{json}");
    assert_eq!(json["window"], "3 days", "{json}");
    let out = db.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("verify ok"), "{}", stdout(&out));

    // The view renders the same rule and window.
    db.cli_ok(&[
        "install",
        "--mode",
        "mv",
        "--error-rule",
        "error",
        "--window",
        "3d",
    ]);
    let definition: String = db
        .client
        .query_one(
            "select definition from pg_matviews where schemaname = 'public' and matviewname = 'otel_trace_summaries'",
            &[],
        )
        .await
        .expect("the materialized view")
        .get(0);
    assert!(definition.contains("3 days"), "{definition}");
    assert!(definition.contains("status_code = 2"), "{definition}");
    assert_eq!(db.diff_against("public", &upstream).await, 0);
    let json = status_json(&db, "public").await;
    assert_eq!(json["mode"], "mv", "{json}");
    assert_eq!(json["error_rule"], "error", "{json}");
    assert_eq!(json["window"], "3 days", "{json}");
    let out = db.cli(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_named_twice_for_run_or_several_for_install_is_refused_with_exit_2() {
    let db = TestDb::new().await;
    let out = db.cli(&["run", "--schema", "public,public", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("named twice"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    db.client
        .batch_execute("create schema other")
        .await
        .unwrap();
    create_source(&db.client, &target("other")).await.unwrap();
    let out = db.cli(&["install", "--schema", "public,other"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only `run` takes several schemas"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // Refused before any change.
    assert!(
        !exists(
            &db,
            "select 1 from pg_namespace where nspname = 'trace_summarizer'"
        )
        .await
    );
    assert!(
        !exists(
            &db,
            "select 1 from pg_class where relname = 'otel_trace_summaries'"
        )
        .await
    );
}
