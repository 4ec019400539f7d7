//! The settings of one bench run: the CLI's `BenchArgs` validated, and the fixed sizes of each
//! measure (steps, pairs, slices, rounds, runs). A leaf: it uses nothing else of the bench.

use crate::cli::{BenchArgs, BenchParts};
use crate::error::{Error, Result};
use crate::ops::worker::WorkerSettings;
use crate::settings;
use std::path::PathBuf;
use std::time::Duration;

/// Validated settings of one bench run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scales: Vec<u64>,
    pub rates: Vec<u32>,
    pub freshness: Duration,
    pub repeat: usize,
    pub output: PathBuf,
    pub window: crate::definition::Window,
    /// Mean spans per trace of the generated data.
    pub spans_per_trace: f64,
    /// The worker's settings wherever it runs: the product's defaults.
    pub worker: WorkerSettings,
    pub cycle_sizes: Vec<usize>,
    /// Repetitions of the cheap interleaved pairs (never-analyzed, big trace).
    pub pairs: usize,
    /// New spans of the never-analyzed comparison.
    pub never_analyzed_spans: usize,
    /// The big trace, and the new spans added to it.
    pub big_trace_spans: usize,
    pub big_trace_new: usize,
    /// Consecutive audit slices timed per period.
    pub audit_slices: usize,
    pub ingest_spans: usize,
    pub ingest_batch: usize,
    pub ingest_rounds: usize,
    pub failovers: usize,
    pub query_runs: usize,
    /// Which parts run.
    pub parts: BenchParts,
    /// The comparison of the three systems (`compare.rs`, `idle.rs`, `capacity.rs`).
    pub compare: CompareSettings,
    /// The Citus section (`citus.rs`).
    pub citus: CitusSettings,
}

/// The Citus section's sizes: its history, the step, the ingest rates and their duration.
#[derive(Debug, Clone)]
pub struct CitusSettings {
    /// Spans loaded before install: the smallest of `--scales`, at most 1M.
    pub spans: u64,
    /// New spans each timed step absorbs.
    pub step_spans: usize,
    /// Timed steps per node count (the report shows the median).
    pub steps: usize,
    /// REFRESH MATERIALIZED VIEW CONCURRENTLY runs per node count.
    pub refreshes: usize,
    /// Ingest rates of the freshness runs, in spans per second.
    pub rates: Vec<u32>,
    /// How long each freshness run ingests (`--freshness-duration`).
    pub duration: Duration,
}

impl CitusSettings {
    pub fn new(scales: &[u64], repeat: usize, duration: Duration) -> CitusSettings {
        CitusSettings {
            spans: scales
                .iter()
                .copied()
                .min()
                .unwrap_or(1_000_000)
                .min(1_000_000),
            step_spans: 10_000,
            steps: repeat.max(5),
            refreshes: repeat.clamp(1, 3),
            rates: vec![1_000, 5_000],
            duration,
        }
    }
}

/// The comparison's settings: one definition for all three systems, the rates, and how long
/// each of its measurements lasts.
#[derive(Debug, Clone)]
pub struct CompareSettings {
    pub definition: crate::definition::Definition,
    pub rates: Vec<u32>,
    /// How long each system ingests in a cell (the product), or at least (the view and the job
    /// ingest until their run one period after the start has finished).
    pub cell: Duration,
    /// The view's and the job's schedule.
    pub period: Duration,
    /// Ingest with no maintenance, per rate.
    pub baseline: Duration,
    /// The product idle.
    pub idle: Duration,
    /// Each capacity run.
    pub capacity_run: Duration,
    pub capacity_writers: Vec<usize>,
    /// The hard limit of one cell, preparation and check included.
    pub cell_limit: Duration,
}

impl CompareSettings {
    /// The comparison's settings for a cell of `cell` and a schedule of `period`.
    pub fn new(rates: Vec<u32>, cell: Duration, period: Duration) -> CompareSettings {
        let longest = cell.max(period);
        CompareSettings {
            definition: crate::definition::Definition {
                window: crate::definition::Window::parse("--window", "3d").expect("a valid window"),
                error_rule: crate::definition::ErrorRule::Error,
            },
            rates,
            cell,
            period,
            baseline: (cell / 3).min(Duration::from_secs(30)),
            idle: (cell / 2).min(Duration::from_secs(45)),
            capacity_run: (cell / 6).min(Duration::from_secs(20)),
            capacity_writers: vec![2, 4],
            cell_limit: longest * 2 + Duration::from_secs(300),
        }
    }
}

impl Settings {
    pub fn from_args(args: &BenchArgs) -> Result<Settings> {
        if args.scales.is_empty() || args.scales.iter().any(|&n| n < 1_000) {
            return Err(Error::Config(
                "invalid --scales: give span counts of at least 1000, e.g. 1000000,10000000".into(),
            ));
        }
        if args.rates.is_empty() || args.rates.contains(&0) {
            return Err(Error::Config(
                "invalid --rates: give spans per second greater than zero, e.g. 1000,2500".into(),
            ));
        }
        if args.repeat == 0 {
            return Err(Error::Config("invalid --repeat: must be at least 1".into()));
        }
        if !(1.0..=1000.0).contains(&args.spans_per_trace) {
            return Err(Error::Config(
                "invalid --spans-per-trace: give a mean between 1 and 1000, e.g. 12".into(),
            ));
        }
        if args.compare_rates.is_empty() || args.compare_rates.contains(&0) {
            return Err(Error::Config(
                "invalid --compare-rates: give spans per second greater than zero, e.g. 1000,10000"
                    .into(),
            ));
        }
        let cell = settings::positive_duration("--compare-cell", &args.compare_cell)?;
        let period = settings::positive_duration("--compare-period", &args.compare_period)?;
        let mut scales = args.scales.clone();
        scales.dedup();
        let repeat = args.repeat as usize;
        let freshness =
            settings::positive_duration("--freshness-duration", &args.freshness_duration)?;
        Ok(Settings {
            scales: scales.clone(),
            rates: args.rates.clone(),
            freshness,
            repeat,
            output: args.output.clone(),
            window: crate::definition::Window::parse("--window", "7d")?,
            spans_per_trace: args.spans_per_trace,
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
            parts: args.parts,
            compare: CompareSettings::new(args.compare_rates.clone(), cell, period),
            citus: CitusSettings::new(&scales, repeat, freshness),
        })
    }
}
