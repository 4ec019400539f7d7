//! `trace-summarizer bench`: at each scale, first the comparison of three systems that keep the
//! summaries (the view refreshed CONCURRENTLY every 2 minutes, a model of upstream's job, and
//! the product as a separate process: cost per hour, freshness, traces wrong, idle, capacity),
//! then incremental maintenance against REFRESH MATERIALIZED VIEW CONCURRENTLY, both on the
//! same data in one run: full refresh, single steps, a never-analyzed table, a huge trace, the
//! audit, ingest throughput, freshness under sustained ingest, failover, reads, and an equality
//! check. After the scales, the Citus section on clusters of its own (skipped when Citus is not
//! installed). Writes a markdown report that leads with the comparison and then the ratios and their
//! targets, and two PNG charts beside it (the comparison, freshness).
//!
//! # Module map
//!
//! This file: `run` (the whole bench: the environment, each scale, the chart, the report) and
//! writing the output. Under `bench/`, by layer:
//!
//! - Leaves, which use nothing else of the bench:
//!   - `config.rs`: `Settings`, the CLI's `BenchArgs` validated, and each measure's sizes;
//!   - `stats.rs`: medians, percentiles, formatting, progress lines;
//!   - `spans.rs`: new spans of new traces stamped now (`fresh_spans`);
//!   - `procfs.rs`: CPU time of a process and of a whole PostgreSQL cluster from /proc.
//! - Tools the measures build on:
//!   - `env.rs`: the throwaway cluster or a given server, one database per scale, the machine;
//!   - `load.rs`: the initial load, the traces' shape, copies of the spans (the plain table);
//!   - `worker_thread.rs`: the worker in-process, and waiting until it has caught up;
//!   - `product_process.rs`: the product as a separate process (`trace-summarizer run`);
//!   - `meter.rs`: the database's CPU, WAL and `pg_stat_statements` over an interval;
//!   - `stream.rs`: steady ingest with late spans, flooding writers, the freshness poller;
//!   - `citus_cluster.rs`: the Citus section's coordinator and worker clusters, its load;
//!   - `citus_steps.rs`: a step on every Citus node at once, as the worker runs them.
//! - Measures that other measures build on:
//!   - `refresh.rs`: the full refresh (the view, REFRESH [CONCURRENTLY], install, `rebuild`);
//!   - `steps.rs`: single incremental steps (`cycle_once`, `absorb`) and steps absorbing new
//!     traces of several sizes;
//!   - `job.rs`: the model of upstream's job (its table, backfill, run, and the bench's sync).
//! - Measures, one file each, each with a `measure` function returning its runs:
//!   - `never_analyzed.rs`: the never-analyzed copy and a step on it against the analyzed table;
//!   - `big_trace.rs`: spans into a 100k-span trace against spans of a new trace;
//!   - `audit_cost.rs`: the continuous audit's slices;
//!   - `ingest.rs`: ingest throughput with the product against the plain table;
//!   - `freshness.rs`: freshness under sustained ingest (and its target, for the chart);
//!   - `failover.rs`: SIGKILL of the leader until a standby leads and absorbs;
//!   - `queries.rs`: the reads on view and table;
//!   - `equality.rs`: table = view at the end;
//!   - `compare.rs`: the comparison's setup and cells (MV, Job, the product per rate);
//!   - `idle.rs`: the product idle; `capacity.rs`: the writers' ceiling with and without it;
//!   - `citus.rs`: the Citus section (freshness, the 10k-span step against REFRESH
//!     CONCURRENTLY, equality; with 1 and 2 worker nodes), run once after the scales.
//! - `scale.rs`: one scale, running every measure in order into a `ScaleResult` (and the
//!   comparison, in a database of its own, into its `Comparison`).
//! - Output: `chart.rs` (the comparison and freshness PNGs) and `report/`, the markdown:
//!   - `report/mod.rs`: `render`, which calls the parts below in the report's order;
//!   - `report/input.rs`: `ReportInput`, what the report is rendered from;
//!   - `report/headline.rs`: the Targets and Other figures tables (`Check`, `Figure`);
//!   - `report/machine.rs`: the opening and the Machine and settings section;
//!   - `report/comparison.rs`: the comparison, first after the opening (its chart, targets,
//!     cost table, capacity, keep-up estimate, details, method and notes);
//!   - `report/data.rs`: the Data shape section and each scale's opening paragraph;
//!   - one file per measure, named as the measure's own (`report/full_refresh.rs` renders
//!     `refresh.rs`'s runs, `report/audit.rs` `audit_cost.rs`'s; the others share the name):
//!     its Targets and Other figures rows, its section of each scale, its method, its notes;
//!   - `report/snapshot.rs`: the test that renders whole reports against `report/testdata/`.
//!
//! Dependencies point one way, up this list: a module uses modules of the groups above its own
//! and none below. Within a group, only `load` and `citus_cluster` use another (`env`): the base measures do not
//! use each other, nor do the measures of the last group (code they share goes up into a leaf,
//! a tool or a base measure). `chart.rs` and `report/` use `ScaleResult` and the measures'
//! result types and constants, and only this file uses them. No module under `bench/` uses
//! this file, so no two bench modules import each other.
//!
//! # Adding a measure
//!
//! 1. `bench/<name>.rs`: a `//!` doc of what it measures and how, a `<Name>Runs` result type
//!    and `pub async fn measure(...) -> Result<<Name>Runs>`; its sizes go in `config.rs`.
//! 2. `scale.rs`: a field of `ScaleResult` for it, and a call of `measure` where it belongs in
//!    the sequence.
//! 3. `report/<name>.rs`: what it adds to the report (`checks`, `figures`, `section`,
//!    `method`, `notes`: see `report/mod.rs`), and one call of each in `report/mod.rs`.
//! 4. The report's snapshot test (`report/snapshot.rs`): give the synthetic results a value for
//!    the new field and regenerate `report/testdata/` with `BENCH_REPORT_BLESS=1`.

mod audit_cost;
mod big_trace;
mod capacity;
mod chart;
mod citus;
mod citus_cluster;
mod citus_steps;
mod compare;
mod config;
mod env;
mod equality;
mod failover;
mod freshness;
mod idle;
mod ingest;
mod job;
mod load;
mod meter;
mod never_analyzed;
mod procfs;
mod product_process;
mod queries;
mod refresh;
mod report;
mod restore;
mod scale;
mod spans;
mod stats;
mod steps;
mod stream;
mod worker_thread;

use crate::cli::{BenchArgs, BenchParts};
use crate::error::{Error, Result};
use config::Settings;
use stats::say;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// The comparison chart's path: beside the report, `<stem>-comparison.png` (the stem as for
/// `chart_path`).
pub fn comparison_chart_path(report: &Path) -> PathBuf {
    let freshness = chart_path(report);
    let name = freshness
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("bench-freshness.png")
        .replace("-freshness.png", "-comparison.png");
    report.with_file_name(name)
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
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
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
    let scales: &[u64] = if matches!(settings.parts, BenchParts::Citus | BenchParts::Restore) {
        &[]
    } else {
        &settings.scales
    };
    for &n in scales {
        match scale::run(&env, &settings, n).await {
            Ok(r) => results.push(r),
            Err(e) => {
                env.keep_server_log();
                return Err(e);
            }
        }
    }
    let citus = match settings.parts {
        BenchParts::All | BenchParts::Citus => Some(citus::measure(&settings).await),
        BenchParts::Comparison | BenchParts::Classic | BenchParts::Restore => None,
    };
    let restore = match settings.parts {
        BenchParts::All | BenchParts::Restore => Some(restore::measure(&settings).await),
        BenchParts::Comparison | BenchParts::Classic | BenchParts::Citus => None,
    };

    let chart_file = chart_path(&settings.output);
    let drawn = if results.is_empty() {
        Err("no scale ran".to_string())
    } else {
        chart::draw(&chart_file, &results).map_err(|e| e.to_string())
    };
    let (chart, chart_has_text) = match drawn {
        Ok(text) => (
            chart_file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            text,
        ),
        Err(e) => {
            if !results.is_empty() {
                say(format!("could not draw the chart: {e}"));
            }
            (None, false)
        }
    };
    let comparison_file = comparison_chart_path(&settings.output);
    let (comparison_chart, comparison_chart_has_text) = if chart::has_comparison(&results) {
        match chart::draw_comparison(&comparison_file, &results) {
            Ok(text) => (
                comparison_file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
                text,
            ),
            Err(e) => {
                say(format!("could not draw the comparison chart: {e}"));
                (None, false)
            }
        }
    } else {
        (None, false)
    };
    let markdown = report::render(&report::ReportInput {
        machine: &machine,
        server: &env.server,
        throwaway: env.is_throwaway(),
        settings: &settings,
        results: &results,
        citus: citus.as_ref(),
        restore: restore.as_ref(),
        chart: chart.clone(),
        chart_has_text,
        comparison_chart: comparison_chart.clone(),
        comparison_chart_has_text,
        elapsed_s: started.elapsed().as_secs_f64(),
        load_before,
        source,
        load_after: load_average(),
    });
    write_atomically(&settings.output, markdown.as_bytes())?;
    env.finish();
    let mut written = vec![settings.output.display().to_string()];
    if chart.is_some() {
        written.push(chart_file.display().to_string());
    }
    if comparison_chart.is_some() {
        written.push(comparison_file.display().to_string());
    }
    say(format!("wrote {}", written.join(", ")));
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
        assert_eq!(
            comparison_chart_path(Path::new("docs/bench-report.md")),
            PathBuf::from("docs/bench-comparison.png")
        );
    }
}
