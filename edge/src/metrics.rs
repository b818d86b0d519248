//! The edge's Prometheus metrics, registered once in the default registry that `/metrics` exports.
//! Labels are bounded: cache statuses and purge kinds are fixed sets.

use std::sync::OnceLock;

use prometheus::{
    Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, register_gauge, register_histogram, register_int_counter,
    register_int_counter_vec, register_int_gauge,
};

pub struct Metrics {
    /// Requests by how the cache answered them.
    pub requests: IntCounterVec,
    /// Body bytes sent to clients.
    pub bytes_served: IntCounter,
    /// Entries stored (all Vary variants count).
    pub entries: IntGauge,
    /// Sealed bytes stored, as the eviction manager counts them.
    pub memory_used: IntGauge,
    pub memory_budget: IntGauge,
    /// Entries removed to stay within the budget.
    pub evictions: IntCounter,
    /// Entries removed by the sweeper after their last usable instant.
    pub expired: IntCounter,
    /// Entries removed or marked stale by purges, by selector kind.
    pub purged: IntCounterVec,
    /// Fills refused because a purge matching them ran while they were in flight.
    pub fills_refused: IntCounter,
    /// Body bytes before and after compression, for the entries that were compressed.
    pub compression_input_bytes: IntCounter,
    pub compression_output_bytes: IntCounter,
    /// Entries whose seal could not be opened (a key removed from the keyring, or corruption).
    pub unreadable_entries: IntCounter,
    /// Time from sending a request upstream to its response header.
    pub upstream_seconds: Histogram,
    /// Upstream attempts that failed (connect, timeout, broken response).
    pub upstream_errors: IntCounter,
    /// 1 while a control-plane connection is welcomed and open.
    pub control_connected: IntGauge,
    /// The last invalidation sequence applied (0: none).
    pub control_last_applied: IntGauge,
    /// Invalidations the origin has announced (its log head at the welcome, or sent) not applied yet.
    pub control_lag: IntGauge,
    /// Unix time (seconds) of the last frame from an origin the edge was caught up with.
    pub control_last_contact: Gauge,
    /// 1 while the staleness bound is exceeded and every hit is revalidated.
    pub control_stale_serving: IntGauge,
    pub control_invalidations_applied: IntCounter,
    /// Control-plane connections lost or failed, each followed by a new attempt.
    pub control_reconnects: IntCounter,
    /// Pushed responses stored ahead of reads.
    pub control_warm_stored: IntCounter,
    /// Pushed responses not stored: no `control.warm_hosts`, not cacheable, Vary, or out of order.
    pub control_warm_ignored: IntCounter,
    /// Client connections open now (at most `http.max_connections`).
    pub client_connections: IntGauge,
    /// Client connections refused because `http.max_connections` were open.
    pub client_connections_refused: IntCounter,
    /// Client connections closed because a request header did not arrive in time.
    pub client_header_timeouts: IntCounter,
}

/// Request outcomes, the label values of `edge_cache_requests_total`.
pub const STATUSES: [&str; 7] = [
    "hit",
    "stale",
    "revalidated",
    "miss",
    "expired",
    "bypass",
    "uncacheable",
];
/// Purge selector kinds, the label values of `edge_cache_purged_total`.
pub const PURGE_KINDS: [&str; 7] = ["key", "prefix", "tag", "all", "unsafe_method", "request", "control"];

impl Metrics {
    /// The process-wide metrics, registered on first use.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(|| Metrics::register().expect("edge metrics are registered once, with valid names"))
    }

    fn register() -> prometheus::Result<Self> {
        let metrics = Self {
            requests: register_int_counter_vec!("edge_cache_requests_total", "Requests by cache status", &["status"])?,
            bytes_served: register_int_counter!("edge_bytes_served_total", "Body bytes sent to clients")?,
            entries: register_int_gauge!("edge_cache_entries", "Entries in the cache")?,
            memory_used: register_int_gauge!("edge_cache_memory_bytes", "Sealed bytes held by the cache")?,
            memory_budget: register_int_gauge!("edge_cache_memory_budget_bytes", "Memory budget of the cache")?,
            evictions: register_int_counter!("edge_cache_evictions_total", "Entries evicted to stay within budget")?,
            expired: register_int_counter!(
                "edge_cache_expired_total",
                "Entries swept after their last usable instant"
            )?,
            purged: register_int_counter_vec!(
                "edge_cache_purged_total",
                "Entries removed or marked stale by purges",
                &["kind"]
            )?,
            fills_refused: register_int_counter!(
                "edge_cache_fills_refused_total",
                "Fills not stored because a matching purge ran while they were in flight"
            )?,
            compression_input_bytes: register_int_counter!(
                "edge_cache_compression_input_bytes_total",
                "Body bytes given to compression"
            )?,
            compression_output_bytes: register_int_counter!(
                "edge_cache_compression_output_bytes_total",
                "Body bytes after compression"
            )?,
            unreadable_entries: register_int_counter!(
                "edge_cache_unreadable_entries_total",
                "Entries that failed to open (unknown key or corruption) and were dropped"
            )?,
            upstream_seconds: register_histogram!(
                "edge_upstream_response_seconds",
                "Time from sending a request upstream to its response header",
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
                ]
            )?,
            upstream_errors: register_int_counter!("edge_upstream_errors_total", "Failed upstream attempts")?,
            control_connected: register_int_gauge!(
                "edge_control_connected",
                "1 while a control-plane connection is open and welcomed"
            )?,
            control_last_applied: register_int_gauge!(
                "edge_control_last_applied",
                "Last invalidation sequence applied"
            )?,
            control_lag: register_int_gauge!(
                "edge_control_lag",
                "Invalidations announced by the origin and not applied yet"
            )?,
            control_last_contact: register_gauge!(
                "edge_control_last_contact_timestamp_seconds",
                "Unix time of the last contact with an origin while caught up with its log"
            )?,
            control_stale_serving: register_int_gauge!(
                "edge_control_stale_serving",
                "1 while cut off from the control plane beyond the staleness bound: every hit is revalidated"
            )?,
            control_invalidations_applied: register_int_counter!(
                "edge_control_invalidations_applied_total",
                "Invalidations and drop-alls applied from the control plane"
            )?,
            control_reconnects: register_int_counter!(
                "edge_control_reconnects_total",
                "Control-plane connections lost or failed"
            )?,
            control_warm_stored: register_int_counter!(
                "edge_control_warm_stored_total",
                "Responses pushed by the origin and stored ahead of reads"
            )?,
            control_warm_ignored: register_int_counter!(
                "edge_control_warm_ignored_total",
                "Responses pushed by the origin and not stored (no warm_hosts, not cacheable, Vary)"
            )?,
            client_connections: register_int_gauge!("edge_client_connections", "Client connections open")?,
            client_connections_refused: register_int_counter!(
                "edge_client_connections_refused_total",
                "Client connections refused because http.max_connections were open"
            )?,
            client_header_timeouts: register_int_counter!(
                "edge_client_header_timeouts_total",
                "Client connections closed because a request header did not arrive in time"
            )?,
        };
        for status in STATUSES {
            metrics.requests.with_label_values(&[status]);
        }
        for kind in PURGE_KINDS {
            metrics.purged.with_label_values(&[kind]);
        }
        Ok(metrics)
    }
}
