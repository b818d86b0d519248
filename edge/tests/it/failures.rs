//! Upstream failures and hostile input: stale-if-error, truncated and garbage responses, oversized and
//! malformed requests. The edge answers something sensible and keeps running.

use std::time::Duration;

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Edge, Fetched, Reply, ScriptedOrigin, WAIT, eventually, fetch};

/// Fills `path` with a response that may be served stale on errors for ten minutes.
async fn fill_with_stale_if_error(origin: &ScriptedOrigin, edge: &Edge, path: &str) {
    origin.set(path, Reply::cached("v1", "max-age=1, stale-if-error=600"));
    let miss = edge.get(path).await;
    assert!(miss.cache_status().contains("stored"), "{}", miss.cache_status());
}

/// Requests `path` until its entry is stale and the edge answers without a hit, and returns that.
async fn first_answer_after_expiry(edge: &Edge, path: &str) -> Fetched {
    eventually("the entry to go stale", async || {
        let response = edge.get(path).await;
        (!response.is_hit()).then_some(response)
    })
    .await
}

fn assert_served_stale(response: &Fetched, forward_status: Option<u16>) {
    assert_eq!((response.status, response.text()), (200, "v1"));
    let status = response.cache_status();
    let expected_start = match forward_status {
        Some(code) => format!("edge; fwd=stale; fwd-status={code}; ttl=-"),
        None => "edge; fwd=stale; ttl=-".to_owned(),
    };
    assert!(
        status.starts_with(&expected_start) && status.ends_with("; detail=stale-if-error"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_an_upstream_503() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    fill_with_stale_if_error(&origin, &edge, "/sie").await;
    origin.set("/sie", Reply::new(503, "overloaded"));
    assert_served_stale(&first_answer_after_expiry(&edge, "/sie").await, Some(503));

    // Without stale-if-error the 503 goes through.
    origin.set("/plain", Reply::cached("v1", "max-age=1"));
    edge.get("/plain").await;
    origin.set("/plain", Reply::new(503, "overloaded"));
    let failed = first_answer_after_expiry(&edge, "/plain").await;
    assert_eq!((failed.status, failed.text()), (503, "overloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_when_the_upstream_is_down() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    fill_with_stale_if_error(&origin, &edge, "/sie").await;
    origin.stop().await;
    assert_served_stale(&first_answer_after_expiry(&edge, "/sie").await, None);
    let missing = edge.get("/never-cached").await;
    assert_eq!(missing.status, 502, "{}", missing.cache_status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_when_the_upstream_times_out() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[("EDGE_UPSTREAM__READ_TIMEOUT", "300ms")]).await;
    fill_with_stale_if_error(&origin, &edge, "/sie").await;
    origin.set("/sie", Reply::cached("v2", "max-age=60").delay(Duration::from_secs(5)));
    assert_served_stale(&first_answer_after_expiry(&edge, "/sie").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_upstream_body_is_never_served_from_cache() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    let body = "x".repeat(10_000);
    origin.set("/cut", Reply::cached(body.clone(), "max-age=60").cut_after(3000));

    let truncated = match edge.request(Method::GET, "/cut").send().await {
        Ok(response) => response.bytes().await.map(|bytes| bytes.len()),
        Err(error) => Err(error),
    };
    assert!(!matches!(truncated, Ok(10_000)), "a cut body reached the client whole");

    origin.set("/cut", Reply::cached(body.clone(), "max-age=60"));
    let next = edge.get("/cut").await;
    assert!(
        next.cache_status().starts_with("edge; fwd=miss"),
        "{}",
        next.cache_status()
    );
    assert_eq!(next.text(), body);
    assert_eq!(origin.count("/cut"), 2);
    assert_eq!(edge.get("/cut").await.text(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_garbage_gives_502() {
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = garbage.accept().await {
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 this is not HTTP\r\n\r\n")
                .await;
        }
    });
    let mut edge = Edge::start(&upstream, &[]).await;
    for _ in 0..3 {
        let response = edge.get("/anything").await;
        assert_eq!(response.status, 502);
        let content_type = response.header("content-type").unwrap_or("text/plain");
        if content_type.starts_with("application/json") {
            serde_json::from_slice::<serde_json::Value>(&response.body).expect("a JSON error body");
        }
    }
    assert!(edge.process.try_wait().unwrap().is_none(), "the edge exited");
    assert_eq!(edge.get("/anything").await.status, 502);
}

/// Sends `request` as raw bytes to `base` (`http://HOST:PORT`) and returns the status of the answer:
/// clients refuse to build some of the requests these tests send.
async fn raw_status(base: &str, request: &[u8]) -> u16 {
    let address = base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .expect("the edge answers")
            .unwrap();
        assert!(read > 0, "the edge closed the connection without an answer");
        head.extend_from_slice(&buffer[..read]);
    }
    let status_line = String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap()]).into_owned();
    status_line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_urls_are_refused() {
    let origin = ScriptedOrigin::start().await;
    let mut edge = Edge::start(&origin.url, &[]).await;
    origin.set("/ok", Reply::cached("ok", "max-age=60"));

    let big_header = fetch(edge.request(Method::GET, "/ok").header("x-big", "x".repeat(100_000))).await;
    assert_eq!(big_header.status, 431, "a 100 KB header");
    for length in [20_000, 100_000] {
        let request = format!("GET /{} HTTP/1.1\r\nHost: edge\r\n\r\n", "a".repeat(length));
        let status = raw_status(&edge.base, request.as_bytes()).await;
        assert!(
            (400..500).contains(&status),
            "a URL of {length} bytes was answered {status}"
        );
    }
    assert_eq!(origin.count("/ok"), 0, "an oversized request went upstream");

    assert!(edge.process.try_wait().unwrap().is_none(), "the edge exited");
    assert_eq!(edge.get("/ok").await.text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_and_response_headers_never_cause_a_5xx() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    origin.set("/m", Reply::cached("0123456789", "max-age=60").header("etag", "\"m\""));
    edge.get("/m").await;

    let requests = [
        ("range", "bytes=abc"),
        ("range", "bytes=5-1"),
        ("range", "bytes=--1"),
        ("range", "bytes=-0"),
        ("range", "bytes=0-1,3-4,1-2"),
        ("range", "items=0-1"),
        ("range", "bytes=99999999999999999999999-"),
        ("if-range", "not a validator"),
        ("if-none-match", "garbage"),
        ("if-none-match", "\"unterminated"),
        ("if-none-match", "W/"),
        ("if-none-match", ",,,"),
        ("if-modified-since", "not a date"),
        ("if-modified-since", "Thu, 99 Foo 9999 99:99:99 GMT"),
        ("cache-control", "max-age=abc"),
        ("cache-control", "no-cache=\""),
        ("cache-control", "max-stale=-1, min-fresh=99999999999999999999"),
        ("cache-control", ",,,;;;==="),
        ("pragma", "no-cache"),
    ];
    for (name, value) in requests {
        let response = fetch(edge.request(Method::GET, "/m").header(name, value)).await;
        assert!(
            response.status < 500,
            "{name}: {value} was answered {}",
            response.status
        );
    }
    assert!(edge.get("/m").await.is_hit());

    for (path, cache_control) in [
        ("/bad-cc-1", "max-age=abc, s-maxage=\""),
        ("/bad-cc-2", "max-age=99999999999999999999"),
        ("/bad-cc-3", "max-age=-5"),
        ("/bad-cc-4", ";;;,,,="),
    ] {
        origin.set(path, Reply::cached("body", cache_control));
        for _ in 0..2 {
            let response = edge.get(path).await;
            assert_eq!(
                (response.status, response.text()),
                (200, "body"),
                "Cache-Control: {cache_control}"
            );
        }
    }
}
