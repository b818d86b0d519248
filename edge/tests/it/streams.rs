//! Event streams (SSE) through the edge: passed through uncached, and not cut while the origin is
//! quiet between heartbeats for longer than the upstream read timeout of ordinary responses, whether
//! the request asks for a stream (`Accept`) or is on a configured stream path.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Edge, WAIT, client};

/// What the stream sends: an event, a heartbeat after a pause, a last event, then the end.
const EVENT: &str = "id: 1\ndata: {\"point\":187.42}\n\n";
const HEARTBEAT: &str = ": keep-alive\n\n";
const LAST: &str = "id: 2\ndata: {\"point\":187.5}\n\n";
/// The edge's read timeout for ordinary responses in these tests; the origin pauses for longer.
const READ_TIMEOUT: &str = "300ms";
const PAUSE: Duration = Duration::from_millis(1200);

/// An origin whose every GET answers an event stream that pauses for [`PAUSE`] between parts, with
/// a `Cache-Control` that would let a cache store it if streams were not told apart. Returns its URL.
async fn stream_origin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async {
        let parts = futures::stream::iter([EVENT, HEARTBEAT, LAST])
            .enumerate()
            .then(|(index, part)| async move {
                if index > 0 {
                    tokio::time::sleep(PAUSE).await;
                }
                Ok::<_, std::io::Error>(Bytes::from_static(part.as_bytes()))
            });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "max-age=60")
            .body(Body::from_stream(parts))
            .unwrap()
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_quiet_for_longer_than_the_read_timeout_arrives_whole_and_uncached() {
    let origin = stream_origin().await;
    // The client side's timeouts are short too: none of them may cut a stream that is being served.
    let env = [
        ("EDGE_UPSTREAM__READ_TIMEOUT", READ_TIMEOUT),
        ("EDGE_HTTP__HEADER_READ_TIMEOUT", READ_TIMEOUT),
        ("EDGE_HTTP__BODY_READ_TIMEOUT", READ_TIMEOUT),
        ("EDGE_HTTP__IDLE_TIMEOUT", READ_TIMEOUT),
    ];
    let edge = Edge::start(&origin, &env).await;
    let client = client();
    for _ in 0..2 {
        let response = client
            .request(Method::GET, edge.url("/v1/stream?topics=forecasts"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let status = response
            .headers()
            .get("cache-status")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!status.contains("hit") && !status.contains("stored"), "{status}");
        let body = tokio::time::timeout(WAIT, response.bytes())
            .await
            .expect("the stream ends")
            .expect("the stream arrives without being cut");
        assert_eq!(std::str::from_utf8(&body).unwrap(), format!("{EVENT}{HEARTBEAT}{LAST}"));
    }
}

/// A response read off a raw connection, its body decoded from chunks.
struct RawResponse {
    status: u16,
    cache_status: String,
    /// `None` when the chunked body lacks its last chunk: the edge cut it.
    body: Option<String>,
}

/// `GET target` over a raw HTTP/1.1 connection with no header but `Host` and `Connection: close` (no
/// `Accept`, which every HTTP client library adds), read until the edge closes the connection.
async fn get_without_accept(edge: &Edge, target: &str) -> RawResponse {
    let address = edge.base.trim_start_matches("http://");
    let mut connection = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    // A cut stream may end in a reset after the bytes that arrived.
    let _ = tokio::time::timeout(WAIT, connection.read_to_end(&mut bytes))
        .await
        .expect("the edge ends the response and closes the connection");
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response head");
    let status = head.lines().next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(found, _)| found.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
    };
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"), "{head}");
    RawResponse {
        status,
        cache_status: header("cache-status").unwrap_or_default(),
        body: dechunk(body),
    }
}

/// The data of a chunked body (RFC 9112 §7.1), or `None` when it stops before the last chunk.
fn dechunk(mut body: &str) -> Option<String> {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(data);
        }
        data.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_configured_path_needs_no_accept_header_to_arrive_whole_and_uncached() {
    let origin = stream_origin().await;
    let env = [
        ("EDGE_UPSTREAM__READ_TIMEOUT", READ_TIMEOUT),
        ("EDGE_UPSTREAM__STREAM_PATHS", "/v1/stream, /v1/events"),
    ];
    let edge = Edge::start(&origin, &env).await;
    let whole = format!("{EVENT}{HEARTBEAT}{LAST}");
    // All at once, since each waits out the origin's pauses; one of them twice, which is no hit either.
    let targets = [
        "/v1/stream?topics=forecasts",
        "/v1/stream?topics=forecasts",
        "/v1/stream",
        "/v1/events/forecasts",
    ];
    let responses = futures::future::join_all(targets.map(|target| get_without_accept(&edge, target))).await;
    for (target, response) in targets.into_iter().zip(responses) {
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(
            response.body.as_deref(),
            Some(whole.as_str()),
            "{target}: the stream was cut"
        );
        // Never looked up nor stored: the cache was not used for it, as for `Accept: text/event-stream`.
        assert!(
            response.cache_status.contains("fwd=bypass") && !response.cache_status.contains("stored"),
            "{target}: {}",
            response.cache_status
        );
    }
    // `curl` sends `Accept: */*`, as reqwest does.
    let body = tokio::time::timeout(WAIT, async {
        client()
            .get(edge.url("/v1/stream?topics=forecasts"))
            .send()
            .await?
            .text()
            .await
    })
    .await
    .expect("the stream ends")
    .expect("the stream arrives without being cut");
    assert_eq!(body, whole);

    // Outside the configured paths (`/v1/streams` only shares characters with `/v1/stream`), a request
    // that does not ask for a stream gets the ordinary read timeout, shorter than the origin's pause.
    let response = get_without_accept(&edge, "/v1/streams").await;
    assert_eq!(response.status, 200);
    assert_ne!(
        response.body.as_deref(),
        Some(whole.as_str()),
        "an ordinary request was given the stream timeout"
    );
}
