//! The control plane's origin side: edges dial in over QUIC with mutual TLS, say which invalidation they
//! applied last, are replayed what they missed (or told to drop everything when that part of the log is
//! trimmed), then follow the log live and acknowledge each sequence. See `shared::wire` for the
//! conversation.
//!
//! Each connection follows the durable log itself, so nothing depends on this process having seen an
//! append: appends through this origin wake it at once, appends through other origins sharing the log
//! are found at the next `quic.poll_interval`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::rustls::pki_types::CertificateDer;
use quinn::{Connection, Endpoint, SendStream};
use serde::Serialize;
use shared::framed::{FrameReader, FrameWriter};
use shared::tls::{EdgeIdentity, TlsFiles, server_config};
use shared::wire::{
    self, Ack, DropAll, DropReason, EdgeMessage, Goodbye, GoodbyeCode, Heartbeat, Hello, OriginMessage, Welcome,
    unix_ms,
};
use utoipa::ToSchema;

use crate::api::AppState;
use crate::config::QuicConfig;

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

/// The edges connected now, and what each confirmed.
#[derive(Debug, Clone, Default)]
pub struct Edges(Arc<Mutex<BTreeMap<u64, EdgeStatus>>>);

/// One connected edge, as `GET /admin/v1/edges` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EdgeStatus {
    pub name: String,
    pub region: String,
    pub remote: String,
    /// Unix milliseconds of the connection.
    pub connected_at_ms: u64,
    /// The last sequence the edge confirmed applied.
    pub acked: Option<u64>,
    /// The last sequence sent to it.
    pub sent: Option<u64>,
}

impl Edges {
    pub fn list(&self) -> Vec<EdgeStatus> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut EdgeStatus)) {
        if let Some(status) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
            change(status);
        }
    }
}

/// Binds the control plane's UDP socket and starts accepting edges. TLS files are checked here, so a
/// wrong file stops the origin at start with its name.
pub fn start(quic: &QuicConfig, tls: &TlsFiles, listen: SocketAddr, state: AppState) -> Result<ControlPlane> {
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
    tokio::spawn(accept(endpoint.clone(), Arc::new(settings), state, edges.clone()));
    tracing::info!(%addr, "control plane listening");
    Ok(ControlPlane { addr, endpoint, edges })
}

struct Settings {
    origin: String,
    poll_interval: Duration,
    heartbeat_interval: Duration,
}

async fn accept(endpoint: Endpoint, settings: Arc<Settings>, state: AppState, edges: Edges) {
    let mut next_id = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        next_id += 1;
        let id = next_id;
        let (settings, state, edges) = (settings.clone(), state.clone(), edges.clone());
        tokio::spawn(async move {
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
            edges.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
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
    state: &AppState,
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
    edges.0.lock().unwrap_or_else(PoisonError::into_inner).insert(
        id,
        EdgeStatus {
            name: identity.name().to_owned(),
            region: identity.region().to_owned(),
            remote: connection.remote_address().to_string(),
            connected_at_ms: unix_ms(SystemTime::now()),
            acked: hello.last_applied,
            sent: hello.last_applied,
        },
    );
    state.metrics.control_edges.set(edges.len() as i64);
    tracing::info!(edge = %identity.uri(), last_applied = ?hello.last_applied, "edge connected");

    let forecasts = &state.forecasts;
    let mut appended = forecasts.appended();
    let page = forecasts.invalidation_log(hello.last_applied, PAGE).await?;
    let (drop_all, mut sent) = resume_point(&hello, page.head, page.trimmed);
    if let Some(reason) = drop_all {
        count_drop_all(state, reason);
    }
    writer
        .send(&OriginMessage::Welcome(Welcome {
            version,
            origin: settings.origin.clone(),
            head: page.head,
            drop_all,
        }))
        .await?;

    let mut poll = tokio::time::interval(settings.poll_interval);
    let mut heartbeat = tokio::time::interval(settings.heartbeat_interval);
    loop {
        sent = forward(&mut writer, state, sent).await?;
        edges.update(id, |status| status.sent = sent);
        tokio::select! {
            message = reader.next() => match message? {
                EdgeMessage::Ack(Ack { sequence }) => edges.update(id, |status| status.acked = Some(sequence)),
                EdgeMessage::Heartbeat(Heartbeat { reply: false, sent_at_ms }) => {
                    writer.send(&OriginMessage::Heartbeat(Heartbeat { sent_at_ms, reply: true })).await?;
                }
                EdgeMessage::Heartbeat(_) | EdgeMessage::Stats(_) => {}
                EdgeMessage::Goodbye(goodbye) => {
                    tracing::info!(edge = %identity.uri(), code = ?goodbye.code, message = %goodbye.message, "edge said goodbye");
                    return Ok(());
                }
                EdgeMessage::Hello(_) => bail!("a second hello"),
            },
            changed = appended.changed() => changed.context("the origin is stopping")?,
            _ = poll.tick() => {}
            _ = heartbeat.tick() => {
                let now = unix_ms(SystemTime::now());
                writer.send(&OriginMessage::Heartbeat(Heartbeat { sent_at_ms: now, reply: false })).await?;
            }
        }
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

/// Sends what the log holds after `sent`, in order; answers the new last sequence sent. A gap (the log
/// was trimmed past what this connection sent) becomes a `DropAll`.
async fn forward(writer: &mut FrameWriter<SendStream>, state: &AppState, mut sent: Option<u64>) -> Result<Option<u64>> {
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
            writer.send(&OriginMessage::Invalidate(record)).await?;
            state.metrics.control_sent.inc();
        }
        sent = Some(last);
    }
}

fn count_drop_all(state: &AppState, reason: DropReason) {
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
