//! Webhooks end to end: a real receiver on a free port verifies every signature with its own HMAC code,
//! and answers what each test tells it to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, TestOrigin, expect_error};

const WAIT: Duration = Duration::from_secs(10);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) status: u16,
    timestamp: String,
    signatures: Vec<String>,
    body: Bytes,
    at: Instant,
}

/// What the receiver answers next: a status and headers. Empty: 200.
type Script = VecDeque<(u16, Vec<(&'static str, String)>)>;

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    script: Mutex<Script>,
    /// How long each answer takes.
    slowness: Mutex<Duration>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    inbox: Arc<Inbox>,
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let in_flight = inbox.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inbox.most_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    let slowness = *inbox.slowness.lock().unwrap();
    tokio::time::sleep(slowness).await;
    inbox.in_flight.fetch_sub(1, Ordering::SeqCst);
    let (status, extra) = inbox.script.lock().unwrap().pop_front().unwrap_or((200, Vec::new()));
    inbox.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        status,
        timestamp: header("webhook-timestamp"),
        signatures: header("webhook-signature").split(' ').map(str::to_owned).collect(),
        body,
        at: Instant::now(),
    });
    let mut response = (StatusCode::from_u16(status).unwrap(), "receiver says hello").into_response();
    for (name, value) in extra {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let inbox = Arc::new(Inbox::default());
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inbox }
    }

    /// Answers every request after `slowness`.
    fn answer_slowly(&self, slowness: Duration) {
        *self.inbox.slowness.lock().unwrap() = slowness;
    }

    pub(crate) fn answer(&self, status: u16, headers: Vec<(&'static str, String)>) {
        self.inbox.script.lock().unwrap().push_back((status, headers));
    }

    /// Waits until `count` requests arrived; answers them all.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let received = self.inbox.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} requests arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every one of `ids` was answered with a 2xx; answers how often each arrived.
    pub(crate) async fn wait_delivered(&self, ids: &[String], within: Duration) -> HashMap<String, usize> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.inbox.received.lock().unwrap().clone();
            let delivered: HashSet<&str> = received
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .map(|r| r.id.as_str())
                .collect();
            let missing: Vec<&String> = ids.iter().filter(|id| !delivered.contains(id.as_str())).collect();
            if missing.is_empty() {
                let mut arrivals = HashMap::new();
                for r in &received {
                    *arrivals.entry(r.id.clone()).or_insert(0) += 1;
                }
                return arrivals;
            }
            assert!(Instant::now() < deadline, "never delivered: {missing:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The receiver's own check of a Standard Webhooks signature, written from the specification.
fn signed_by(secret: &str, received: &Received) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut content = format!("{}.{}.", received.id, received.timestamp).into_bytes();
    content.extend_from_slice(&received.body);
    let expected = format!("v1,{}", STANDARD.encode(ring::hmac::sign(&key, &content).as_ref()));
    received.signatures.contains(&expected)
}

/// Verifies `messages` under every one of `secrets` with the Standard Webhooks reference library
/// (`standardwebhooks` from PyPI, which `.ci/run` installs).
fn verify_with_reference_library(secrets: &[&str], messages: &[Received]) {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/standard_webhooks_verify.py");
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "headers": {"webhook-id": m.id, "webhook-timestamp": m.timestamp, "webhook-signature": m.signatures.join(" ")},
                "body": String::from_utf8(m.body.to_vec()).unwrap(),
            })
        })
        .collect();
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the reference verifier");
    let input = json!({"secrets": secrets, "messages": messages}).to_string();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the reference library refused: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn config(dir: &std::path::Path) -> origin::config::OriginConfig {
    let mut config = support::config(dir);
    config.webhooks.allowed_targets = vec!["127.0.0.1".into()];
    config.webhooks.allow_http = true;
    config.webhooks.retry_schedule = vec![Duration::ZERO, Duration::from_millis(200), Duration::from_millis(200)];
    config.webhooks.poll_interval = Duration::from_millis(20);
    config
}

async fn origin() -> (TestOrigin, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (TestOrigin::start(config(dir.path())).await, dir)
}

async fn admin_json(origin: &TestOrigin, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
    let mut request = origin.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{path}");
    if status == 204 {
        return Value::Null;
    }
    response.json().await.unwrap()
}

pub(crate) async fn register(origin: &TestOrigin, body: Value) -> (String, String) {
    let created = admin_json(origin, Method::POST, "/admin/v1/webhooks", Some(body), 201).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn publish(origin: &TestOrigin, topic: &str, value: f64) -> u64 {
    let instrument = topic.split('.').nth(1).unwrap();
    let event = json!({
        "topic": topic, "type": "TechnicalIndicatorComputed", "instrument": instrument, "timeframe": "1h",
        "payload": {"indicator": "rsi", "period": 14, "value": value, "computed_at": "2026-11-23T14:00:00Z"},
    });
    admin_json(origin, Method::POST, "/admin/v1/events", Some(event), 201).await["id"]
        .as_u64()
        .unwrap()
}

/// Polls an endpoint's attempts until `done` holds.
async fn attempts_until(origin: &TestOrigin, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = admin_json(
            origin,
            Method::GET,
            &format!("/admin/v1/webhooks/{id}/deliveries"),
            None,
            200,
        )
        .await;
        let attempts = listed["attempts"].as_array().unwrap().clone();
        if done(&attempts) {
            return attempts;
        }
        assert!(Instant::now() < deadline, "attempts so far: {attempts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_events_arrive_signed_with_a_stable_id() {
    let (origin, _dir) = origin().await;
    let receiver = Receiver::start().await;
    let (id, secret) = register(&origin, json!({"url": receiver.url, "topics": ["indicators.AAPL.*"]})).await;
    assert!(secret.starts_with("whsec_"));
    let shown = admin_json(&origin, Method::GET, &format!("/admin/v1/webhooks/{id}"), None, 200).await;
    assert!(shown.get("secret").is_none(), "the secret is shown once: {shown}");

    publish(&origin, "indicators.MSFT.rsi14", 1.0).await;
    let event_id = publish(&origin, "indicators.AAPL.rsi14", 2.0).await;
    let received = receiver.wait_for(1).await;
    let message = &received[0];
    assert_eq!(message.id, format!("msg_{event_id}"));
    assert!(signed_by(&secret, message), "signature {:?}", message.signatures);
    verify_with_reference_library(&[&secret], &received);
    let envelope: Value = serde_json::from_slice(&message.body).unwrap();
    assert_eq!(envelope["id"], event_id);
    assert_eq!(envelope["topic"], "indicators.AAPL.rsi14");
    assert_eq!(envelope["payload"]["value"], 2.0);
    let attempts = attempts_until(&origin, &id, |a| !a.is_empty()).await;
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(attempts[0]["response"], "receiver says hello");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.wait_for(1).await.len(), 1, "the MSFT event does not match");
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("origin_webhook_attempts_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_by_the_schedule_then_dead_lettered_and_redriven() {
    let (origin, _dir) = origin().await;
    let receiver = Receiver::start().await;
    let (id, secret) = register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    // Two server errors, then a success: three attempts of one message, with one webhook-id.
    receiver.answer(500, Vec::new());
    receiver.answer(503, Vec::new());
    let event_id = publish(&origin, "indicators.AAPL.rsi14", 1.0).await;
    let received = receiver.wait_for(3).await;
    assert!(
        received
            .iter()
            .all(|r| r.id == format!("msg_{event_id}") && signed_by(&secret, r))
    );
    let attempts = attempts_until(&origin, &id, |a| a.len() == 3).await;
    let outcomes: Vec<&str> = attempts.iter().rev().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "retry", "delivered"]);

    // Out of attempts: three failures make a dead letter.
    for _ in 0..3 {
        receiver.answer(500, Vec::new());
    }
    let failing = publish(&origin, "indicators.AAPL.rsi14", 2.0).await;
    receiver.wait_for(6).await;
    let dead_path = format!("/admin/v1/webhooks/{id}/dead-letters");
    let dead = wait_for_dead(&origin, &dead_path, 1).await;
    assert_eq!(dead[0]["event_id"], failing);
    let stats = admin_json(
        &origin,
        Method::GET,
        &format!("/admin/v1/webhooks/{id}/stats"),
        None,
        200,
    )
    .await;
    assert_eq!(stats["dead_letters"], 1, "{stats}");
    assert_eq!(stats["attempts"]["delivered"], 1, "{stats}");
    assert!(stats["failing_since_ms"].is_number(), "{stats}");

    // A final refusal is dead at once.
    receiver.answer(400, Vec::new());
    let refused = publish(&origin, "indicators.AAPL.rsi14", 3.0).await;
    receiver.wait_for(7).await;
    let dead = wait_for_dead(&origin, &dead_path, 2).await;
    assert_eq!(dead[1]["event_id"], refused);
    assert_eq!(dead[1]["attempts"], 1);

    // Redrive: both go again, with their ids, and are delivered.
    let redriven = admin_json(&origin, Method::POST, &format!("{dead_path}:redrive"), None, 202).await;
    assert_eq!(redriven["queued"], 2);
    let received = receiver.wait_for(9).await;
    let mut ids: Vec<&str> = received[7..].iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = [format!("msg_{failing}"), format!("msg_{refused}")];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(wait_for_dead(&origin, &dead_path, 0).await.is_empty());
    // A success heals the endpoint (recorded just after the receiver answered).
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = admin_json(
            &origin,
            Method::GET,
            &format!("/admin/v1/webhooks/{id}/stats"),
            None,
            200,
        )
        .await;
        if stats.get("failing_since_ms").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "still failing: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The default schedule walked on the origin's delivery clock: no attempt before its delay (less a
/// fifth, the jitter), each one after it; after the last, a dead letter. An endpoint failing for
/// `disable_after` (5 days by default) is disabled, and what was queued for it becomes dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_default_schedule_until_a_failing_endpoint_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let defaults = origin::config::OriginConfig::default().webhooks;
    config.webhooks.retry_schedule = defaults.retry_schedule.clone();
    let schedule = defaults.retry_schedule;
    let minutes = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(
        schedule,
        [
            Duration::ZERO,
            Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
            minutes(600),
            minutes(600)
        ]
    );
    let origin = TestOrigin::start(config).await;
    let clock = origin.state.webhooks.clock();
    let receiver = Receiver::start().await;
    let (id, _) = register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    for _ in 0..schedule.len() + 1 {
        receiver.answer(503, Vec::new());
    }
    let first = publish(&origin, "indicators.AAPL.rsi14", 1.0).await;
    receiver.wait_for(1).await;
    for (made, delay) in schedule.iter().enumerate().skip(1) {
        // Recorded once its retry is scheduled, so the clock moves only after that.
        attempts_until(&origin, &id, |a| a.len() == made).await;
        clock.advance(delay.mul_f64(0.75));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            receiver.wait_for(made).await.len(),
            made,
            "attempt {} came before its delay of {delay:?}",
            made + 1
        );
        clock.advance(delay.mul_f64(0.5));
        receiver.wait_for(made + 1).await;
    }
    let dead_path = format!("/admin/v1/webhooks/{id}/dead-letters");
    let dead = wait_for_dead(&origin, &dead_path, 1).await;
    assert_eq!(dead[0]["event_id"], first);
    assert_eq!(dead[0]["attempts"], schedule.len());
    let attempts = attempts_until(&origin, &id, |a| a.len() == schedule.len()).await;
    let times: Vec<u64> = attempts.iter().rev().map(|a| a["at_ms"].as_u64().unwrap()).collect();
    for (gap, delay) in times.windows(2).map(|w| w[1] - w[0]).zip(&schedule[1..]) {
        let delay = u64::try_from(delay.as_millis()).unwrap();
        assert!(
            gap >= delay * 4 / 5 && gap <= delay * 5 / 4 + 5_000,
            "{gap} ms for {delay} ms"
        );
    }
    let stats_path = format!("/admin/v1/webhooks/{id}/stats");
    let stats = admin_json(&origin, Method::GET, &stats_path, None, 200).await;
    assert_eq!(stats["enabled"], true, "failing for a day is not enough: {stats}");
    assert_eq!(stats["attempts"]["retry"], schedule.len() - 1, "{stats}");
    assert_eq!(stats["attempts"]["dead"], 1, "{stats}");

    // Five days after the first failure, the next failure disables the endpoint.
    clock.advance(Duration::from_secs(5 * 24 * 3600));
    let second = publish(&origin, "indicators.AAPL.rsi14", 2.0).await;
    receiver.wait_for(schedule.len() + 1).await;
    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let stats = admin_json(&origin, Method::GET, &stats_path, None, 200).await;
        if stats["enabled"] == false {
            break stats;
        }
        assert!(Instant::now() < deadline, "never disabled: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = stats["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("disable_after"), "{reason}");
    // The retry queued for it finds the endpoint disabled: a dead letter, not an attempt.
    clock.advance(Duration::from_secs(10));
    let dead = wait_for_dead(&origin, &dead_path, 2).await;
    assert_eq!(dead[1]["event_id"], second);
    // Nothing is queued for a disabled endpoint.
    publish(&origin, "indicators.AAPL.rsi14", 3.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.wait_for(0).await.len(), schedule.len() + 1);
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("origin_webhook_endpoints_disabled_total 1"),
        "{metrics}"
    );

    // Enabled again and redriven: both dead letters are delivered.
    let enabled = admin_json(
        &origin,
        Method::PATCH,
        &format!("/admin/v1/webhooks/{id}"),
        Some(json!({"enabled": true})),
        200,
    )
    .await;
    assert!(enabled.get("disabled_reason").is_none(), "{enabled}");
    let redriven = admin_json(&origin, Method::POST, &format!("{dead_path}:redrive"), None, 202).await;
    assert_eq!(redriven["queued"], 2);
    receiver
        .wait_delivered(&[format!("msg_{first}"), format!("msg_{second}")], WAIT)
        .await;
}

/// Receivers that take seconds per answer hold at most `endpoint_concurrency` attempts each, and what
/// waits for them holds none of the origin's slots: another endpoint gets everything meanwhile. A
/// rate-limited endpoint gets its messages spread out at its rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_delays_no_other_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.webhooks.endpoint_concurrency = std::num::NonZeroUsize::new(2).unwrap();
    // Two slow endpoints fill four of the six slots; their waiting deliveries must not take the rest.
    config.webhooks.concurrency = std::num::NonZeroUsize::new(6).unwrap();
    let origin = TestOrigin::start(config).await;
    let (slow, other_slow, fast, limited) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    for receiver in [&slow, &other_slow] {
        receiver.answer_slowly(Duration::from_secs(2));
        register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    }
    register(&origin, json!({"url": fast.url, "topics": ["indicators.**"]})).await;
    register(
        &origin,
        json!({"url": limited.url, "topics": ["indicators.**"], "rate_limit": 2}),
    )
    .await;
    let mut ids = Vec::new();
    for value in 0..6 {
        ids.push(format!(
            "msg_{}",
            publish(&origin, "indicators.AAPL.rsi14", f64::from(value)).await
        ));
    }
    fast.wait_delivered(&ids, WAIT).await;
    for receiver in [&slow, &other_slow] {
        let answered = receiver.wait_for(0).await.len();
        assert!(
            answered <= 2,
            "a slow receiver answered {answered} while the fast one got all six"
        );
    }
    let arrivals = limited.wait_delivered(&ids, WAIT).await;
    assert!(arrivals.values().all(|&n| n == 1), "{arrivals:?}");
    let received = limited.wait_for(6).await;
    let spread = received[5].at.duration_since(received[0].at);
    // Two at once (a full bucket), then one every half second.
    assert!(
        spread >= Duration::from_millis(1500),
        "6 messages at 2/s arrived within {spread:?}"
    );
    for receiver in [&slow, &other_slow] {
        receiver.wait_delivered(&ids, WAIT).await;
        assert_eq!(receiver.inbox.most_in_flight.load(Ordering::SeqCst), 2);
    }
}

async fn wait_for_dead(origin: &TestOrigin, path: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = admin_json(origin, Method::GET, path, None, 200).await["dead_letters"]
            .as_array()
            .unwrap()
            .clone();
        if dead.len() == count {
            return dead;
        }
        assert!(Instant::now() < deadline, "dead letters: {dead:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_puts_the_next_attempt_off() {
    let (origin, _dir) = origin().await;
    let receiver = Receiver::start().await;
    register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    receiver.answer(429, vec![("retry-after", "1".into())]);
    publish(&origin, "indicators.AAPL.rsi14", 1.0).await;
    let received = receiver.wait_for(2).await;
    let waited = received[1].at.duration_since(received[0].at);
    // The schedule alone would retry after about 200 ms.
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one() {
    let (origin, _dir) = origin().await;
    let receiver = Receiver::start().await;
    let (id, old) = register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    let rotated = admin_json(
        &origin,
        Method::POST,
        &format!("/admin/v1/webhooks/{id}/secret:rotate"),
        None,
        200,
    )
    .await;
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(rotated["previous_expires_at"].is_string());
    publish(&origin, "indicators.AAPL.rsi14", 1.0).await;
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].signatures.len(), 2);
    assert!(signed_by(&old, &received[0]) && signed_by(new, &received[0]));
    verify_with_reference_library(&[&old, new], &received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_and_bad_endpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut strict = support::config(dir.path());
    strict.webhooks.allow_http = true;
    let origin = TestOrigin::start(strict).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
    ] {
        let response = origin
            .admin(Method::POST, "/admin/v1/webhooks")
            .json(&json!({"url": url, "topics": ["indicators.**"]}))
            .send()
            .await
            .unwrap();
        let message = expect_error(response, 422, "invalid_body").await;
        assert!(message.contains("allowed_targets"), "{url}: {message}");
    }
    for (body, needle) in [
        (json!({"url": "ftp://example.com/", "topics": ["a.**"]}), "url"),
        (json!({"url": "not a url", "topics": ["a.**"]}), "url"),
        (json!({"url": "http://1.1.1.1/", "topics": []}), "topics"),
        (json!({"url": "http://1.1.1.1/", "topics": ["a.**.b"]}), "topics"),
        (
            json!({"url": "http://1.1.1.1/", "topics": ["a.**"], "headers": {"webhook-signature": "x"}}),
            "headers",
        ),
        (
            json!({"url": "http://1.1.1.1/", "topics": ["a.**"], "rate_limit": 0}),
            "rate_limit",
        ),
        (
            json!({"url": "http://1.1.1.1/", "topics": ["a.**"], "colour": "red"}),
            "colour",
        ),
        (json!({"topics": ["a.**"]}), "url"),
    ] {
        let response = origin
            .admin(Method::POST, "/admin/v1/webhooks")
            .json(&body)
            .send()
            .await
            .unwrap();
        let message = expect_error(response, 422, "invalid_body").await;
        assert!(message.contains(needle), "{body}: {message}");
    }
    let missing = origin
        .admin(Method::GET, "/admin/v1/webhooks/ep_nope")
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "not_found").await;
    let anonymous = origin
        .client
        .get(origin.url("/admin/v1/webhooks"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    let (origin, _dir) = origin().await;
    let receiver = Receiver::start().await;
    let (id, _) = register(&origin, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    receiver.answer(307, vec![("location", "http://10.0.0.1/steal".into())]);
    publish(&origin, "indicators.AAPL.rsi14", 1.0).await;
    let attempts = attempts_until(&origin, &id, |a| !a.is_empty()).await;
    assert_eq!(attempts[0]["outcome"], "dead");
    assert_eq!(attempts[0]["status"], 307);
    assert_eq!(attempts[0]["error"], "redirects are not followed");
    assert_eq!(receiver.wait_for(1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_listed_changed_replayed_and_deleted() {
    let (origin, _dir) = origin().await;
    let receiver = Receiver::start().await;
    let (id, _) = register(
        &origin,
        json!({"url": receiver.url, "topics": ["indicators.**"], "description": "desk", "headers": {"x-desk": "fx"}}),
    )
    .await;
    let first = publish(&origin, "indicators.AAPL.rsi14", 1.0).await;
    receiver.wait_for(1).await;
    let path = format!("/admin/v1/webhooks/{id}");
    let changed = admin_json(
        &origin,
        Method::PATCH,
        &path,
        Some(json!({"enabled": false, "types": null})),
        200,
    )
    .await;
    assert_eq!(changed["enabled"], false);
    let listed = admin_json(&origin, Method::GET, "/admin/v1/webhooks", None, 200).await;
    assert_eq!(listed["endpoints"][0]["id"], id.as_str());
    assert_eq!(listed["endpoints"][0]["headers"]["x-desk"], "fx");

    let resent = admin_json(
        &origin,
        Method::POST,
        &format!("{path}/messages/{first}/resend"),
        None,
        202,
    )
    .await;
    assert_eq!(resent["queued"], 1);
    admin_json(&origin, Method::PATCH, &path, Some(json!({"enabled": true})), 200).await;
    let replayed = admin_json(
        &origin,
        Method::POST,
        &format!("{path}/replay"),
        Some(json!({"since": "0"})),
        202,
    )
    .await;
    assert_eq!(replayed["queued"], 1);
    let received = receiver.wait_for(2).await;
    assert!(received.iter().skip(1).all(|r| r.id == format!("msg_{first}")));

    let unknown = origin
        .admin(Method::POST, &format!("{path}/messages/999999/resend"))
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "not_found").await;
    admin_json(&origin, Method::DELETE, &path, None, 204).await;
    let gone = origin.admin(Method::GET, &path).send().await.unwrap();
    expect_error(gone, 404, "not_found").await;
}

/// Two origins on one Redis share the queue: every event is delivered, once each when nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_share_the_queue_without_sending_twice() {
    let redis = loadtest::launch::RedisServer::start().unwrap();
    let start = || async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.storage.redis_url = Some(redis.url());
        (TestOrigin::start(config).await, dir)
    };
    let ((first, _first_dir), (second, _second_dir)) = (start().await, start().await);
    let receiver = Receiver::start().await;
    register(&first, json!({"url": receiver.url, "topics": ["indicators.**"]})).await;
    let mut ids = Vec::new();
    for n in 0..60 {
        let origin = if n % 2 == 0 { &first } else { &second };
        ids.push(format!(
            "msg_{}",
            publish(origin, "indicators.AAPL.rsi14", f64::from(n)).await
        ));
    }
    let arrivals = receiver.wait_delivered(&ids, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let twice: Vec<_> = arrivals.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(receiver.wait_for(60).await.len(), 60);
}
