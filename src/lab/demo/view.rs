//! What the demo shows while it runs and when it ends. On a terminal: a live view redrawn every
//! second (ingest rate, lag, last cycle, rows, the 10 latest traces as the traces tab lists
//! them). Off a terminal: one summary line every 5 seconds. At the end: the summary.

use super::fmt::{cell, metric_sum, quantile, secs, thousands};
use super::ingest::{Stats, Totals};
use super::prepare::Loaded;
use super::term;
use crate::db::source::Target;
use crate::error::{DbContext, Result};
use crate::ops::metrics::{Metrics, SchemaMetrics};
use crate::ops::shutdown::Shutdown;
use crate::ops::status::Status;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// What the traces tab lists.
const LATEST: &str = "select trace_id, \"timestamp\", root_service_name, root_span_name, span_count, error_count, duration_ms
                      from {summaries} order by \"timestamp\" desc limit 10";
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Screen {
    pub on_terminal: bool,
    pub url: String,
    pub rate: u32,
    pub duration: Option<Duration>,
    pub log_path: Option<PathBuf>,
}

/// How the live phase went.
#[derive(Debug, Default)]
pub struct Watched {
    pub seconds: f64,
    pub lag_samples: Vec<f64>,
    pub ended_by: String,
}

pub struct Outcome {
    pub watched: Watched,
    pub ingest: Totals,
    pub metrics: MetricTotals,
    /// Where the worker's log lines went while the live view ran.
    pub log_path: Option<PathBuf>,
}

/// Totals read from the worker's metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricTotals {
    pub cycles: f64,
    pub cycle_seconds: f64,
    pub spans_absorbed: u64,
    pub fallbacks: f64,
    pub errors: f64,
}

impl MetricTotals {
    pub fn read(metrics: &Metrics, schema: &SchemaMetrics) -> Self {
        let text = metrics.encode();
        MetricTotals {
            cycles: metric_sum(&text, "trace_summarizer_cycle_duration_seconds_count"),
            cycle_seconds: metric_sum(&text, "trace_summarizer_cycle_duration_seconds_sum"),
            spans_absorbed: schema.spans_processed.get(),
            fallbacks: metric_sum(&text, "trace_summarizer_fallbacks_total"),
            errors: metric_sum(&text, "trace_summarizer_errors_total"),
        }
    }

    fn mean_cycle_ms(&self) -> Option<f64> {
        (self.cycles > 0.0).then(|| 1000.0 * self.cycle_seconds / self.cycles)
    }
}

struct Latest {
    trace_id: String,
    timestamp: DateTime<Utc>,
    root_service: Option<String>,
    root_span: Option<String>,
    spans: i64,
    errors: i64,
    duration_ms: f64,
}

async fn latest(client: &Client, target: &Target) -> Result<Vec<Latest>> {
    let rows = client
        .query(&LATEST.replace("{summaries}", &target.summaries()), &[])
        .await
        .ctx("listing the latest traces")?;
    Ok(rows
        .iter()
        .map(|r| Latest {
            trace_id: r.get(0),
            timestamp: r.get(1),
            root_service: r.get(2),
            root_span: r.get(3),
            spans: r.get(4),
            errors: r.get(5),
            duration_ms: r.get(6),
        })
        .collect())
}

/// Runs the view until `stop`, `--duration`, or the worker ends.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    screen: &Screen,
    client: &Client,
    target: &Target,
    stats: &Stats,
    metrics: &Metrics,
    schema_metrics: &SchemaMetrics,
    stop: &Shutdown,
    worker: &JoinHandle<Result<()>>,
) -> Watched {
    let started = Instant::now();
    let deadline = screen.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (when, spans ingested, spans absorbed by cycles) over the last ~5 s, for rates.
    let mut window: VecDeque<(Instant, u64, u64)> = VecDeque::new();
    let mut watched = Watched::default();
    let mut last_line = Instant::now();
    let mut first = true;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.wait() => { watched.ended_by = "stopped by a signal".into(); break; }
            _ = until_deadline => { watched.ended_by = "--duration reached".into(); break; }
            _ = tick.tick() => {}
        }
        if worker.is_finished() {
            watched.ended_by = "the worker stopped".into();
            break;
        }
        let ingest = stats.snapshot();
        let totals = MetricTotals::read(metrics, schema_metrics);
        window.push_back((Instant::now(), ingest.spans, totals.spans_absorbed));
        while window.len() > 6 {
            window.pop_front();
        }
        let rates = match (window.front(), window.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                Rates {
                    ingest: b.1.saturating_sub(a.1) as f64 / dt,
                    absorbed: b.2.saturating_sub(a.2) as f64 / dt,
                }
            }
            _ => Rates::default(),
        };
        let status = crate::ops::status::collect(
            client,
            target,
            None,
            Duration::from_secs(30),
            Duration::from_secs(300),
        )
        .await;
        if let Ok(s) = &status {
            watched.lag_samples.push(s.lag_seconds);
        }
        let elapsed = started.elapsed();
        if screen.on_terminal {
            let latest = latest(client, target).await;
            let cols = term::size().map(|s| s.0).unwrap_or(200);
            let frame = Frame {
                screen,
                elapsed,
                rates,
                ingest: &ingest,
                status: &status,
                totals: &totals,
                lags: &watched.lag_samples,
                latest: &latest,
                cols,
            };
            term::draw(&term::frame(&frame.lines(), first));
            first = false;
        } else if last_line.elapsed() >= LINE_EVERY {
            last_line = Instant::now();
            println!("{}", line(elapsed, rates, &ingest, &status, &totals));
        }
    }
    watched.seconds = started.elapsed().as_secs_f64();
    watched
}

/// The off-terminal line.
/// Spans per second over the last few seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    ingest: f64,
    absorbed: f64,
}

fn line(
    elapsed: Duration,
    rates: Rates,
    ingest: &Totals,
    status: &Result<Status>,
    totals: &MetricTotals,
) -> String {
    let mut out = format!(
        "demo: {:>4} s: ingest {} spans/s ({} spans, {} late)",
        elapsed.as_secs(),
        thousands(rates.ingest as u64),
        thousands(ingest.spans),
        thousands(ingest.late)
    );
    match status {
        Ok(s) => {
            out += &format!(
                ", lag {}, worker absorbing {} spans/s, {} cycles (mean {}), {} summaries",
                secs(Some(s.lag_seconds)),
                thousands(rates.absorbed as u64),
                totals.cycles as u64,
                ms(totals.mean_cycle_ms()),
                thousands(s.rows.max(0) as u64)
            );
        }
        Err(e) => out += &format!(", status unavailable: {e}"),
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map(|m| format!("{m:.0} ms"))
        .unwrap_or_else(|| "-".into())
}

struct Frame<'a> {
    screen: &'a Screen,
    elapsed: Duration,
    rates: Rates,
    ingest: &'a Totals,
    status: &'a Result<Status>,
    totals: &'a MetricTotals,
    lags: &'a [f64],
    latest: &'a Result<Vec<Latest>>,
    /// Terminal width, for the table's layout.
    cols: usize,
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

impl Frame<'_> {
    fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        let until = match self.screen.duration {
            Some(d) => format!("{} / {}", clock(self.elapsed), clock(d)),
            None => clock(self.elapsed),
        };
        lines.push(format!(
            "trace-summarizer demo · live ingest · {until} · Ctrl-C stops"
        ));
        lines.push(format!("database   {}", self.screen.url));
        lines.push(String::new());
        let mut ingest = format!(
            "ingest     {} spans/s (target {})   {} spans so far, {} late",
            thousands(self.rates.ingest as u64),
            thousands(self.screen.rate as u64),
            thousands(self.ingest.spans),
            thousands(self.ingest.late)
        );
        if self.ingest.errors > 0 {
            ingest += &format!("   {} insert errors", self.ingest.errors);
        }
        lines.push(ingest);
        match self.status {
            Ok(s) => {
                lines.push(format!(
                    "lag        {}  ({})   p50 {}, max {}",
                    secs(Some(s.lag_seconds)),
                    format!("{:?}", s.verdict).to_uppercase(),
                    secs(quantile(self.lags, 0.5)),
                    secs(quantile(self.lags, 1.0))
                ));
                lines.push(format!(
                    "worker     absorbing {} spans/s, last cycle {} ({} ago)",
                    thousands(self.rates.absorbed as u64),
                    ms(s.last_cycle.duration_ms),
                    secs(s.age_seconds),
                ));
                lines.push(format!(
                    "cycles     {} (mean {}), {} full refreshes, {} errors",
                    self.totals.cycles as u64,
                    ms(self.totals.mean_cycle_ms()),
                    self.totals.fallbacks as u64,
                    self.totals.errors as u64
                ));
                let newest = s
                    .newest_summary_timestamp
                    .map(|t| t.format("%H:%M:%S%.3f UTC").to_string())
                    .unwrap_or_else(|| "-".into());
                lines.push(format!(
                    "summaries  {} rows, newest {newest}",
                    thousands(s.rows.max(0) as u64)
                ));
            }
            Err(e) => lines.push(format!("status     unavailable: {e}")),
        }
        lines.push(String::new());
        lines.push("latest traces (order by timestamp desc limit 10)".into());
        lines.extend(table(self.latest, self.cols));
        if let Some(p) = &self.screen.log_path {
            lines.push(String::new());
            lines.push(format!("worker log: {}", p.display()));
        }
        lines
    }
}

/// The latest traces as the traces tab lists them; narrower cells below 112 columns.
fn table(latest: &Result<Vec<Latest>>, cols: usize) -> Vec<String> {
    let wide = cols >= 112;
    let (id, ts, text, ts_format) = if wide {
        (32, 18, 15, "%m-%d %H:%M:%S%.3f")
    } else {
        (16, 12, 12, "%H:%M:%S%.3f")
    };
    let mut lines = vec![format!(
        "{} {} {} {} {:>5} {:>6} {:>9}",
        cell(Some("TRACE ID"), id),
        cell(Some(if wide { "TIMESTAMP (UTC)" } else { "UTC" }), ts),
        cell(Some("ROOT SERVICE"), text),
        cell(Some("ROOT SPAN"), text),
        "SPANS",
        "ERRORS",
        "DUR ms"
    )];
    match latest {
        Ok(rows) => {
            for r in rows {
                lines.push(format!(
                    "{} {} {} {} {:>5} {:>6} {:>9}",
                    cell(Some(&r.trace_id), id),
                    cell(Some(&r.timestamp.format(ts_format).to_string()), ts),
                    cell(r.root_service.as_deref(), text),
                    cell(r.root_span.as_deref(), text),
                    r.spans,
                    r.errors,
                    duration(r.duration_ms)
                ));
            }
        }
        Err(e) => lines.push(format!("unavailable: {e}")),
    }
    lines
}

/// Milliseconds in at most 9 characters (a trace whose start time is 0 lasts for decades).
fn duration(ms: f64) -> String {
    if ms.abs() < 1e6 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2e}")
    }
}

/// The end-of-run summary (stdout).
pub fn print_summary(
    loaded: &Loaded,
    outcome: &Outcome,
    report: &crate::ops::verify::Report,
    verify_took: Duration,
) {
    let w = &outcome.watched;
    let i = &outcome.ingest;
    let m = &outcome.metrics;
    let rate = i.spans as f64 / w.seconds.max(1e-3);
    println!("demo summary ({})", w.ended_by);
    println!(
        "  history   {} spans loaded in {:.1} s",
        thousands(loaded.spans),
        loaded.seconds
    );
    println!(
        "  ingested  {} spans in {:.1} s ({} spans/s), {} of them late{}",
        thousands(i.spans),
        w.seconds,
        thousands(rate as u64),
        thousands(i.late),
        if i.errors > 0 {
            format!(
                ", {} insert errors (last: {})",
                i.errors,
                i.last_error.as_deref().unwrap_or("-")
            )
        } else {
            String::new()
        }
    );
    println!(
        "  worker    {} cycles (mean {}), {} spans absorbed, {} full refreshes, {} errors",
        m.cycles as u64,
        ms(m.mean_cycle_ms()),
        thousands(m.spans_absorbed),
        m.fallbacks as u64,
        m.errors as u64
    );
    println!(
        "  lag       p50 {}, max {} ({} samples)",
        secs(quantile(&w.lag_samples, 0.5)),
        secs(quantile(&w.lag_samples, 1.0)),
        w.lag_samples.len()
    );
    if report.mismatches == 0 {
        println!(
            "  verify    ok: {} summaries equal the definition, 0 mismatches ({:.1} s)",
            thousands(report.expected_rows.max(0) as u64),
            verify_took.as_secs_f64()
        );
    } else {
        println!(
            "  verify    FAILED: {} mismatches out of {} expected rows",
            report.mismatches, report.expected_rows
        );
        for m in &report.first {
            println!(
                "            {} {} {}",
                m.trace_id,
                m.kind,
                m.columns.join(",")
            );
        }
    }
    if let Some(p) = &outcome.log_path {
        println!("  log       the worker's log lines are in {}", p.display());
    }
}
