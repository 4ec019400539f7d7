//! `otel_traces` distributed by trace_id with Citus: a coordinator and two workers on
//! 127.0.0.1 (tests/common/citus.rs), each test in its own database on all three. Install, the
//! worker's per-node steps, the commands operators run (deletes, updates, retention, copies put
//! back, TRUNCATE and reload), a shard moved to the other node, kill -9 of the worker and a
//! restarted Citus worker, all checked against the oracle (the view's definition, computed on
//! the coordinator) with EXCEPT ALL both ways. Skipped when Citus is not installed.

mod common;

use common::citus::CitusDb;
use common::{worker, Proc};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use trace_summarizer::lab::spangen::{copy_spans, insert_spans, SpanGen};

const CAUGHT_UP: Duration = Duration::from_secs(60);

/// A Citus database with `workers` workers, `n` spans of history over 3 days, installed.
async fn installed(workers: usize, n: usize, seed: u64) -> Option<CitusDb> {
    installed_in(CitusDb::new(workers).await?, n, seed).await
}

async fn installed_in(db: CitusDb, n: usize, seed: u64) -> Option<CitusDb> {
    let now = chrono::Utc::now();
    let spans = SpanGen::new(seed).history(n, now - chrono::Duration::hours(72), now, now);
    copy_spans(&db.client, &db.target, &spans).await.unwrap();
    db.client
        .batch_execute("analyze otel_traces")
        .await
        .unwrap();
    db.cli_ok(&["install"]);
    assert_eq!(
        db.oracle_diff("7 days").await,
        0,
        "exact right after install"
    );
    Some(db)
}

/// The summaries equal the oracle within a minute; the worker's log in the failure otherwise.
async fn exact_soon(db: &CitusDb, w: &Proc, what: &str) {
    let deadline = std::time::Instant::now() + CAUGHT_UP;
    loop {
        let diff = db.oracle_diff("7 days").await;
        if diff == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {diff} rows differ from the oracle after {CAUGHT_UP:?}; the worker's log:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run(db: &CitusDb) -> Proc {
    worker(&db.url, &["--schema", "public", "--audit-period", "0"])
}

/// New spans for new traces and late spans for traces already summarized.
async fn ingest(db: &CitusDb, gen: &mut SpanGen, traces: usize, late: usize) {
    let now = chrono::Utc::now();
    let mut spans = Vec::new();
    for _ in 0..traces {
        spans.extend(gen.trace(now, 0));
    }
    insert_spans(&db.client, &db.target, &spans).await.unwrap();
    let old: Vec<String> = db
        .client
        .query(
            "select trace_id from otel_trace_summaries order by md5(trace_id) limit $1",
            &[&(late as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut late_spans = Vec::new();
    for id in old {
        let mut t = gen.trace(now - chrono::Duration::hours(1), 0);
        t.truncate(1);
        for s in &mut t {
            s.trace_id = id.clone();
            s.span_id = format!("late{}", gen.rng().random::<u64>());
        }
        late_spans.extend(t);
    }
    insert_spans(&db.client, &db.target, &late_spans)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn install_and_steps_on_every_node_stay_exact_under_everyday_commands() {
    let Some(db) = installed(2, 6000, 1).await else {
        return;
    };
    // Summaries are distributed and co-located with the spans.
    assert_eq!(
        db.count(
            "select count(*) from pg_dist_partition p
             where logicalrelid = 'otel_trace_summaries'::regclass
               and colocationid = (select colocationid from pg_dist_partition
                                   where logicalrelid = 'otel_traces'::regclass)"
        )
        .await,
        1
    );
    // The contract's index names, on the distributed table.
    for name in [
        "idx_trace_summaries_trace_id",
        "idx_trace_summaries_timestamp",
        "idx_trace_summaries_service_timestamp",
    ] {
        assert_eq!(
            db.count(&format!(
                "select count(*) from pg_indexes where indexname = '{name}' and tablename = 'otel_trace_summaries'"
            ))
            .await,
            1,
            "{name}"
        );
    }
    let mut w = run(&db);
    let mut gen = SpanGen::new(11);

    ingest(&db, &mut gen, 300, 50).await;
    exact_soon(&db, &w, "new and late spans").await;

    db.client
        .batch_execute(
            "delete from otel_traces where trace_id in
               (select trace_id from otel_trace_summaries order by md5(trace_id || 'd') limit 40);
             delete from otel_traces where span_id in
               (select span_id from otel_traces order by md5(span_id) limit 100);
             update otel_traces set status_code = 2, end_time_unix_nano = end_time_unix_nano + 1000000
              where span_id in (select span_id from otel_traces order by md5(span_id || 'u') limit 100);",
        )
        .await
        .unwrap();
    exact_soon(&db, &w, "deletes and updates").await;

    // Retention, the way a cron job runs it on a distributed table.
    db.client
        .batch_execute("delete from otel_traces where \"timestamp\" < now() - interval '2 days'")
        .await
        .unwrap();
    exact_soon(&db, &w, "a retention delete").await;

    // Spans put back from a backup table, every column copied (stamps included).
    db.client
        .batch_execute(
            "create table backup as select * from otel_traces where trace_id in
               (select trace_id from otel_trace_summaries order by md5(trace_id || 'b') limit 60);
             delete from otel_traces where trace_id in (select trace_id from backup);",
        )
        .await
        .unwrap();
    exact_soon(&db, &w, "the traces taken out").await;
    db.client
        .batch_execute("insert into otel_traces select * from backup")
        .await
        .unwrap();
    exact_soon(&db, &w, "spans put back with INSERT ... SELECT *").await;

    // TRUNCATE and reload in one transaction.
    db.client
        .batch_execute(
            "create table everything as select * from otel_traces;
             begin;
             truncate otel_traces;
             insert into otel_traces select * from everything where \"timestamp\" > now() - interval '1 day';
             commit;",
        )
        .await
        .unwrap();
    exact_soon(&db, &w, "TRUNCATE and reload").await;

    ingest(&db, &mut gen, 200, 30).await;
    exact_soon(&db, &w, "ingest after the surgery").await;
    assert!(w.log_text().contains("node"), "{}", w.log_text());
    let _ = w.stop(libc::SIGTERM);

    // status reads the coordinator and every node.
    let status = db.cli_ok(&["status", "--json"]);
    let out = db.cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{status}"));
    let nodes = json["nodes"].as_array().expect("nodes in status");
    assert_eq!(nodes.len(), 2, "{json}");
    for n in nodes {
        assert_eq!(n["lag_spans"], 0, "{json}");
    }
}

/// Moves one shard of otel_traces (and its co-located summaries) from worker `from` to the other.
/// `must`: the worker holds one (else a worker without shards left moves nothing).
async fn move_a_shard(db: &CitusDb, from: usize, must: bool) {
    let to = db.citus.workers[1 - from].port as i32;
    let from = db.citus.workers[from].port as i32;
    let shard: Option<i64> = db
        .client
        .query_opt(
            "select s.shardid from pg_dist_shard s join pg_dist_placement p using (shardid)
             join pg_dist_node n using (groupid)
             where s.logicalrelid = 'otel_traces'::regclass and n.nodeport = $1
             order by s.shardid limit 1",
            &[&from],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    let Some(shard) = shard else {
        assert!(!must, "no shard on the worker at port {from}");
        return;
    };
    db.client
        .execute(
            "select citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3, shard_transfer_mode := 'block_writes')",
            &[&shard, &from, &to],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_moved_to_the_other_node_is_summarized_there() {
    let Some(db) = installed(2, 4000, 2).await else {
        return;
    };
    let mut w = run(&db);
    let mut gen = SpanGen::new(12);
    ingest(&db, &mut gen, 100, 20).await;
    exact_soon(&db, &w, "before the move").await;

    move_a_shard(&db, 0, true).await;
    // Spans into every shard, the moved one included, after the move.
    ingest(&db, &mut gen, 200, 40).await;
    exact_soon(&db, &w, "after the move").await;
    db.client
        .batch_execute(
            "delete from otel_traces where trace_id in
               (select trace_id from otel_trace_summaries order by md5(trace_id || 'm') limit 40)",
        )
        .await
        .unwrap();
    exact_soon(&db, &w, "deletes after the move").await;
    let log = w.log_text();
    assert!(log.contains("shard_moved"), "{log}");
    let _ = w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn randomized_commands_with_kill_9_and_a_node_restart_stay_exact() {
    let seed: u64 = std::env::var("CITUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("CITUS_SEED={seed}");
    let Some(db) = CitusDb::exclusive(2).await else {
        return;
    };
    let Some(db) = installed_in(db, 3000, seed).await else {
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut gen = SpanGen::new(seed ^ 0x5eed);
    let mut w = run(&db);
    for round in 0..14 {
        let action = rng.random_range(0..10);
        eprintln!("round {round}: action {action}");
        match action {
            0 | 1 => ingest(&db, &mut gen, rng.random_range(20..200), rng.random_range(0..30)).await,
            2 => db
                .client
                .batch_execute(&format!(
                    "delete from otel_traces where span_id in
                       (select span_id from otel_traces order by md5(span_id || '{round}') limit {})",
                    rng.random_range(1..80)
                ))
                .await
                .unwrap(),
            3 => db
                .client
                .batch_execute(&format!(
                    "update otel_traces set end_time_unix_nano = end_time_unix_nano + 7000000, status_code = 2
                      where span_id in (select span_id from otel_traces order by md5(span_id || 'u{round}') limit {})",
                    rng.random_range(1..80)
                ))
                .await
                .unwrap(),
            4 => {
                // Put back with every column, in a multi-shard transaction.
                db.client
                    .batch_execute(&format!(
                        "create table b{round} as select * from otel_traces where trace_id in
                           (select trace_id from otel_trace_summaries order by md5(trace_id || '{round}') limit 30);
                         begin;
                         delete from otel_traces where trace_id in (select trace_id from b{round});
                         insert into otel_traces select * from b{round};
                         commit;"
                    ))
                    .await
                    .unwrap();
            }
            5 => {
                // kill -9 of the worker, then a new one.
                w.stop(libc::SIGKILL);
                ingest(&db, &mut gen, 50, 10).await;
                w = run(&db);
            }
            6 => {
                // A Citus worker restarts under the worker; writes go on once it is back.
                db.citus.workers[rng.random_range(0..2)].restart().unwrap();
                // The coordinator's cached connections to it broke: the first writes may fail.
                let mut tries = 0;
                while let Err(e) = db.client.batch_execute("select count(*) from otel_traces").await {
                    tries += 1;
                    assert!(tries < 50, "the cluster never came back: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                ingest(&db, &mut gen, 50, 10).await;
            }
            8 => {
                // TRUNCATE and reload part of it, in one transaction.
                db.client
                    .batch_execute(&format!(
                        "create table t{round} as select * from otel_traces;
                         begin;
                         truncate otel_traces;
                         insert into otel_traces select * from t{round} where md5(trace_id) > '3';
                         commit;"
                    ))
                    .await
                    .unwrap();
            }
            9 => move_a_shard(&db, rng.random_range(0..2), false).await,
            _ => {
                let hours = rng.random_range(40..72);
                db.client
                    .batch_execute(&format!(
                        "delete from otel_traces where \"timestamp\" < now() - interval '{hours} hours'"
                    ))
                    .await
                    .unwrap();
            }
        }
        if rng.random_bool(0.4) {
            exact_soon(&db, &w, &format!("round {round}, action {action}")).await;
        }
    }
    exact_soon(&db, &w, "the end").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(db.oracle_diff("7 days").await, 0, "still exact");
    let _ = w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_dropping_a_partition_of_a_distributed_table_is_exact() {
    let Some(db) = CitusDb::partitioned(2, 5).await else {
        return;
    };
    let Some(db) = installed_in(db, 5000, 4).await else {
        return;
    };
    let mut w = run(&db);
    let mut gen = SpanGen::new(14);
    ingest(&db, &mut gen, 100, 20).await;
    exact_soon(&db, &w, "before the drop").await;
    // The oldest day with spans goes, as pg_partman's retention does it: the partition (and its
    // shards on every node) dropped.
    let oldest: String = db
        .client
        .query_one(
            "select 'otel_traces_p' || to_char(min(\"timestamp\"), 'YYYYMMDD') from otel_traces",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let before = db.count(&format!("select count(*) from {oldest}")).await;
    assert!(before > 0, "{oldest} holds spans");
    db.client
        .batch_execute(&format!("drop table {oldest}"))
        .await
        .unwrap();
    exact_soon(&db, &w, "a partition dropped").await;
    // And a partition detached (kept aside), then attached again.
    let next: String = db
        .client
        .query_one(
            "select 'otel_traces_p' || to_char(min(\"timestamp\"), 'YYYYMMDD') from otel_traces",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bounds: String = db
        .client
        .query_one(
            "select pg_get_expr(relpartbound, oid) from pg_class where relname = $1",
            &[&next],
        )
        .await
        .unwrap()
        .get(0);
    db.client
        .batch_execute(&format!("alter table otel_traces detach partition {next}"))
        .await
        .unwrap();
    exact_soon(&db, &w, "a partition detached").await;
    db.client
        .batch_execute(&format!(
            "alter table otel_traces attach partition {next} {bounds}"
        ))
        .await
        .unwrap();
    exact_soon(&db, &w, "the partition attached again").await;
    ingest(&db, &mut gen, 100, 20).await;
    exact_soon(&db, &w, "after").await;
    let _ = w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_added_and_a_rebalance_keep_the_summaries_exact() {
    let Some(db) = installed(1, 4000, 5).await else {
        return;
    };
    let mut w = run(&db);
    let mut gen = SpanGen::new(15);
    ingest(&db, &mut gen, 100, 20).await;
    exact_soon(&db, &w, "on one worker").await;
    db.add_worker(1).await;
    db.client
        .batch_execute("select rebalance_table_shards(shard_transfer_mode := 'block_writes')")
        .await
        .unwrap();
    let on_second = db
        .count(&format!(
            "select count(*) from pg_dist_placement p join pg_dist_node n using (groupid)
             where n.nodeport = {}",
            db.citus.workers[1].port
        ))
        .await;
    assert!(on_second > 0, "the rebalance moved shards to the new node");
    ingest(&db, &mut gen, 200, 40).await;
    exact_soon(&db, &w, "after the rebalance").await;
    db.client
        .batch_execute(
            "delete from otel_traces where trace_id in
               (select trace_id from otel_trace_summaries order by md5(trace_id || 'r') limit 50)",
        )
        .await
        .unwrap();
    exact_soon(&db, &w, "deletes on both nodes").await;
    let log = w.log_text();
    assert!(log.contains("shard_moved"), "{log}");
    assert_eq!(log.matches("serving a Citus node").count(), 2, "{log}");
    let _ = w.stop(libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_leaves_otel_traces_as_it_was_on_every_node() {
    let Some(db) = installed(2, 1000, 3).await else {
        return;
    };
    db.cli_ok(&["uninstall"]);
    assert_eq!(
        db.count("select count(*) from pg_attribute where attrelid = 'otel_traces'::regclass and attname like 'trace_summarizer%' and not attisdropped").await,
        0
    );
    for i in 0..2 {
        let node = common::connect(&db.worker_url(i)).await;
        let left: i64 = node
            .query_one(
                "select count(*) from pg_trigger t join pg_class c on c.oid = t.tgrelid
                 where c.relname like 'otel_traces%' and t.tgname like 'trace_summarizer%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "node {i}");
        let schemas: i64 = node
            .query_one(
                "select count(*) from pg_namespace where nspname = 'trace_summarizer'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(schemas, 0, "node {i}");
    }
}
