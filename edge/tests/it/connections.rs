//! Client connections as raw TCP sees them: HTTP/1.1 framing (RFC 9112).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{Edge, Reply, ScriptedOrigin, WAIT};

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
