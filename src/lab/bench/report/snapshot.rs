//! The whole report rendered from fixed synthetic results and compared byte for byte with the
//! files in `testdata/`: any change to the report's text shows up here. After an intended
//! change, regenerate them with `BENCH_REPORT_BLESS=1 cargo test --lib report::snapshot` and
//! review the diff.

use super::{render, ReportInput};
use crate::cli::BenchParts;
use crate::lab::bench::audit_cost::AuditRuns;
use crate::lab::bench::big_trace::BigTraceRuns;
use crate::lab::bench::capacity::{CapacityRun, CapacityRuns};
use crate::lab::bench::citus::{CitusFreshness, CitusRuns, NodeCount};
use crate::lab::bench::citus_steps::{AllSteps, NodeStep};
use crate::lab::bench::compare::{
    Baseline, Cell, CellOutcome, CompareRuns, RateRuns, Setup, System,
};
use crate::lab::bench::config::{CitusSettings, CompareSettings, Settings};
use crate::lab::bench::env::Machine;
use crate::lab::bench::failover::FailoverRuns;
use crate::lab::bench::freshness::FreshnessRun;
use crate::lab::bench::idle::IdleRun;
use crate::lab::bench::ingest::IngestRuns;
use crate::lab::bench::load::{Loaded, TraceShape};
use crate::lab::bench::meter::Statement;
use crate::lab::bench::never_analyzed::{NeverAnalyzedLoad, NeverAnalyzedRuns, Statistics};
use crate::lab::bench::queries::QueryResult;
use crate::lab::bench::scale::{Comparison, ScaleResult};
use crate::lab::bench::steps::CycleRuns;
use crate::ops::worker::WorkerSettings;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn settings(repeat: usize) -> Settings {
    Settings {
        scales: vec![1_000_000, 10_000_000],
        rates: vec![1_000, 10_000],
        freshness: Duration::from_secs(60),
        repeat,
        output: PathBuf::from("docs/bench-report.md"),
        window: crate::definition::Window::parse("--window", "7d").unwrap(),
        spans_per_trace: 12.0,
        worker: WorkerSettings {
            schemas: vec!["public".into()],
            ..WorkerSettings::default()
        },
        cycle_sizes: vec![1_000, 10_000, 100_000],
        pairs: (repeat * 3).max(5),
        never_analyzed_spans: 10_000,
        big_trace_spans: 100_000,
        big_trace_new: 100,
        audit_slices: 20,
        ingest_spans: 100_000,
        ingest_batch: 500,
        ingest_rounds: (repeat + 2).max(5),
        failovers: repeat.max(3),
        query_runs: 50,
        parts: BenchParts::All,
        compare: CompareSettings::new(
            vec![1_000, 10_000],
            Duration::from_secs(120),
            Duration::from_secs(120),
        ),
        citus: CitusSettings::new(&[1_000_000, 10_000_000], repeat, Duration::from_secs(20)),
    }
}

/// One cell of the comparison; `k` scales its costs.
fn cell(system: System, rate: u32, k: f64) -> Cell {
    let (cpu, wal, run, fresh) = match system {
        System::View => (40.0 * k, 900e6 * k, vec![14.0 * k], 60_000.0),
        System::Job => (4.0 * k, 60e6, vec![1.2 * rate as f64 / 1000.0], 61_000.0),
        System::Product => (6.5 + 0.2 * k, 8e6, vec![], 80.0),
    };
    let spans = (rate as f64 * 134.0) as u64;
    Cell {
        seconds: 134.0,
        spans,
        late_spans: spans / 100,
        cpu_s: cpu + 3.0,
        wal_bytes: (wal + spans as f64 * 900.0) as i64,
        ingest_wal_bytes: Some((spans as f64 * 900.0) as i64),
        worker_cpu_s: (system == System::Product).then_some(1.5),
        backends_cpu_s: (system == System::Product).then_some(2.5),
        runs_s: run,
        upserted: if system == System::Job { spans / 12 } else { 0 },
        window_spans: 10_000_000,
        freshness_ms: (1..=100).map(|i| i as f64 * fresh / 100.0).collect(),
        estimated: if system == System::Product { 0 } else { 12 },
        unseen: 0,
        missed_spans: if system == System::Job {
            spans / 100 - 3
        } else {
            0
        },
        compared: 800_000,
        wrong: if system == System::Job {
            (spans / 100 - 40) as i64
        } else {
            0
        },
        prepare_s: 15.0,
        final_s: 12.0,
        statements: vec![Statement {
            query: format!(
                "refresh materialized view concurrently public.bench_mv /* {} */",
                system.name()
            ),
            calls: 1,
            total_ms: 14_000.0 * k,
            rows: 0,
            wal_bytes: 5_000_000,
        }],
    }
}

/// The comparison at one scale; `quirks` fails a cell and the idle run.
fn comparison(k: f64, quirks: bool) -> Comparison {
    let rates = [1_000u32, 10_000]
        .iter()
        .map(|&rate| RateRuns {
            rate,
            baseline: Ok(Baseline {
                seconds: 40.0,
                spans: rate as u64 * 40,
                cpu_s: 1.2,
                wal_bytes: rate as i64 * 40 * 900 + 2_000_000,
                ingest_wal_bytes: Some(rate as i64 * 40 * 900),
            }),
            cells: System::ALL
                .iter()
                .map(|&system| CellOutcome {
                    system,
                    result: if quirks && system == System::Job && rate == 10_000 {
                        Err("stopped at its time limit of 9m".into())
                    } else {
                        Ok(cell(system, rate, k))
                    },
                })
                .collect(),
        })
        .collect();
    let run = |writers: usize, rate: f64, fresh: Option<f64>| CapacityRun {
        writers,
        spans: (rate * 20.0) as u64,
        seconds: 20.0,
        freshness_ms: fresh
            .map(|f| (1..=50).map(|i| i as f64 * f / 50.0).collect())
            .unwrap_or_default(),
        unseen: 0,
        worker_cpu_s: fresh.map(|_| 4.0),
    };
    Comparison {
        compare: CompareRuns {
            setup: Setup {
                loaded: Loaded {
                    spans: 1_000_000,
                    copy_s: 5.0 * k,
                    index_s: 2.0 * k,
                    vacuum_s: 0.5,
                },
                mv_create_s: 1.5 * k,
                install_s: 2.5 * k,
                backfill_s: 3.0 * k,
                backfill_chunks: 73,
                backfill_rows: 84_000,
                late_pool: 5_000,
                job_exact_since: Default::default(),
                cpu_readable: true,
                statements_available: true,
            },
            rates,
        },
        idle: Some(if quirks {
            Err("`trace-summarizer run` exited".into())
        } else {
            Ok(IdleRun {
                seconds: 45.0,
                worker_cpu_s: 0.05,
                backends_cpu_s: 0.1,
                cluster_cpu_s: 0.4,
            })
        }),
        capacity: CapacityRuns {
            with_product: vec![run(2, 21_000.0, Some(300.0)), run(4, 24_000.0, Some(700.0))],
            plain: vec![run(2, 25_000.0, None), run(4, 28_000.0, None)],
        },
        capacity_error: None,
        error: None,
    }
}

fn machine() -> Machine {
    Machine {
        cpu: "Synthetic CPU @ 3.00GHz".into(),
        cores: 2,
        memory: "7.8 GiB".into(),
        kernel: "Linux 6.1.0-test".into(),
        pg_version: "PostgreSQL 15.8 (synthetic)".into(),
        settings: vec![
            ("shared_buffers".into(), "1GB".into()),
            ("work_mem".into(), "4MB".into()),
            ("fsync".into(), "on".into()),
        ],
    }
}

fn stats(never: bool) -> Statistics {
    Statistics {
        reltuples: if never { -1.0 } else { 987_654.0 },
        stat_rows: if never { 0 } else { 20 },
        autovacuum_enabled: !never,
        never_analyzed_per_stats: never,
    }
}

fn freshness(rate: u32, k: f64) -> FreshnessRun {
    FreshnessRun {
        rate,
        achieved: rate as f64 * 0.99,
        batches: 600,
        samples_ms: (1..=200).map(|i| i as f64 * k).collect(),
        unseen: 0,
        insert_p50_ms: 2.5 * k,
        insert_p99_ms: 9.0 * k,
    }
}

fn query(name: &'static str, k: f64, same_plan: bool) -> QueryResult {
    QueryResult {
        name,
        sql: format!("select * from otel_trace_summaries /* {name} */ limit 100"),
        view_s: 0.0012 * k,
        table_s: 0.0011 * k,
        view_rows: 100,
        table_rows: 100,
        view_plan: "Limit → Index Scan using bench_mv_timestamp on bench_mv".into(),
        table_plan: if same_plan {
            "Limit → Index Scan using idx_trace_summaries_timestamp on otel_trace_summaries".into()
        } else {
            "Limit → Sort → Seq Scan on otel_trace_summaries".into()
        },
    }
}

/// One scale's results; `k` scales the times, `quirks` turns on every note and odd case.
fn scale(spans: u64, k: f64, quirks: bool) -> ScaleResult {
    let series = |base: f64| vec![base * k, base * k * 1.1, base * k * 0.95];
    ScaleResult {
        spans,
        loaded: Loaded {
            spans,
            copy_s: 12.5 * k,
            index_s: 4.25 * k,
            vacuum_s: 1.5 * k,
        },
        traces_loaded: (spans / 12) as i64,
        shape: TraceShape {
            mean: 11.87,
            p50: 8,
            p90: 25,
            p99: 90,
            max: 1_500,
        },
        traces_in_window: (spans / 12) as i64 + 4_000,
        spans_in_window: spans as i64 + 48_000,
        traces_bytes: (spans * 1_100) as i64,
        table_bytes: (spans * 30) as i64,
        view_bytes: (spans * 28) as i64,
        create_mv_s: 8.0 * k,
        install_s: 9.5 * k,
        plain_copy_s: 14.0 * k,
        never_load: NeverAnalyzedLoad {
            insert_s: 20.0 * k,
            rebuild_s: 7.0 * k,
            stats: stats(true),
        },
        refresh_concurrently: series(10.0),
        refresh_concurrently_mem: series(8.0),
        refresh_plain: if quirks { series(8.5) } else { series(5.0) },
        rebuild_1: series(9.0),
        rebuild_2: series(6.0),
        cycles: [1_000usize, 10_000, 100_000]
            .iter()
            .map(|&n| CycleRuns {
                new_spans: n,
                seconds: series(n as f64 * 2e-6),
                absorbed: vec![n as i64; 3],
                traces: vec![(n / 12) as i64; 3],
            })
            .collect(),
        never_analyzed: NeverAnalyzedRuns {
            spans: 10_000,
            analyzed: series(0.02),
            never_analyzed: series(0.03),
            before: stats(true),
            after: stats(!quirks),
        },
        big_trace: BigTraceRuns {
            big_spans: 100_000,
            new_spans: 100,
            first_s: 1.25 * k,
            into_big: series(0.004),
            new_trace: series(0.003),
            final_count: 100_500,
            expected_count: 100_500,
        },
        audit: vec![
            AuditRuns {
                period: Duration::from_secs(24 * 3600),
                every: Duration::from_secs(10),
                summaries_estimate: (spans / 12) as i64,
                seconds: series(0.0008),
                checked: vec![(spans / 12 / 8640) as i64; 3],
                mismatches: if quirks { 2 } else { 0 },
            },
            AuditRuns {
                period: Duration::from_secs(3600),
                every: Duration::from_secs(10),
                summaries_estimate: (spans / 12) as i64,
                seconds: series(0.006),
                checked: vec![(spans / 12 / 360) as i64; 3],
                mismatches: 0,
            },
        ],
        ingest: IngestRuns {
            spans: 100_000,
            batch: 500,
            with_product: if quirks {
                vec![3.0, 3.9, 3.1]
            } else {
                vec![3.0, 3.05, 3.1]
            },
            without: vec![2.8, 2.85, 2.9],
            installed_idle: vec![2.9, 2.95, 2.97],
        },
        freshness: if quirks {
            let mut behind = freshness(10_000, 3.0);
            behind.achieved = 8_000.0;
            behind.unseen = 3;
            behind.insert_p99_ms = 400.0;
            behind.samples_ms.extend([f64::INFINITY; 3]);
            vec![freshness(1_000, 1.0), behind]
        } else {
            vec![freshness(1_000, 0.5), freshness(10_000, 1.0)]
        },
        failover: FailoverRuns {
            to_leader: vec![0.45, 0.9, 0.62, 0.3, 0.51],
            to_absorbed: vec![0.6, 1.05, 0.8, 0.5, 0.7],
        },
        queries: vec![
            query("trace list", k, true),
            query("filtered list", k, !quirks),
        ],
        compared: (spans / 12) as i64,
        differing: if quirks { 1 } else { 0 },
        table_live: (spans / 12) as i64,
        table_dead: 1_234,
        table_autovacuumed: quirks,
        events: if quirks {
            vec!["during the ingest rounds, the worker fell back to a full refresh (last reason: test)".into()]
        } else {
            vec![]
        },
        comparison: Some(comparison(k, quirks)),
    }
}

/// The date and the version vary from run to run; everything else must not.
/// The Citus section's results: one worker node, then two; `stopped` ends it with an error
/// before the second.
fn citus(stopped: bool) -> CitusRuns {
    let step = |wall: f64, nodes: &[(&str, f64, i64)]| AllSteps {
        seconds: wall,
        nodes: nodes
            .iter()
            .map(|&(node, seconds, spans)| NodeStep {
                node: node.into(),
                seconds,
                spans,
                rebuilt: None,
            })
            .collect(),
    };
    let fresh = |rate: u32, base: f64| CitusFreshness {
        rate,
        achieved: rate as f64 * 0.99,
        samples_ms: (0..200).map(|i| base + i as f64).collect(),
        unseen: 0,
    };
    let one = NodeCount {
        workers: 1,
        shards: vec![("127.0.0.1:9701".into(), 8)],
        freshness: vec![fresh(1_000, 300.0), fresh(5_000, 450.0)],
        steps: (0..5)
            .map(|i| step(0.4 + i as f64 * 0.01, &[("127.0.0.1:9701", 0.39, 10_000)]))
            .collect(),
        refresh_s: vec![9.0, 9.5, 9.2],
    };
    let two = NodeCount {
        workers: 2,
        shards: vec![("127.0.0.1:9701".into(), 4), ("127.0.0.1:9702".into(), 4)],
        freshness: vec![fresh(1_000, 250.0), fresh(5_000, 380.0)],
        steps: (0..5)
            .map(|i| {
                step(
                    0.3 + i as f64 * 0.01,
                    &[
                        ("127.0.0.1:9701", 0.25, 5_010),
                        ("127.0.0.1:9702", 0.29, 4_990),
                    ],
                )
            })
            .collect(),
        refresh_s: vec![8.0, 8.4, 8.1],
    };
    CitusRuns {
        version: "Citus 13.2.2".into(),
        spans: 1_000_000,
        load_s: 40.0,
        install_s: 12.0,
        create_mv_s: 8.0,
        rebalance_s: (!stopped).then_some(20.0),
        compared: if stopped { 0 } else { 83_000 },
        differing: (!stopped).then_some(0),
        error: stopped.then(|| "rebalancing otel_traces: could not connect".into()),
        counts: if stopped { vec![one] } else { vec![one, two] },
        ..Default::default()
    }
}

fn normalized(report: &str) -> String {
    let (date, version) = ("Generated ", " by `trace-summarizer bench` ");
    let start = report.find(date).expect("the Generated line") + date.len();
    let end = start + report[start..].find(version).expect("the version");
    let after = end + version.len();
    let version_end = after + report[after..].find(' ').expect("the version's end");
    format!(
        "{}<date>{}<version>{}",
        &report[..start],
        version,
        &report[version_end..]
    )
}

fn check(name: &str, input: &ReportInput) {
    let actual = normalized(&render(input));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/lab/bench/report/testdata")
        .join(name);
    if std::env::var_os("BENCH_REPORT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BENCH_REPORT_BLESS=1 writes it)", path.display()));
    if actual != expected {
        let kept = std::env::temp_dir().join(format!("trace-summarizer-{name}"));
        std::fs::write(&kept, &actual).unwrap();
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .map(|i| i + 1)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()) + 1);
        panic!(
            "the report differs from {} from line {line}; it was written to {}",
            path.display(),
            kept.display()
        );
    }
}

#[test]
fn full_report_is_unchanged() {
    let settings = settings(3);
    let machine = machine();
    let mut results = vec![scale(1_000_000, 1.0, false), scale(10_000_000, 9.0, true)];
    // Capacity runs at the largest scale only.
    if let Some(c) = results[0].comparison.as_mut() {
        c.capacity = CapacityRuns::default();
    }
    let citus = citus(false);
    check(
        "report.md",
        &ReportInput {
            machine: &machine,
            server: "a throwaway local cluster started by the bench (127.0.0.1:5433)",
            throwaway: true,
            settings: &settings,
            results: &results,
            citus: Some(&citus),
            restore: None,
            chart: Some("bench-freshness.png".into()),
            chart_has_text: true,
            comparison_chart: Some("bench-comparison.png".into()),
            comparison_chart_has_text: true,
            elapsed_s: 1234.5,
            load_before: "0.10, 0.20, 0.30".into(),
            source: "commit abc1234".into(),
            load_after: "1.50, 1.20, 0.90".into(),
        },
    );
}

#[test]
fn sparse_report_is_unchanged() {
    let settings = settings(1);
    let machine = Machine {
        kernel: String::new(),
        ..machine()
    };
    let mut first = scale(1_000_000, 1.0, false);
    first.audit.truncate(1);
    first.cycles.retain(|c| c.new_spans != 10_000);
    let mut second = scale(2_000_000, 2.0, true);
    second.audit.clear();
    second.freshness.clear();
    second.comparison = Some(Comparison {
        error: Some("loading: the disk is full".into()),
        ..Default::default()
    });
    let results = vec![first, second];
    let citus = CitusRuns {
        skipped: Some("Citus not installed".into()),
        ..Default::default()
    };
    check(
        "report-sparse.md",
        &ReportInput {
            machine: &machine,
            server: "postgres://bench@db.example/postgres",
            throwaway: false,
            settings: &settings,
            results: &results,
            citus: Some(&citus),
            restore: None,
            chart: None,
            chart_has_text: false,
            comparison_chart: None,
            comparison_chart_has_text: false,
            elapsed_s: 95.0,
            load_before: String::new(),
            source: String::new(),
            load_after: String::new(),
        },
    );
}

#[test]
fn citus_only_report_is_unchanged() {
    let settings = Settings {
        parts: BenchParts::Citus,
        ..settings(3)
    };
    let machine = machine();
    let citus = citus(true);
    check(
        "report-citus.md",
        &one_section(&machine, &settings, Some(&citus), None),
    );
}

/// The input of a run of one section (`--parts citus` or `--parts restore`): no scale.
fn one_section<'a>(
    machine: &'a Machine,
    settings: &'a Settings,
    citus: Option<&'a CitusRuns>,
    restore: Option<&'a crate::lab::bench::restore::RestoreRuns>,
) -> ReportInput<'a> {
    ReportInput {
        machine,
        server: "a throwaway local cluster started by the bench (127.0.0.1:5433)",
        throwaway: true,
        settings,
        results: &[],
        citus,
        restore,
        chart: None,
        chart_has_text: false,
        comparison_chart: None,
        comparison_chart_has_text: false,
        elapsed_s: 150.0,
        load_before: "0.10, 0.20, 0.30".into(),
        source: "commit abc1234".into(),
        load_after: "1.50, 1.20, 0.90".into(),
    }
}

#[test]
fn restore_only_report_shows_the_ratio_against_the_target() {
    use crate::lab::bench::restore::{RestoreRuns, RestoreTarget};
    let settings = Settings {
        parts: BenchParts::Restore,
        ..settings(3)
    };
    let machine = machine();
    let target = |label: &str, major, first_step_s, updated| RestoreTarget {
        label: label.into(),
        major,
        restore_s: 10.0,
        first_step_s,
        rebuild_s: 4.0,
        size_restored: 300_000_000,
        size_after: 301_000_000,
        updated,
        exact: true,
        stamp_offset: 1_200_000,
    };
    let restore = RestoreRuns {
        error: None,
        spans: 1_000_000,
        load_s: 40.0,
        dump_s: 3.0,
        dump_bytes: 296_800_000,
        targets: vec![
            target("15 → 15", 15, 4.4, 0),
            target("15 → 18", 18, 8.0, 12),
        ],
        skipped: vec![],
    };
    let md = render(&one_section(&machine, &settings, None, Some(&restore)));
    assert!(md.contains("## Restores"), "{md}");
    assert!(
        md.contains("| 15 → 15 (PostgreSQL 15) | 10.00 s | 4.40 s | 4.00 s | 1.10× ✓ |"),
        "{md}"
    );
    assert!(md.contains("| 2.00× ✗ |"), "{md}");
    assert!(md.contains("| 12 ✗ |"), "{md}");
    assert!(md.contains("--parts restore"), "{md}");
}
