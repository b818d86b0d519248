//! The control plane's origin side: edges dial in over QUIC with mutual TLS, say which invalidation they
//! applied last, are replayed what they missed (or told to drop everything when that part of the log is
//! trimmed), then follow the log live and acknowledge each sequence. See `shared::wire` for the
//! conversation.
//!
//! Each connection follows the durable log itself, so nothing depends on this process having seen an
//! append: appends through this origin wake it at once, appends through other origins sharing the log
//! are found at the next `quic.poll_interval`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::rustls::pki_types::CertificateDer;
use quinn::{Connection, Endpoint, SendStream};
use serde::Serialize;
use shared::framed::{FrameReader, FrameWriter};
use shared::time::unix_ms_now;
use shared::tls::{EdgeIdentity, TlsFiles, server_config};
use shared::wire::{
    self, Ack, DropAll, DropReason, EdgeMessage, Goodbye, GoodbyeCode, Heartbeat, Hello, Invalidate, OriginMessage,
    Stats, Warm, Welcome,
};
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

use crate::config::QuicConfig;
use crate::forecasts::Forecasts;
use crate::metrics::Metrics;
use crate::tasks::Tasks;
use crate::warming::Warming;

/// Invalidations read from the log at a time, during replay and while following it.
const PAGE: NonZeroUsize = NonZeroUsize::new(1000).expect("non-zero");
/// How long an edge may take to open its stream and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The running control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub addr: SocketAddr,
    endpoint: Endpoint,
    pub edges: Edges,
}

impl ControlPlane {
    /// Closes every connection and the socket.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"origin shutting down");
    }
}

/// Acknowledged invalidations remembered per edge, with when each was applied, for
/// `GET /admin/v1/invalidations/{id}`.
const APPLIED_KEPT: usize = 4096;
/// Invalidations sent to one edge and not yet acknowledged, remembered to time their propagation.
const IN_FLIGHT_KEPT: usize = 65_536;

/// The edges connected now, what each confirmed and when.
#[derive(Debug, Clone)]
pub struct Edges {
    connections: Arc<Mutex<BTreeMap<u64, Tracked>>>,
    /// Bumped on every acknowledgement and disconnect, for callers waiting until an invalidation is
    /// applied everywhere.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Edges {
    fn default() -> Self {
        Self {
            connections: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// One connected edge, as `GET /admin/v1/edges` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EdgeStatus {
    pub name: String,
    pub region: String,
    pub remote: String,
    /// The origin instance the edge is connected to (this one): `origin@{control-plane address}`.
    pub origin: String,
    /// Unix milliseconds of the connection.
    pub connected_at_ms: u64,
    /// The last sequence the edge confirmed applied (for a fresh or dropped cache: the head it started at).
    pub acked: Option<u64>,
    /// The last sequence sent to it.
    pub sent: Option<u64>,
    /// Invalidations in the log the edge has not confirmed: head minus `acked`.
    pub lag: Option<u64>,
    /// Round-trip time of the last heartbeat, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Unix milliseconds of the last frame from the edge.
    pub last_seen_ms: u64,
    /// The edge's last cache summary (sent every few seconds).
    pub cache: Option<CacheSummary>,
}

/// What an edge reported about its cache.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CacheSummary {
    pub entries: u64,
    pub memory_bytes: u64,
    /// Reads answered from the cache, since the cache started.
    pub hits: u64,
    /// Reads that went to the origin, since the cache started.
    pub misses: u64,
    /// The most-read logical keys of the last period, hottest first: warmed after writes.
    pub hottest: Vec<String>,
}

/// Whether (and when) one edge applied one invalidation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Application {
    pub name: String,
    pub region: String,
    pub remote: String,
    pub applied: bool,
    /// Unix milliseconds of the acknowledgement; null when pending, or applied before this connection.
    pub applied_at_ms: Option<u64>,
    /// From the origin accepting the invalidation to the acknowledgement (millisecond clocks).
    pub took_ms: Option<u64>,
}

#[derive(Debug)]
struct Tracked {
    status: EdgeStatus,
    /// Sent, not yet acknowledged: (sequence, issued_at_ms), oldest first.
    in_flight: VecDeque<(u64, u64)>,
    /// Acknowledged: (sequence, issued_at_ms, applied_at_ms), oldest first.
    applied: VecDeque<(u64, u64, u64)>,
    /// When the last heartbeat was sent, by its `sent_at_ms`.
    ping: Option<(u64, Instant)>,
}

impl Edges {
    /// The connected edges.
    pub fn list(&self) -> Vec<EdgeStatus> {
        self.list_at(None)
    }

    /// The connected edges, with their lag behind `head` (the log's newest sequence).
    pub fn list_at(&self, head: Option<u64>) -> Vec<EdgeStatus> {
        self.lock()
            .values()
            .map(|tracked| {
                let mut status = tracked.status.clone();
                status.lag = head.map(|head| head.saturating_sub(status.acked.unwrap_or(0)));
                status
            })
            .collect()
    }

    /// Each connected edge's name and the last sequence it confirmed: a cheap look, for polling.
    pub fn acks(&self) -> Vec<(String, Option<u64>)> {
        self.lock()
            .values()
            .map(|tracked| (tracked.status.name.clone(), tracked.status.acked))
            .collect()
    }

    /// Every connected edge's state with respect to `sequence`.
    pub fn applications(&self, sequence: u64) -> Vec<Application> {
        self.lock()
            .values()
            .map(|tracked| {
                let status = &tracked.status;
                let timing = tracked.applied.iter().find(|(acked, ..)| *acked == sequence);
                Application {
                    name: status.name.clone(),
                    region: status.region.clone(),
                    remote: status.remote.clone(),
                    applied: status.acked >= Some(sequence),
                    applied_at_ms: timing.map(|&(_, _, applied_at)| applied_at),
                    took_ms: timing.map(|&(_, issued_at, applied_at)| applied_at.saturating_sub(issued_at)),
                }
            })
            .collect()
    }

    /// Waits until every connected edge has applied `sequence`, or `deadline`; answers whether they have.
    pub async fn wait_applied(&self, sequence: u64, deadline: tokio::time::Instant) -> bool {
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if self
                .lock()
                .values()
                .all(|tracked| tracked.status.acked >= Some(sequence))
            {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// The union of the keys edges report hottest.
    pub fn hottest(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .values()
            .filter_map(|tracked| tracked.status.cache.as_ref())
            .flat_map(|cache| cache.hottest.iter().cloned())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Tracked>> {
        // A panic elsewhere cannot leave an entry half-written: every update is a plain assignment.
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, id: u64, status: EdgeStatus) {
        let tracked = Tracked {
            status,
            in_flight: VecDeque::new(),
            applied: VecDeque::new(),
            ping: None,
        };
        self.lock().insert(id, tracked);
        self.changes.send_modify(|n| *n += 1);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changes.send_modify(|n| *n += 1);
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Tracked)) {
        if let Some(tracked) = self.lock().get_mut(&id) {
            tracked.status.last_seen_ms = unix_ms_now();
            change(tracked);
        }
    }

    fn sent(&self, id: u64, record: &Invalidate) {
        if let Some(tracked) = self.lock().get_mut(&id) {
            if tracked.in_flight.len() == IN_FLIGHT_KEPT {
                tracked.in_flight.pop_front();
            }
            tracked.in_flight.push_back((record.sequence, record.issued_at_ms));
            tracked.status.sent = Some(record.sequence);
        }
    }

    /// Records an acknowledgement (cumulative); answers how long each newly confirmed invalidation took.
    fn acked(&self, id: u64, sequence: u64) -> Vec<Duration> {
        let now = unix_ms_now();
        let mut took = Vec::new();
        self.update(id, |tracked| {
            tracked.status.acked = tracked.status.acked.max(Some(sequence));
            while let Some(&(sent, issued_at)) = tracked.in_flight.front()
                && sent <= sequence
            {
                tracked.in_flight.pop_front();
                if tracked.applied.len() == APPLIED_KEPT {
                    tracked.applied.pop_front();
                }
                tracked.applied.push_back((sent, issued_at, now));
                took.push(Duration::from_millis(now.saturating_sub(issued_at)));
            }
        });
        self.changes.send_modify(|n| *n += 1);
        took
    }
}

/// What the control plane works with: the forecasts (their invalidation log, and the L1 cache it keeps
/// in step), the edges connected, the pushes of warming, and the metrics.
#[derive(Debug, Clone)]
pub struct ControlState {
    pub forecasts: Arc<Forecasts>,
    pub edges: Edges,
    pub warming: Arc<Warming>,
    pub metrics: Metrics,
    pub tasks: Tasks,
}

/// Binds the control plane's UDP socket and starts accepting edges. TLS files are checked here, so a
/// wrong file stops the origin at start with its name.
pub fn start(quic: &QuicConfig, tls: &TlsFiles, listen: SocketAddr, state: ControlState) -> Result<ControlPlane> {
    let pem = tls.read().context("control-plane TLS ([tls])")?;
    let tls = server_config(&pem, wire::ALPN).context("control-plane TLS ([tls])")?;
    let crypto = QuicServerConfig::try_from(Arc::new(tls)).context("control-plane TLS for QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = (quic.heartbeat_interval * 3).max(Duration::from_secs(1));
    transport.max_idle_timeout(Some(idle.try_into().context("quic.heartbeat_interval is too long")?));
    config.transport_config(Arc::new(transport));
    let endpoint =
        Endpoint::server(config, listen).with_context(|| format!("binding the control plane to {listen}"))?;
    let addr = endpoint.local_addr()?;
    let edges = state.edges.clone();
    let settings = Settings {
        origin: format!("origin@{addr}"),
        poll_interval: quic.poll_interval,
        heartbeat_interval: quic.heartbeat_interval,
    };
    let tasks = state.tasks.clone();
    tasks.spawn(accept(endpoint.clone(), Arc::new(settings), state, edges.clone()));
    tracing::info!(%addr, "control plane listening");
    Ok(ControlPlane { addr, endpoint, edges })
}

struct Settings {
    origin: String,
    poll_interval: Duration,
    heartbeat_interval: Duration,
}

async fn accept(endpoint: Endpoint, settings: Arc<Settings>, state: ControlState, edges: Edges) {
    let mut next_id = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        next_id += 1;
        let id = next_id;
        let (settings, state, edges) = (settings.clone(), state.clone(), edges.clone());
        let tasks = state.tasks.clone();
        tasks.spawn(async move {
            let remote = incoming.remote_address();
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    state.metrics.control_failures.inc();
                    tracing::warn!(%remote, %error, "control-plane handshake failed");
                    return;
                }
            };
            let Some(identity) = identity(&connection) else {
                state.metrics.control_failures.inc();
                connection.close(0u32.into(), b"no edge identity");
                return;
            };
            let result = serve(id, &connection, &identity, &settings, &state, &edges).await;
            edges.remove(id);
            state.metrics.control_edges.set(edges.len() as i64);
            match result {
                Ok(()) => tracing::info!(edge = %identity.uri(), "edge disconnected"),
                Err(error) => {
                    state.metrics.control_failures.inc();
                    tracing::warn!(edge = %identity.uri(), error = format!("{error:#}"), "edge connection ended");
                }
            }
            connection.close(0u32.into(), b"");
        });
    }
}

/// The identity in the certificate the handshake verified.
fn identity(connection: &Connection) -> Option<EdgeIdentity> {
    let certificates = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    EdgeIdentity::from_certificate(certificates.first()?).ok()
}

async fn serve(
    id: u64,
    connection: &Connection,
    identity: &EdgeIdentity,
    settings: &Settings,
    state: &ControlState,
    edges: &Edges,
) -> Result<()> {
    let (send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
        .await
        .context("the edge opened no stream")??;
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .context("no hello")??
    {
        EdgeMessage::Hello(hello) => hello,
        other => bail!("expected hello, got {other:?}"),
    };
    let Some(version) = wire::choose_version(&hello.versions) else {
        let message = format!("this origin speaks {:?}", wire::SUPPORTED_VERSIONS);
        // The close follows whether or not this arrives.
        let goodbye = OriginMessage::Goodbye(Goodbye::new(GoodbyeCode::UnsupportedVersion, &message));
        let _ = writer.send(&goodbye).await;
        bail!("no common protocol version in {:?}", hello.versions);
    };
    let now = unix_ms_now();
    edges.insert(
        id,
        EdgeStatus {
            name: identity.name().to_owned(),
            region: identity.region().to_owned(),
            remote: connection.remote_address().to_string(),
            origin: settings.origin.clone(),
            connected_at_ms: now,
            acked: hello.last_applied,
            sent: hello.last_applied,
            lag: None,
            rtt_ms: None,
            last_seen_ms: now,
            cache: None,
        },
    );
    state.metrics.control_edges.set(edges.len() as i64);
    tracing::info!(edge = %identity.uri(), last_applied = ?hello.last_applied, "edge connected");

    let forecasts = &state.forecasts;
    let mut appended = forecasts.appended();
    let mut warms = state.warming.subscribe();
    let page = forecasts.invalidation_log(hello.last_applied, PAGE).await?;
    let (drop_all, mut sent) = resume_point(&hello, page.head, page.trimmed);
    if let Some(reason) = drop_all {
        count_drop_all(state, reason);
    }
    if hello.last_applied.is_none() || drop_all.is_some() {
        // A fresh or emptied cache holds nothing an invalidation up to where it starts could concern.
        edges.update(id, |tracked| tracked.status.acked = sent);
    }
    writer
        .send(&OriginMessage::Welcome(Welcome {
            version,
            origin: settings.origin.clone(),
            head: page.head,
            drop_all,
        }))
        .await?;
    let connection = Forwarding {
        id,
        edges,
        replay_until: page.head,
    };

    let mut poll = tokio::time::interval(settings.poll_interval);
    let mut heartbeat = tokio::time::interval(settings.heartbeat_interval);
    loop {
        sent = connection.forward(&mut writer, state, sent).await?;
        tokio::select! {
            message = reader.next() => match message? {
                EdgeMessage::Ack(Ack { sequence }) => {
                    let histogram = state.metrics.control_propagation.with_label_values(&[identity.name()]);
                    for took in edges.acked(id, sequence) {
                        histogram.observe(took.as_secs_f64());
                    }
                }
                EdgeMessage::Heartbeat(Heartbeat { reply: false, sent_at_ms }) => {
                    edges.update(id, |_| {});
                    writer.send(&OriginMessage::Heartbeat(Heartbeat { sent_at_ms, reply: true })).await?;
                }
                EdgeMessage::Heartbeat(Heartbeat { reply: true, sent_at_ms }) => edges.update(id, |tracked| {
                    if let Some((pinged_at_ms, pinged)) = tracked.ping
                        && pinged_at_ms == sent_at_ms
                    {
                        tracked.status.rtt_ms = Some(pinged.elapsed().as_secs_f64() * 1000.0);
                    }
                }),
                EdgeMessage::Stats(stats) => edges.update(id, |tracked| tracked.status.cache = Some(summary(stats))),
                EdgeMessage::Goodbye(goodbye) => {
                    tracing::info!(edge = %identity.uri(), code = ?goodbye.code, message = %goodbye.message, "edge said goodbye");
                    return Ok(());
                }
                EdgeMessage::Hello(_) => bail!("a second hello"),
            },
            changed = appended.changed() => changed.context("the origin is stopping")?,
            warm = warms.recv() => match warm {
                Ok(warm) => sent = connection.warm(&mut writer, state, sent, &warm).await?,
                // Warming is an optimisation: pushes missed under load are reads that miss once.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(edge = %identity.uri(), missed, "warm pushes skipped: the edge is behind");
                }
                Err(broadcast::error::RecvError::Closed) => bail!("the origin is stopping"),
            },
            _ = poll.tick() => {}
            _ = heartbeat.tick() => {
                let now = unix_ms_now();
                edges.update(id, |tracked| tracked.ping = Some((now, Instant::now())));
                writer.send(&OriginMessage::Heartbeat(Heartbeat { sent_at_ms: now, reply: false })).await?;
            }
        }
    }
}

fn summary(stats: Stats) -> CacheSummary {
    CacheSummary {
        entries: stats.entries,
        memory_bytes: stats.memory_bytes,
        hits: stats.hits,
        misses: stats.misses,
        hottest: stats.hottest.into_iter().map(|hot| hot.key).collect(),
    }
}

/// Where a connection starts, from what the edge applied last and the state of the log: whether it must
/// drop everything, and the last sequence it holds afterwards (what follows is sent).
///
/// A fresh cache (`last_applied: None`) holds nothing to purge: it starts at the head. `Some(0)` is a
/// cache that started on an empty log: it is replayed from 1. An edge ahead of the log (the log was
/// reset) or behind its trimmed part cannot catch up by replay.
fn resume_point(hello: &Hello, head: Option<u64>, trimmed: bool) -> (Option<DropReason>, Option<u64>) {
    match hello.last_applied {
        None => (None, head),
        Some(0) if head.is_none() => (None, Some(0)),
        Some(applied) if head.is_none_or(|head| applied > head) => (Some(DropReason::LogReset), head),
        Some(_) if trimmed => (Some(DropReason::Trimmed), head),
        Some(applied) => (None, Some(applied)),
    }
}

/// One connection's sending side.
struct Forwarding<'a> {
    id: u64,
    edges: &'a Edges,
    /// The head when the edge connected: what it is sent up to there is a replay.
    replay_until: Option<u64>,
}

impl Forwarding<'_> {
    /// Sends what the log holds after `sent`, in order; answers the new last sequence sent. A gap (the
    /// log was trimmed past what this connection sent) becomes a `DropAll`.
    async fn forward(
        &self,
        writer: &mut FrameWriter<SendStream>,
        state: &ControlState,
        mut sent: Option<u64>,
    ) -> Result<Option<u64>> {
        loop {
            let page = state.forecasts.invalidation_log(sent, PAGE).await?;
            if page.trimmed {
                if let Some(head) = page.head {
                    let reason = DropReason::Trimmed;
                    count_drop_all(state, reason);
                    writer
                        .send(&OriginMessage::DropAll(DropAll { sequence: head, reason }))
                        .await?;
                }
                return Ok(page.head);
            }
            let Some(last) = page.records.last().map(|record| record.sequence) else {
                return Ok(sent);
            };
            for record in page.records {
                // The edge refetches from its origin right after applying this: this origin's L1 must not
                // answer with what the invalidation replaced (it may come from another origin's write).
                state.forecasts.apply_to_l1(&record);
                self.edges.sent(self.id, &record);
                if Some(record.sequence) <= self.replay_until {
                    state.metrics.control_replayed.inc();
                }
                writer.send(&OriginMessage::Invalidate(record)).await?;
                state.metrics.control_sent.inc();
            }
            sent = Some(last);
        }
    }

    /// Pushes a response, after every invalidation up to the one it follows: on one stream, the edge
    /// can neither store it before that purge nor after a later one.
    async fn warm(
        &self,
        writer: &mut FrameWriter<SendStream>,
        state: &ControlState,
        mut sent: Option<u64>,
        warm: &OriginMessage,
    ) -> Result<Option<u64>> {
        let OriginMessage::Warm(Warm { sequence, .. }) = warm else {
            return Ok(sent);
        };
        if *sequence > sent {
            sent = self.forward(writer, state, sent).await?;
        }
        if *sequence <= sent {
            writer.send(warm).await?;
            state.metrics.control_warm_sent.inc();
        }
        Ok(sent)
    }
}

fn count_drop_all(state: &ControlState, reason: DropReason) {
    state
        .metrics
        .control_drop_all
        .with_label_values(&[reason.as_str()])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(last_applied: Option<u64>) -> Hello {
        Hello {
            versions: vec![wire::VERSION],
            last_applied,
            instance_id: 1,
            started_at_ms: 0,
        }
    }

    #[test]
    fn a_fresh_cache_starts_at_the_head_without_replay() {
        assert_eq!(resume_point(&hello(None), Some(7), false), (None, Some(7)));
        assert_eq!(resume_point(&hello(None), None, false), (None, None));
    }

    #[test]
    fn an_edge_behind_is_replayed_from_where_it_stands() {
        assert_eq!(resume_point(&hello(Some(0)), None, false), (None, Some(0)));
        assert_eq!(resume_point(&hello(Some(0)), Some(7), false), (None, Some(0)));
        assert_eq!(resume_point(&hello(Some(3)), Some(7), false), (None, Some(3)));
        assert_eq!(resume_point(&hello(Some(7)), Some(7), false), (None, Some(7)));
    }

    #[test]
    fn a_trimmed_or_reset_log_means_dropping_everything() {
        assert_eq!(
            resume_point(&hello(Some(3)), Some(7), true),
            (Some(DropReason::Trimmed), Some(7))
        );
        assert_eq!(
            resume_point(&hello(Some(9)), Some(7), false),
            (Some(DropReason::LogReset), Some(7))
        );
        assert_eq!(
            resume_point(&hello(Some(9)), None, false),
            (Some(DropReason::LogReset), None)
        );
    }
}
