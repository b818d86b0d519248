//! The QUIC client of the control plane, a pingora background service: one connection at a time to
//! one of the configured origins, taken in turn, with a doubling back-off between failures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, SendStream};
use shared::framed::{FrameReader, FrameWriter};
use shared::tls::{TlsFiles, client_config};
use shared::wire::{self, EdgeMessage, Goodbye, GoodbyeCode, Heartbeat, Hello, OriginMessage, Stats, Warm};

use shared::time::unix_ms_now;

use super::{ControlState, Protocol};
use crate::cache::{EncryptedStore, PurgeMode, Selector};
use crate::metrics::Metrics;

/// Where and how to connect, from `[control]` and `[tls]`.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `host:port` of each origin's control endpoint, tried in turn.
    pub origins: Vec<String>,
    pub server_name: String,
    pub reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    pub stats_interval: Duration,
    pub heartbeat_interval: Duration,
    /// Hosts (`Host` header values) pushed responses are stored under; none: pushes are not stored.
    pub warm_hosts: Vec<String>,
    pub tls: TlsFiles,
}

impl ClientSettings {
    /// The QUIC client configuration, from the PEM files as they are now (so a rotation is picked up
    /// on the next connection). Errors name the file.
    pub fn quic_config(&self) -> Result<quinn::ClientConfig> {
        let pem = self.tls.read()?;
        let tls = client_config(&pem, wire::ALPN)?;
        let crypto = QuicClientConfig::try_from(Arc::new(tls)).context("the TLS configuration does not suit QUIC")?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        let idle = (self.heartbeat_interval * 3).max(Duration::from_secs(1));
        transport
            .max_idle_timeout(Some(idle.try_into().context("heartbeat_interval is too long")?))
            .keep_alive_interval(Some(self.heartbeat_interval));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// The background service that keeps the edge connected to the control plane.
pub struct ControlClient {
    settings: ClientSettings,
    state: Arc<ControlState>,
    store: &'static EncryptedStore,
    /// Random per process: tells the origin this cache is new rather than resumed.
    instance_id: u64,
    started_at_ms: u64,
    metrics: &'static Metrics,
}

impl ControlClient {
    pub fn new(settings: ClientSettings, state: Arc<ControlState>, store: &'static EncryptedStore) -> Self {
        Self {
            settings,
            state,
            store,
            instance_id: rand::random(),
            started_at_ms: unix_ms_now(),
            metrics: Metrics::global(),
        }
    }

    async fn run(&self, endpoint: &Endpoint) {
        let mut protocol = Protocol::default();
        let mut delay = self.settings.reconnect_delay;
        for origin in self.settings.origins.iter().cycle() {
            let mut welcomed = false;
            match self.connect(endpoint, origin, &mut protocol, &mut welcomed).await {
                Ok(()) => tracing::info!(%origin, "control-plane connection closed"),
                Err(error) => tracing::warn!(%origin, error = format!("{error:#}"), "control-plane connection failed"),
            }
            self.metrics.control_connected.set(0);
            self.metrics.control_reconnects.inc();
            if welcomed {
                delay = self.settings.reconnect_delay;
            }
            tokio::time::sleep(delay).await;
            if !welcomed {
                delay = (delay * 2).min(self.settings.max_reconnect_delay);
            }
        }
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        origin: &str,
        protocol: &mut Protocol,
        welcomed: &mut bool,
    ) -> Result<()> {
        let config = self.settings.quic_config()?;
        let address = resolve(origin).await?;
        let connection = endpoint
            .connect_with(config, address, &self.settings.server_name)
            .context("cannot start a QUIC connection")?
            .await
            .context("QUIC handshake failed")?;
        let result = self.converse(&connection, protocol, welcomed).await;
        let reason = match &result {
            Ok(()) => b"closing".as_slice(),
            Err(_) => b"error".as_slice(),
        };
        connection.close(0u32.into(), reason);
        result
    }

    /// One conversation on one bidirectional stream: Hello, Welcome, then invalidations, heartbeats
    /// and stats until either side ends it.
    async fn converse(&self, connection: &Connection, protocol: &mut Protocol, welcomed: &mut bool) -> Result<()> {
        let (send, recv) = connection.open_bi().await.context("cannot open the control stream")?;
        let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
        writer
            .send(&EdgeMessage::Hello(Hello {
                versions: wire::SUPPORTED_VERSIONS.to_vec(),
                last_applied: protocol.last_applied(),
                instance_id: self.instance_id,
                started_at_ms: self.started_at_ms,
            }))
            .await?;
        let welcome = match reader.next().await? {
            OriginMessage::Welcome(welcome) => welcome,
            OriginMessage::Goodbye(goodbye) => bail!(
                "the origin refused the connection ({}): {}",
                goodbye.code.as_str(),
                goodbye.message
            ),
            _ => {
                goodbye(&mut writer, GoodbyeCode::ProtocolViolation, "expected a welcome").await;
                bail!("the origin sent something else than a welcome first");
            }
        };
        let mut purge = |selector: &Selector, mode: PurgeMode| {
            self.store.purge(selector, mode, "control");
        };
        let mut catching_up_to = protocol.welcome(&welcome, &mut purge)?;
        *welcomed = true;
        self.metrics.control_connected.set(1);
        tracing::info!(origin = %welcome.origin, head = ?welcome.head, last_applied = ?protocol.last_applied(), "control plane connected");
        if catching_up_to.is_none() {
            self.state.touch(SystemTime::now());
        }

        let period = |every: Duration| tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut heartbeat = period(self.settings.heartbeat_interval);
        let mut stats = period(self.settings.stats_interval);
        loop {
            tokio::select! {
                message = reader.next() => {
                    let message = message?;
                    if let OriginMessage::Warm(warm) = message {
                        self.store_pushed(protocol, warm).await;
                        continue;
                    }
                    let answer = match protocol.receive(message, &mut purge) {
                        Ok(answer) => answer,
                        Err(error) => {
                            goodbye(&mut writer, GoodbyeCode::ProtocolViolation, &error.to_string()).await;
                            return Err(error.into());
                        }
                    };
                    if catching_up_to.is_some_and(|head| protocol.last_applied() >= Some(head)) {
                        catching_up_to = None;
                        tracing::info!(last_applied = ?protocol.last_applied(), "control plane caught up");
                    }
                    if catching_up_to.is_none() {
                        self.state.touch(SystemTime::now());
                    }
                    if let Some(answer) = answer {
                        writer.send(&answer).await?;
                    }
                }
                _ = heartbeat.tick() => {
                    let sent_at_ms = unix_ms_now();
                    writer.send(&EdgeMessage::Heartbeat(Heartbeat { sent_at_ms, reply: false })).await?;
                }
                _ = stats.tick() => writer.send(&EdgeMessage::Stats(self.stats())).await?,
            }
        }
    }

    fn stats(&self) -> Stats {
        self.store.publish_size();
        let count = |status: &str| self.metrics.requests.with_label_values(&[status]).get();
        Stats {
            entries: u64::try_from(self.metrics.entries.get()).unwrap_or(0),
            memory_bytes: u64::try_from(self.metrics.memory_used.get()).unwrap_or(0),
            hits: count("hit") + count("stale") + count("revalidated"),
            misses: count("miss") + count("expired") + count("uncacheable"),
            hottest: self.state.hot_keys.take_hottest(wire::MAX_HOT_KEYS),
        }
    }

    /// Stores a response the origin pushed, under each configured host.
    async fn store_pushed(&self, protocol: &Protocol, warm: Warm) {
        let stored = match pushed_response(&warm) {
            Some(response) if protocol.admits(&warm) && !self.settings.warm_hosts.is_empty() => {
                let body = Bytes::from(warm.body);
                self.store
                    .store_pushed(&warm.key, &self.settings.warm_hosts, response, body)
                    .await
            }
            _ => 0,
        };
        if stored == 0 {
            self.metrics.control_warm_ignored.inc();
        } else {
            self.metrics.control_warm_stored.inc();
        }
    }
}

/// The response header of a push; `None` when a field is not valid HTTP.
fn pushed_response(warm: &Warm) -> Option<ResponseHeader> {
    let mut response = ResponseHeader::build(warm.status, Some(warm.headers.len())).ok()?;
    for (name, value) in &warm.headers {
        let value = http::HeaderValue::from_bytes(value).ok()?;
        response.append_header(name.clone(), value).ok()?;
    }
    Some(response)
}

#[async_trait]
impl BackgroundService for ControlClient {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Created here, on this service's runtime, which drives its socket.
        let endpoint = match client_endpoint() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "cannot open the control-plane socket");
                return;
            }
        };
        tokio::select! {
            _ = shutdown.changed() => {}
            () = self.run(&endpoint) => {}
        }
        endpoint.close(0u32.into(), b"shutdown");
    }
}

/// A client endpoint on an ephemeral port, dual-stack when the host has IPv6.
fn client_endpoint() -> Result<Endpoint> {
    Endpoint::client(SocketAddr::from(([0u16; 8], 0)))
        .or_else(|_| Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))))
        .context("cannot bind a UDP socket")
}

async fn resolve(origin: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(origin)
        .await
        .with_context(|| format!("cannot resolve {origin}"))?
        .next()
        .with_context(|| format!("{origin} resolves to no address"))
}

/// Says why the edge closes the connection; the close follows whether or not this arrives.
async fn goodbye(writer: &mut FrameWriter<SendStream>, code: GoodbyeCode, message: &str) {
    let _ = writer.send(&EdgeMessage::Goodbye(Goodbye::new(code, message))).await;
}
