//! The origin's configuration. Every key is documented here and in `config/origin.toml`, which a test keeps
//! identical to these defaults. Layers: defaults → `--config FILE` → `ORIGIN_*` environment variables.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::telemetry::LogFormat;
use shared::tls::TlsFiles;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub caching: CachingConfig,
    pub invalidation: InvalidationConfig,
    pub events: EventsConfig,
    pub webhooks: WebhooksConfig,
    pub quic: QuicConfig,
    pub warming: WarmingConfig,
    /// Mutual TLS of the control plane: the CA bundle edges' certificates must chain to, and the
    /// origin's own certificate and key (PEM).
    pub tls: TlsFiles,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            cache: CacheConfig::default(),
            caching: CachingConfig::default(),
            invalidation: InvalidationConfig::default(),
            events: EventsConfig::default(),
            webhooks: WebhooksConfig::default(),
            quic: QuicConfig::default(),
            warming: WarmingConfig::default(),
            tls: TlsFiles::origin(Path::new("certs")),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: NonZeroUsize,
    /// Most keys in one batch read (`GET /v1/forecasts?keys=`).
    pub max_batch_reads: NonZeroUsize,
    /// Most writes in one `POST /admin/v1/forecasts:batch`.
    pub max_batch_writes: NonZeroUsize,
    /// How long SIGTERM waits for requests in flight before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a whole request head, counted from when it is ready for
    /// the next request: it closes slow senders (slowloris) and idle keep-alive connections alike.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full; past it the request gets 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most client connections open at once (SSE streams included); beyond, a new connection is answered
    /// 503 with `Retry-After` and closed.
    pub max_connections: NonZeroUsize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: NonZeroUsize::new(1 << 20).expect("non-zero"),
            max_batch_reads: NonZeroUsize::new(100).expect("non-zero"),
            max_batch_writes: NonZeroUsize::new(500).expect("non-zero"),
            shutdown_grace: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: NonZeroUsize::new(16_384).expect("non-zero"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Redis URL (`redis://host:port/db`); for a cluster, comma-separated nodes. Empty: embedded store.
    #[serde(with = "shared::config::empty_as_none")]
    pub redis_url: Option<String>,
    /// Whether `redis_url` names Redis Cluster nodes.
    pub redis_cluster: bool,
    /// Folder of the embedded store (used when `redis_url` is empty).
    pub data_dir: PathBuf,
    /// Versions kept per forecast; older ones are trimmed.
    pub versions_kept: NonZeroUsize,
    /// Audit log entries kept.
    pub audit_kept: NonZeroUsize,
    /// Upper bound of one storage operation; past it the operation fails as unavailable.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster: false,
            data_dir: PathBuf::from(".data/origin"),
            versions_kept: NonZeroUsize::new(20).expect("non-zero"),
            audit_kept: NonZeroUsize::new(100_000).expect("non-zero"),
            operation_timeout: Duration::from_secs(2),
        }
    }
}

/// The in-process cache of current versions (L1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Most forecasts kept.
    pub capacity: NonZeroUsize,
    /// After this, an entry is read again from storage: the bound on staleness when several origins
    /// share one Redis (writes through this origin update its L1 at once).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long past `ttl` an entry may still be served while storage is unavailable.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// On Redis, how often the invalidation log is read for changes made through other origins, whose
    /// entries are then dropped at once instead of after `ttl`.
    #[serde(with = "humantime_serde")]
    pub follow_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity: NonZeroUsize::new(100_000).expect("non-zero"),
            ttl: Duration::from_secs(5),
            max_stale: Duration::from_secs(600),
            follow_interval: Duration::from_millis(20),
        }
    }
}

/// Caching headers sent with forecasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CachingConfig {
    /// `Cache-Control: max-age` for browsers, which no purge reaches (at most the forecast's validity).
    #[serde(with = "humantime_serde")]
    pub browser_max_age: Duration,
    /// `stale-while-revalidate` in `CDN-Cache-Control`.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` in `CDN-Cache-Control`.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
}

impl Default for CachingConfig {
    fn default() -> Self {
        Self {
            browser_max_age: Duration::from_secs(1),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(600),
        }
    }
}

/// The invalidation log: every purge edges must apply, numbered, kept so that an edge that reconnects
/// can be replayed what it missed. An edge that missed trimmed entries drops its whole cache instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvalidationConfig {
    /// Most entries kept; the oldest are trimmed.
    pub retention_entries: NonZeroUsize,
    /// Entries older than this are trimmed when a newer one is appended; the newest is always kept.
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
}

impl Default for InvalidationConfig {
    fn default() -> Self {
        Self {
            retention_entries: NonZeroUsize::new(100_000).expect("non-zero"),
            retention_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Analysis events: the durable event log and the SSE streams that follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Most events kept for replay; the oldest are trimmed.
    pub retention_entries: NonZeroUsize,
    /// Events older than this are trimmed when a newer one is appended; the newest is always kept.
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// Topic patterns (comma-separated) on which events of other types than the known ones are
    /// accepted, with any JSON object as payload, such as `custom.**`.
    #[serde(with = "shared::config::comma_list")]
    pub free_form_topics: Vec<String>,
    /// Topic patterns (comma-separated) anyone may subscribe to without a token, such as `summaries.**`.
    #[serde(with = "shared::config::comma_list")]
    pub anonymous_topics: Vec<String>,
    /// Most events in one `POST /admin/v1/events:batch`.
    pub max_batch: NonZeroUsize,
    /// Events a subscriber's connection may have waiting; beyond, it is closed with `event: overflow`.
    pub queue_events: NonZeroUsize,
    /// Most streams one token may hold open at once; beyond, `GET /v1/stream` answers 429.
    pub max_streams_per_token: NonZeroUsize,
    /// Most streams one client address may hold open at once, whatever the token (anonymous streams
    /// included); beyond, 429. Behind a load balancer every client has its address: raise it there.
    pub max_streams_per_address: NonZeroUsize,
    /// How often an idle stream gets a comment, so proxies and clients know it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The reconnection delay streams suggest to clients (`retry:`).
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// How often the log is read for events published through other origins sharing it; events
    /// published through this origin are sent at once.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_entries: NonZeroUsize::new(1_000_000).expect("non-zero"),
            retention_age: Duration::from_secs(24 * 60 * 60),
            free_form_topics: Vec::new(),
            anonymous_topics: Vec::new(),
            max_batch: NonZeroUsize::new(1000).expect("non-zero"),
            queue_events: NonZeroUsize::new(1024).expect("non-zero"),
            max_streams_per_token: NonZeroUsize::new(10_000).expect("non-zero"),
            max_streams_per_address: NonZeroUsize::new(10_000).expect("non-zero"),
            heartbeat_interval: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// Webhooks: events delivered as signed HTTP POSTs to registered endpoints (see [`crate::webhooks`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Hosts and address ranges (comma-separated, such as `127.0.0.1,10.0.0.0/8,hooks.internal`) that
    /// endpoints may target although they are loopback, private, link-local or otherwise not public.
    #[serde(with = "shared::config::comma_list")]
    pub allowed_targets: Vec<String>,
    /// Allow plain `http` targets; otherwise only `https`.
    pub allow_http: bool,
    /// Delay before each attempt of a message (comma-separated), the first usually `0s`; after the
    /// last attempt fails the message is a dead letter.
    #[serde(with = "shared::config::duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// The longest a receiver's `Retry-After` may put off the next attempt.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// How long one attempt may take, connection included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts in flight to one endpoint at a time, per origin.
    pub endpoint_concurrency: NonZeroUsize,
    /// Attempts in flight at a time, per origin.
    pub concurrency: NonZeroUsize,
    /// How long a rotated-out secret still signs messages beside the new one.
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// An endpoint failing without a single success for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// A delivery taken by an origin that has not finished it after this long is taken over by another
    /// (the first presumably died). Longer than `timeout`.
    #[serde(with = "humantime_serde")]
    pub reclaim_after: Duration,
    /// How often the queue is checked for messages that became due.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Attempts recorded per endpoint (the oldest are dropped).
    pub attempts_kept: NonZeroUsize,
    /// Bytes of each response body kept with its attempt.
    pub response_snippet_bytes: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 60 * 60);
        Self {
            allowed_targets: Vec::new(),
            allow_http: false,
            retry_schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(5 * 60),
                Duration::from_secs(30 * 60),
                hours(2),
                hours(5),
                hours(10),
                hours(10),
            ],
            max_retry_after: hours(1),
            timeout: Duration::from_secs(15),
            endpoint_concurrency: NonZeroUsize::new(16).expect("non-zero"),
            concurrency: NonZeroUsize::new(512).expect("non-zero"),
            secret_overlap: hours(24),
            disable_after: hours(5 * 24),
            reclaim_after: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            attempts_kept: NonZeroUsize::new(1000).expect("non-zero"),
            response_snippet_bytes: 1024,
        }
    }
}

/// The control plane: edges connect here over QUIC and are sent the invalidation log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// UDP address edges dial; empty: no control plane.
    #[serde(with = "shared::config::optional_address")]
    pub listen: Option<SocketAddr>,
    /// How often a connection is checked for appends made through other origins sharing the log.
    /// Appends through this origin are sent at once.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often each edge is sent a heartbeat; a connection silent for three of these is closed.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: None,
            poll_interval: Duration::from_millis(50),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// Responses pushed to edges before they are read, so the next read is a hit (see [`crate::warming`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmingConfig {
    /// Paths (path and query) pushed to every edge after each change of a forecast they include,
    /// comma-separated.
    #[serde(with = "shared::config::comma_list")]
    pub hot_keys: Vec<String>,
    /// Also push the paths edges report among their hottest.
    pub edge_hot_keys: bool,
    /// Warming at fixed times (UTC), such as before a session opens.
    pub schedule: Vec<WarmSchedule>,
}

impl Default for WarmingConfig {
    fn default() -> Self {
        Self {
            hot_keys: Vec::new(),
            edge_hot_keys: true,
            schedule: Vec::new(),
        }
    }
}

/// One scheduled warming: `at` (`HH:MM`, UTC) on each of `days` (`mon`…`sun`), the `keys` and
/// `prefixes` of `POST /admin/v1/warm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WarmScheduleFields", into = "WarmScheduleFields")]
pub struct WarmSchedule {
    pub at: String,
    time: time::Time,
    pub days: Vec<time::Weekday>,
    day_names: Vec<String>,
    pub keys: Vec<String>,
    pub prefixes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmScheduleFields {
    at: String,
    days: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
}

impl WarmSchedule {
    pub fn parse(at: &str, days: &[&str], keys: Vec<String>, prefixes: Vec<String>) -> Result<Self, String> {
        let format = time::macros::format_description!("[hour]:[minute]");
        let time = time::Time::parse(at, format)
            .map_err(|_| format!("warming.schedule: at = {at:?} is not HH:MM (UTC), such as \"13:25\""))?;
        if days.is_empty() {
            return Err("warming.schedule: days names no day".into());
        }
        let weekdays = days
            .iter()
            .map(|day| {
                crate::warming::weekday(day)
                    .ok_or_else(|| format!("warming.schedule: day {day:?} is not one of mon tue wed thu fri sat sun"))
            })
            .collect::<Result<_, _>>()?;
        if keys.is_empty() && prefixes.is_empty() {
            return Err("warming.schedule: an entry needs keys or prefixes to warm".into());
        }
        Ok(Self {
            at: at.to_owned(),
            time,
            days: weekdays,
            day_names: days.iter().map(|day| (*day).to_owned()).collect(),
            keys,
            prefixes,
        })
    }

    /// The time of day it is due, UTC.
    pub fn time(&self) -> time::Time {
        self.time
    }
}

impl TryFrom<WarmScheduleFields> for WarmSchedule {
    type Error = String;

    fn try_from(fields: WarmScheduleFields) -> Result<Self, String> {
        let days: Vec<&str> = fields.days.iter().map(String::as_str).collect();
        Self::parse(&fields.at, &days, fields.keys, fields.prefixes)
    }
}

impl From<WarmSchedule> for WarmScheduleFields {
    fn from(schedule: WarmSchedule) -> Self {
        Self {
            at: schedule.at,
            days: schedule.day_names,
            keys: schedule.keys,
            prefixes: schedule.prefixes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether the read API (`/v1/forecasts…`) is open; when false, it needs a `forecasts:read` token.
    pub public_reads: bool,
    /// Whether `/metrics` is open; when false, it needs a token with `metrics:read` (its labels name
    /// edges and routes).
    pub public_metrics: bool,
    /// A token with every scope, for first start and scripts. Empty: none.
    #[serde(with = "shared::config::empty_as_none")]
    pub bootstrap_token: Option<String>,
    /// Tokens, stored as hashes. When none is configured and no bootstrap token is set, the origin
    /// generates an admin token on first start, prints it once and keeps only its hash.
    pub tokens: Vec<TokenConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            public_reads: true,
            public_metrics: true,
            bootstrap_token: None,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to; recorded in the audit log.
    pub name: String,
    /// `sha256:` followed by the hex SHA-256 of the token (`origin hash-token` prints it).
    pub hash: String,
    /// Scopes: `forecasts:read`, `forecasts:write`, `audit:read`, `invalidations:read`,
    /// `invalidations:write`, `events:publish`, `events:subscribe`, `webhooks:admin`, `tokens:admin`,
    /// `metrics:read`, `admin` (all of them).
    pub scopes: Vec<String>,
    /// Topic patterns the token may subscribe to (`events:subscribe`); empty: every topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` or `json`. The level comes from `RUST_LOG` (default `info`).
    pub format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_file_is_the_defaults() {
        let text = include_str!("../../config/origin.toml");
        let shipped: OriginConfig = shared::config::from_toml(text).unwrap();
        assert_eq!(shipped, OriginConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = shared::config::from_toml::<OriginConfig>("[http]\nlisten_on = \"x\"").unwrap_err();
        assert!(error.to_string().contains("listen_on"), "{error}");
    }
}
