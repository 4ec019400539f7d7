//! Prometheus metrics of the worker, in base units, every one labelled with the installation's
//! `schema` (one process may serve several), and the health flags behind /livez and /readyz.

use crate::maintain::cycle::Fallback;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchemaLabel {
    pub schema: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub schema: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub schema: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoundLabel {
    pub schema: String,
    pub bound: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: String,
}

fn cycle_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The process's registry and metric families.
pub struct Metrics {
    registry: Registry,
    lag_seconds: Family<SchemaLabel, Gauge<f64, AtomicU64>>,
    cycle_duration_seconds: Family<SchemaLabel, Histogram>,
    spans_processed: Family<SchemaLabel, Counter>,
    traces_upserted: Family<SchemaLabel, Counter>,
    traces_pruned: Family<SchemaLabel, Counter>,
    fallbacks: Family<ReasonLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    leader: Family<SchemaLabel, Gauge>,
    last_success_timestamp_seconds: Family<SchemaLabel, Gauge<f64, AtomicU64>>,
    audit_traces_checked: Family<SchemaLabel, Counter>,
    audit_mismatches: Family<SchemaLabel, Counter>,
    audit_passes: Family<SchemaLabel, Counter>,
    bounded_steps: Family<BoundLabel, Counter>,
    /// Per schema: the unix time up to which every committed span is summarized; the lag is
    /// computed from it at each scrape, so it grows while a step or a refresh runs.
    reflected: Mutex<HashMap<String, f64>>,
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("trace_summarizer");
        let lag_seconds = Family::<SchemaLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lag_seconds",
            "Seconds between now and the moment up to which every committed span is summarized",
            lag_seconds.clone(),
        );
        let cycle_duration_seconds = Family::<SchemaLabel, Histogram>::new_with_constructor(
            cycle_histogram as fn() -> Histogram,
        );
        registry.register(
            "cycle_duration_seconds",
            "Duration of incremental steps that changed something",
            cycle_duration_seconds.clone(),
        );
        let spans_processed = Family::<SchemaLabel, Counter>::default();
        registry.register(
            "spans_processed",
            "New spans absorbed by steps",
            spans_processed.clone(),
        );
        let traces_upserted = Family::<SchemaLabel, Counter>::default();
        registry.register(
            "traces_upserted",
            "Summaries inserted or changed by steps",
            traces_upserted.clone(),
        );
        let traces_pruned = Family::<SchemaLabel, Counter>::default();
        registry.register(
            "traces_pruned",
            "Summaries removed because no span of their trace is left in the window",
            traces_pruned.clone(),
        );
        let fallbacks = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "fallbacks",
            "Full refreshes run instead of a step, by reason",
            fallbacks.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register("errors", "Errors by kind", errors.clone());
        let leader = Family::<SchemaLabel, Gauge>::default();
        registry.register(
            "leader",
            "1 when this process leads the schema's installation, 0 on a standby",
            leader.clone(),
        );
        let last_success_timestamp_seconds =
            Family::<SchemaLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful step or full refresh",
            last_success_timestamp_seconds.clone(),
        );
        let audit_traces_checked = Family::<SchemaLabel, Counter>::default();
        registry.register(
            "audit_traces_checked",
            "Traces the continuous audit re-derived and compared",
            audit_traces_checked.clone(),
        );
        let audit_mismatches = Family::<SchemaLabel, Counter>::default();
        registry.register(
            "audit_mismatches",
            "Summaries the continuous audit found different from the definition (missing, invented or differing) and repaired",
            audit_mismatches.clone(),
        );
        let audit_passes = Family::<SchemaLabel, Counter>::default();
        registry.register(
            "audit_passes",
            "Full passes of the continuous audit over all traces",
            audit_passes.clone(),
        );
        let bounded_steps = Family::<BoundLabel, Counter>::default();
        registry.register(
            "bounded_steps",
            "Steps that hit a size bound and left the rest to the next step, by bound",
            bounded_steps.clone(),
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
            audit_traces_checked,
            audit_mismatches,
            audit_passes,
            bounded_steps,
            reflected: Mutex::new(HashMap::new()),
        })
    }

    /// The metrics of one installation; every label it can use starts at zero, so dashboards
    /// and alerts see zeros, not gaps.
    pub fn for_schema(self: &Arc<Self>, schema: &str) -> SchemaMetrics {
        let s = SchemaLabel {
            schema: schema.to_string(),
        };
        for reason in Fallback::REASONS {
            let _ = self.fallbacks.get_or_create(&ReasonLabel {
                schema: schema.into(),
                reason: reason.into(),
            });
        }
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
            let _ = self.errors.get_or_create(&KindLabel {
                schema: schema.into(),
                kind: kind.into(),
            });
        }
        for bound in ["spans", "recompute", "window_edge"] {
            let _ = self.bounded_steps.get_or_create(&BoundLabel {
                schema: schema.into(),
                bound: bound.into(),
            });
        }
        SchemaMetrics {
            schema: schema.to_string(),
            all: self.clone(),
            cycle_duration_seconds: self.cycle_duration_seconds.get_or_create(&s).clone(),
            spans_processed: self.spans_processed.get_or_create(&s).clone(),
            traces_upserted: self.traces_upserted.get_or_create(&s).clone(),
            traces_pruned: self.traces_pruned.get_or_create(&s).clone(),
            leader: self.leader.get_or_create(&s).clone(),
            last_success_timestamp_seconds: self
                .last_success_timestamp_seconds
                .get_or_create(&s)
                .clone(),
            audit_traces_checked: self.audit_traces_checked.get_or_create(&s).clone(),
            audit_mismatches: self.audit_mismatches.get_or_create(&s).clone(),
            audit_passes: self.audit_passes.get_or_create(&s).clone(),
            lag: self.lag_seconds.get_or_create(&s).clone(),
        }
    }

    /// The Prometheus text, with each schema's lag computed now.
    pub fn encode(&self) -> String {
        let now = unix_now_f64();
        if let Ok(reflected) = self.reflected.lock() {
            for (schema, at) in reflected.iter() {
                self.lag_seconds
                    .get_or_create(&SchemaLabel {
                        schema: schema.clone(),
                    })
                    .set((now - at).max(0.0));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String");
        out
    }
}

/// Handles on one installation's metrics.
#[derive(Clone)]
pub struct SchemaMetrics {
    schema: String,
    all: Arc<Metrics>,
    pub cycle_duration_seconds: Histogram,
    pub spans_processed: Counter,
    pub traces_upserted: Counter,
    pub traces_pruned: Counter,
    pub leader: Gauge,
    pub last_success_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub audit_traces_checked: Counter,
    pub audit_mismatches: Counter,
    pub audit_passes: Counter,
    lag: Gauge<f64, AtomicU64>,
}

impl SchemaMetrics {
    pub fn fallback(&self, reason: &str) {
        self.all
            .fallbacks
            .get_or_create(&ReasonLabel {
                schema: self.schema.clone(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn error(&self, kind: &str) {
        self.all
            .errors
            .get_or_create(&KindLabel {
                schema: self.schema.clone(),
                kind: kind.into(),
            })
            .inc();
    }

    pub fn bounded(&self, bound: &str) {
        self.all
            .bounded_steps
            .get_or_create(&BoundLabel {
                schema: self.schema.clone(),
                bound: bound.into(),
            })
            .inc();
    }

    /// Everything committed up to `at` (unix seconds) is summarized.
    pub fn reflected(&self, at: f64) {
        if let Ok(mut r) = self.all.reflected.lock() {
            r.insert(self.schema.clone(), at);
        }
        self.lag.set((unix_now_f64() - at).max(0.0));
    }

    pub fn success_now(&self) {
        self.last_success_timestamp_seconds.set(unix_now_f64());
    }
}

/// Liveness and readiness, shared by the worker loops and the HTTP server.
#[derive(Default)]
pub struct Health {
    /// Unix seconds of the loops' last turn (the oldest of them counts for liveness).
    pub loop_tick: AtomicI64,
    /// Unix seconds of the last successful round trip to PostgreSQL.
    pub db_contact: AtomicI64,
    /// Installations whose loop has checked its schema and privileges, and how many there are.
    pub initialised: AtomicUsize,
    pub expected: AtomicUsize,
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
    /// The loop turned within `max_age_s` (a refresh may hold it for a while).
    pub fn live(&self, max_age_s: i64) -> bool {
        unix_now() - self.loop_tick.load(Ordering::Relaxed) <= max_age_s
    }
    /// Every installation initialised, not shutting down, and PostgreSQL answered in the last
    /// 30 seconds.
    pub fn ready(&self) -> bool {
        self.initialised.load(Ordering::Relaxed) >= self.expected.load(Ordering::Relaxed).max(1)
            && !self.shutting_down.load(Ordering::Relaxed)
            && unix_now() - self.db_contact.load(Ordering::Relaxed) <= 30
    }
}
