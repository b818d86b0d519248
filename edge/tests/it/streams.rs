//! Event streams (SSE) through the edge: passed through uncached, and not cut while the origin is
//! quiet between heartbeats for longer than the upstream read timeout of ordinary responses.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::Method;
use tokio::net::TcpListener;

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
