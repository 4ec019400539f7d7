//! trace-summarizer: keeps `otel_trace_summaries` (per-trace summaries of OpenTelemetry spans
//! in PostgreSQL) current, either as the seed's materialized view refreshed by pg_cron, or as a
//! table maintained incrementally at the cost of the new data only.
//!
//! Module map: `cli`/`config` (flags, validation), `connect`/`tls` (libpq-style connections),
//! `source` (the target schema and otel_traces), `sqltext` (the embedded SQL), `state` (our
//! schema), `install` (install, uninstall, switching), `cron` (pg_cron), `horizon`/`cycle`/
//! `recompute`/`deletes` (the incremental path), `rebuild` (full refresh), `verify`, `worker`/
//! `locks`/`shutdown` (the daemon), `status`, `metrics`/`http` (operations), `cluster`/
//! `spangen` (throwaway PostgreSQL and synthetic spans for tests, demo and bench).

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connect;
pub mod cron;
pub mod cycle;
pub mod deletes;
pub mod demo;
pub mod error;
pub mod horizon;
pub mod http;
pub mod install;
pub mod locks;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod progress;
pub mod quote;
pub mod rebuild;
pub mod recompute;
pub mod shutdown;
pub mod source;
pub mod spangen;
pub mod sqltext;
pub mod state;
pub mod status;
pub mod switch;
pub mod tls;
pub mod verify;
pub mod worker;
