//! The edge's configuration. Every key is documented here and in `config/edge.toml`, which a test keeps
//! identical to these defaults. Layers: defaults → `--config FILE` → `EDGE_*` environment variables.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::telemetry::LogFormat;
use shared::tls::{EdgeIdentity, TlsFiles};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub http: HttpConfig,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub metrics: MetricsConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub control: ControlConfig,
    /// PEM files of the control plane's mutual TLS, read only when `control.origins` is set: the CA
    /// bundle the origin's certificate must chain to, this edge's certificate (its identity) and key.
    pub tls: TlsFiles,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        let edge = EdgeIdentity::new("edge-1", "local").expect("a valid edge identity");
        Self {
            http: HttpConfig::default(),
            upstream: UpstreamConfig::default(),
            cache: CacheConfig::default(),
            metrics: MetricsConfig::default(),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            control: ControlConfig::default(),
            tls: TlsFiles::edge(Path::new("certs"), &edge),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the plain HTTP listener.
    pub listen: SocketAddr,
    /// Address of the HTTPS listener; none when empty.
    #[serde(with = "shared::config::optional_address")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and private key of the HTTPS listener.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Name this cache gives itself in `Cache-Status`.
    pub cache_name: String,
    /// Response headers holding surrogate tags; used for tag purges and removed from responses.
    pub tag_headers: Vec<String>,
    /// Whether tag headers are removed before responses leave the edge.
    pub strip_tag_headers: bool,
    /// A new connection must send a whole request header within this; a kept-alive one within
    /// `idle_timeout` plus this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection that starts no new request for this long is closed (whole seconds,
    /// rounded up).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Upper bound of each read of a request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Client connections open at once, over both listeners; more are refused at once.
    pub max_connections: NonZeroUsize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            tls_listen: None,
            tls_cert: PathBuf::from("certs/edge.pem"),
            tls_key: PathBuf::from("certs/edge.key"),
            cache_name: "edge".into(),
            tag_headers: vec!["surrogate-key".into(), "cache-tag".into()],
            strip_tag_headers: true,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: NonZeroUsize::new(10_000).expect("non-zero"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Origin URL(s), `http://host:port` or `https://host:port`, comma-separated for several.
    #[serde(with = "shared::config::comma_list")]
    pub url: Vec<String>,
    /// Upper bound of establishing a connection to the upstream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Upper bound of waiting for each read from the upstream.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// The same for event streams (`Accept: text/event-stream`, or a path under `stream_paths`): they
    /// are quiet between events and heartbeats, so this must be longer than the origin's heartbeat
    /// interval.
    #[serde(with = "humantime_serde")]
    pub stream_read_timeout: Duration,
    /// Path prefixes, comma-separated, whose requests are event streams whatever their `Accept` says
    /// (uncached, `stream_read_timeout`). A prefix matches whole segments: `/v1/stream` covers
    /// `/v1/stream` and `/v1/stream/…` (with any query), not `/v1/streams`. Each starts with `/`.
    #[serde(with = "path_prefixes")]
    pub stream_paths: Vec<String>,
    /// How often each upstream is probed with a TCP connection; unhealthy ones get no requests
    /// while a healthy one remains.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: vec!["http://127.0.0.1:8080".into()],
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            stream_read_timeout: Duration::from_secs(60),
            stream_paths: vec!["/v1/stream".into()],
            health_check_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory budget of cached entries (sealed bytes plus bookkeeping); least recently used entries
    /// are evicted beyond it.
    pub memory_bytes: NonZeroUsize,
    /// Largest response body stored; larger ones are passed through.
    pub max_object_bytes: NonZeroUsize,
    /// File with the AES-256-GCM key(s), one per line as base64 or 64 hex digits: the first seals new
    /// entries, the others stay readable (rotation). Empty: a random key per process.
    pub key_file: PathBuf,
    /// How often the key file is read again to pick up a rotation.
    #[serde(with = "humantime_serde")]
    pub key_reload_interval: Duration,
    /// Bodies (per 64 KiB chunk) of at least this many bytes are compressed before sealing; 0 never.
    pub compress_min_bytes: usize,
    /// How often entries past their last usable instant (freshness plus stale windows) are removed.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long concurrent misses of one key wait for the first one's fetch before fetching themselves.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// Request headers a response may Vary on (lower case); other Vary values make it uncacheable.
    pub vary_allowed: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_bytes: NonZeroUsize::new(256 << 20).expect("non-zero"),
            max_object_bytes: NonZeroUsize::new(8 << 20).expect("non-zero"),
            key_file: PathBuf::new(),
            key_reload_interval: Duration::from_secs(5),
            compress_min_bytes: 4096,
            sweep_interval: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(3),
            vary_allowed: vec![
                "accept-encoding".into(),
                "accept".into(),
                "accept-language".into(),
                "origin".into(),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of `/metrics` (Prometheus) and `/healthz`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9081)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads of the proxy.
    pub threads: NonZeroUsize,
    /// After SIGTERM, how long listeners stay open, then how long requests in flight may finish.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: NonZeroUsize::new(1).expect("non-zero"),
            grace_period: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

/// The QUIC control plane: the origins that push invalidations to this edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Origin control endpoints, `host:port` (UDP), comma-separated, tried in turn; empty: standalone,
    /// no control plane and no staleness bound.
    #[serde(with = "shared::config::comma_list")]
    pub origins: Vec<String>,
    /// Name the origin's certificate must hold.
    pub server_name: String,
    /// Wait after a failed or lost connection, doubled after each failure up to `max_reconnect_delay`.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
    /// Cut off from every origin for longer than this, the edge revalidates every cache hit.
    #[serde(with = "humantime_serde")]
    pub staleness_bound: Duration,
    /// How often a cache summary is sent to the origin.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// How often a heartbeat is sent to the origin; three missed intervals end the connection.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Hosts (`Host` header values, such as `edge.example.com` or `127.0.0.1:8081`), comma-separated,
    /// under which responses the origin pushes are stored; empty: pushes are not stored.
    #[serde(with = "shared::config::comma_list")]
    pub warm_hosts: Vec<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            server_name: "localhost".into(),
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(5),
            staleness_bound: Duration::from_secs(30),
            stats_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            warm_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` or `json`; the level comes from `RUST_LOG`.
    pub format: LogFormat,
}

/// A list of path prefixes: one comma-separated string, as environment variables carry it (or a
/// TOML array), each entry starting with `/`.
mod path_prefixes {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        shared::config::comma_list::serialize(list, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            List(Vec<String>),
        }
        let items: Vec<String> = match Written::deserialize(deserializer)? {
            Written::Text(text) => text.split(',').map(String::from).collect(),
            Written::List(list) => list,
        };
        items
            .iter()
            .map(|item| item.trim())
            .filter(|item| !item.is_empty())
            .map(|item| {
                if item.starts_with('/') {
                    Ok(item.to_string())
                } else {
                    Err(D::Error::custom(format!("path prefix `{item}` must start with /")))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_file_is_the_defaults() {
        let text = include_str!("../../config/edge.toml");
        let shipped: EdgeConfig = shared::config::from_toml(text).unwrap();
        assert_eq!(shipped, EdgeConfig::default());
    }

    #[test]
    fn upstream_lists_and_empty_addresses_parse() {
        let config: EdgeConfig = shared::config::from_toml(
            "[upstream]\nurl = \"http://127.0.0.1:1, https://origin.example:443\"\n[http]\ntls_listen = \"\"\n",
        )
        .unwrap();
        assert_eq!(
            config.upstream.url,
            ["http://127.0.0.1:1", "https://origin.example:443"]
        );
        assert_eq!(config.http.tls_listen, None);
    }

    #[test]
    fn control_origins_are_a_comma_separated_list() {
        let config: EdgeConfig = shared::config::from_toml(
            "[control]\norigins = \"127.0.0.1:4433, origin.example:4433\"\nstaleness_bound = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(config.control.origins, ["127.0.0.1:4433", "origin.example:4433"]);
        assert_eq!(config.control.staleness_bound, Duration::from_secs(1));
    }

    #[test]
    fn stream_paths_are_a_comma_separated_list_of_paths() {
        let paths =
            |toml: &str| shared::config::from_toml::<EdgeConfig>(toml).map(|config| config.upstream.stream_paths);
        assert_eq!(
            paths("[upstream]\nstream_paths = \"/v1/stream, /v1/events/\"\n").unwrap(),
            ["/v1/stream", "/v1/events/"]
        );
        assert_eq!(
            paths("[upstream]\nstream_paths = [\"/v1/stream\"]\n").unwrap(),
            ["/v1/stream"]
        );
        assert!(paths("[upstream]\nstream_paths = \"\"\n").unwrap().is_empty());
        let error = paths("[upstream]\nstream_paths = \"/v1/stream,v1/events\"\n").unwrap_err();
        assert!(error.to_string().contains("v1/events"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = shared::config::from_toml::<EdgeConfig>("[cache]\nmemory = 5\n").unwrap_err();
        assert!(error.to_string().contains("memory"), "{error}");
    }
}
