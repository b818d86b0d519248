//! Builds the pingora server of an edge from its configuration: the proxy listeners, the operations
//! listener (`/metrics`, `/healthz`) and the maintenance task (sweeping, health checks, key reloads).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use prometheus::{Encoder, TextEncoder};

use crate::cache::{Cache, EncryptedStore, StoreSettings};
use crate::config::EdgeConfig;
use crate::control::{ClientSettings, ControlClient, ControlState};
use crate::crypto::Keyring;
use crate::downstream::{ConnectionLimits, Downstream};
use crate::metrics::Metrics;
use crate::proxy::{EdgeProxy, ProxySettings};
use crate::upstream::Upstreams;

/// A server ready to run, and the cache it serves from (for tests and the control plane).
pub struct Edge {
    pub server: Server,
    pub cache: &'static Cache,
}

/// Builds the edge. Every configuration problem (unreadable key file, bad certificate, unknown upstream
/// host) is reported here, before anything listens.
pub fn build(config: &EdgeConfig) -> Result<Edge> {
    let keyring = load_keyring(&config.cache.key_file)?;
    if config.http.tls_listen.is_some() {
        check_pem(&config.http.tls_cert, "CERTIFICATE")?;
        check_pem(&config.http.tls_key, "PRIVATE KEY")?;
    }
    let control = control_settings(config)?;
    let upstreams = Arc::new(Upstreams::new(
        &config.upstream.url,
        config.upstream.connect_timeout,
        config.upstream.read_timeout,
        config.upstream.stream_read_timeout,
    )?);
    let compress_min_bytes = (config.cache.compress_min_bytes > 0).then_some(config.cache.compress_min_bytes);
    let store_settings = StoreSettings {
        compress_min_bytes,
        tag_headers: lower_case(&config.http.tag_headers),
    };
    let cache = Cache::leak(
        config.cache.memory_bytes.get(),
        config.cache.lock_timeout,
        keyring,
        store_settings,
    );

    let conf = ServerConf {
        threads: config.server.threads.get(),
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs().max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let settings = ProxySettings {
        cache_name: config.http.cache_name.clone(),
        vary_allowed: lower_case(&config.cache.vary_allowed),
        tag_headers: lower_case(&config.http.tag_headers),
        strip_tag_headers: config.http.strip_tag_headers,
        max_object_bytes: config.cache.max_object_bytes.get(),
        stream_paths: config.upstream.stream_paths.clone(),
    };
    let control_state = control.as_ref().map(|_| {
        Arc::new(ControlState::new(
            config.control.staleness_bound,
            SystemTime::now(),
            Metrics::global(),
        ))
    });
    let proxy = EdgeProxy::new(cache, upstreams.clone(), settings, control_state.clone());
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, proxy);
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.http.idle_timeout);
    proxy.server_options = Some(options);
    let limits = ConnectionLimits {
        header_read_timeout: config.http.header_read_timeout,
        idle_timeout: config.http.idle_timeout,
        body_read_timeout: config.http.body_read_timeout,
        max_connections: config.http.max_connections,
    };
    let mut proxy_service = Service::new("edge".to_string(), Downstream::new(proxy, limits));
    // No userspace write buffer on client connections: pingora's would keep the last response sent,
    // plaintext of a cached body, for as long as the connection stays open.
    let unbuffered_writes = L4BufferSettings::default().write(0);
    proxy_service.add_listener(ListenerConfig::tcp(config.http.listen.to_string()).l4_buffer(unbuffered_writes));
    if let Some(tls_listen) = config.http.tls_listen {
        let cert = path_text(&config.http.tls_cert)?;
        let key = path_text(&config.http.tls_key)?;
        proxy_service
            .add_tls(&tls_listen.to_string(), cert, key)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot use {cert} and {key} for HTTPS"))?;
    }
    server.add_service(proxy_service);

    let operations = Operations {
        store: cache.store,
        control: control_state.clone(),
    };
    let mut operations = Service::new("operations".to_string(), HttpServer::new_app(operations));
    operations.add_tcp(&config.metrics.listen.to_string());
    server.add_service(operations);

    let maintenance = Maintenance {
        store: cache.store,
        upstreams,
        key_file: config.cache.key_file.clone(),
        sweep_interval: config.cache.sweep_interval,
        health_check_interval: config.upstream.health_check_interval,
        key_reload_interval: config.cache.key_reload_interval,
    };
    server.add_service(background_service("maintenance", maintenance));
    if let (Some(settings), Some(state)) = (control, control_state) {
        let client = ControlClient::new(settings, state, cache.store);
        server.add_service(background_service("control", client));
    }
    Ok(Edge { server, cache })
}

/// The control-plane client's settings when origins are configured, with every origin address and
/// the TLS files checked now, so a wrong one stops the edge at start with a message naming it.
fn control_settings(config: &EdgeConfig) -> Result<Option<ClientSettings>> {
    let control = &config.control;
    if control.origins.is_empty() {
        return Ok(None);
    }
    for origin in &control.origins {
        let port = origin.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        anyhow::ensure!(
            matches!(port, Some(Ok(_))),
            "control.origins: {origin:?} is not host:port"
        );
    }
    let settings = ClientSettings {
        origins: control.origins.clone(),
        server_name: control.server_name.clone(),
        reconnect_delay: control.reconnect_delay,
        max_reconnect_delay: control.max_reconnect_delay.max(control.reconnect_delay),
        stats_interval: control.stats_interval,
        heartbeat_interval: control.heartbeat_interval,
        warm_hosts: control.warm_hosts.clone(),
        tls: config.tls.clone(),
    };
    settings
        .quic_config()
        .context("the control plane's TLS files ([tls] ca, cert, key) cannot be used")?;
    Ok(Some(settings))
}

fn lower_case(names: &[String]) -> Vec<String> {
    names.iter().map(|name| name.trim().to_ascii_lowercase()).collect()
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not valid UTF-8", path.display()))
}

/// Checks that `path` is a readable PEM file holding a block of `kind`, so a wrong file is named at
/// start instead of failing at the first handshake.
fn check_pem(path: &Path, kind: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let found = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains(kind));
    anyhow::ensure!(found, "{} holds no PEM {kind} block", path.display());
    Ok(())
}

/// The keyring from the key file, or a random one when no file is configured.
pub fn load_keyring(key_file: &Path) -> Result<Keyring> {
    if key_file.as_os_str().is_empty() {
        tracing::info!("no cache key file configured: entries are sealed under a random key of this process");
        return Keyring::random().context("cannot draw a random cache key");
    }
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("cannot read cache key file {}", key_file.display()))?;
    let keyring = Keyring::parse(&text).with_context(|| format!("cache key file {}", key_file.display()))?;
    tracing::info!(
        current = %keyring.current().id_hex(),
        previous = keyring.previous().len(),
        "cache keys loaded"
    );
    Ok(keyring)
}

/// `/metrics` and `/healthz`.
struct Operations {
    store: &'static EncryptedStore,
    control: Option<Arc<ControlState>>,
}

#[async_trait]
impl ServeHttp for Operations {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/metrics" => {
                self.store.publish_size();
                if let Some(control) = &self.control {
                    control.cut_off(SystemTime::now());
                }
                let encoder = TextEncoder::new();
                let mut body = Vec::new();
                match encoder.encode(&prometheus::gather(), &mut body) {
                    Ok(()) => (200, encoder.format_type().to_string(), body),
                    Err(error) => {
                        tracing::error!(%error, "metrics encoding failed");
                        (
                            500,
                            "application/json".into(),
                            br#"{"error":"metrics unavailable"}"#.to_vec(),
                        )
                    }
                }
            }
            "/healthz" => (200, "application/json".into(), br#"{"status":"ok"}"#.to_vec()),
            _ => (
                404,
                "application/json".into(),
                br#"{"error":"not found: this listener serves /metrics and /healthz"}"#.to_vec(),
            ),
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}

/// Periodic upkeep: removes expired entries, probes upstreams, picks up a rotated key file.
struct Maintenance {
    store: &'static EncryptedStore,
    upstreams: Arc<Upstreams>,
    key_file: PathBuf,
    sweep_interval: Duration,
    health_check_interval: Duration,
    key_reload_interval: Duration,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut sweep = tokio::time::interval(self.sweep_interval);
        let mut health = tokio::time::interval(self.health_check_interval);
        let mut keys = tokio::time::interval(self.key_reload_interval);
        let mut key_text = read_key_file(&self.key_file);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = sweep.tick() => {
                    self.store.sweep(SystemTime::now());
                }
                _ = health.tick() => self.upstreams.check_health().await,
                _ = keys.tick() => {
                    let text = read_key_file(&self.key_file);
                    if text != key_text {
                        key_text = text;
                        self.reload_keys();
                    }
                }
            }
        }
    }
}

impl Maintenance {
    fn reload_keys(&self) {
        match load_keyring(&self.key_file) {
            Ok(keyring) => self.store.set_keyring(keyring),
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "cache key file rejected; the previous keys stay"
            ),
        }
    }
}

fn read_key_file(path: &Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return None;
    }
    std::fs::read_to_string(path).ok()
}
