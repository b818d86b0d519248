//! Client connections before pingora's proxy reads them: a cap on how many are open, a deadline for
//! each request header, an idle keep-alive timeout, a body read timeout, and HTTP/1.1 pipelining.
//!
//! Pingora 0.9 has none of the first three as settings: its HTTP/1 loop waits 60 s for each read of
//! a first request header (so a client trickling a byte a minute holds the connection forever),
//! waits without any bound for the next request on a kept-alive connection, and accepts every
//! connection until the process runs out of files. It also leaves pipelining off, and then drops
//! a connection whose next request arrived with the current one: the bytes read past a request are
//! discarded at reuse. [`Downstream`] runs that loop itself around the proxy, with pingora's own
//! per-session settings (keep-alive, read timeouts, pipelining) and a deadline of its own for the
//! whole header, which the proxy reports through the connection context (see [`header_read`]).

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, oneshot};

use crate::metrics::Metrics;

/// What a refused connection is told, when it can still hear it.
const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";
/// How long the refusal may take to write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The limits on client connections, from `[http]` of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: NonZeroUsize,
}

impl ConnectionLimits {
    /// Pingora counts keep-alive in whole seconds, and 0 would mean forever.
    fn idle_seconds(&self) -> u64 {
        self.idle_timeout.as_secs_f64().ceil().max(1.0) as u64
    }

    /// The longest a request header may take: from the connection's start for its first request,
    /// from the end of the previous response on a kept-alive connection.
    fn header_deadline(&self, first: bool) -> Duration {
        if first {
            self.header_read_timeout
        } else {
            self.header_read_timeout + self.idle_timeout
        }
    }
}

/// The proxy's HTTP application behind the connection limits: what the proxy service serves.
pub struct Downstream<A> {
    app: Arc<A>,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    metrics: &'static Metrics,
}

impl<A> Downstream<A> {
    pub fn new(app: A, limits: ConnectionLimits) -> Self {
        Self {
            app: Arc::new(app),
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections.get())),
            metrics: Metrics::global(),
        }
    }
}

/// Put in each session's connection context by [`Downstream`]; the proxy hands it back to
/// [`header_read`] once the request header has been read.
struct HeaderRead(oneshot::Sender<()>);

/// Tells the connection loop that the request header of this session has been read, so its
/// deadline no longer applies. Called by the proxy with the connection context it was given; other
/// contexts are ignored.
pub fn header_read(context: Box<dyn Any + Send + Sync>) {
    if let Ok(read) = context.downcast::<HeaderRead>() {
        let _ = read.0.send(());
    }
}

/// Waits until `deadline` has passed without the header being read; pending forever otherwise.
async fn header_overdue(header_read: oneshot::Receiver<()>, deadline: Duration) {
    if tokio::time::timeout(deadline, header_read).await.is_ok() {
        std::future::pending::<()>().await;
    }
}

/// Answers 503 and closes, within [`REFUSAL_WRITE_TIMEOUT`].
async fn refuse(mut stream: Stream) {
    let answer = async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, answer).await;
}

#[async_trait]
impl<A> ServerApp for Downstream<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.client_connections_refused.inc();
            refuse(stream).await;
            return None;
        };
        let _open = OpenConnection::count(self.metrics);
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 has its own framing and idle timeout (set in the proxy's server options).
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        self.serve_http1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

impl<A> Downstream<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Pingora's HTTP/1 keep-alive loop, with the limits applied to every session.
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                // Each read while waiting for a header; the deadline below bounds them all.
                session.set_keepalive(Some(self.limits.idle_seconds()));
            }
            session.set_read_timeout(Some(self.limits.body_read_timeout));
            session.set_total_drain_timeout(Some(self.limits.body_read_timeout));
            session.set_pipelining_enabled(true);
            let (read, header_read) = oneshot::channel();
            session.set_connection_user_context(Some(Box::new(HeaderRead(read))));

            let reused = tokio::select! {
                reused = self.app.process_new_http(session, shutdown) => reused,
                () = header_overdue(header_read, self.limits.header_deadline(first)) => {
                    self.metrics.client_header_timeouts.inc();
                    None
                }
            };
            let Some((stream, settings)) = reused.map(ReusedHttpStream::consume) else {
                return;
            };
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            first = false;
        }
    }
}

/// Counts a client connection in `edge_client_connections` for as long as it lives.
struct OpenConnection(&'static Metrics);

impl OpenConnection {
    fn count(metrics: &'static Metrics) -> Self {
        metrics.client_connections.inc();
        Self(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.client_connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle: Duration) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: idle,
            body_read_timeout: Duration::from_secs(30),
            max_connections: NonZeroUsize::new(1).unwrap(),
        }
    }

    #[test]
    fn idle_timeouts_become_whole_seconds_and_never_forever() {
        assert_eq!(limits(Duration::from_secs(60)).idle_seconds(), 60);
        assert_eq!(limits(Duration::from_millis(1500)).idle_seconds(), 2);
        assert_eq!(limits(Duration::ZERO).idle_seconds(), 1);
    }

    #[test]
    fn a_kept_alive_connection_has_its_idle_time_before_the_header_deadline() {
        let limits = limits(Duration::from_secs(60));
        assert_eq!(limits.header_deadline(true), Duration::from_secs(10));
        assert_eq!(limits.header_deadline(false), Duration::from_secs(70));
    }

    #[tokio::test]
    async fn the_header_deadline_ends_only_while_no_header_was_read() {
        let deadline = Duration::from_millis(20);
        let (read, header_read) = oneshot::channel();
        let overdue = tokio::spawn(header_overdue(header_read, deadline));
        header_read_then(read);
        tokio::time::sleep(deadline * 5).await;
        assert!(!overdue.is_finished(), "a read header still ran into its deadline");
        overdue.abort();

        let (_read, header_read) = oneshot::channel::<()>();
        tokio::time::timeout(Duration::from_secs(10), header_overdue(header_read, deadline))
            .await
            .expect("the deadline passes");
    }

    fn header_read_then(read: oneshot::Sender<()>) {
        header_read(Box::new(HeaderRead(read)));
    }

    #[test]
    fn other_connection_contexts_are_ignored() {
        header_read(Box::new(5_u32));
    }
}
