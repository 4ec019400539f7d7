//! The markdown report: the targets first (each ratio, its target, met or not, per scale), the
//! other figures, the data's shape, the machine, then per scale the medians and every run
//! behind them, the freshness chart, how each number was measured, and notes.

use super::audit_cost::period_text;
use super::env::Machine;
use super::failover::INGEST_RATE as FAILOVER_INGEST_RATE;
use super::freshness::{FreshnessRun, DRAIN, POLL_EVERY};
use super::scale::ScaleResult;
use super::stats::{bytes, count, median, ms, pct, runs, secs, share, times};
use super::Settings;
use std::fmt::Write;

pub struct ReportInput<'a> {
    pub machine: &'a Machine,
    pub server: &'a str,
    pub throwaway: bool,
    pub settings: &'a Settings,
    pub results: &'a [ScaleResult],
    /// The chart's file name (beside the report), when it was written.
    pub chart: Option<String>,
    pub chart_has_text: bool,
    pub elapsed_s: f64,
    /// /proc/loadavg's first three fields before and after the run.
    pub load_before: String,
    /// The git state of the source tree the bench ran from ("" when unknown).
    pub source: String,
    pub load_after: String,
}

/// `rebuild` ÷ REFRESH CONCURRENTLY.
const REBUILD_TARGET: f64 = 0.5;
/// The 10k-span step ÷ REFRESH CONCURRENTLY, at 10M spans.
const STEP_TARGET: f64 = 0.01;
const STEP_SPANS: usize = 10_000;
const TARGET_SCALE: u64 = 10_000_000;
const BASE_SCALE: u64 = 1_000_000;
/// The 10k-span step at 10M ÷ at 1M.
const STEP_GROWTH_TARGET: f64 = 1.3;
/// Never analyzed ÷ analyzed.
const NEVER_ANALYZED_TARGET: f64 = 3.0;
/// 100 spans into a 100k-span trace ÷ 100 spans of a new trace.
const BIG_TRACE_TARGET: f64 = 1.5;
/// Freshness p99 at this rate, with the worker's defaults.
pub const FRESHNESS_RATE: u32 = 10_000;
pub const FRESHNESS_TARGET_MS: f64 = 250.0;
/// Ingest throughput with the product ÷ without.
const INGEST_TARGET: f64 = 0.95;

fn mark(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}

fn fresh_ms(v: f64) -> String {
    if v.is_infinite() {
        format!("> {} s (unseen)", DRAIN.as_secs())
    } else {
        ms(v)
    }
}

fn pct1(r: f64) -> String {
    if r.is_finite() {
        format!("{:.1}%", r * 100.0)
    } else {
        "n/a".into()
    }
}

/// One row of the targets table: a value per scale, with whether the target was met where it
/// applies.
struct Check {
    measure: String,
    target: String,
    cells: Vec<(String, Option<bool>)>,
}

impl Check {
    fn cell(value: String, met: Option<bool>) -> (String, Option<bool>) {
        match met {
            Some(m) => (format!("{value} {}", mark(m)), Some(m)),
            None => (value, None),
        }
    }
}

fn step_ratio(r: &ScaleResult, n: usize) -> Option<f64> {
    r.step_s(n).map(|s| s / r.refresh_concurrently_s())
}

fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check {
        measure: "full refresh: `rebuild` (built beside, swapped in) ÷ REFRESH CONCURRENTLY as pg_cron runs it (server's default memory)".into(),
        target: format!("≤ {}", times(REBUILD_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let x = r.rebuild_s() / r.refresh_concurrently_s();
                Check::cell(times(x), x.is_finite().then_some(x <= REBUILD_TARGET))
            })
            .collect(),
    });
    out.push(Check {
        measure: "the same, REFRESH CONCURRENTLY given the memory `rebuild` gives itself".into(),
        target: format!("≤ {}", times(REBUILD_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let x = r.rebuild_s() / r.refresh_concurrently_mem_s();
                Check::cell(times(x), x.is_finite().then_some(x <= REBUILD_TARGET))
            })
            .collect(),
    });
    out.push(Check {
        measure: format!(
            "one step absorbing {} new spans ÷ REFRESH CONCURRENTLY",
            count(STEP_SPANS as u64)
        ),
        target: format!("≤ {} at {} spans", pct(STEP_TARGET), count(TARGET_SCALE)),
        cells: rs
            .iter()
            .map(|r| match step_ratio(r, STEP_SPANS) {
                Some(x) => Check::cell(
                    pct(x),
                    (r.spans >= TARGET_SCALE).then_some(x <= STEP_TARGET),
                ),
                None => ("not run".into(), None),
            })
            .collect(),
    });
    let base = rs.iter().min_by_key(|r| r.spans);
    out.push(Check {
        measure: format!(
            "the {}-span step's time ÷ its time at the smallest scale",
            count(STEP_SPANS as u64)
        ),
        target: format!(
            "≤ {} ({} ÷ {})",
            times(STEP_GROWTH_TARGET),
            count(TARGET_SCALE),
            count(BASE_SCALE)
        ),
        cells: rs
            .iter()
            .map(|r| match (base, r.step_s(STEP_SPANS)) {
                (Some(b), Some(s)) if b.spans < r.spans => match b.step_s(STEP_SPANS) {
                    Some(bs) => {
                        let x = s / bs;
                        let applies = r.spans == TARGET_SCALE && b.spans == BASE_SCALE;
                        Check::cell(
                            format!("{} (÷ {})", times(x), count(b.spans)),
                            applies.then_some(x <= STEP_GROWTH_TARGET),
                        )
                    }
                    None => ("n/a".into(), None),
                },
                _ => ("—".into(), None),
            })
            .collect(),
    });
    out.push(Check {
        measure: format!(
            "the {}-span step on a never-analyzed otel_traces ÷ on the analyzed one",
            count(STEP_SPANS as u64)
        ),
        target: format!("≤ {}", times(NEVER_ANALYZED_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let n = &r.never_analyzed;
                let x = median(&n.never_analyzed) / median(&n.analyzed);
                if !n.before.never_analyzed() || !n.after.never_analyzed() {
                    (
                        format!(
                            "{} (the table had statistics: not the case asked for)",
                            times(x)
                        ),
                        Some(false),
                    )
                } else {
                    Check::cell(
                        times(x),
                        x.is_finite().then_some(x <= NEVER_ANALYZED_TARGET),
                    )
                }
            })
            .collect(),
    });
    out.push(Check {
        measure: "a step absorbing 100 new spans into a 100k-span trace ÷ 100 spans of a new trace"
            .into(),
        target: format!("≤ {}", times(BIG_TRACE_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let b = &r.big_trace;
                let x = median(&b.into_big) / median(&b.new_trace);
                Check::cell(times(x), x.is_finite().then_some(x <= BIG_TRACE_TARGET))
            })
            .collect(),
    });
    out.push(Check {
        measure: format!(
            "freshness p99 at {} spans/s, the worker's default settings",
            count(FRESHNESS_RATE as u64)
        ),
        target: format!("≤ {FRESHNESS_TARGET_MS:.0} ms"),
        cells: rs
            .iter()
            .map(|r| match r.freshness_at(FRESHNESS_RATE) {
                Some(f) => {
                    let p99 = f.p99();
                    let kept_up = if f.kept_up() {
                        ""
                    } else {
                        " (generator fell behind)"
                    };
                    Check::cell(
                        format!("{}{kept_up}", fresh_ms(p99)),
                        Some(p99 <= FRESHNESS_TARGET_MS && f.kept_up()),
                    )
                }
                None => ("not run".into(), None),
            })
            .collect(),
    });
    out.push(Check {
        measure: "ingest throughput into otel_traces with the product installed (stamp column, its index, triggers) ÷ the plain table; no worker running in either".into(),
        target: format!("≥ {}", pct(INGEST_TARGET)),
        cells: rs
            .iter()
            .map(|r| {
                let x = r.ingest.idle_ratio();
                Check::cell(pct1(x), x.is_finite().then_some(x >= INGEST_TARGET))
            })
            .collect(),
    });
    out.push(Check {
        measure: "table = view at the end: rows that differ".into(),
        target: "0".into(),
        cells: rs
            .iter()
            .map(|r| {
                Check::cell(
                    format!("{} of {}", r.differing, count(r.compared.max(0) as u64)),
                    Some(r.differing == 0 && r.compared > 0),
                )
            })
            .collect(),
    });
    out
}

/// Renders the whole report.
pub fn render(input: &ReportInput) -> String {
    let mut md = String::new();
    let s = input.settings;
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(md, "# trace-summarizer benchmark: incremental maintenance vs REFRESH MATERIALIZED VIEW CONCURRENTLY\n");
    let _ = writeln!(
        md,
        "Generated {now} by `trace-summarizer bench` {} in {}. Command:\n\n    {}\n",
        env!("CARGO_PKG_VERSION"),
        if input.elapsed_s < 120.0 {
            format!("{:.0} s", input.elapsed_s)
        } else {
            format!("{:.0} min", input.elapsed_s / 60.0)
        },
        command_line(s)
    );
    let _ = writeln!(
        md,
        "Both sides ran in one run, on the same data, in the same database: the seed's materialized view \
         (`bench_mv`, same definition and indexes) and the table `otel_trace_summaries` that `trace-summarizer` \
         maintains. **Absolute times are noisy**: on a shared {}-core machine PostgreSQL, the bench's load \
         generator and the worker compete for the same cores, and other work may run beside them. Compare ratios: \
         each was measured interleaved (the two sides alternating, repetition by repetition) unless stated.\n",
        input.machine.cores
    );
    targets(&mut md, input);
    other_figures(&mut md, input);
    shape_section(&mut md, input);
    machine_section(&mut md, input);
    for r in input.results {
        scale_section(&mut md, input, r);
    }
    chart_section(&mut md, input);
    method(&mut md, input);
    notes(&mut md, input);
    md
}

fn command_line(s: &Settings) -> String {
    let join = |v: Vec<String>| v.join(",");
    format!(
        "trace-summarizer bench --scales {} --rates {} --freshness-duration {} --repeat {} --spans-per-trace {} --output {}",
        join(s.scales.iter().map(|n| n.to_string()).collect()),
        join(s.rates.iter().map(|n| n.to_string()).collect()),
        humantime::format_duration(s.freshness),
        s.repeat,
        s.spans_per_trace,
        s.output.display()
    )
}

/// A table header: the label columns, then one column per scale.
fn scale_header(rs: &[ScaleResult], labels: &[&str]) -> String {
    let mut head = format!("| {} |", labels.join(" | "));
    let mut sep = "|---".repeat(labels.len()) + "|";
    for r in rs {
        let _ = write!(head, " {} spans |", count(r.spans));
        sep += "---:|";
    }
    format!("{head}\n{sep}")
}

fn targets(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let checks = checks(rs);
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "{}", scale_header(rs, &["measure", "target"]));
    let (mut met, mut missed) = (Vec::new(), Vec::new());
    for c in &checks {
        let mut line = format!("| {} | {} |", c.measure, c.target);
        for (i, (value, m)) in c.cells.iter().enumerate() {
            let _ = write!(line, " {value} |");
            match m {
                Some(true) => met.push(()),
                Some(false) => {
                    missed.push(format!("{} at {} spans", c.measure, count(rs[i].spans)))
                }
                None => {}
            }
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\n✓ met, ✗ not met; a value without a mark is shown for reference (its target applies at another scale). \
         **{} of {} checks met.**",
        met.len(),
        met.len() + missed.len()
    );
    if !missed.is_empty() {
        let _ = writeln!(md, "\nNot met:\n");
        for m in &missed {
            let _ = writeln!(md, "- {m}");
        }
    }
    let _ = writeln!(md);
}

fn other_figures(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let s = input.settings;
    let _ = writeln!(md, "## Other figures\n");
    let _ = writeln!(md, "{}", scale_header(rs, &["measure", "how"]));
    let row = |md: &mut String, label: &str, how: &str, f: &dyn Fn(&ScaleResult) -> String| {
        let mut line = format!("| {label} | {how} |");
        for r in rs {
            let _ = write!(line, " {} |", f(r));
        }
        let _ = writeln!(md, "{line}");
    };
    row(
        md,
        "REFRESH MATERIALIZED VIEW CONCURRENTLY, as pg_cron runs it (the ratios' denominator)",
        "median",
        &|r| secs(r.refresh_concurrently_s()),
    );
    row(
        md,
        "REFRESH MATERIALIZED VIEW CONCURRENTLY with `rebuild`'s memory",
        "median",
        &|r| secs(r.refresh_concurrently_mem_s()),
    );
    row(
        md,
        "`rebuild` ÷ plain REFRESH (which blocks readers)",
        "medians",
        &|r| times(r.rebuild_s() / median(&r.refresh_plain)),
    );
    for &n in &s.cycle_sizes {
        row(
            md,
            &format!("one step absorbing {} new spans", count(n as u64)),
            "median; ÷ REFRESH CONCURRENTLY",
            &|r| match r.step_s(n) {
                Some(x) => format!("{} ({})", secs(x), pct(x / r.refresh_concurrently_s())),
                None => "not run".into(),
            },
        );
    }
    row(
        md,
        "audit: one slice at the default period (24h: every 10 s)",
        "median time; traces checked",
        &|r| match r.audit.first() {
            Some(a) => format!(
                "{}; {:.0} traces",
                secs(median(&a.seconds)),
                a.checked_median()
            ),
            None => "not run".into(),
        },
    );
    row(
        md,
        "audit: share of one core at the default period",
        "slice time ÷ 10 s",
        &|r| match r.audit.first() {
            Some(a) => share(a.core_share()),
            None => "not run".into(),
        },
    );
    row(
        md,
        "audit: time per audited trace",
        "slice time ÷ traces at 24h; at 1h (24× larger slices); each further trace",
        &|r| match (r.audit.first(), r.audit.get(1)) {
            (Some(a), Some(b)) => format!(
                "{}; {}; {}",
                secs(a.per_trace()),
                secs(b.per_trace()),
                secs(b.marginal_per_trace(a))
            ),
            (Some(a), None) => secs(a.per_trace()),
            _ => "not run".into(),
        },
    );
    row(
        md,
        "ingest throughput with the product installed and its worker running ÷ the plain table, no worker",
        "medians of the same rounds",
        &|r| pct1(r.ingest.ratio()),
    );
    row(
        md,
        "failover: SIGKILL of the leader → a standby leads",
        "median (max)",
        &|r| {
            let f = &r.failover.to_leader;
            format!(
                "{} ({})",
                secs(median(f)),
                secs(f.iter().copied().fold(f64::NAN, f64::max))
            )
        },
    );
    row(
        md,
        "failover: SIGKILL → a span committed at the kill is summarized",
        "median (max)",
        &|r| {
            let f = &r.failover.to_absorbed;
            format!(
                "{} ({})",
                secs(median(f)),
                secs(f.iter().copied().fold(f64::NAN, f64::max))
            )
        },
    );
    for &rate in &s.rates {
        row(
            md,
            &format!("freshness at {} spans/s", count(rate as u64)),
            "p50 / p99",
            &|r| match r.freshness_at(rate) {
                Some(f) => format!("{} / {}", fresh_ms(f.p50()), fresh_ms(f.p99())),
                None => "not run".into(),
            },
        );
    }
    let names: Vec<&'static str> = rs
        .first()
        .map(|r| r.queries.iter().map(|q| q.name).collect())
        .unwrap_or_default();
    for name in names {
        row(md, &format!("read: {name}"), "table ÷ view", &|r| {
            r.queries
                .iter()
                .find(|q| q.name == name)
                .map(|q| times(q.table_s / q.view_s))
                .unwrap_or_else(|| "n/a".into())
        });
    }
    let _ = writeln!(md);
}

fn shape_section(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let _ = writeln!(md, "## Data shape\n");
    let _ = writeln!(
        md,
        "Spans per trace asked for: {} on average (`--spans-per-trace`; upstream's 10.6M spans held 875k traces, about 12 per trace). \
         What the generator actually produced, counted in the view right after loading:\n",
        input.settings.spans_per_trace
    );
    let _ = writeln!(md, "{}", scale_header(rs, &["spans per trace"]));
    let row = |md: &mut String, label: &str, f: &dyn Fn(&ScaleResult) -> String| {
        let mut line = format!("| {label} |");
        for r in rs {
            let _ = write!(line, " {} |", f(r));
        }
        let _ = writeln!(md, "{line}");
    };
    row(md, "spans loaded", &|r| r.loaded.spans.to_string());
    row(md, "traces", &|r| r.traces_loaded.to_string());
    row(md, "mean", &|r| format!("{:.2}", r.shape.mean));
    row(md, "median", &|r| r.shape.p50.to_string());
    row(md, "90th percentile", &|r| r.shape.p90.to_string());
    row(md, "99th percentile", &|r| r.shape.p99.to_string());
    row(md, "largest", &|r| r.shape.max.to_string());
    let _ = writeln!(md);
}

fn machine_section(md: &mut String, input: &ReportInput) {
    let m = input.machine;
    let s = input.settings;
    let w = &s.worker;
    let _ = writeln!(md, "## Machine and settings\n");
    let _ = writeln!(
        md,
        "- CPU: {} ({} cores available to the bench, `nproc`)",
        m.cpu, m.cores
    );
    let _ = writeln!(md, "- Memory: {}", m.memory);
    if !m.kernel.is_empty() {
        let _ = writeln!(md, "- OS: {}", m.kernel);
    }
    let _ = writeln!(md, "- PostgreSQL: {}", m.pg_version);
    if !input.source.is_empty() {
        let _ = writeln!(
            md,
            "- trace-summarizer: the source tree at {} (built by `cargo run --release`)",
            input.source
        );
    }
    let _ = writeln!(md, "- Server: {}", input.server);
    if input.throwaway {
        let _ = writeln!(
            md,
            "- Durable settings (fsync, synchronous_commit and full_page_writes on) so that write costs are honest; \
             `max_wal_size` raised to 4GB for the bulk load. PostgreSQL ran on the same machine as the bench."
        );
    } else {
        let _ = writeln!(md, "- The machine lines above describe the machine that ran the bench, not necessarily the server.");
    }
    let _ = writeln!(
        md,
        "- REFRESH … CONCURRENTLY ran twice per repetition: with the server's default memory, as the seed's pg_cron job runs \
         it (this is the denominator of every ratio to REFRESH CONCURRENTLY), and with `{}`, what `rebuild` sets for itself. \
         Plain REFRESH ran with the latter.",
        super::refresh::SESSION_MEMORY
    );
    let _ = writeln!(
        md,
        "- The worker, wherever it ran, had the product's default settings (`WorkerSettings::default()`): interval {} ms \
         (its pause when idle; with work left it steps again at once), at most {} new spans and {} recomputed traces per step, \
         audit period {}, statement timeout {}.",
        w.interval.as_millis(),
        count(w.limits.max_spans.max(0) as u64),
        count(w.limits.max_traces.max(0) as u64),
        w.audit_period
            .map(period_text)
            .unwrap_or_else(|| "off".into()),
        humantime::format_duration(w.statement_timeout)
    );
    if !input.load_before.is_empty() {
        let _ = writeln!(
            md,
            "- Load average (1, 5, 15 min) before the run: {}; after: {}. Anything above 0 before the run is other work on the machine.",
            input.load_before, input.load_after
        );
    }
    let _ = writeln!(
        md,
        "- Window: 7 days. Medians of {} for the full refreshes and steps, of {} pairs for the never-analyzed and big-trace \
         cases, of {} rounds for ingest, of {} kills for failover.\n",
        if s.repeat == 1 { "1 run (no median)".to_string() } else { format!("{} runs", s.repeat) },
        s.pairs, s.ingest_rounds, s.failovers
    );
    let _ = writeln!(md, "| server setting | value |\n|---|---|");
    for (k, v) in &m.settings {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md);
}

fn scale_section(md: &mut String, input: &ReportInput, r: &ScaleResult) {
    let s = input.settings;
    let refresh_c = r.refresh_concurrently_s();
    let _ = writeln!(md, "## {} spans\n", count(r.spans));
    let _ = writeln!(
        md,
        "{} spans in {} traces loaded ({:.1} spans per trace; binary COPY {}, secondary indexes {}, VACUUM ANALYZE {}). \
         Copies: a plain table for the ingest comparison, made just before it of every span otel_traces then held, so that both \
         were of one size ({}), and the never-analyzed table, of the loaded spans (inserted with its \
         indexes in place in {}, absorbed by the product's full refresh in {}). At the end, with the spans the bench inserted: \
         {} traces holding {} spans in the window. Sizes with indexes: otel_traces {}, table {}, view {}.\n",
        r.loaded.spans,
        r.traces_loaded,
        r.loaded.spans as f64 / r.traces_loaded.max(1) as f64,
        secs(r.loaded.copy_s),
        secs(r.loaded.index_s),
        secs(r.loaded.vacuum_s),
        secs(r.plain_copy_s),
        secs(r.never_load.insert_s),
        secs(r.never_load.rebuild_s),
        r.traces_in_window,
        r.spans_in_window,
        bytes(r.traces_bytes),
        bytes(r.table_bytes),
        bytes(r.view_bytes)
    );

    let _ = writeln!(
        md,
        "### Full refresh\n\n| step | median | runs | ÷ REFRESH CONCURRENTLY |\n|---|---:|---|---:|"
    );
    let _ = writeln!(
        md,
        "| REFRESH MATERIALIZED VIEW CONCURRENTLY, server's default memory (as pg_cron runs it) | {} | {} | 1× |",
        secs(refresh_c),
        runs(&r.refresh_concurrently)
    );
    let _ = writeln!(
        md,
        "| REFRESH MATERIALIZED VIEW CONCURRENTLY with `rebuild`'s memory | {} | {} | {} |",
        secs(r.refresh_concurrently_mem_s()),
        runs(&r.refresh_concurrently_mem),
        times(r.refresh_concurrently_mem_s() / refresh_c)
    );
    let _ = writeln!(
        md,
        "| plain REFRESH MATERIALIZED VIEW (blocks readers), `rebuild`'s memory | {} | {} | {} |",
        secs(median(&r.refresh_plain)),
        runs(&r.refresh_plain),
        times(median(&r.refresh_plain) / refresh_c)
    );
    let _ = writeln!(
        md,
        "| `rebuild` of the table (built beside, swapped in) | {} | {} | {} |",
        secs(r.rebuild_s()),
        runs(&r.rebuild),
        times(r.rebuild_s() / refresh_c)
    );
    let _ = writeln!(
        md,
        "| CREATE MATERIALIZED VIEW … WITH DATA + 3 indexes (once) | {} | | |",
        secs(r.create_mv_s)
    );
    let _ = writeln!(
        md,
        "| `install --mode incremental` (stamp column, its index, triggers, first fill; once) | {} | | |\n",
        secs(r.install_s)
    );

    let _ = writeln!(
        md,
        "### One step absorbing new traces\n\n| new spans | summaries written | step (median) | runs | ÷ REFRESH CONCURRENTLY |\n|---:|---:|---:|---|---:|"
    );
    for c in &r.cycles {
        let traces = median(&c.traces.iter().map(|&t| t as f64).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} |",
            count(c.new_spans as u64),
            traces,
            secs(median(&c.seconds)),
            runs(&c.seconds),
            pct(median(&c.seconds) / refresh_c)
        );
    }
    let _ = writeln!(md);

    let n = &r.never_analyzed;
    let stat = |st: &super::load::Statistics| {
        format!(
            "reltuples {}, {} rows in pg_statistic, autovacuum {}, last_analyze and last_autoanalyze {}",
            st.reltuples,
            st.stat_rows,
            if st.autovacuum_enabled { "on" } else { "off" },
            if st.never_analyzed_per_stats { "null" } else { "set" }
        )
    };
    let _ = writeln!(
        md,
        "### A never-analyzed otel_traces\n\nThe never-analyzed copy, checked before the first step: {}; after the last: {}. \
         **{}**\n",
        stat(&n.before),
        stat(&n.after),
        if n.before.never_analyzed() && n.after.never_analyzed() {
            "The planner had no statistics about it throughout (reltuples = -1, no pg_statistic rows).".to_string()
        } else {
            "The table had statistics at some point: this is not the never-analyzed case.".to_string()
        }
    );
    let _ = writeln!(
        md,
        "| step absorbing {} new spans | median | runs |\n|---|---:|---|\n| analyzed otel_traces | {} | {} |\n| never-analyzed otel_traces | {} | {} |\n| never ÷ analyzed | {} | pair by pair: {} |\n",
        count(n.spans as u64),
        secs(median(&n.analyzed)),
        runs(&n.analyzed),
        secs(median(&n.never_analyzed)),
        runs(&n.never_analyzed),
        times(median(&n.never_analyzed) / median(&n.analyzed)),
        n.never_analyzed
            .iter()
            .zip(&n.analyzed)
            .map(|(a, b)| times(a / b))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let b = &r.big_trace;
    let _ = writeln!(
        md,
        "### A huge trace\n\nA new trace of {} spans was absorbed in one step in {}. Then, interleaved:\n\n\
         | step | median | runs |\n|---|---:|---|\n| {} new spans of the {}-span trace | {} | {} |\n| {} spans of a new trace | {} | {} |\n| huge ÷ new | {} | |\n\n\
         At the end the huge trace's summary counted {} spans ({} inserted).\n",
        count(b.big_spans as u64),
        secs(b.first_s),
        b.new_spans,
        count(b.big_spans as u64),
        secs(median(&b.into_big)),
        runs(&b.into_big),
        b.new_spans,
        secs(median(&b.new_trace)),
        runs(&b.new_trace),
        times(median(&b.into_big) / median(&b.new_trace)),
        b.final_count,
        b.expected_count
    );

    let _ = writeln!(
        md,
        "### The continuous audit\n\n| period | a slice every | traces per slice | slice (median) | fastest / slowest | share of one core | per audited trace | differences found |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for a in &r.audit {
        let lo = a.seconds.iter().copied().fold(f64::NAN, f64::min);
        let hi = a.seconds.iter().copied().fold(f64::NAN, f64::max);
        let _ = writeln!(
            md,
            "| {}{} | {} s | {:.0} | {} | {} / {} | {} | {} | {} |",
            period_text(a.period),
            if a.period.as_secs() == 24 * 3600 {
                " (default)"
            } else {
                ""
            },
            a.every.as_secs(),
            a.checked_median(),
            secs(median(&a.seconds)),
            secs(lo),
            secs(hi),
            share(a.core_share()),
            secs(a.per_trace()),
            a.mismatches
        );
    }
    let marginal = match (r.audit.first(), r.audit.get(1)) {
        (Some(a), Some(b)) => format!(
            " From the two periods' medians, each further trace in a slice costs {}; the rest of a slice is its fixed cost \
             (estimating the row count, finding the slice's end, the statements' round trips).",
            secs(b.marginal_per_trace(a))
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        md,
        "\n{} consecutive slices per period; the summaries table's estimate was {} rows.{marginal}\n",
        s.audit_slices,
        r.audit.first().map(|a| a.summaries_estimate).unwrap_or(0)
    );

    let i = &r.ingest;
    let _ = writeln!(
        md,
        "### Ingest throughput ({} spans in batches of {}, {} rounds)\n\n| condition | median | runs | spans/s |\n|---|---:|---|---:|",
        count(i.spans as u64),
        i.batch,
        i.with_product.len()
    );
    let base = median(&i.without);
    for (label, v) in [
        ("plain table, no worker", &i.without),
        ("the product installed, the worker running", &i.with_product),
        (
            "the product installed, the worker stopped (its batches alternating with the plain table's)",
            &i.installed_idle,
        ),
    ] {
        let m = median(v);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {:.0} ({} of plain) |",
            secs(m),
            runs(v),
            i.spans as f64 / m,
            pct1(base / m)
        );
    }
    let paired = i.paired();
    let _ = writeln!(
        md,
        "\nWith the product installed and the worker stopped, ÷ the plain table, the two taking the same batches alternately: \
         **{}** (median of the rounds: {}). This is the target's figure: what the stamp column, its index and the triggers \
         cost an insert.\n\nWith the worker running, ÷ the plain table, from the medians: {}; round by round: {} (median {}). \
         The difference is what the running worker costs the inserts on this machine: it competes with them for the same \
         cores and for WAL flushes, doing the work that REFRESH of the view would otherwise do (which competes with the \
         inserts too), and its rounds ran apart from the plain table's, so the machine's noise does not cancel out.\n",
        pct1(i.idle_ratio()),
        i.idle_paired().iter().map(|x| pct1(*x)).collect::<Vec<_>>().join(", "),
        pct1(i.ratio()),
        paired.iter().map(|x| pct1(*x)).collect::<Vec<_>>().join(", "),
        pct1(median(&paired)),
    );

    let _ = writeln!(
        md,
        "### Freshness under sustained ingest ({} per rate)\n\n| target rate (spans/s) | achieved | batches | p50 | p99 | max | unseen | insert p50 / p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|",
        humantime::format_duration(s.freshness)
    );
    for f in &r.freshness {
        freshness_row(md, f);
    }
    let _ = writeln!(md);

    let f = &r.failover;
    let _ = writeln!(
        md,
        "### Failover ({} kills, {} spans/s of ingest)\n\nA standby tries the leader lock once a second. The kills were \
         spread evenly over that second, so these figures are mostly the wait for the standby's next try (about half a second \
         in the median, up to a whole one), plus the time for the server to find the leader's connection closed and for the \
         standby to take the lock.\n\n| from SIGKILL of the leader to | median | max | runs |\n|---|---:|---:|---|\n| a standby leads | {} | {} | {} |\n| a span committed at the kill is summarized | {} | {} | {} |\n",
        f.to_leader.len(),
        count(FAILOVER_INGEST_RATE as u64),
        secs(median(&f.to_leader)),
        secs(f.to_leader.iter().copied().fold(f64::NAN, f64::max)),
        runs(&f.to_leader),
        secs(median(&f.to_absorbed)),
        secs(f.to_absorbed.iter().copied().fold(f64::NAN, f64::max)),
        runs(&f.to_absorbed)
    );

    let _ = writeln!(md, "### Reads ({} runs each, alternating)\n\n| query | view | table | table ÷ view | rows |\n|---|---:|---:|---:|---:|", s.query_runs);
    for q in &r.queries {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} |",
            q.name,
            secs(q.view_s),
            secs(q.table_s),
            times(q.table_s / q.view_s),
            q.view_rows,
            q.table_rows
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "When the reads ran, the table had {} live and {} dead rows (autovacuum {}); the view had just been refreshed.\n",
        r.table_live,
        r.table_dead,
        if r.table_autovacuumed { "had vacuumed it" } else { "had not vacuumed it yet" }
    );
    let differing: Vec<_> = r
        .queries
        .iter()
        .filter(|q| as_table_plan(&q.view_plan) != q.table_plan)
        .collect();
    if differing.is_empty() {
        let _ = writeln!(
            md,
            "The view and the table had the same plan for every query.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "Plans that differ between view and table (`EXPLAIN (COSTS OFF)` after the runs):\n"
        );
        for q in differing {
            let _ = writeln!(
                md,
                "- {}: view `{}`; table `{}`",
                q.name, q.view_plan, q.table_plan
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "### Table = view\n\nAfter a final step and a fresh REFRESH CONCURRENTLY, {} rows of the table (traces more than 10 minutes \
         from the window edge) were compared with the view column for column: **{} differ**.\n",
        r.compared, r.differing
    );
}

/// A view's one-line plan with the view's relation and index names replaced by the table's
/// counterparts (the contract's index names), so the two plans compare node for node and
/// index for index.
fn as_table_plan(view_plan: &str) -> String {
    view_plan
        .replace("bench_mv_trace_id", "idx_trace_summaries_trace_id")
        .replace(
            "bench_mv_service_timestamp",
            "idx_trace_summaries_service_timestamp",
        )
        .replace("bench_mv_timestamp", "idx_trace_summaries_timestamp")
        .replace("bench_mv", "otel_trace_summaries")
}

fn freshness_row(md: &mut String, f: &FreshnessRun) {
    let achieved = if f.kept_up() {
        format!("{:.0}", f.achieved)
    } else {
        format!("{:.0} (generator fell behind)", f.achieved)
    };
    let _ = writeln!(
        md,
        "| {} | {achieved} | {} | {} | {} | {} | {} | {} / {} |",
        f.rate,
        f.batches,
        fresh_ms(f.p50()),
        fresh_ms(f.p99()),
        fresh_ms(f.max()),
        f.unseen,
        ms(f.insert_p50_ms),
        ms(f.insert_p99_ms)
    );
}

fn chart_section(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Freshness chart\n");
    match &input.chart {
        Some(name) => {
            let _ = writeln!(md, "![freshness p50 and p99 against ingest rate]({name})\n");
            let _ = writeln!(
                md,
                "Freshness (time from an ingest commit to the poll that saw the trace's summary) against the achieved ingest rate: \
                 p99 as solid lines, p50 as thin lines, one colour per scale; the red line is the p99 target ({FRESHNESS_TARGET_MS:.0} ms \
                 at {} spans/s).{}\n",
                count(FRESHNESS_RATE as u64),
                if input.chart_has_text { "" } else { " (No font was found, so the chart has no text labels.)" }
            );
        }
        None => {
            let _ = writeln!(
                md,
                "The chart could not be written (see the bench's output).\n"
            );
        }
    }
}

fn method(md: &mut String, input: &ReportInput) {
    let s = input.settings;
    let _ = writeln!(md, "## How each number was measured\n");
    let _ = writeln!(
        md,
        "- **Data.** Synthetic spans from the crate's generator (`SpanGen::with_mean_spans`, {} spans per trace on average): \
         24 services with skewed popularity, span counts per trace skewed with a long tail, roots with '' or NULL parents, traces \
         without or with several roots, errors and NULL statuses, odd text; spread uniformly over the last 7 days with ingest times \
         shortly after (1% up to a day late). Loaded with binary COPY in chunks of 200k, secondary indexes built after the load, \
         then VACUUM ANALYZE and CHECKPOINT. New spans during the bench are new traces of the same shape, stamped now. One fresh \
         database per scale, dropped afterwards.",
        s.spans_per_trace
    );
    let _ = writeln!(
        md,
        "- **Full refresh.** `bench_mv` is the contract's definition as a materialized view with the contract's three indexes. \
         Each repetition runs REFRESH MATERIALIZED VIEW CONCURRENTLY twice (the server's default memory, as pg_cron runs it; and \
         the memory `rebuild` gives itself), plain REFRESH, and `rebuild` (the product's full refresh: one REPEATABLE READ \
         aggregation of the window, the new table built beside the old one with its indexes and swapped in), back to back, the \
         order rotated every repetition. Nothing changes between them but the time, so each REFRESH CONCURRENTLY finds almost \
         no rows to write: its diff is as cheap as it gets."
    );
    let _ = writeln!(
        md,
        "- **One step.** New traces are inserted by one COPY (one transaction, `created_at` left to its default), then one step \
         (`maintain::cycle::run`, as the worker runs it, with bounds large enough to take everything at once) is timed from taking \
         the work lock to COMMIT. The bench checks that the step absorbed exactly the spans inserted. Sizes are interleaved across \
         repetitions; the ratio divides the median by the median REFRESH CONCURRENTLY on the same data. The growth across scales \
         divides medians measured in two databases, minutes apart: it is not interleaved."
    );
    let _ = writeln!(
        md,
        "- **Never-analyzed.** A second copy of the loaded spans in schema `never_analyzed`: otel_traces created with all its \
         indexes and `autovacuum_enabled = off` (and for its TOAST table), the product installed while the table was empty (an \
         index build on a non-empty table sets reltuples), the spans inserted in one statement, absorbed by `rebuild`, then \
         `pg_stat_reset_single_table_counters`. Nothing ran ANALYZE on it. Its statistics are checked before the first and after \
         the last step (reltuples, pg_statistic, pg_stat_user_tables). The same {}-span step then runs on it and on the analyzed \
         table, alternately, {} pairs, each installation in its own session.",
        count(s.never_analyzed_spans as u64),
        s.pairs
    );
    let _ = writeln!(
        md,
        "- **Huge trace.** A new trace of {} spans is absorbed in one step; then, alternately, {} pairs of: {} new spans of that \
         trace (children of its spans), one step; {} spans of a new trace, one step.",
        count(s.big_trace_spans as u64),
        s.pairs,
        s.big_trace_new,
        s.big_trace_new
    );
    let _ = writeln!(
        md,
        "- **Audit.** {} consecutive slices per period by the product's `maintain::audit::run_slice`, each in a REPEATABLE READ \
         transaction with the plans pinned as a step pins them, rolled back (the cursor carried to the next slice by the bench). \
         The default period (24h) gives a slice every 10 s over 1/8640 of the summaries; the share of one core is the slice's \
         time over those 10 s (wall time of the statements, which are CPU-bound here). A 1h period gives slices 24 times larger \
         (a slice every 10 s covers 1/360); the difference between the two gives the cost of each further trace.",
        s.audit_slices
    );
    let _ = writeln!(
        md,
        "- **Ingest throughput.** {} pre-generated spans inserted in batches of {} (one multi-row INSERT … ON CONFLICT DO NOTHING \
         per batch, autocommit), into `plain.otel_traces` (a copy of the loaded spans, nothing installed) and into otel_traces with the product \
         installed and the worker stopped, the same batches alternately (which table goes first alternates too), each batch \
         timed on its own; and, in the same round, before or after (alternating), into otel_traces with the worker running \
         (started and caught up first). {} rounds.",
        count(s.ingest_spans as u64),
        s.ingest_batch,
        s.ingest_rounds
    );
    let _ = writeln!(
        md,
        "- **Freshness.** The worker runs in-process (the library's `Worker` with `WorkerSettings::default()`). A generator \
         inserts new traces every 100 ms at the target rate with multi-row INSERT … ON CONFLICT DO NOTHING, one transaction per \
         batch, and records for each batch the instant its commit returned and one trace_id with its span count. A poller \
         queries those trace_ids every {} ms; freshness is the time from the commit to the first poll that returned the complete \
         summary, so it includes up to {} ms of polling granularity. Batches not seen {} s after the generator stopped count as \
         unseen (infinitely late) in the percentiles. Before each rate a probe trace is inserted and awaited, so every rate \
         starts caught up. {} per rate.",
        POLL_EVERY.as_millis(),
        POLL_EVERY.as_millis(),
        DRAIN.as_secs(),
        humantime::format_duration(s.freshness)
    );
    let _ = writeln!(
        md,
        "- **Failover.** Two in-process workers with the default settings; the leader is ended as SIGKILL ends a process: its \
         runtime is dropped with every task, so its connections close without a goodbye and nothing is cancelled or unlocked by \
         it (the server ends its sessions when it finds them closed). The time runs from that instant until pg_stat_activity \
         shows the other worker's session as `trace-summarizer leader …` (it sets that right after taking the leader lock), \
         polled every 5 ms, and until a span committed just after the kill is in the summaries. A new standby is started before \
         each kill, and the kill lands at a different point of the standby's once-a-second poll for the lock each time. {} \
         spans/s of ingest run throughout.",
        count(FAILOVER_INGEST_RATE as u64)
    );
    let _ = writeln!(
        md,
        "- **Reads.** The SRQL shapes from CONTRACT.md, prepared once, {} runs each, alternating view and table, after 3 warm-up \
         runs on each; client round trip included.",
        s.query_runs
    );
    if let Some(r) = input.results.first() {
        let _ = writeln!(md, "\n  ```sql");
        for q in &r.queries {
            let _ = writeln!(md, "  -- {}\n  {};", q.name, q.sql);
        }
        let _ = writeln!(md, "  ```\n");
    }
    let _ = writeln!(
        md,
        "- **Equality.** After the worker stopped: one step, REFRESH CONCURRENTLY, one more step, then `EXCEPT ALL` both ways over \
         the 14 columns, leaving out traces within 10 minutes of the window edge (they cross it continuously, and the two sides \
         were brought up to date a refresh's duration apart).\n"
    );
}

/// Notes generated from the results: what to keep in mind when reading them.
fn notes(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let _ = writeln!(md, "## Notes\n");
    let _ = writeln!(
        md,
        "- Targets are judged on medians from this one run; a target missed here is shown as missed, whatever its margin."
    );
    for r in rs {
        let c = r.refresh_concurrently_s();
        let plain = median(&r.refresh_plain);
        if c / plain < 1.5 {
            let _ = writeln!(
                md,
                "- {} spans: REFRESH CONCURRENTLY cost only {} a plain REFRESH here: with nothing but the clock changing between \
                 refreshes, its diff finds almost nothing to write, so both are mostly the aggregation of the window. A full refresh \
                 that runs the same aggregation and then builds its table beside the old one (`rebuild`: {} a plain REFRESH) cannot \
                 come to half of it.",
                count(r.spans),
                times(c / plain),
                times(r.rebuild_s() / plain)
            );
        }
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::NAN, f64::min);
            let hi = v.iter().copied().fold(f64::NAN, f64::max);
            hi / lo - 1.0
        };
        let i = &r.ingest;
        let worst = spread(&i.with_product).max(spread(&i.without));
        if worst.is_finite() && worst > 0.1 {
            let _ = writeln!(
                md,
                "- {} spans: the slowest ingest round of one condition took {} longer than the fastest; the machine's noise is of \
                 that order, which is why the ratio is taken from medians of interleaved rounds.",
                count(r.spans),
                pct(worst)
            );
        }
        for f in &r.freshness {
            if !f.kept_up() {
                let _ = writeln!(
                    md,
                    "- {} spans: at {} spans/s the generator itself fell behind ({:.0} spans/s achieved): the machine was saturated.",
                    count(r.spans),
                    count(f.rate as u64),
                    f.achieved
                );
            }
            if f.insert_p99_ms > 100.0 && f.insert_p99_ms > 5.0 * f.insert_p50_ms {
                let _ = writeln!(
                    md,
                    "- {} spans: at {} spans/s the generator's own inserts stalled at times (p99 {} against a median of {}): the \
                     database was held up by something other than the worker (a checkpoint's writes, WAL flushes, other work on the \
                     machine), and freshness outliers at that rate include those stalls.",
                    count(r.spans),
                    count(f.rate as u64),
                    ms(f.insert_p99_ms),
                    ms(f.insert_p50_ms)
                );
            }
            if f.unseen > 0 {
                let _ = writeln!(
                    md,
                    "- {} spans: at {} spans/s, {} batches were not summarized within {} s of the generator stopping.",
                    count(r.spans),
                    count(f.rate as u64),
                    f.unseen,
                    DRAIN.as_secs()
                );
            }
        }
        for e in &r.events {
            let _ = writeln!(md, "- {} spans: {e}.", count(r.spans));
        }
        let a = &r.audit;
        if a.iter().any(|x| x.mismatches > 0) {
            let _ = writeln!(
                md,
                "- {} spans: the audit found summaries that differ from the definition.",
                count(r.spans)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_plans_compare_index_for_index_with_table_plans() {
        let view = "Limit → Index Scan using bench_mv_service_timestamp on bench_mv";
        assert_eq!(
            as_table_plan(view),
            "Limit → Index Scan using idx_trace_summaries_service_timestamp on otel_trace_summaries"
        );
        assert_ne!(
            as_table_plan(view),
            "Limit → Index Scan using idx_trace_summaries_timestamp on otel_trace_summaries"
        );
    }
}
