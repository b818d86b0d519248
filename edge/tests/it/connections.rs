//! Client connections as raw TCP sees them: HTTP/1.1 framing (RFC 9112), pipelining, and the limits
//! that keep slow, idle or too many clients from holding the edge: header and idle timeouts and the
//! connection cap.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{Edge, Reply, ScriptedOrigin, WAIT, eventually};

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Whether it carries `Cache-Status`, which only responses that went through the proxy get.
    proxied: bool,
    body: String,
}

/// A client connection that writes bytes as given and reads responses framed by `Content-Length`.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(edge: &Edge) -> Self {
        let address = edge.base.trim_start_matches("http://");
        Self {
            reader: BufReader::new(TcpStream::connect(address).await.unwrap()),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next response; `None` when the edge closed the connection (or reset it) instead.
    async fn response(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(WAIT, self.read_response())
            .await
            .expect("the edge answers or closes")
    }

    async fn read_response(&mut self) -> Option<RawResponse> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut length = 0;
        let mut proxied = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
            proxied |= name.eq_ignore_ascii_case("cache-status");
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.ok()?;
        Some(RawResponse {
            status,
            proxied,
            body: String::from_utf8(body).ok()?,
        })
    }

    /// Whether the edge has closed the connection: a read gives the end or a reset within `wait`.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut byte = [0; 1];
        matches!(
            tokio::time::timeout(wait, self.reader.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

async fn scripted_edge(env: &[(&str, &str)]) -> (ScriptedOrigin, Edge) {
    let origin = ScriptedOrigin::start().await;
    origin.set("/one", Reply::cached("one", "max-age=60"));
    origin.set("/two", Reply::cached("two", "max-age=60"));
    let edge = Edge::start(&origin.url, env).await;
    (origin, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_a_missing_host_are_answered_400_and_never_forwarded() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/framing", Reply::new(200, "forwarded"));
    let requests = [
        "POST /framing HTTP/1.1\r\nHost: edge\r\nContent-Length: 3, 3\r\n\r\nabc",
        "POST /framing HTTP/1.1\r\nHost: edge\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST /framing HTTP/1.1\r\nHost: edge\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /framing HTTP/1.1\r\nHost: edge\r\nContent-Length: 3,4\r\n\r\nabcd",
        "GET /framing HTTP/1.1\r\n\r\n",
        "GET /framing HTTP/1.1\r\nHost: edge\r\nHost: other\r\n\r\n",
    ];
    for request in requests {
        let mut client = Raw::connect(&edge).await;
        client.send(request.as_bytes()).await;
        let response = client.response().await;
        let answer = response.map(|response| (response.status, response.proxied));
        assert_eq!(answer, Some((400, false)), "{request:?}: (status, forwarded)");
        assert!(client.closed_within(WAIT).await, "{request:?} left the connection open");
    }
    assert_eq!(origin.count("/framing"), 0, "a malformed request reached the origin");

    // HTTP/1.0 has no Host requirement.
    let mut client = Raw::connect(&edge).await;
    client.send(b"GET /one HTTP/1.0\r\n\r\n").await;
    let response = client.response().await.map(|response| (response.status, response.body));
    assert_eq!(response, Some((200, "one".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (origin, edge) = scripted_edge(&[]).await;
    let mut client = Raw::connect(&edge).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n");
    // Both misses (upstream) in one write, then a hit and a miss of a new path.
    client
        .send(format!("{}{}", request("/one"), request("/two")).as_bytes())
        .await;
    origin.set("/three", Reply::new(200, "three"));
    client
        .send(format!("{}{}{}", request("/one"), request("/three"), request("/two")).as_bytes())
        .await;
    for expected in ["one", "two", "one", "three", "two"] {
        let response = client.response().await;
        let response = response.unwrap_or_else(|| panic!("the edge closed before answering /{expected}"));
        assert_eq!((response.status, response.body.as_str()), (200, expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_trickled_byte_by_byte_is_cut_off_at_the_header_read_timeout() {
    let (_origin, edge) = scripted_edge(&[("EDGE_HTTP__HEADER_READ_TIMEOUT", "1s")]).await;
    let mut client = Raw::connect(&edge).await;
    client.send(b"GET /one HTTP/1.1\r\nHost: edge\r\nX-Slow: ").await;
    // One byte every 200 ms keeps every single read short; only a deadline on the whole header ends it.
    let closed = eventually("the edge to close a header that never ends", async || {
        let _ = client.reader.get_mut().write_all(b"a").await;
        client.closed_within(Duration::from_millis(200)).await.then_some(())
    })
    .await;
    assert_eq!(closed, ());
    assert_eq!(edge.metric("edge_client_header_timeouts_total").await, 1.0);

    // A connection that sends nothing at all is closed too.
    let mut silent = Raw::connect(&edge).await;
    assert!(silent.closed_within(WAIT).await, "a silent connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_origin, edge) = scripted_edge(&[("EDGE_HTTP__IDLE_TIMEOUT", "1s")]).await;
    let mut client = Raw::connect(&edge).await;
    client.send(b"GET /one HTTP/1.1\r\nHost: edge\r\n\r\n").await;
    assert_eq!(
        client.response().await.map(|response| response.body).as_deref(),
        Some("one")
    );
    assert!(client.closed_within(WAIT).await, "an idle connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_while_the_open_ones_keep_working() {
    let (_origin, edge) = scripted_edge(&[("EDGE_HTTP__MAX_CONNECTIONS", "2")]).await;
    let request = b"GET /one HTTP/1.1\r\nHost: edge\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = Raw::connect(&edge).await;
        client.send(request).await;
        assert_eq!(client.response().await.map(|response| response.status), Some(200));
        open.push(client);
    }

    for _ in 0..3 {
        let mut refused = Raw::connect(&edge).await;
        // The write may already meet the closed connection.
        let _ = refused.reader.get_mut().write_all(request).await;
        let status = refused.response().await.map(|response| response.status);
        assert!(
            matches!(status, None | Some(503)),
            "a connection beyond the cap was answered {status:?}"
        );
        assert!(refused.closed_within(WAIT).await, "a refused connection stayed open");
    }
    assert_eq!(edge.metric("edge_client_connections_refused_total").await, 3.0);
    assert_eq!(edge.metric("edge_client_connections").await, 2.0);

    for client in &mut open {
        client.send(request).await;
        assert_eq!(client.response().await.map(|response| response.status), Some(200));
    }

    drop(open);
    eventually("the edge to accept again once connections closed", async || {
        let mut client = Raw::connect(&edge).await;
        let _ = client.reader.get_mut().write_all(request).await;
        (client.response().await.map(|response| response.status) == Some(200)).then_some(())
    })
    .await;
}
