//! Command-line flags (clap), with environment fallbacks.
//!
//! This is the first of two stages: raw flags here, then `config.rs` validates them into
//! typed settings before any I/O happens. Exit codes are documented in `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the operation ran and found a problem (verify found a mismatch, status found the data STALE)
  2  usage or configuration error (bad URL, unreachable server, missing table, column or privilege)

Connection: --database-url takes a postgresql:// URL or a libpq key=value string. When it is
unset, PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT and PGAPPNAME
apply, as with libpq. sslmode accepts disable, prefer, require, verify-ca and verify-full.";

/// Keeps the `otel_trace_summaries` relation current: an incrementally maintained table, or the
/// original materialized view refreshed by pg_cron.
#[derive(Debug, Parser)]
#[command(name = "trace-summarizer", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// PostgreSQL connection: a postgresql:// URL or a libpq "key=value" string.
    /// Falls back to the libpq PG* environment variables when unset.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Schema that holds otel_traces and otel_trace_summaries (one installation). `run` takes
    /// several, comma-separated, and serves each. Default: the first existing schema on the
    /// connection's search_path.
    #[arg(long, env = "TRACE_SUMMARIZER_SCHEMA", global = true)]
    pub schema: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A table kept exact by the `run` worker (the default).
    Incremental,
    /// The seed's materialized view, refreshed by a pg_cron job.
    Mv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create otel_trace_summaries (table or materialized view), fill it, grant readers.
    ///
    /// Idempotent. If the other mode is installed, switches it in place: readers always see a
    /// complete relation.
    Install(InstallArgs),
    /// Remove everything install made: the relation, the pg_cron job, the tailing index, and
    /// the trace_summarizer state schema.
    Uninstall,
    /// Run the incremental worker: tail new spans, recompute affected traces, prune the window.
    Run(RunArgs),
    /// Recompute every summary in the window now (incremental mode), or refresh the view
    /// concurrently (mv mode). Readers are never blocked.
    Rebuild(RebuildArgs),
    /// Report mode, window, watermark, lag, last cycle, row count, leader and a staleness
    /// verdict. Exits 1 when the data is STALE.
    Status(StatusArgs),
    /// Compare otel_trace_summaries with its definition computed fresh, row for row.
    /// Exits 1 on any mismatch.
    Verify(VerifyArgs),
    /// Start a throwaway PostgreSQL, load synthetic spans, and run the worker under live ingest.
    #[cfg(feature = "lab")]
    Demo(DemoArgs),
    /// Benchmark incremental maintenance against REFRESH MATERIALIZED VIEW CONCURRENTLY and
    /// write bench-report.md with a freshness chart.
    #[cfg(feature = "lab")]
    Bench(BenchArgs),
}

impl Command {
    /// The lab's commands (demo, bench), which generate load in-process.
    pub fn is_lab(&self) -> bool {
        #[cfg(feature = "lab")]
        if matches!(self, Command::Demo(_) | Command::Bench(_)) {
            return true;
        }
        false
    }
}

#[derive(Debug, Args, Clone)]
pub struct InstallArgs {
    /// Which form of otel_trace_summaries to install.
    #[arg(long, value_enum, default_value_t = Mode::Incremental, env = "TRACE_SUMMARIZER_MODE")]
    pub mode: Mode,

    /// Summary window: traces with a span newer than now() - WINDOW are summarized. Days are
    /// calendar days in the database's time zone, as in the view's `interval '7 days'`.
    #[arg(long, default_value = "7d", env = "TRACE_SUMMARIZER_WINDOW")]
    pub window: String,

    /// Which spans error_count counts: not-ok (status_code <> 1, NULL counting as 0: the
    /// contract) or error (status_code = 2, as upstream counts since March 2026).
    #[arg(long, default_value = "not-ok", value_parser = ["not-ok", "error"], env = "TRACE_SUMMARIZER_ERROR_RULE")]
    pub error_rule: String,

    /// Role granted SELECT on the summaries (repeatable). Default: `spire`, if it exists.
    #[arg(
        long = "reader-role",
        value_name = "ROLE",
        env = "TRACE_SUMMARIZER_READER_ROLES",
        value_delimiter = ','
    )]
    pub reader_roles: Vec<String>,

    /// pg_cron schedule for the view's refresh (mv mode).
    #[arg(long, default_value = "*/2 * * * *")]
    pub cron_schedule: String,

    /// Take over an otel_trace_summaries that trace-summarizer did not create (the seed's view,
    /// upstream's table): keeps its grants and comment, prints how to roll back. Without it,
    /// install refuses to replace such a relation.
    #[arg(long)]
    pub adopt: bool,

    /// When a logical replication publication would replicate the stamp column install adds
    /// (a publication of otel_traces without a column list), change it to list every other
    /// column instead of refusing (ALTER PUBLICATION ... SET TABLE otel_traces (columns)).
    #[arg(long)]
    pub alter_publications: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Run steps until caught up, then exit.
    #[arg(long)]
    pub once: bool,

    /// The shortest time from the start of one step to the start of the next (and between the
    /// checks that follow a step).
    #[arg(long, default_value = "100ms", env = "TRACE_SUMMARIZER_INTERVAL")]
    pub interval: String,

    /// The longest pause after a step: the lower the ingest rate, the longer steps wait (see
    /// --step-batch), up to this long (freshness against the server's CPU).
    #[arg(long, default_value = "2s", env = "TRACE_SUMMARIZER_MAX_INTERVAL")]
    pub max_interval: String,

    /// How often an idle worker checks for new spans once a check found none: the first spans
    /// after a quiet period are summarized within about this long. A pause longer than
    /// --interval also checks this often (or at the middle of the pause, if later) whether
    /// --step-batch spans already wait.
    #[arg(long, default_value = "250ms", env = "TRACE_SUMMARIZER_IDLE_INTERVAL")]
    pub idle_interval: String,

    /// New spans a step aims to absorb at once when spans arrive steadily. At or above the rate
    /// that brings them in --interval (10k spans/s with the defaults) steps run every
    /// --interval; below it the pause grows faster than the rate falls (as the 1.5th power of
    /// the time the rate takes to bring them), up to --max-interval: at 5k spans/s about
    /// 280 ms, at 1k spans/s the 2 s maximum.
    #[arg(long, default_value_t = 1000, env = "TRACE_SUMMARIZER_STEP_BATCH")]
    pub step_batch: u32,

    /// Serve /metrics, /livez and /readyz on this address (for example 0.0.0.0:9466).
    #[arg(long, env = "TRACE_SUMMARIZER_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Server-side statement_timeout for each step's statements.
    #[arg(long, default_value = "5m", env = "TRACE_SUMMARIZER_STATEMENT_TIMEOUT")]
    pub statement_timeout: String,

    /// statement_timeout of a full refresh (fallbacks), which has its own limit; 0: none.
    #[arg(long, default_value = "4h", env = "TRACE_SUMMARIZER_REBUILD_TIMEOUT")]
    pub rebuild_timeout: String,

    /// Connections a full refresh (fallbacks) compares the window with the table on, the
    /// worker's own included: a number from 1 to 64, or auto (the server's
    /// max_parallel_workers_per_gather + 1, at most the connections still free).
    #[arg(long, default_value = "auto", env = "TRACE_SUMMARIZER_REBUILD_JOBS")]
    pub rebuild_jobs: String,

    /// Time for one full pass of the continuous audit over all traces; 0: no audit.
    #[arg(long, default_value = "24h", env = "TRACE_SUMMARIZER_AUDIT_PERIOD")]
    pub audit_period: String,

    /// New spans one step absorbs at most (the rest follows in the next step).
    #[arg(
        long,
        default_value_t = 50_000,
        env = "TRACE_SUMMARIZER_MAX_SPANS_PER_STEP"
    )]
    pub max_spans_per_step: u32,

    /// Traces one step recomputes from their spans at most (for deletes and for the window edge).
    #[arg(
        long,
        default_value_t = 5_000,
        env = "TRACE_SUMMARIZER_MAX_TRACES_PER_STEP"
    )]
    pub max_traces_per_step: u32,
}

#[derive(Debug, Args, Clone)]
pub struct RebuildArgs {
    /// statement_timeout of the refresh; 0: none.
    #[arg(long, default_value = "0", env = "TRACE_SUMMARIZER_REBUILD_TIMEOUT")]
    pub timeout: String,

    /// Connections that compare the window with the table (incremental mode), this session's
    /// own included, each a range of trace_ids: a number from 1 to 64, or auto (the server's
    /// max_parallel_workers_per_gather + 1, at most the connections still free). The others
    /// share this session's snapshot; this session writes.
    #[arg(long, default_value = "auto", env = "TRACE_SUMMARIZER_REBUILD_JOBS")]
    pub jobs: String,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Print machine-readable JSON (stable; see README).
    #[arg(long)]
    pub json: bool,

    /// Lag (or age of the last cycle) from which the verdict is WARNING.
    #[arg(long, default_value = "30s", env = "TRACE_SUMMARIZER_WARN_AFTER")]
    pub warn_after: String,

    /// Lag (or age of the last cycle) from which the verdict is STALE (exit 1).
    #[arg(long, default_value = "5m", env = "TRACE_SUMMARIZER_STALE_AFTER")]
    pub stale_after: String,
}

#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// Check N random traces instead of the whole window.
    #[arg(long, value_name = "N", conflicts_with = "since")]
    pub sample: Option<u32>,

    /// Check only traces with a span newer than now() - DUR.
    #[arg(long, value_name = "DUR")]
    pub since: Option<String>,

    /// Recompute the traces that differ.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Spans to load before the worker starts.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,

    /// Ingest rate of the built-in generator while the worker runs (spans per second).
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,

    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<String>,

    /// Keep the throwaway cluster (and print how to connect to it).
    #[arg(long)]
    pub keep: bool,
}

/// The parts of `bench` to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchParts {
    /// Everything.
    All,
    /// The comparison of the view, upstream's job and the product, at each scale.
    Comparison,
    /// The measures against REFRESH CONCURRENTLY, at each scale.
    Classic,
    /// Only the Citus section (a coordinator and worker clusters of its own).
    Citus,
    /// Only the restore section (a dump restored into fresh PostgreSQL 15 and 18 clusters).
    Restore,
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Data sizes to benchmark, in spans (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub scales: Vec<u64>,

    /// Sustained ingest rates for the freshness test, in spans per second (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub rates: Vec<u32>,

    /// Ingest rates of the comparison of the three systems (the view, upstream's job, the
    /// product), in spans per second (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub compare_rates: Vec<u32>,

    /// How long each cell of the comparison ingests (at least one schedule of the view and the
    /// job, 2 minutes, for the real figures; shorter only to try the bench out).
    #[arg(long, default_value = "2m", hide = true)]
    pub compare_cell: String,

    /// The schedule of the view's refresh and of the job in the comparison (upstream: 2m).
    #[arg(long, default_value = "2m", hide = true)]
    pub compare_period: String,

    /// Which parts to run: all, only the comparison, the classic measures (all but the
    /// comparison, Citus and restores), only the Citus section, or only the restore section.
    #[arg(long, value_enum, default_value_t = BenchParts::All)]
    pub parts: BenchParts,

    /// How long each freshness run lasts.
    #[arg(long, default_value = "20s")]
    pub freshness_duration: String,

    /// Repetitions of each timed step (the report shows medians).
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,

    /// Mean spans per trace of the generated data (upstream: 10.6M spans in 875k traces, about
    /// 12). Counts stay skewed, with a long tail.
    #[arg(long, default_value_t = 12.0)]
    pub spans_per_trace: f64,

    /// Where to write the report (the chart goes beside it).
    #[arg(long, default_value = "bench-report.md")]
    pub output: std::path::PathBuf,
}
