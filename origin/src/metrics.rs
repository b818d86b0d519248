//! The origin's Prometheus metrics. Labels are bounded: route templates, methods, status codes,
//! operation and backend names, never raw paths or keys.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub storage_duration: HistogramVec,
    pub storage_errors: IntCounterVec,
    pub l1_lookups: IntCounterVec,
    pub invalidations_appended: IntCounterVec,
    pub invalidation_log_head: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "origin_http_requests_total",
                "HTTP requests answered, by route template, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "origin_http_request_duration_seconds",
                "Time to answer an HTTP request, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let storage_duration = HistogramVec::new(
            HistogramOpts::new("origin_storage_operation_duration_seconds", "Storage operation latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend", "operation"],
        )
        .expect("valid metric");
        let storage_errors = IntCounterVec::new(
            Opts::new("origin_storage_errors_total", "Storage operations that failed, by kind"),
            &["backend", "operation", "kind"],
        )
        .expect("valid metric");
        let l1_lookups = IntCounterVec::new(
            Opts::new(
                "origin_l1_lookups_total",
                "In-process cache lookups: hit, miss, stale (served while storage is down)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let invalidations_appended = IntCounterVec::new(
            Opts::new(
                "origin_invalidations_appended_total",
                "Invalidations appended to the durable log, by cause: api, write, delete, rollback, model_rollback",
            ),
            &["cause"],
        )
        .expect("valid metric");
        let invalidation_log_head = IntGauge::new(
            "origin_invalidation_log_head",
            "The newest invalidation sequence this origin has appended or read",
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(storage_duration.clone()),
            Box::new(storage_errors.clone()),
            Box::new(l1_lookups.clone()),
            Box::new(invalidations_appended.clone()),
            Box::new(invalidation_log_head.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            storage_duration,
            storage_errors,
            l1_lookups,
            invalidations_appended,
            invalidation_log_head,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
