//! Webhook targets through the real API: IPv6 forms that carry a special IPv4 address, tunnel and
//! translation ranges, and deliveries that must not go through a proxy from the environment.

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestOrigin, expect_error};
use crate::webhooks::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_carrying_or_tunnelling_to_special_addresses_are_refused_by_range() {
    let origin = TestOrigin::embedded().await;
    for (url, named) in [
        (
            "https://[::127.0.0.1]/h",
            &[
                "IPv4-compatible (deprecated) ::/96",
                "carrying 127.0.0.1 in loopback 127.0.0.0/8",
            ][..],
        ),
        (
            "https://[::ffff:0:7f00:1]/h",
            &[
                "IPv4-translated ::ffff:0:0:0/96",
                "carrying 127.0.0.1 in loopback 127.0.0.0/8",
            ],
        ),
        (
            "https://[2002:7f00:1::]/h",
            &["6to4 2002::/16", "carrying 127.0.0.1 in loopback 127.0.0.0/8"],
        ),
        (
            // Teredo: server 65.54.227.120, client 127.0.0.1 (inverted in the last 32 bits).
            "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h",
            &["Teredo 2001::/32", "carrying 127.0.0.1 in loopback 127.0.0.0/8"],
        ),
        (
            "https://192.88.99.1/h",
            &["6to4 relay anycast (deprecated) 192.88.99.0/24"],
        ),
    ] {
        let response = origin
            .admin(Method::POST, "/admin/v1/webhooks")
            .json(&json!({"url": url, "topics": ["indicators.**"]}))
            .send()
            .await
            .unwrap();
        let message = expect_error(response, 422, "invalid_body").await;
        for range in named {
            assert!(message.contains(range), "{url}: {message} does not name {range}");
        }
        assert!(message.contains("webhooks.allowed_targets"), "{url}: {message}");
    }
    for public in ["https://1.1.1.1/h", "https://[2606:4700:4700::1111]/h"] {
        let response = origin
            .admin(Method::POST, "/admin/v1/webhooks")
            .json(&json!({"url": public, "topics": ["indicators.**"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{public}: {}", response.text().await.unwrap());
    }
}

/// A proxy that answers every request with 502 and reports the first line of each.
async fn refusing_proxy() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 1024];
            let read = stream.read(&mut head).await.unwrap_or(0);
            let line = String::from_utf8_lossy(&head[..read])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            let _ = seen.send(line);
            let _ = stream
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, requests)
}

/// The origin binary with every proxy variable pointing at a proxy: deliveries still go straight to the
/// checked address of the receiver, never through the proxy (which would resolve the host itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_ignore_proxies_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let (proxy, mut proxied) = refusing_proxy().await;
    // Every proxy variable points at the proxy, and no host is exempt from it.
    let mut env = vec![
        ("ORIGIN_AUTH__BOOTSTRAP_TOKEN", "proxy-token"),
        ("ORIGIN_WEBHOOKS__ALLOWED_TARGETS", "127.0.0.1"),
        ("ORIGIN_WEBHOOKS__ALLOW_HTTP", "true"),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.push((name, proxy.as_str()));
    }
    let origin = crate::process::start(dir.path(), &env);
    origin.ready().await;
    let base = origin.base.clone();

    let client = reqwest::Client::new();
    let admin = |path: &str| client.post(format!("{base}{path}")).bearer_auth("proxy-token");
    let created: Value = admin("/admin/v1/webhooks")
        .json(&json!({"url": receiver.url, "topics": ["indicators.**"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["id"].is_string(), "{created}");
    let event = json!({
        "topic": "indicators.AAPL.rsi14", "type": "TechnicalIndicatorComputed", "instrument": "AAPL",
        "payload": {"indicator": "rsi", "period": 14, "value": 1, "computed_at": "2026-11-23T14:00:00Z"},
    });
    let published = admin("/admin/v1/events:batch")
        .json(&json!({ "events": [event] }))
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success(), "{}", published.text().await.unwrap());

    tokio::select! {
        received = receiver.wait_for(1) => assert!(!received.is_empty()),
        Some(line) = proxied.recv() => panic!("the delivery went through the proxy: {line}"),
    }
    assert!(proxied.try_recv().is_err(), "the proxy was used as well");
}
