//! `trace-summarizer bench`: incremental maintenance against REFRESH MATERIALIZED VIEW
//! CONCURRENTLY, both on the same data in one run, at each scale: full refresh, single steps,
//! a never-analyzed table, a huge trace, the audit, ingest throughput, freshness under
//! sustained ingest, failover, reads, and an equality check. Writes a markdown report that
//! leads with the ratios and their targets, and a PNG freshness chart beside it.
//!
//! Submodules: `env` (the throwaway cluster or a given server, one database per scale),
//! `load` (synthetic spans and copies of them), `refresh` (view refreshes, rebuilds, single
//! steps), `cases` (the never-analyzed table and the huge trace), `audit_cost`,
//! `worker_thread` (the worker in-process), `freshness`, `ingest`, `failover`, `queries`,
//! `scale` (one scale step by step), `report` and `chart` (output), `stats` (medians,
//! formatting).

mod audit_cost;
mod cases;
mod chart;
mod env;
mod failover;
mod freshness;
mod ingest;
mod load;
mod queries;
mod refresh;
mod report;
mod scale;
mod stats;
mod worker_thread;

use crate::cli::BenchArgs;
use crate::error::{Error, Result};
use crate::ops::worker::WorkerSettings;
use crate::settings;
use stats::say;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
}

impl Settings {
    fn from_args(args: &BenchArgs) -> Result<Settings> {
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
        let mut scales = args.scales.clone();
        scales.dedup();
        let repeat = args.repeat as usize;
        Ok(Settings {
            scales,
            rates: args.rates.clone(),
            freshness: settings::positive_duration(
                "--freshness-duration",
                &args.freshness_duration,
            )?,
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
            ingest_rounds: (repeat * 4 + 1).max(7),
            failovers: repeat.max(5),
            query_runs: 50,
        })
    }
}

/// The chart's path: beside the report, `<stem>-freshness.png`, where a stem ending in
/// `-report` loses that ending (`bench-report.md` → `bench-freshness.png`).
pub fn chart_path(report: &Path) -> PathBuf {
    let stem = report
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("bench");
    let stem = stem
        .strip_suffix("-report")
        .filter(|s| !s.is_empty())
        .unwrap_or(stem);
    report.with_file_name(format!("{stem}-freshness.png"))
}

/// Makes sure the report can be written before hours of measuring.
fn check_output(output: &Path) -> Result<()> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| Error::io(format!("--output: cannot write in {}", dir.display()), e))?;
    Ok(())
}

fn perms_of(tmp: &tempfile::NamedTempFile) -> Result<std::fs::Permissions> {
    Ok(tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io("reading a temporary file's metadata", e))?
        .permissions())
}

/// The first three fields of /proc/loadavg, or "" where there is none.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The source tree the bench ran from, best effort: `git` commit and whether `src/` or `sql/`
/// had uncommitted changes; "" outside a git checkout.
fn source_tree() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return String::new();
    };
    match git(&["status", "--porcelain", "--", "src", "sql"]) {
        Some(changes) if !changes.is_empty() => {
            let files: Vec<&str> = changes
                .lines()
                .filter_map(|l| l.get(3..))
                .filter(|f| !f.starts_with("src/lab/"))
                .collect();
            if files.is_empty() {
                format!("commit {commit} (with uncommitted changes to the bench only)")
            } else {
                format!(
                    "commit {commit} with uncommitted changes to {}",
                    files.join(", ")
                )
            }
        }
        _ => format!("commit {commit}"),
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    std::io::Write::write_all(&mut tmp, contents)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    // NamedTempFile is private (0600); a report is an ordinary file.
    let mut perms = perms_of(&tmp)?;
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file()
        .set_permissions(perms)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e.error))?;
    Ok(())
}

pub async fn run(url: Option<&str>, args: BenchArgs) -> Result<()> {
    let settings = Settings::from_args(&args)?;
    check_output(&settings.output)?;
    stats::start_clock();
    let started = Instant::now();
    let load_before = load_average();
    let source = source_tree();
    let env = env::Env::start(url).await?;
    let machine = env::describe(&env).await?;
    say(format!(
        "{}; PostgreSQL: {}",
        machine.cpu, machine.pg_version
    ));
    let mut results = Vec::new();
    for &n in &settings.scales {
        match scale::run(&env, &settings, n).await {
            Ok(r) => results.push(r),
            Err(e) => {
                env.keep_server_log();
                return Err(e);
            }
        }
    }

    let chart_file = chart_path(&settings.output);
    let (chart, chart_has_text) = match chart::draw(&chart_file, &results) {
        Ok(text) => (
            chart_file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            text,
        ),
        Err(e) => {
            say(format!("could not draw the chart: {e}"));
            (None, false)
        }
    };
    let markdown = report::render(&report::ReportInput {
        machine: &machine,
        server: &env.server,
        throwaway: env.is_throwaway(),
        settings: &settings,
        results: &results,
        chart,
        chart_has_text,
        elapsed_s: started.elapsed().as_secs_f64(),
        load_before,
        source,
        load_after: load_average(),
    });
    write_atomically(&settings.output, markdown.as_bytes())?;
    env.finish();
    say(format!(
        "wrote {} and {}",
        settings.output.display(),
        chart_file.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_sits_beside_the_report() {
        assert_eq!(
            chart_path(Path::new("docs/bench-report.md")),
            PathBuf::from("docs/bench-freshness.png")
        );
        assert_eq!(
            chart_path(Path::new("/tmp/x/results.md")),
            PathBuf::from("/tmp/x/results-freshness.png")
        );
        assert_eq!(
            chart_path(Path::new("bench-report.md")),
            PathBuf::from("bench-freshness.png")
        );
    }
}
