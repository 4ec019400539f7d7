//! Prometheus metrics of the worker, in base units, and the health flags behind /livez and
//! /readyz.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub lag_seconds: Gauge<f64, AtomicU64>,
    pub cycle_duration_seconds: Histogram,
    pub spans_processed: Counter,
    pub traces_upserted: Counter,
    pub traces_pruned: Counter,
    pub fallbacks: Family<ReasonLabel, Counter>,
    pub errors: Family<KindLabel, Counter>,
    pub leader: Gauge,
    pub last_success_timestamp_seconds: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("trace_summarizer");
        let lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "lag_seconds",
            "Seconds between now and the snapshot the summaries reflect",
            lag_seconds.clone(),
        );
        let cycle_duration_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        registry.register(
            "cycle_duration_seconds",
            "Duration of incremental cycles",
            cycle_duration_seconds.clone(),
        );
        let spans_processed = Counter::default();
        registry.register(
            "spans_processed",
            "New spans absorbed by cycles",
            spans_processed.clone(),
        );
        let traces_upserted = Counter::default();
        registry.register(
            "traces_upserted",
            "Summaries inserted or changed by cycles",
            traces_upserted.clone(),
        );
        let traces_pruned = Counter::default();
        registry.register(
            "traces_pruned",
            "Summaries removed because their trace left the window",
            traces_pruned.clone(),
        );
        // Every known label is created up front, so dashboards and alerts see zeros, not gaps.
        let fallbacks = Family::<ReasonLabel, Counter>::default();
        for reason in [
            "state_missing",
            "state_version",
            "backlog",
            "verify_drift",
            "unexplained_deletes",
        ] {
            let _ = fallbacks.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        registry.register(
            "fallbacks",
            "Full refreshes run instead of a cycle, by reason",
            fallbacks.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        for kind in [
            "connection",
            "connect",
            "transient",
            "privilege",
            "database",
            "client",
            "precondition",
            "io",
        ] {
            let _ = errors.get_or_create(&KindLabel { kind: kind.into() });
        }
        registry.register("errors", "Errors by kind", errors.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this process is the leader",
            leader.clone(),
        );
        let last_success_timestamp_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful cycle or rebuild",
            last_success_timestamp_seconds.clone(),
        );
        let build_info = Family::<BuildLabel, Gauge>::default();
        build_info
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "Build information", build_info);
        Arc::new(Metrics {
            registry,
            lag_seconds,
            cycle_duration_seconds,
            spans_processed,
            traces_upserted,
            traces_pruned,
            fallbacks,
            errors,
            leader,
            last_success_timestamp_seconds,
        })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String");
        out
    }

    pub fn fallback(&self, reason: &str) {
        self.fallbacks
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn success_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success_timestamp_seconds.set(now.as_secs_f64());
    }
}

/// Liveness and readiness, shared by the worker loop and the HTTP server.
#[derive(Default)]
pub struct Health {
    /// Unix seconds of the loop's last turn.
    pub loop_tick: AtomicI64,
    /// Unix seconds of the last successful round trip to PostgreSQL.
    pub db_contact: AtomicI64,
    pub initialised: AtomicBool,
    pub shutting_down: AtomicBool,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Health {
    pub fn tick(&self) {
        self.loop_tick.store(unix_now(), Ordering::Relaxed);
    }
    pub fn contact(&self) {
        self.db_contact.store(unix_now(), Ordering::Relaxed);
        self.tick();
    }
    /// The loop turned within `max_age_s` (a rebuild may hold it for a while).
    pub fn live(&self, max_age_s: i64) -> bool {
        unix_now() - self.loop_tick.load(Ordering::Relaxed) <= max_age_s
    }
    /// Initialised, not shutting down, and PostgreSQL answered in the last 30 seconds.
    pub fn ready(&self) -> bool {
        self.initialised.load(Ordering::Relaxed)
            && !self.shutting_down.load(Ordering::Relaxed)
            && unix_now() - self.db_contact.load(Ordering::Relaxed) <= 30
    }
}
