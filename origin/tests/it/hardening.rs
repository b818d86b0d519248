//! What hostile or unlucky input must not break: each test here is a defect that once was.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use loadtest::launch::{RedisServer, redis_command};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::events::{indicator, next, publish, subscribe};
use crate::support::{self, ADMIN_TOKEN, TestOrigin, admin_get, expect_error, forecast, token};
use crate::webhooks::{Receiver, register};

/// Instruments whose dots would make `forecasts.{instrument}.{timeframe}` an invalid topic are refused
/// at the API, before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruments_that_would_make_invalid_topics_are_refused() {
    let origin = TestOrigin::embedded().await;
    for instrument in ["A..B", "..A", ".X", "X.", "A.B.C.D.E"] {
        let response = origin
            .admin(Method::PUT, &format!("/admin/v1/forecasts/{instrument}/1h"))
            .json(&forecast(("m", "1"), 1.0))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_instrument").await;
    }
    // A dotted instrument of valid parts is an instrument like any other.
    origin.put("ES.F", "1h", &forecast(("m", "1"), 1.0)).await;
    let response = origin
        .get("/v1/stream?topics=forecasts.**&since=0")
        .bearer_auth(ADMIN_TOKEN);
    let mut stream = subscribe_with(response).await;
    let event = next(&mut stream).await;
    assert_eq!(event.event, "ForecastUpdated");
    assert!(event.data.contains("\"forecasts.ES.F.1h\""), "{}", event.data);
}

async fn subscribe_with(request: reqwest::RequestBuilder) -> crate::events::Sse {
    use eventsource_stream::Eventsource;
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    Box::pin(response.bytes_stream().eventsource())
}

/// An entry of the event log that no longer decodes (written by an older origin, or damaged) is passed
/// over by every reader: replays announce it as a gap with its reason, `since=` still answers, and the
/// webhook dispatcher delivers what follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_log_entry_is_passed_over_by_every_reader() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::webhooks::config(dir.path());
    config.storage.redis_url = Some(redis.url());
    let origin = TestOrigin::start(config).await;
    let receiver = Receiver::start().await;
    register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;

    let before = publish(&origin, &indicator("AAPL", "rsi14", 1.0)).await;
    // What an origin once stored for an instrument with an empty part: a topic that no longer parses.
    let bad = before + 1;
    let record = json!({"appended_at_ms": 1, "topic": "forecasts.A..B.1h", "type": "ForecastUpdated",
        "instrument": "A..B", "payload": {}})
    .to_string();
    redis_command(
        redis.port(),
        &["XADD", "events:{ev}", &format!("{bad}-0"), "t", "1", "e", &record],
    )
    .unwrap();
    let after = publish(&origin, &indicator("AAPL", "rsi14", 2.0)).await;
    assert_eq!(after, bad + 1);

    // A replay from the start: the event before, a gap naming the reason, the event after.
    let mut stream = subscribe(&origin, "topics=**&since=0", Some(ADMIN_TOKEN), None).await;
    let first = next(&mut stream).await;
    assert_eq!(first.id, before.to_string());
    let gap = next(&mut stream).await;
    assert_eq!(gap.event, "gap");
    let gap: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(bad), Some(bad)),
        "{gap}"
    );
    assert!(gap["reason"].as_str().unwrap().contains("unreadable"), "{gap}");
    assert_eq!(next(&mut stream).await.id, after.to_string());

    // Resuming just before it: the same.
    let mut resumed = subscribe(&origin, "topics=indicators.**", Some(ADMIN_TOKEN), Some(before)).await;
    assert_eq!(next(&mut resumed).await.event, "gap");
    assert_eq!(next(&mut resumed).await.id, after.to_string());

    // Webhooks get both readable events; the later one is not held up behind the bad entry.
    let ids = [format!("msg_{before}"), format!("msg_{after}")];
    receiver.wait_delivered(&ids, Duration::from_secs(10)).await;
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("origin_events_unreadable_total") && !line.ends_with(" 0")),
        "{metrics}"
    );
}

/// With `auth.public_reads = false` a read is the reader's alone: no shared cache may store it.
#[tokio::test]
async fn reads_that_need_a_token_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.public_reads = false;
    config.auth.tokens = vec![token("reader", "reader-secret", &["forecasts:read"])];
    let origin = TestOrigin::start(config).await;
    let written = origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let version = written["version"].as_u64().unwrap();
    for path in [
        "/v1/forecasts/AAPL/1h".to_owned(),
        format!("/v1/forecasts/AAPL/1h/versions/{version}"),
        "/v1/forecasts?keys=AAPL:1h".to_owned(),
    ] {
        let read = origin.get(&path).bearer_auth("reader-secret").send().await.unwrap();
        assert_eq!(read.status(), 200, "{path}");
        let cache_control = read.headers()["cache-control"].to_str().unwrap();
        assert!(cache_control.starts_with("private, "), "{path}: {cache_control}");
        assert_eq!(read.headers()["cdn-cache-control"], "no-store", "{path}");
    }
}

/// An admin request without a valid token is refused before its body is read: a bad body tells a
/// stranger nothing about what a good one would be.
#[tokio::test]
async fn admin_requests_are_authenticated_before_their_body_is_read() {
    let origin = TestOrigin::embedded().await;
    for token in [None, Some("not-a-token")] {
        for (method, path) in [
            (Method::PUT, "/admin/v1/forecasts/AAPL/1h"),
            (Method::POST, "/admin/v1/events"),
            (Method::POST, "/admin/v1/webhooks"),
        ] {
            let mut request = origin
                .client
                .request(method, origin.url(path))
                .header("content-type", "application/json")
                .body(r#"{"horizon": 5}"#);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            expect_error(request.send().await.unwrap(), 401, "unauthorized").await;
        }
    }
}

/// Warming takes forecast reads only: a stream path would never end, an admin path is not a read.
#[tokio::test]
async fn warming_refuses_paths_that_are_not_forecast_reads() {
    let origin = TestOrigin::embedded().await;
    for body in [
        json!({"keys": ["/v1/stream"]}),
        json!({"keys": ["/admin/v1/audit"]}),
        json!({"prefixes": ["/v1/stream?topics=**"]}),
        json!({"keys": ["/v1/forecastsX"]}),
    ] {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            origin.admin(Method::POST, "/admin/v1/warm").json(&body).send(),
        )
        .await
        .expect("warming answers")
        .unwrap();
        expect_error(response, 422, "invalid_body").await;
    }
}

/// Who did what with webhooks, events, warming, and who was refused, is in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_relevant_actions_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::webhooks::config(dir.path());
    config.auth.tokens = vec![token("reader", "reader-secret", &["forecasts:read"])];
    let origin = TestOrigin::start(config).await;
    let receiver = Receiver::start().await;
    let (id, _) = register(
        &origin,
        json!({"url": format!("{}?key=hidden", receiver.url), "topics": ["indicators.**"]}),
    )
    .await;
    let admin = |method, path: String| origin.admin(method, &path);
    let rotated = admin(Method::POST, format!("/admin/v1/webhooks/{id}/secret:rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let event = publish(&origin, &indicator("AAPL", "rsi14", 1.0)).await;
    for (path, body) in [
        (format!("/admin/v1/webhooks/{id}/messages/{event}/resend"), None),
        (format!("/admin/v1/webhooks/{id}/dead-letters:redrive"), None),
        (format!("/admin/v1/webhooks/{id}/replay"), Some(json!({"since": "0"}))),
    ] {
        let mut request = admin(Method::POST, path.clone());
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_eq!(request.send().await.unwrap().status(), 202, "{path}");
    }
    let changed = admin(Method::PATCH, format!("/admin/v1/webhooks/{id}")).json(&json!({"enabled": false}));
    assert_eq!(changed.send().await.unwrap().status(), 200);
    let warmed = admin(Method::POST, "/admin/v1/warm".to_owned()).json(&json!({"keys": ["/v1/forecasts/AAPL/1h"]}));
    assert_eq!(warmed.send().await.unwrap().status(), 200);
    assert_eq!(
        admin(Method::DELETE, format!("/admin/v1/webhooks/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let stranger = origin.get("/admin/v1/audit").bearer_auth("wrong").send().await.unwrap();
    assert_eq!(stranger.status(), 401);
    let reader = origin
        .get("/admin/v1/audit")
        .bearer_auth("reader-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);

    let audit = admin_get(&origin, "/admin/v1/audit").await;
    let entries = audit["entries"].as_array().unwrap();
    let find = |action: &str| {
        entries
            .iter()
            .find(|entry| entry["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
    };
    for action in [
        "webhook.create",
        "webhook.update",
        "webhook.delete",
        "webhook.secret.rotate",
        "webhook.resend",
        "webhook.redrive",
        "webhook.replay",
        "events.publish",
        "warm",
    ] {
        let entry = find(action);
        assert_eq!(entry["actor"], "bootstrap", "{entry}");
    }
    let created = find("webhook.create");
    assert_eq!(created["target"], id.as_str());
    assert!(
        !created.to_string().contains("hidden"),
        "the URL's query is left out: {created}"
    );
    assert!(!audit.to_string().contains("whsec_"), "no secret in the audit log");
    let published = find("events.publish");
    assert_eq!(published["detail"]["count"], 1);
    assert_eq!(published["detail"]["topics"], json!(["indicators.AAPL.rsi14"]));
    let refusals: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "auth.refused")
        .collect();
    assert!(
        refusals
            .iter()
            .any(|entry| entry["status"] == 401 && entry["actor"] == "unauthenticated"),
        "{audit}"
    );
    assert!(
        refusals
            .iter()
            .any(|entry| entry["status"] == 403 && entry["actor"] == "reader"),
        "{audit}"
    );
    assert!(
        refusals.iter().all(|entry| entry["target"] == "/admin/v1/audit"),
        "{audit}"
    );
}

/// Reads a raw HTTP/1.1 exchange until the server closes the connection, within `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(bound, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that sends half a request head, or nothing after its last request, is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.http.header_read_timeout = Duration::from_millis(300);
    let origin = TestOrigin::start(config).await;
    let address = origin.base.trim_start_matches("http://").to_owned();

    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    read_until_closed(&mut slow, Duration::from_secs(10)).await;

    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Beyond `http.max_connections`, a new connection is told 503 and closed; once others close, the
/// origin accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_are_refused_until_others_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.http.max_connections = NonZeroUsize::new(2).unwrap();
    let origin = TestOrigin::start(config).await;
    let address = origin.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        // A complete exchange proves the connection holds a place before the next one is opened.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut refused = TcpStream::connect(&address).await.unwrap();
    let answer = read_until_closed(&mut refused, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = TcpStream::connect(&address).await.unwrap();
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut again, Duration::from_secs(10)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        !metrics.contains("origin_http_connections_refused_total 0"),
        "{metrics}"
    );
}

/// One token, or one address, holds at most the streams it is allowed; the next gets 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_token_and_per_address_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.events.max_streams_per_token = NonZeroUsize::new(1).unwrap();
    config.events.max_streams_per_address = NonZeroUsize::new(2).unwrap();
    config.events.anonymous_topics = vec!["public.**".to_owned()];
    let origin = TestOrigin::start(config).await;
    let open = |token: Option<&str>| {
        let mut request = origin.get("/v1/stream?topics=public.**");
        if let Some(token) = token {
            request = request.bearer_auth(token.to_owned());
        }
        request.send()
    };
    let first = open(Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = open(Some(ADMIN_TOKEN)).await.unwrap();
    assert!(second.headers().contains_key("retry-after"));
    let message = expect_error(second, 429, "too_many_requests").await;
    assert!(message.contains("max_streams_per_token"), "{message}");

    let anonymous = open(None).await.unwrap();
    assert_eq!(anonymous.status(), 200);
    let third = open(None).await.unwrap();
    let message = expect_error(third, 429, "too_many_requests").await;
    assert!(message.contains("max_streams_per_address"), "{message}");

    // A closed stream gives its place back.
    drop(anonymous);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = open(None).await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
}

async fn make_token(origin: &TestOrigin, as_token: &str, body: Value) -> reqwest::Response {
    origin
        .client
        .post(origin.url("/admin/v1/tokens"))
        .bearer_auth(as_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Tokens are made with the scopes their maker holds, shown once, listed without secrets, refused once
/// expired, and refused at once when revoked; their use and their management are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_made_listed_expired_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.tokens = vec![token("keeper", "keeper-secret", &["tokens:admin", "forecasts:write"])];
    let origin = TestOrigin::start(config).await;

    // The keeper may grant what it holds, not more.
    let refused = make_token(&origin, "keeper-secret", json!({"name": "x", "scopes": ["admin"]})).await;
    expect_error(refused, 403, "forbidden").await;
    for bad in [
        json!({"name": "", "scopes": ["forecasts:write"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": ["forecasts:write"], "topics": ["a..b"]}),
        json!({"name": "x", "scopes": ["forecasts:write"], "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "x", "scopes": ["forecasts:write"], "expires_at": "soon"}),
    ] {
        expect_error(make_token(&origin, "keeper-secret", bad).await, 422, "invalid_body").await;
    }
    let made = make_token(
        &origin,
        "keeper-secret",
        json!({"name": "writer", "scopes": ["forecasts:write"]}),
    )
    .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let (id, secret) = (
        made["id"].as_str().unwrap().to_owned(),
        made["secret"].as_str().unwrap().to_owned(),
    );
    assert!(secret.starts_with("ft_") && id.starts_with("tok_"), "{made}");
    let write = |token: &str| {
        origin
            .client
            .put(origin.url("/admin/v1/forecasts/TOK/1h"))
            .bearer_auth(token.to_owned())
            .json(&forecast(("m", "1"), 1.0))
            .send()
    };
    assert_eq!(write(&secret).await.unwrap().status(), 201);

    let listed: Value = origin
        .client
        .get(origin.url("/admin/v1/tokens"))
        .bearer_auth("keeper-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !listed.to_string().contains(&secret) && !listed.to_string().contains("sha256:"),
        "{listed}"
    );
    assert_eq!(listed["tokens"][0]["name"], "writer");
    assert_eq!(listed["configured"], json!(["keeper", "bootstrap"]));

    let revoke = |id: String| {
        origin
            .client
            .delete(origin.url(&format!("/admin/v1/tokens/{id}")))
            .bearer_auth("keeper-secret")
            .send()
    };
    assert_eq!(revoke(id.clone()).await.unwrap().status(), 204);
    expect_error(write(&secret).await.unwrap(), 401, "unauthorized").await;
    expect_error(revoke("tok_none".to_owned()).await.unwrap(), 404, "not_found").await;

    // One that expires in a moment works until then.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon.format(&time::format_description::well_known::Rfc3339).unwrap();
    let short: Value = make_token(
        &origin,
        "keeper-secret",
        json!({"name": "short", "scopes": ["forecasts:write"], "expires_at": soon}),
    )
    .await
    .json()
    .await
    .unwrap();
    let short = short["secret"].as_str().unwrap().to_owned();
    assert_eq!(write(&short).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let message = expect_error(write(&short).await.unwrap(), 401, "unauthorized").await;
    assert!(message.contains("expired"), "{message}");

    let audit = admin_get(&origin, "/admin/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"token.create") && actions.contains(&"token.revoke"),
        "{audit}"
    );
    assert!(!audit.to_string().contains(&secret), "no secret in the audit log");
}

/// With `auth.public_metrics = false`, `/metrics` (which names edges) needs a token with `metrics:read`.
#[tokio::test]
async fn closed_metrics_need_a_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.public_metrics = false;
    config.auth.tokens = vec![
        token("scraper", "scraper-secret", &["metrics:read"]),
        token("reader", "reader-secret", &["forecasts:read"]),
    ];
    let origin = TestOrigin::start(config).await;
    expect_error(origin.get("/metrics").send().await.unwrap(), 401, "unauthorized").await;
    let reader = origin
        .get("/metrics")
        .bearer_auth("reader-secret")
        .send()
        .await
        .unwrap();
    expect_error(reader, 403, "forbidden").await;
    let scraped = origin
        .get("/metrics")
        .bearer_auth("scraper-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("origin_http_requests_total"));
}

/// What hyper refuses before any handler runs (a malformed request line, a head too large) is answered
/// with the API's JSON error shape, like everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_heads_get_json_errors() {
    let origin = TestOrigin::embedded().await;
    let address = origin.base.trim_start_matches("http://").to_owned();
    let many_headers: String = (0..200).map(|n| format!("x-h{n}: {n}\r\n")).collect();
    for (request, status, code) in [
        ("NOT A REQUEST\r\n\r\n".to_owned(), "400", "bad_request"),
        (
            "GET /healthz HTTP/1.1\r\nhost x\r\n\r\n".to_owned(),
            "400",
            "bad_request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            "431",
            "headers_too_large",
        ),
    ] {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(
            head.to_ascii_lowercase().contains("content-type: application/json"),
            "{answer}"
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], code, "{answer}");
    }
}
