//! The comparison's part of the report (measured by `compare.rs`, `idle.rs` and `capacity.rs`,
//! drawn by `chart.rs`), the first section after the opening: the chart, its own targets (✓/✗
//! with the figures), the cost per hour of maintenance of each system per scale and rate with
//! freshness and rows wrong, capacity, where the view and the job stop keeping up (an estimate
//! from their measured run times), then each scale's details (baselines, raw figures,
//! `pg_stat_statements`); its method bullet and its notes.

use super::headline::Check;
use super::input::ReportInput;
use crate::lab::bench::capacity::{CAPACITY_FRESHNESS_MS, CAPACITY_TARGET};
use crate::lab::bench::compare::{Cell, RateRuns, System, DRAIN};
use crate::lab::bench::freshness::{FRESHNESS_RATE, FRESHNESS_TARGET_MS};
use crate::lab::bench::idle::IDLE_TARGET;
use crate::lab::bench::job;
use crate::lab::bench::scale::{Comparison, ScaleResult};
use crate::lab::bench::stats::{count, ms, pct, secs, share};
use crate::lab::bench::stream::LATE_SHARE;
use std::fmt::Write;

/// The product's cost ÷ the view's at 1k spans/s: at most this at the given scale.
const COST_TARGETS: [(u64, f64); 2] = [(1_000_000, 0.5), (10_000_000, 0.1)];
const COST_RATE: u32 = 1_000;

fn comparisons(rs: &[ScaleResult]) -> Vec<(&ScaleResult, &Comparison)> {
    rs.iter()
        .filter_map(|r| r.comparison.as_ref().map(|c| (r, c)))
        .collect()
}

/// The product's maintenance cost (its database CPU and its process's) ÷ the view's, at `rate`.
pub fn cost_ratio(c: &Comparison, rate: u32) -> Option<f64> {
    let run = c.compare.at(rate)?;
    let b = run.baseline()?;
    let p = run.cell(System::Product)?;
    let v = run.cell(System::View)?;
    let product = p.cpu_per_hour(b) + p.worker_per_hour().unwrap_or(0.0);
    Some(product / v.cpu_per_hour(b))
}

/// Freshness in ms, or ∞ for probes never seen.
fn fresh(v: f64) -> String {
    if v.is_infinite() {
        "unseen".into()
    } else {
        ms(v)
    }
}

fn mb(bytes: f64) -> String {
    if !bytes.is_finite() {
        "n/a".into()
    } else if bytes.abs() >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

fn cpu(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1} s")
    } else {
        "n/a".into()
    }
}

/// The comparison's targets, one column per scale that ran it.
fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    let cs = comparisons(rs);
    let mut out = Vec::new();
    for (scale, limit) in COST_TARGETS {
        out.push(Check {
            measure: format!(
                "maintenance cost at {} spans/s: trace-summarizer (database CPU + its process) ÷ MV (database CPU)",
                count(COST_RATE as u64)
            ),
            target: format!("≤ {} at {} spans", pct(limit), count(scale)),
            cells: cs
                .iter()
                .map(|(r, c)| match cost_ratio(c, COST_RATE) {
                    Some(x) if x.is_finite() => Check::cell(
                        pct(x),
                        (r.spans == scale).then_some(x <= limit),
                    ),
                    _ => ("not run".into(), None),
                })
                .collect(),
        });
    }
    out.push(Check {
        measure: "trace-summarizer idle (no new spans, `--audit-period 0`): its backends and process, share of a core".into(),
        target: format!("≤ {}", share(IDLE_TARGET)),
        cells: cs
            .iter()
            .map(|(_, c)| match &c.idle {
                Some(Ok(i)) if i.share().is_finite() => {
                    Check::cell(share(i.share()), Some(i.share() <= IDLE_TARGET))
                }
                Some(Err(e)) => (format!("failed ({})", short(e)), Some(false)),
                _ => ("not run".into(), None),
            })
            .collect(),
    });
    out.push(Check {
        measure:
            "the audit at its default period (24h) on its own: slice time ÷ time between slices"
                .into(),
        target: format!("≤ {}", share(IDLE_TARGET)),
        cells: cs
            .iter()
            .map(|(r, _)| match r.audit.first() {
                Some(a) if a.core_share().is_finite() => {
                    Check::cell(share(a.core_share()), Some(a.core_share() <= IDLE_TARGET))
                }
                _ => ("not run".into(), None),
            })
            .collect(),
    });
    out.push(Check {
        measure: format!(
            "trace-summarizer's freshness p99 at {} spans/s, default settings (its comparison cell)",
            count(FRESHNESS_RATE as u64)
        ),
        target: format!("≤ {}", ms(FRESHNESS_TARGET_MS)),
        cells: cs
            .iter()
            .map(|(_, c)| {
                match c
                    .compare
                    .at(FRESHNESS_RATE)
                    .and_then(|r| r.cell(System::Product))
                {
                    Some(p) => Check::cell(fresh(p.p99()), Some(p.p99() <= FRESHNESS_TARGET_MS)),
                    None => ("not run".into(), None),
                }
            })
            .collect(),
    });
    out.push(Check {
        measure: format!(
            "capacity: the writers' best rate with trace-summarizer running ÷ their best into the plain table, with freshness p99 ≤ {}",
            ms(CAPACITY_FRESHNESS_MS)
        ),
        target: format!("≥ {}", pct(CAPACITY_TARGET)),
        cells: cs
            .iter()
            .map(|(_, c)| {
                let x = c.capacity.ratio();
                match c.capacity.sustained() {
                    Some(p) if x.is_finite() => Check::cell(
                        format!("{} (p99 {})", pct(x), fresh(p.p99())),
                        Some(x >= CAPACITY_TARGET && p.p99() <= CAPACITY_FRESHNESS_MS),
                    ),
                    _ => ("not run".into(), None),
                }
            })
            .collect(),
    });
    out
}

fn short(e: &str) -> String {
    let e = e.replace('|', "/");
    if e.chars().count() > 80 {
        format!("{}…", e.chars().take(80).collect::<String>())
    } else {
        e
    }
}

/// The comparison section: first in the report, after the opening.
pub fn section(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let cs = comparisons(rs);
    if cs.is_empty() {
        return;
    }
    let s = &input.settings.compare;
    let _ = writeln!(
        md,
        "## Comparison: the view, upstream's job and trace-summarizer\n"
    );
    let _ = writeln!(
        md,
        "Three systems keep the same summaries, one definition for all (window {}, error rule `error`: `install --window 3d --error-rule error`), \
         in a database of their own per scale, under the same live ingest (new traces of 12 spans on average, {} of the spans late, \
         joining traces 60 s to a day old): **MV**, the seed's materialized view refreshed `CONCURRENTLY` every {}; **Job**, a model of \
         upstream's `RefreshTraceSummariesWorker` (every {}, recomputing the traces with a span in the last {}); and **trace-summarizer** \
         (`run`, default settings, a separate process). Each ran alone for {} per scale and rate (MV and Job: until their run one period \
         in had finished); costs are extrapolated to an hour.\n",
        s.definition.window,
        pct(LATE_SHARE),
        humantime::format_duration(s.period),
        humantime::format_duration(s.period),
        job::LOOK_BACK,
        humantime::format_duration(s.cell),
    );
    match &input.comparison_chart {
        Some(name) => {
            let _ = writeln!(
                md,
                "![CPU per hour of maintenance and freshness p99, per system, scale and rate]({name})\n\n\
                 Left: CPU seconds per hour of maintenance: the database's (the cluster's CPU less the ingest's, see the method), \
                 for trace-summarizer with its own process's added. \
                 Right: freshness p99, from an ingest commit to the summary that shows it. Both on log scales.{}\n",
                if input.comparison_chart_has_text {
                    ""
                } else {
                    " (No font was found, so the chart has no text labels.)"
                }
            );
        }
        None => {
            let _ = writeln!(
                md,
                "The comparison chart could not be written (see the bench's output).\n"
            );
        }
    }
    targets(md, rs, &checks(rs));
    costs(md, &cs);
    ingest_cost(md, &cs);
    capacity(md, &cs);
    keep_up_section(md, input, &cs);
    for (r, c) in &cs {
        details(md, r, c);
    }
}

/// The comparison's targets table and its count.
fn targets(md: &mut String, rs: &[ScaleResult], checks: &[Check]) {
    let cs = comparisons(rs);
    let _ = writeln!(md, "### Targets of the comparison\n");
    let mut head = "| measure | target |".to_string();
    let mut sep = "|---|---|".to_string();
    for (r, _) in &cs {
        let _ = write!(head, " {} spans |", count(r.spans));
        sep += "---:|";
    }
    let _ = writeln!(md, "{head}\n{sep}");
    let (mut met, mut all) = (0, 0);
    for c in checks {
        let mut line = format!("| {} | {} |", c.measure, c.target);
        for (value, m) in &c.cells {
            let _ = write!(line, " {value} |");
            if let Some(m) = m {
                all += 1;
                met += usize::from(*m);
            }
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\n✓ met, ✗ not met; a value without a mark is for reference (its target applies at another scale). **{met} of {all} checks met.**\n"
    );
}

fn cell_row(md: &mut String, label: &str, system: System, run: &RateRuns) {
    let outcome = run.cells.iter().find(|c| c.system == system);
    let Some(outcome) = outcome else { return };
    let cell: &Cell = match &outcome.result {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(
                md,
                "| {label} | {} | failed: {} | | | | | | | |",
                system.name(),
                short(e)
            );
            return;
        }
    };
    let (db, wal) = match run.baseline() {
        Some(b) => (cell.cpu_per_hour(b), cell.wal_per_hour(b)),
        None => (f64::NAN, f64::NAN),
    };
    let worker = cell
        .worker_per_hour()
        .map(cpu)
        .unwrap_or_else(|| "—".into());
    let runs = if cell.runs_s.is_empty() {
        "—".to_string()
    } else {
        cell.runs_s
            .iter()
            .map(|s| secs(*s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missed = match system {
        System::Job => format!("{} of {}", cell.missed_spans, cell.late_spans),
        _ => "0 by design".into(),
    };
    let _ = writeln!(
        md,
        "| {label} | {} | {} | {} | {} | {} | {} | {} / {} | {} of {} | {missed} |",
        system.name(),
        cpu(db),
        share(db / 3600.0),
        mb(wal),
        worker,
        runs,
        fresh(cell.p50()),
        fresh(cell.p99()),
        cell.wrong,
        cell.compared
    );
}

/// The cost table: every scale, rate and system.
fn costs(md: &mut String, cs: &[(&ScaleResult, &Comparison)]) {
    let _ = writeln!(
        md,
        "### Cost per hour of maintenance, freshness, traces wrong\n\n\
         | scale, rate | system | database CPU per hour | share of a core | WAL per hour | trace-summarizer's process CPU per hour | refresh or job run in the cell | freshness p50 / p99 | traces wrong at the end | late spans missed |\n\
         |---|---|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    for (r, c) in cs {
        if let Some(e) = &c.error {
            let _ = writeln!(
                md,
                "| {} spans | — | stopped: {} | | | | | | | |",
                count(r.spans),
                short(e)
            );
        }
        for run in &c.compare.rates {
            let label = format!("{} spans, {}/s", count(r.spans), count(run.rate as u64));
            if let Err(e) = &run.baseline {
                let _ = writeln!(
                    md,
                    "| {label} | baseline | failed: {} | | | | | | | |",
                    short(e)
                );
            }
            for system in System::ALL {
                cell_row(md, &label, system, run);
            }
        }
    }
    let _ = writeln!(
        md,
        "\nDatabase CPU is the cluster's less the ingest's backends and less the same ingest's baseline without maintenance; WAL is \
         the cluster's less the ingest statements' own and the baseline's other WAL (see the method); the product's process CPU is apart \
         (MV and Job have no process of their own: pg_cron or the application only send the statement). Freshness of MV and Job \
         is from the run log (estimated for the batches after the cell's run started, see the method); traces wrong (a row \
         missing, invented or with another value, each trace once, of the rows compared) are counted after ingest stopped and \
         the system finished its next refresh, run or steps, against the definition in one snapshot. Late spans missed: late spans whose timestamp was already beyond the Job's look-back when its next run \
         started, never summarized.\n"
    );
}

/// The product's added ingest cost, from the ingest measure.
fn ingest_cost(md: &mut String, cs: &[(&ScaleResult, &Comparison)]) {
    let figures: Vec<String> = cs
        .iter()
        .filter(|(r, _)| !r.ingest.without.is_empty())
        .map(|(r, _)| {
            format!(
                "{:.1}% at {} spans",
                r.ingest.idle_ratio() * 100.0,
                count(r.spans)
            )
        })
        .collect();
    if figures.is_empty() {
        let _ = writeln!(
            md,
            "trace-summarizer's added ingest cost (its column, index and insert trigger) is not in these figures; the ingest \
             measure, which shows it, did not run.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "trace-summarizer's added ingest cost (its column, index and insert trigger) is not in these figures, since every \
             system's ingest ran with it installed: ingest with it installed ran at {} of a plain table's throughput (the ingest \
             measure, below).\n",
            figures.join(", ")
        );
    }
}

fn capacity(md: &mut String, cs: &[(&ScaleResult, &Comparison)]) {
    let _ = writeln!(
        md,
        "### Capacity (at the largest scale)\n\n\
         | scale | plain table: best rate (writers) | with trace-summarizer running: best rate (writers) | ratio | its freshness p50 / p99 | its process, share of a core |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (r, c) in cs {
        let k = &c.capacity;
        if k.plain.is_empty() && k.with_product.is_empty() && c.capacity_error.is_none() {
            continue;
        }
        let rate = |x: Option<&crate::lab::bench::capacity::CapacityRun>| {
            x.map(|x| format!("{} spans/s ({})", count(x.rate() as u64), x.writers))
                .unwrap_or_else(|| "not run".into())
        };
        let p = k.sustained();
        let _ = writeln!(
            md,
            "| {} spans | {} | {} | {} | {} | {} |",
            count(r.spans),
            rate(k.ceiling()),
            rate(p),
            pct(k.ratio()),
            p.map(|p| format!(
                "{} / {}{}",
                fresh(crate::lab::bench::stats::percentile(&p.freshness_ms, 50.0)),
                fresh(p.p99()),
                if p.unseen > 0 {
                    format!(" ({} probes unseen)", p.unseen)
                } else {
                    String::new()
                }
            ))
            .unwrap_or_else(|| "—".into()),
            p.and_then(|p| p.worker_share())
                .map(share)
                .unwrap_or_else(|| "—".into())
        );
        if let Some(e) = &c.capacity_error {
            let _ = writeln!(
                md,
                "| {} spans | failed: {} | | | | |",
                count(r.spans),
                short(e)
            );
        }
    }
    let _ = writeln!(md);
}

/// Where MV and Job stop keeping up: estimated from their measured runs.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepUp {
    /// The scale the estimate comes from.
    pub spans: u64,
    /// MV: refresh seconds per million spans in the window; the spans in the window and the
    /// steady rate at which a refresh would take the whole period.
    pub mv: Option<(f64, f64, f64)>,
    /// Job: run seconds = a + b × rate (spans/s); the rate at which a run takes the period.
    pub job: Option<(f64, f64, f64)>,
}

/// The estimate from the largest scale with runs: the view's refresh time taken as proportional
/// to the spans in the window (it reads them all), the window holding `rate × window` spans in
/// a steady state; the job's run time as a straight line in the rate (its work is the traces
/// with spans in the last 5 minutes), fitted through its runs at each rate.
pub fn keep_up(cs: &[(&ScaleResult, &Comparison)], period_s: f64, window_s: f64) -> Option<KeepUp> {
    let (r, c) = cs
        .iter()
        .filter(|(_, c)| !c.compare.rates.is_empty())
        .max_by_key(|(r, _)| r.spans)?;
    let mv: Vec<f64> = c
        .compare
        .rates
        .iter()
        .filter_map(|run| run.cell(System::View))
        .filter(|cell| cell.window_spans > 0 && cell.longest_run_s().is_finite())
        .map(|cell| cell.longest_run_s() / cell.window_spans as f64 * 1e6)
        .collect();
    let mv = (!mv.is_empty()).then(|| {
        let per_million = mv.iter().sum::<f64>() / mv.len() as f64;
        let n = period_s / per_million * 1e6;
        (per_million, n, n / window_s)
    });
    let pts: Vec<(f64, f64)> = c
        .compare
        .rates
        .iter()
        .filter_map(|run| {
            run.cell(System::Job)
                .map(|cell| (run.rate as f64, cell.longest_run_s()))
        })
        .filter(|p| p.1.is_finite())
        .collect();
    let job = match pts.len() {
        0 => None,
        1 => Some((0.0, pts[0].1 / pts[0].0)),
        n => {
            let mx = pts.iter().map(|p| p.0).sum::<f64>() / n as f64;
            let my = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
            let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
            let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
            let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            Some((my - b * mx, b))
        }
    }
    .map(|(a, b)| {
        let limit = if b > 0.0 {
            (period_s - a) / b
        } else {
            f64::INFINITY
        };
        (a, b, limit)
    });
    Some(KeepUp {
        spans: r.spans,
        mv,
        job,
    })
}

fn keep_up_section(md: &mut String, input: &ReportInput, cs: &[(&ScaleResult, &Comparison)]) {
    let s = &input.settings.compare;
    let period = s.period.as_secs_f64();
    let window = s.definition.window.approx().as_secs_f64();
    let _ = writeln!(md, "### Where MV and Job stop keeping up (estimate)\n");
    let Some(k) = keep_up(cs, period, window) else {
        let _ = writeln!(md, "No run of either to estimate from.\n");
        return;
    };
    if let Some((per_million, n, rate)) = k.mv {
        let _ = writeln!(
            md,
            "- **MV**: at {} spans its refresh took {} per million spans in the window (the longest refresh of a cell ÷ the spans \
             in the window then, averaged over the rates). A refresh reads the whole window, so it outgrows its {} schedule at about \
             **{} spans in the window**, which a {} window holds in a steady state at **{} spans/s** of ingest.",
            count(k.spans),
            secs(per_million),
            humantime::format_duration(s.period),
            count(n as u64),
            s.definition.window,
            count(rate as u64)
        );
    }
    if let Some((a, b, rate)) = k.job {
        let _ = writeln!(
            md,
            "- **Job**: at {} spans its run took {} + {} per 1k spans/s of ingest (a line through its runs at each rate; through \
             the origin with one rate): its work is the traces with a span in the last {}, each recomputed from all its spans. \
             A run takes its whole {} schedule at about **{} spans/s**.",
            count(k.spans),
            secs(a),
            secs(b * 1000.0),
            job::LOOK_BACK,
            humantime::format_duration(s.period),
            if rate.is_finite() {
                count(rate.max(0.0) as u64)
            } else {
                "no rate (its run time did not grow with the rate)".into()
            },
        );
    }
    let _ = writeln!(
        md,
        "\nBoth are extrapolations from two points on a shared 2-core machine, not measured limits: a larger table also makes \
         each index lookup dearer, and the machine's own ceiling (Capacity) comes first when it is lower.\n"
    );
}

/// One scale's raw figures.
fn details(md: &mut String, r: &ScaleResult, c: &Comparison) {
    let st = &c.compare.setup;
    let _ = writeln!(md, "### Comparison details, {} spans\n", count(r.spans));
    let _ = writeln!(
        md,
        "{} spans loaded over the window (binary COPY {}, indexes {}); view created in {}; trace-summarizer installed in {}; the \
         job's first run backfilled {} rows in {} chunks in {}. CPU readable: {}; pg_stat_statements: {}.\n",
        st.loaded.spans,
        secs(st.loaded.copy_s),
        secs(st.loaded.index_s),
        secs(st.mv_create_s),
        secs(st.install_s),
        st.backfill_rows,
        st.backfill_chunks,
        secs(st.backfill_s),
        if st.cpu_readable { "yes" } else { "no (the server's processes are not on this machine)" },
        if st.statements_available { "yes" } else { "no" }
    );
    if let Some(idle) = &c.idle {
        match idle {
            Ok(i) => {
                let _ = writeln!(
                    md,
                    "Idle for {:.0} s (`--audit-period 0`): process {:.2} s, backends {:.2} s, together {} of a core; the whole cluster \
                     less the bench's backend {} of a core (the server's own background processes included).\n",
                    i.seconds,
                    i.worker_cpu_s,
                    i.backends_cpu_s,
                    share(i.share()),
                    share(i.cluster_cpu_s / i.seconds.max(1e-9))
                );
            }
            Err(e) => {
                let _ = writeln!(md, "Idle: failed ({}).\n", short(e));
            }
        }
    }
    let _ = writeln!(
        md,
        "| rate | system | measured | spans (late) | achieved | cluster CPU | WAL (the ingest's statements') | trace-summarizer's backends | preparation | last run or catch-up | estimated freshness samples |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in &c.compare.rates {
        if let Some(b) = run.baseline() {
            let _ = writeln!(
                md,
                "| {} | baseline (no maintenance) | {} | {} | {:.0} | {} | {} ({}) | — | — | — | — |",
                run.rate,
                secs(b.seconds),
                b.spans,
                b.spans as f64 / b.seconds.max(1e-9),
                cpu(b.cpu_s),
                mb(b.wal_bytes as f64),
                b.ingest_wal_bytes.map(|w| mb(w as f64)).unwrap_or_else(|| "n/a".into())
            );
        }
        for system in System::ALL {
            if let Some(cell) = run.cell(system) {
                let _ =
                    writeln!(
                    md,
                    "| {} | {} | {} | {} ({}) | {:.0} | {} | {} ({}) | {} | {} | {} | {} of {} |",
                    run.rate,
                    system.name(),
                    secs(cell.seconds),
                    cell.spans,
                    cell.late_spans,
                    cell.achieved(),
                    cpu(cell.cpu_s),
                    mb(cell.wal_bytes as f64),
                    cell.ingest_wal_bytes.map(|w| mb(w as f64)).unwrap_or_else(|| "n/a".into()),
                    cell.backends_cpu_s.map(cpu).unwrap_or_else(|| "—".into()),
                    secs(cell.prepare_s),
                    secs(cell.final_s),
                    cell.estimated,
                    cell.freshness_ms.len()
                );
            }
        }
    }
    let _ = writeln!(md);
    let mut any = false;
    for run in &c.compare.rates {
        for system in System::ALL {
            let Some(cell) = run.cell(system) else {
                continue;
            };
            if cell.statements.is_empty() {
                continue;
            }
            if !any {
                let _ = writeln!(
                    md,
                    "Top `pg_stat_statements` entries of each cell by execution time (the bench's own statements left out; \
                     parsing and planning are not in them, so they break the cost down rather than add up to it):\n\n\
                     | rate | system | statement | calls | total time | rows | WAL |\n|---:|---|---|---:|---:|---:|---:|"
                );
                any = true;
            }
            for st in &cell.statements {
                let _ = writeln!(
                    md,
                    "| {} | {} | `{}` | {} | {} | {} | {} |",
                    run.rate,
                    system.name(),
                    statement_text(&st.query),
                    st.calls,
                    ms(st.total_ms),
                    st.rows,
                    mb(st.wal_bytes as f64)
                );
            }
        }
    }
    if any {
        let _ = writeln!(md);
    }
}

/// A statement shortened for a table cell.
fn statement_text(q: &str) -> String {
    let q = q.replace('|', "\\|").replace('`', "'");
    if q.chars().count() > 110 {
        format!("{}…", q.chars().take(110).collect::<String>())
    } else {
        q
    }
}

pub fn method(md: &mut String, input: &ReportInput) {
    if comparisons(input.results).is_empty() {
        return;
    }
    let s = &input.settings.compare;
    let _ = writeln!(
        md,
        "- **Comparison.** A database per scale: spans loaded over the 3-day window (the generator's shape), insert-triggered \
         autovacuum of otel_traces off (the same ingest for every system; its vacuum would fall in one cell or another at random; \
         autoanalyze stays), the view created, trace-summarizer installed (it stays installed throughout: every system's ingest \
         pays for its column and index alike, and its added ingest cost is the ingest measure's), the job's table created and \
         backfilled by its first run. Ingest: one connection, a batch every 100 ms (multi-row INSERT … ON CONFLICT DO NOTHING), \
         new traces stamped now plus {} late spans, each joining a trace sampled from otel_traces 60 s to a day back (the loaded \
         history's delays). Per rate: a **baseline** of {} with the same ingest and no maintenance running, then one cell per \
         system with only that system running. Before a cell (unmeasured) the system is made current: the view refreshed; the \
         job's table synced to the definition by the bench (every trace with a span written since its last sync \
         recomputed where it differs, rows behind the edge deleted) and one job run; trace-summarizer started and a probe trace awaited \
         (a backlog left by the other cells may make it run a full refresh then). Each baseline and cell starts right after a CHECKPOINT (so that \
         none falls inside one system's interval and not another's, and every system's first writes after it pay their \
         full-page images alike; with 5-minute checkpoints in production, pages written again and again would pay them \
         somewhat less often). **Database cost**: the cluster's CPU from procfs, \
         the postmaster's utime+stime+cutime+cstime (which holds every child it has reaped: parallel workers, autovacuum workers, \
         closed backends) plus every live child's utime+stime, read at the start and the end, less the backends of the bench's \
         own connections (ingest, the freshness poll, the meter) over the same interval; less the baseline's CPU per second times \
         the cell's duration; times 3600 ÷ the duration. WAL: `pg_current_wal_lsn()` at both ends, less what the ingest's own \
         statements wrote (their `wal_bytes` in pg_stat_statements, full-page images after a checkpoint included, so that \
         the checkpoints' timing does not land on one system), less the baseline's remaining WAL per second times the \
         cell's duration (without pg_stat_statements: less the baseline's WAL per span inserted times the cell's spans). trace-summarizer's process CPU (utime+stime of `trace-summarizer run`) is \
         reported apart, and its targets count both. The view's and the job's cell starts with ingest, their run comes {} later \
         (the bench drives the schedule: REFRESH CONCURRENTLY with the server's default memory as pg_cron runs it, or `job.rs`), \
         and the cell ends when that run ends; trace-summarizer's cell ingests for {}. **Freshness**: trace-summarizer's probe \
         traces (one per batch) are polled every 20 ms (probes unseen {} s after ingest stopped count as unseen); the view's and \
         the job's from the run log: a batch committed before the run's statement started became visible when that run committed; a \
         batch committed after is taken as visible when the next scheduled run, a period later and as long, would commit (counted \
         as estimated in the details). **Traces wrong**: after ingest stops, the view refreshed once more, the job run once more, \
         trace-summarizer's poll drained; then the relation against the definition in one statement (one snapshot), EXCEPT ALL \
         both ways over the 14 columns, leaving out traces within 10 minutes of the window edge; a trace whose row is missing, \
         invented or different counts once. **pg_stat_statements** is reset \
         at a cell's start and its top entries read at the end. **Idle**: `run --audit-period 0`, caught up, 5 s to settle, then \
         {} with no new spans: its process's CPU and its backends' (the database's client backends other than the bench's). The \
         audit's own cost is the audit measure's at its default period. **Capacity**, at the largest scale only (the machine's \
         ceiling depends little on the table's size): {} writers in turn, each run {} after a CHECKPOINT, batches of \
         500 new spans as fast as they go, with trace-summarizer running (each batch's probe polled), then, trace-summarizer \
         uninstalled, into the same plain table (which by then also holds the first runs' spans). Each cell has a hard time \
         limit of {} (preparation and check included); a cell that fails or reaches it is reported as such and the bench goes on. \
         To fit the whole bench in an hour on 2 cores, the other measures were cut: freshness at 2 rates instead of 4, {} ingest \
         rounds instead of 13, {} failovers instead of 5.",
        pct(LATE_SHARE),
        humantime::format_duration(s.baseline),
        humantime::format_duration(s.period),
        humantime::format_duration(s.cell),
        DRAIN.as_secs(),
        humantime::format_duration(s.idle),
        s.capacity_writers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        humantime::format_duration(s.capacity_run),
        humantime::format_duration(s.cell_limit),
        input.settings.ingest_rounds,
        input.settings.failovers,
    );
}

/// Cells that failed and shortened schedules.
pub fn notes(md: &mut String, input: &ReportInput) {
    let s = &input.settings.compare;
    let cs = comparisons(input.results);
    if cs.is_empty() {
        return;
    }
    if s.period < job::PERIOD || s.cell < job::PERIOD {
        let _ = writeln!(
            md,
            "- The comparison ran with shortened cells ({}) or schedule ({}), not upstream's 2 minutes: its figures only show that \
             the bench works.",
            humantime::format_duration(s.cell),
            humantime::format_duration(s.period)
        );
    }
    for (r, c) in cs {
        for run in &c.compare.rates {
            for cell in &run.cells {
                if let Err(e) = &cell.result {
                    let _ = writeln!(
                        md,
                        "- {} spans, {} spans/s: the {} cell has no figures: {}.",
                        count(r.spans),
                        count(run.rate as u64),
                        cell.system.name(),
                        e
                    );
                }
            }
            if let (Some(b), Some(c)) = (run.baseline(), run.cell(System::Product)) {
                if c.achieved() < 0.95 * run.rate as f64
                    || b.spans as f64 / b.seconds < 0.95 * run.rate as f64
                {
                    let _ = writeln!(
                        md,
                        "- {} spans, {} spans/s: the ingest fell behind its rate (the machine was saturated).",
                        count(r.spans),
                        count(run.rate as u64)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::bench::compare::{Baseline, CellOutcome, CompareRuns};

    fn cell(run_s: f64, window: i64) -> Cell {
        Cell {
            seconds: 130.0,
            runs_s: vec![run_s],
            window_spans: window,
            ..Default::default()
        }
    }

    #[test]
    fn keep_up_extrapolates_from_the_largest_scale() {
        let rates = |mv: [f64; 2], job: [f64; 2]| {
            [1_000u32, 10_000]
                .iter()
                .enumerate()
                .map(|(i, &rate)| RateRuns {
                    rate,
                    baseline: Ok(Baseline::default()),
                    cells: vec![
                        CellOutcome {
                            system: System::View,
                            result: Ok(cell(mv[i], 10_000_000)),
                        },
                        CellOutcome {
                            system: System::Job,
                            result: Ok(cell(job[i], 0)),
                        },
                    ],
                })
                .collect::<Vec<_>>()
        };
        let small = ScaleResult {
            spans: 1_000_000,
            ..Default::default()
        };
        let big = ScaleResult {
            spans: 10_000_000,
            ..Default::default()
        };
        let c_small = Comparison::default();
        let c_big = Comparison {
            compare: CompareRuns {
                rates: rates([15.0, 15.0], [1.0, 10.0]),
                ..Default::default()
            },
            ..Default::default()
        };
        let k = keep_up(&[(&small, &c_small), (&big, &c_big)], 120.0, 259_200.0).unwrap();
        assert_eq!(k.spans, 10_000_000);
        let (per_million, n, rate) = k.mv.unwrap();
        assert!((per_million - 1.5).abs() < 1e-9);
        assert!((n - 80e6).abs() < 1.0);
        assert!((rate - 80e6 / 259_200.0).abs() < 1e-6);
        let (a, b, limit) = k.job.unwrap();
        assert!(a.abs() < 1e-9 && (b - 0.001).abs() < 1e-12);
        assert!((limit - 120_000.0).abs() < 1e-6);
    }
}
