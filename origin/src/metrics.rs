//! The origin's Prometheus metrics. Labels are bounded: route templates, methods, status codes,
//! operation and backend names, never raw paths or keys.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use shared::wire::DropReason;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Client connections open now.
    pub connections_open: IntGauge,
    /// Connections answered 503 and closed because `http.max_connections` were open.
    pub connections_refused: IntCounter,
    /// SSE streams refused with 429, by the limit reached: token, address.
    pub streams_refused: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub storage_duration: HistogramVec,
    pub storage_errors: IntCounterVec,
    pub l1_lookups: IntCounterVec,
    pub invalidations_appended: IntCounterVec,
    pub invalidation_log_head: IntGauge,
    /// Edges connected to this origin's control plane.
    pub control_edges: IntGauge,
    /// Invalidations sent to edges (each edge counts), live or replayed.
    pub control_sent: IntCounter,
    /// Edges told to drop their whole cache, by reason: trimmed, log_reset.
    pub control_drop_all: IntCounterVec,
    /// Connections refused or ended by an error (handshake, certificate, protocol).
    pub control_failures: IntCounter,
    /// Invalidations sent to edges catching up after they (re)connected, each edge counted.
    pub control_replayed: IntCounter,
    /// From the origin accepting an invalidation to an edge acknowledging it, by edge name.
    pub control_propagation: HistogramVec,
    /// Responses pushed to edges ahead of their reads, each edge counted.
    pub control_warm_sent: IntCounter,
    /// Events appended to the event log through this origin.
    pub events_in: IntCounter,
    /// Events written to subscribers' streams (each subscriber counted).
    pub events_out: IntCounter,
    /// SSE subscribers connected now.
    pub subscribers: IntGauge,
    /// Streams ended because their reader fell behind its queue.
    pub overflows: IntCounter,
    /// `event: gap` sent: a replay or a live tail reached events already trimmed.
    pub events_gaps: IntCounter,
    /// Event log entries passed over because they cannot be decoded, counted by the origin's log tail
    /// and the webhook dispatcher (each meets an entry once).
    pub events_unreadable: IntCounter,
    /// From an event's append to its write to a subscriber's stream.
    pub events_delivery_lag: Histogram,
    /// Webhook deliveries queued by the dispatcher (each endpoint counted).
    pub webhook_queued: IntCounter,
    /// Webhook attempts by outcome: delivered, retry, dead.
    pub webhook_attempts: IntCounterVec,
    /// From an event's append to its webhook's 2xx.
    pub webhook_latency: Histogram,
    /// Webhook messages that became dead letters.
    pub webhook_dead_letters: IntCounter,
    /// Webhook endpoints disabled after failing continuously.
    pub webhook_disabled: IntCounter,
    /// Webhook deliveries queued (due or not), as last read.
    pub webhook_queue_depth: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Propagation is timed on millisecond clocks (the log's `issued_at_ms`): finer buckets would be noise.
const PROPAGATION_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let connections_open =
            IntGauge::new("origin_http_connections_open", "Client connections open now").expect("valid metric");
        let connections_refused = IntCounter::new(
            "origin_http_connections_refused_total",
            "Connections answered 503 and closed because http.max_connections were open",
        )
        .expect("valid metric");
        let streams_refused = IntCounterVec::new(
            Opts::new(
                "origin_events_streams_refused_total",
                "SSE streams refused with 429, by the limit reached (token, address)",
            ),
            &["limit"],
        )
        .expect("valid metric");
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
        let control_edges =
            IntGauge::new("origin_control_edges", "Edges connected to the control plane").expect("valid metric");
        let control_sent = IntCounter::new(
            "origin_control_invalidations_sent_total",
            "Invalidations sent to edges, live or replayed, each edge counted",
        )
        .expect("valid metric");
        let control_drop_all = IntCounterVec::new(
            Opts::new(
                "origin_control_drop_all_total",
                "Edges told to drop their whole cache: trimmed (behind retention), log_reset (ahead of the log)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let control_failures = IntCounter::new(
            "origin_control_failures_total",
            "Control-plane connections refused or ended by an error",
        )
        .expect("valid metric");
        let control_replayed = IntCounter::new(
            "origin_control_invalidations_replayed_total",
            "Invalidations sent to edges catching up after a (re)connect, each edge counted",
        )
        .expect("valid metric");
        let control_propagation = HistogramVec::new(
            HistogramOpts::new(
                "origin_control_propagation_seconds",
                "From accepting an invalidation to an edge acknowledging it, by edge (millisecond clock)",
            )
            .buckets(PROPAGATION_BUCKETS.to_vec()),
            &["edge"],
        )
        .expect("valid metric");
        let control_warm_sent = IntCounter::new(
            "origin_control_warm_sent_total",
            "Responses pushed to edges ahead of their reads, each edge counted",
        )
        .expect("valid metric");
        let events_in =
            IntCounter::new("origin_events_in_total", "Events appended through this origin").expect("valid metric");
        let events_out = IntCounter::new(
            "origin_events_out_total",
            "Events written to subscribers' streams, each subscriber counted",
        )
        .expect("valid metric");
        let subscribers =
            IntGauge::new("origin_events_subscribers", "SSE subscribers connected").expect("valid metric");
        let overflows = IntCounter::new(
            "origin_events_overflow_disconnects_total",
            "Streams ended because their reader fell behind its queue",
        )
        .expect("valid metric");
        let events_gaps = IntCounter::new(
            "origin_events_gaps_total",
            "Explicit gaps sent: a replay or a live tail reached events already trimmed",
        )
        .expect("valid metric");
        let events_unreadable = IntCounter::new(
            "origin_events_unreadable_total",
            "Event log entries passed over because they cannot be decoded (log tail and webhook dispatcher)",
        )
        .expect("valid metric");
        let events_delivery_lag = Histogram::with_opts(
            HistogramOpts::new(
                "origin_events_delivery_lag_seconds",
                "From an event's append to its write to a subscriber's stream (millisecond clock)",
            )
            .buckets(PROPAGATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let webhook_queued = IntCounter::new(
            "origin_webhook_queued_total",
            "Webhook deliveries queued by the dispatcher, each endpoint counted",
        )
        .expect("valid metric");
        let webhook_attempts = IntCounterVec::new(
            Opts::new("origin_webhook_attempts_total", "Webhook attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in ["delivered", "retry", "dead"] {
            webhook_attempts.with_label_values(&[outcome]);
        }
        let webhook_latency = Histogram::with_opts(
            HistogramOpts::new(
                "origin_webhook_delivery_seconds",
                "From an event's append to its webhook's 2xx answer, retries included",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0, 60.0, 600.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        let webhook_dead_letters = IntCounter::new(
            "origin_webhook_dead_letters_total",
            "Webhook messages that ran out of attempts, were refused for good or found their endpoint disabled",
        )
        .expect("valid metric");
        let webhook_disabled = IntCounter::new(
            "origin_webhook_endpoints_disabled_total",
            "Webhook endpoints disabled after failing continuously for webhooks.disable_after",
        )
        .expect("valid metric");
        let webhook_queue_depth = IntGauge::new(
            "origin_webhook_queue_depth",
            "Webhook deliveries queued, due or not, as last read by this origin",
        )
        .expect("valid metric");
        for reason in [DropReason::Trimmed, DropReason::LogReset] {
            control_drop_all.with_label_values(&[reason.as_str()]);
        }
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(storage_duration.clone()),
            Box::new(storage_errors.clone()),
            Box::new(l1_lookups.clone()),
            Box::new(invalidations_appended.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(streams_refused.clone()),
            Box::new(invalidation_log_head.clone()),
            Box::new(control_edges.clone()),
            Box::new(control_sent.clone()),
            Box::new(control_drop_all.clone()),
            Box::new(control_failures.clone()),
            Box::new(control_replayed.clone()),
            Box::new(control_propagation.clone()),
            Box::new(control_warm_sent.clone()),
            Box::new(events_in.clone()),
            Box::new(events_out.clone()),
            Box::new(subscribers.clone()),
            Box::new(overflows.clone()),
            Box::new(events_gaps.clone()),
            Box::new(events_unreadable.clone()),
            Box::new(events_delivery_lag.clone()),
            Box::new(webhook_queued.clone()),
            Box::new(webhook_attempts.clone()),
            Box::new(webhook_latency.clone()),
            Box::new(webhook_dead_letters.clone()),
            Box::new(webhook_disabled.clone()),
            Box::new(webhook_queue_depth.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            connections_open,
            connections_refused,
            streams_refused,
            http_requests,
            http_duration,
            storage_duration,
            storage_errors,
            l1_lookups,
            invalidations_appended,
            invalidation_log_head,
            control_edges,
            control_sent,
            control_drop_all,
            control_failures,
            control_replayed,
            control_propagation,
            control_warm_sent,
            events_in,
            events_out,
            subscribers,
            overflows,
            events_gaps,
            events_unreadable,
            events_delivery_lag,
            webhook_queued,
            webhook_attempts,
            webhook_latency,
            webhook_dead_letters,
            webhook_disabled,
            webhook_queue_depth,
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
