//! What ran where: the report's opening (title, when and by which version it was generated,
//! the command line, why ratios rather than absolute times) and the Machine and settings
//! section (CPU, memory, PostgreSQL, the source tree, the server, the worker's settings, the
//! load average, the repetitions, the server's settings).

use super::input::ReportInput;
use crate::lab::bench::audit_cost::period_text;
use crate::lab::bench::config::Settings;
use crate::lab::bench::refresh::SESSION_MEMORY;
use crate::lab::bench::stats::count;
use std::fmt::Write;

/// The title and the paragraphs before the Targets.
pub fn opening(md: &mut String, input: &ReportInput) {
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
}

fn command_line(s: &Settings) -> String {
    let join = |v: Vec<String>| v.join(",");
    format!(
        "trace-summarizer bench --scales {} --rates {} --compare-rates {}{} --freshness-duration {} --repeat {} --spans-per-trace {} --output {}",
        join(s.scales.iter().map(|n| n.to_string()).collect()),
        join(s.rates.iter().map(|n| n.to_string()).collect()),
        join(s.compare.rates.iter().map(|n| n.to_string()).collect()),
        hidden(s),
        humantime::format_duration(s.freshness),
        s.repeat,
        s.spans_per_trace,
        s.output.display()
    )
}

/// The hidden flags, when they differ from their defaults.
fn hidden(s: &Settings) -> String {
    let mut out = String::new();
    let two_minutes = std::time::Duration::from_secs(120);
    if s.compare.cell != two_minutes {
        out += &format!(
            " --compare-cell {}",
            humantime::format_duration(s.compare.cell)
        );
    }
    if s.compare.period != two_minutes {
        out += &format!(
            " --compare-period {}",
            humantime::format_duration(s.compare.period)
        );
    }
    match s.parts {
        crate::cli::BenchParts::All => {}
        crate::cli::BenchParts::Comparison => out += " --parts comparison",
        crate::cli::BenchParts::Classic => out += " --parts classic",
        crate::cli::BenchParts::Citus => out += " --parts citus",
        crate::cli::BenchParts::Restore => out += " --parts restore",
    }
    out
}

/// The machine alone (`--parts citus`, whose clusters are its own): CPU, memory, OS,
/// PostgreSQL, the source tree, the load average.
pub fn brief(md: &mut String, input: &ReportInput) {
    let m = input.machine;
    let _ = writeln!(md, "## Machine\n");
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
    if !input.load_before.is_empty() {
        let _ = writeln!(
            md,
            "- Load average (1, 5, 15 min) before the run: {}; after: {}. Anything above 0 before the run is other work on the machine.",
            input.load_before, input.load_after
        );
    }
    let _ = writeln!(md);
}

/// The Machine and settings section: where the bench ran, the worker's settings, the load
/// average, the repetitions, the server's settings.
pub fn section(md: &mut String, input: &ReportInput) {
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
        SESSION_MEMORY
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
