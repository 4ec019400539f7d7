//! trace-summarizer: keeps `otel_trace_summaries` (per-trace summaries of OpenTelemetry spans
//! in PostgreSQL) current, either as the seed's materialized view refreshed by pg_cron, or as a
//! table maintained incrementally at the cost of the new data only.
//!
//! Layers, from the bottom:
//! - `error`: the error type and the one place that maps an error kind to a behaviour.
//! - `db`: connections, TLS, quoting, the embedded SQL, locks, privileges, the source table.
//! - `definition`: what a summary means (window, error rule) and its SQL.
//! - `state`: our own schema `trace_summarizer` and the state row of each installation.
//! - `maintain`: the incremental cycle and the full refresh.
//! - `install`: install, uninstall, switching between view and table, pg_cron.
//! - `ops`: the worker daemon, status, verify, metrics, HTTP, logging.
//! - `citus`: otel_traces distributed by trace_id over Citus nodes, each summarizing its shards.
//! - `lab` (feature `lab`): throwaway clusters, synthetic spans, `demo` and `bench`.
//! - `cli` and `settings`: raw flags, then validated settings (before any I/O).
//! - `commands`: one function per subcommand, called by `main`.

pub mod citus;
pub mod cli;
pub mod commands;
pub mod db;
pub mod definition;
pub mod error;
pub mod install;
#[cfg(feature = "lab")]
pub mod lab;
pub mod maintain;
pub mod ops;
pub mod settings;
pub mod state;
