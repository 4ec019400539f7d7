//! The markdown report: what ran where, the headline ratios across scales, then per scale the
//! ratios first and the medians behind them, the freshness chart, and how each number was
//! measured.

use super::env::Machine;
use super::freshness::{FreshnessRun, DRAIN};
use super::scale::ScaleResult;
use super::stats::{bytes, count, median, ms, pct, runs, secs, times};
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
    pub load_after: String,
}

/// Target for one cycle absorbing 10k spans, as a share of REFRESH CONCURRENTLY.
const CYCLE_TARGET: f64 = 0.02;

fn ok(b: bool) -> &'static str {
    if b {
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

/// How far apart repetitions of one measurement were: max ÷ min − 1.
fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    let min = v.iter().copied().fold(f64::NAN, f64::min);
    if min > 0.0 {
        max / min - 1.0
    } else {
        0.0
    }
}

/// The largest spread of the three ingest conditions of one scale.
fn ingest_spread(r: &ScaleResult) -> f64 {
    let i = &r.ingest;
    [&i.view_mode, &i.worker_stopped, &i.worker_running]
        .iter()
        .map(|v| spread(v))
        .fold(0.0, f64::max)
}

fn best_rate(r: &ScaleResult) -> String {
    let highest = r.freshness.iter().map(|f| f.rate).max().unwrap_or(0);
    match r.best_rate() {
        Some(f) if f.kept_up() && f.rate == highest => {
            format!(
                "≥ {} spans/s (the highest rate tried)",
                count(f.rate as u64)
            )
        }
        Some(f) if f.kept_up() => format!("{} spans/s", count(f.rate as u64)),
        Some(f) => format!(
            "{:.0} spans/s achieved (target {})",
            f.achieved,
            count(f.rate as u64)
        ),
        None => "none of the rates".into(),
    }
}

fn cycle_ratio(r: &ScaleResult, n: usize) -> Option<f64> {
    r.cycles
        .iter()
        .find(|c| c.new_spans == n)
        .map(|c| median(&c.seconds) / r.refresh_concurrently_s())
}

fn ingest_ratios(r: &ScaleResult) -> (f64, f64) {
    let running = median(&r.ingest.worker_running);
    (
        running / median(&r.ingest.view_mode),
        running / median(&r.ingest.worker_stopped),
    )
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
         generator and the worker compete for the same cores; compare ratios, which were measured interleaved \
         or back to back.\n",
        input.machine.cores
    );
    machine_section(&mut md, input);
    headline(&mut md, input);
    for r in input.results {
        scale_section(&mut md, input, r);
    }
    chart_section(&mut md, input);
    method(&mut md, input);
    md
}

fn command_line(s: &Settings) -> String {
    let scales = s
        .scales
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rates = s
        .rates
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "trace-summarizer bench --scales {scales} --rates {rates} --freshness-duration {} --repeat {} --output {}",
        humantime::format_duration(s.freshness),
        s.repeat,
        s.output.display()
    )
}

fn machine_section(md: &mut String, input: &ReportInput) {
    let m = input.machine;
    let s = input.settings;
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
        "- Sessions that ran REFRESH and rebuild: `work_mem = '256MB'`, `maintenance_work_mem = '256MB'` (what `rebuild` sets for itself). \
         The worker ran with `--interval {}ms` (its pause when idle; under ingest it cycles back to back).",
        s.worker_interval.as_millis()
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
        "- Window: 7 days. Medians of {} run{} unless stated.\n",
        s.repeat,
        if s.repeat == 1 { "" } else { "s" }
    );
    let _ = writeln!(md, "| server setting | value |\n|---|---|");
    for (k, v) in &m.settings {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md);
}

fn headline(md: &mut String, input: &ReportInput) {
    let rs = input.results;
    let _ = writeln!(md, "## Headline ratios\n");
    let mut head = "| ratio (lower is better unless stated) |".to_string();
    let mut sep = "|---|".to_string();
    for r in rs {
        let _ = write!(head, " {} spans |", count(r.spans));
        sep += "---:|";
    }
    let _ = writeln!(md, "{head}\n{sep}");
    let row = |md: &mut String, label: &str, f: &dyn Fn(&ScaleResult) -> String| {
        let mut line = format!("| {label} |");
        for r in rs {
            let _ = write!(line, " {} |", f(r));
        }
        let _ = writeln!(md, "{line}");
    };
    row(
        md,
        "full rebuild of the table ÷ REFRESH CONCURRENTLY",
        &|r| times(r.rebuild_s() / r.refresh_concurrently_s()),
    );
    for (n, target) in [(1_000, None), (10_000, Some(CYCLE_TARGET)), (100_000, None)] {
        let label = match target {
            Some(t) => format!(
                "one cycle absorbing {} new spans ÷ REFRESH CONCURRENTLY (target ≤ {})",
                count(n as u64),
                pct(t)
            ),
            None => format!(
                "one cycle absorbing {} new spans ÷ REFRESH CONCURRENTLY",
                count(n as u64)
            ),
        };
        row(md, &label, &|r| match cycle_ratio(r, n) {
            Some(x) => match target {
                Some(t) => format!("{} {}", pct(x), ok(x <= t)),
                None => pct(x),
            },
            None => "not run".into(),
        });
    }
    let names: Vec<&'static str> = rs
        .first()
        .map(|r| r.queries.iter().map(|q| q.name).collect())
        .unwrap_or_default();
    for name in names {
        row(md, &format!("read: {name}, table ÷ view"), &|r| {
            r.queries
                .iter()
                .find(|q| q.name == name)
                .map(|q| times(q.table_s / q.view_s))
                .unwrap_or_else(|| "n/a".into())
        });
    }
    row(
        md,
        "ingest with the worker running ÷ view mode (no created_at index, no worker)",
        &|r| times(ingest_ratios(r).0),
    );
    row(
        md,
        "ingest with the worker running ÷ worker stopped",
        &|r| times(ingest_ratios(r).1),
    );
    row(
        md,
        "freshness: highest ingest rate with p99 < 2 s (higher is better)",
        &|r| best_rate(r),
    );
    row(md, "table = view (rows that differ)", &|r| {
        format!("{} of {}", r.differing, count(r.compared.max(0) as u64))
    });
    let worst = rs.iter().map(ingest_spread).fold(0.0, f64::max);
    if input.settings.repeat >= 2 {
        let _ = writeln!(
            md,
            "\nThe slowest repetition of one ingest condition took up to {} longer than the fastest on this machine, so \
             ingest ratios that differ from 1× by less than that are noise. Every measurement's individual runs are listed \
             in the sections below.\n",
            pct(worst)
        );
    } else {
        let _ = writeln!(md);
    }
}

fn scale_section(md: &mut String, input: &ReportInput, r: &ScaleResult) {
    let s = input.settings;
    let refresh_c = r.refresh_concurrently_s();
    let _ = writeln!(md, "## {} spans\n", count(r.spans));
    let _ = writeln!(
        md,
        "{} spans in {} traces loaded (binary COPY {}, secondary indexes {}, VACUUM ANALYZE {}). At the end, with the \
         spans the bench inserted: {} traces holding {} spans in the window ({:.1} spans per trace; upstream's 10.6M spans \
         held 875k traces, about 12 per trace, so this data has {:.1} times more traces per span, and both full refreshes \
         have that many more rows to produce). Sizes with indexes: otel_traces {}, table {}, view {}.\n",
        r.loaded.spans,
        r.traces_loaded,
        secs(r.loaded.copy_s),
        secs(r.loaded.index_s),
        secs(r.loaded.vacuum_s),
        r.traces_in_window,
        r.spans_in_window,
        r.spans_in_window as f64 / r.traces_in_window.max(1) as f64,
        (10.6e6 / 875e3) / (r.spans_in_window as f64 / r.traces_in_window.max(1) as f64),
        bytes(r.traces_bytes),
        bytes(r.table_bytes),
        bytes(r.view_bytes)
    );

    let _ = writeln!(md, "### Ratios\n\n| comparison | ratio |\n|---|---:|");
    let _ = writeln!(
        md,
        "| full rebuild ÷ REFRESH CONCURRENTLY | {} |",
        times(r.rebuild_s() / refresh_c)
    );
    let _ = writeln!(
        md,
        "| full rebuild ÷ plain REFRESH (which blocks readers) | {} |",
        times(r.rebuild_s() / median(&r.refresh_plain))
    );
    for c in &r.cycles {
        let x = median(&c.seconds) / refresh_c;
        let mark = if c.new_spans == 10_000 {
            format!(" {}", ok(x <= CYCLE_TARGET))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| one cycle absorbing {} new spans ÷ REFRESH CONCURRENTLY | {}{mark} |",
            count(c.new_spans as u64),
            pct(x)
        );
    }
    for q in &r.queries {
        let _ = writeln!(
            md,
            "| read: {}, table ÷ view | {} |",
            q.name,
            times(q.table_s / q.view_s)
        );
    }
    let (vs_view, vs_stopped) = ingest_ratios(r);
    let _ = writeln!(
        md,
        "| ingest, worker running ÷ view mode | {} |",
        times(vs_view)
    );
    let _ = writeln!(
        md,
        "| ingest, worker running ÷ worker stopped | {} |",
        times(vs_stopped)
    );
    let _ = writeln!(
        md,
        "| highest ingest rate with freshness p99 < 2 s | {} |\n",
        best_rate(r)
    );

    let _ = writeln!(
        md,
        "### Full refresh\n\n| step | median | runs |\n|---|---:|---|"
    );
    let _ = writeln!(
        md,
        "| REFRESH MATERIALIZED VIEW CONCURRENTLY | {} | {} |",
        secs(refresh_c),
        runs(&r.refresh_concurrently)
    );
    let _ = writeln!(
        md,
        "| plain REFRESH MATERIALIZED VIEW | {} | {} |",
        secs(median(&r.refresh_plain)),
        runs(&r.refresh_plain)
    );
    let _ = writeln!(
        md,
        "| `rebuild` of the table (incremental mode's full refresh) | {} | {} |",
        secs(r.rebuild_s()),
        runs(&r.rebuild)
    );
    let _ = writeln!(
        md,
        "| CREATE MATERIALIZED VIEW … WITH DATA + 3 indexes (once) | {} | |",
        secs(r.create_mv_s)
    );
    let _ = writeln!(
        md,
        "| `install --mode incremental` (created_at index, table, first fill; once) | {} | |\n",
        secs(r.install_s)
    );

    let _ = writeln!(
        md,
        "### One incremental cycle\n\n| new spans | traces recomputed | cycle (median) | runs | ÷ REFRESH CONCURRENTLY | spans absorbed |\n|---:|---:|---:|---|---:|---|"
    );
    for c in &r.cycles {
        let traces = median(&c.traces.iter().map(|&t| t as f64).collect::<Vec<_>>());
        let absorbed = c
            .absorbed
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {absorbed} |",
            count(c.new_spans as u64),
            traces,
            secs(median(&c.seconds)),
            runs(&c.seconds),
            pct(median(&c.seconds) / refresh_c)
        );
    }
    let _ = writeln!(md);

    let _ = writeln!(
        md,
        "### Freshness under sustained ingest ({} per rate)\n\n| target rate (spans/s) | achieved | batches | p50 | p99 | max | unseen | insert p50 / p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|",
        humantime::format_duration(s.freshness)
    );
    for f in &r.freshness {
        freshness_row(md, f);
    }
    let _ = writeln!(md);

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

    let i = &r.ingest;
    let _ = writeln!(
        md,
        "### Ingest cost ({} spans in batches of {})\n\n| condition | median | runs | spans/s | ÷ view mode |\n|---|---:|---|---:|---:|",
        count(i.spans as u64),
        i.batch
    );
    let base = median(&i.view_mode);
    for (label, v) in [
        ("view mode: no created_at index, no worker", &i.view_mode),
        ("incremental mode, worker stopped", &i.worker_stopped),
        ("incremental mode, worker running", &i.worker_running),
    ] {
        let m = median(v);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {:.0} | {} |",
            secs(m),
            runs(v),
            i.spans as f64 / m,
            times(m / base)
        );
    }
    if s.repeat >= 2 {
        let _ = writeln!(
            md,
            "\nThe slowest repetition of one condition took up to {} longer than the fastest; smaller differences \
             between conditions are noise.\n",
            pct(ingest_spread(r))
        );
    } else {
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "### Table = view\n\nAfter a final cycle and a fresh REFRESH CONCURRENTLY, {} rows of the table (traces more than 10 minutes \
         from the window edge) were compared with the view column for column: **{} differ**.\n",
        r.compared, r.differing
    );
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
                 p99 as solid lines, p50 as thin lines, one colour per scale; the red line is the 2 s target.{}\n",
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
        "- **Data.** Synthetic spans from the crate's generator (`spangen.rs`): 24 services with skewed popularity, \
         skewed spans per trace, roots with '' or NULL parents, traces without or with several roots, errors and NULL statuses, \
         odd text; spread uniformly over the last 7 days with ingest times shortly after (1% up to a day late). \
         Loaded with binary COPY in chunks of 200k, secondary indexes built after the load, then VACUUM ANALYZE and CHECKPOINT. \
         One fresh database per scale, dropped afterwards."
    );
    let _ = writeln!(
        md,
        "- **Full refresh.** `bench_mv` is the contract's definition (`sql/summary_definition.sql`) as a materialized view with the \
         contract's three indexes. Each repetition runs REFRESH MATERIALIZED VIEW CONCURRENTLY, plain REFRESH, and `rebuild` of \
         the table (the worker's fallback: one REPEATABLE READ aggregation of the window, diffed against the table, writing only new, changed and gone rows), back to back."
    );
    let _ = writeln!(
        md,
        "- **One cycle.** New traces (spans stamped now, `created_at` left to its default) are inserted by COPY, then one cycle is timed \
         from reading the commit horizon to COMMIT, exactly as the worker runs it. Before each insert the bench waits out the commit margin (2 s) and runs \
         an unmeasured cycle, so the measured cycle reads its own batch only (a cycle re-reads the rows stamped in the 2 s before \
         its previous horizon, in case a transaction commits late; under sustained ingest that re-read is part of the freshness \
         numbers). Sizes are interleaved across repetitions; the ratio divides by the median REFRESH CONCURRENTLY time on the \
         same data."
    );
    let _ = writeln!(
        md,
        "- **Freshness.** The worker runs in-process (the library's `Worker`, interval {} ms). A generator inserts new traces every \
         100 ms at the target rate with multi-row INSERT … ON CONFLICT DO NOTHING, one transaction per batch, and records for each \
         batch the instant its commit returned and one trace_id with its span count. A poller queries those trace_ids every 50 ms; \
         freshness is the time from the commit to the first poll that returned the complete summary, so it includes up to 50 ms of \
         polling granularity. Batches not seen {} s after the generator stopped count as unseen (infinitely late) in the \
         percentiles. Before each rate a probe trace is inserted and awaited, so every rate starts caught up. {} per rate.",
        s.worker_interval.as_millis(),
        DRAIN.as_secs(),
        humantime::format_duration(s.freshness)
    );
    let _ = writeln!(
        md,
        "- **Reads.** The SRQL shapes from CONTRACT.md, prepared once, {} runs each, alternating view and table, after 3 warm-up runs \
         on each; client round trip included.",
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
        "- **Ingest cost.** {} pre-generated spans inserted in batches of {} (one INSERT per batch, autocommit). View mode is measured \
         before `install` (no created_at index, nothing running); then, interleaved, incremental mode with the worker stopped and \
         with it running (caught up first). The view's own cost, a REFRESH every 2 minutes competing with ingest, is not included.",
        s.ingest_spans, s.ingest_batch
    );
    let _ = writeln!(
        md,
        "- **Equality.** After the worker stopped: one cycle, REFRESH CONCURRENTLY, one more cycle, then `EXCEPT ALL` both ways over \
         the 14 columns, leaving out traces within 10 minutes of the window edge (they cross it continuously, and the two sides \
         were brought up to date a refresh's duration apart)."
    );
}
