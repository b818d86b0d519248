//! Analysis events end to end: publishing over HTTP, and real SSE clients (`eventsource-stream` over
//! reqwest) following `GET /v1/stream`.

use std::time::Duration;

use eventsource_stream::{Event as SseEvent, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use loadtest::launch::RedisServer;
use origin::api::auth::{format_hash, hash_token};
use origin::config::{OriginConfig, TokenConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, ADMIN_TOKEN, TestOrigin, expect_error, forecast};

/// How long a test waits for an event it expects.
const WAIT: Duration = Duration::from_secs(10);

pub(crate) type Sse = std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, EventStreamError<reqwest::Error>>> + Send>>;

pub(crate) fn indicator(instrument: &str, name: &str, value: f64) -> Value {
    json!({"topic": format!("indicators.{instrument}.{name}"), "type": "TechnicalIndicatorComputed",
        "instrument": instrument, "timeframe": "1h",
        "payload": {"indicator": "rsi", "period": 14, "value": value, "computed_at": "2026-11-23T14:00:00Z"}})
}

fn summary(instrument: &str, text: &str) -> Value {
    json!({"topic": format!("summaries.{instrument}"), "type": "AnalysisSummary", "instrument": instrument,
        "payload": {"summary": text}})
}

fn pattern(instrument: &str) -> Value {
    json!({"topic": format!("patterns.{instrument}.head_and_shoulders"), "type": "PatternDetected",
        "instrument": instrument,
        "payload": {"pattern": "head_and_shoulders", "direction": "bearish", "confidence": 0.8,
            "detected_at": "2026-11-23T14:00:00Z"}})
}

pub(crate) async fn publish(origin: &TestOrigin, event: &Value) -> u64 {
    let response = origin
        .admin(Method::POST, "/admin/v1/events")
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{event}");
    response.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
}

async fn publish_batch(origin: &TestOrigin, events: &[Value]) -> Value {
    let response = origin
        .admin(Method::POST, "/admin/v1/events:batch")
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Opens a stream with `query`, as `token` (none: anonymous) and resuming after `last_event_id`.
pub(crate) async fn subscribe(
    origin: &TestOrigin,
    query: &str,
    token: Option<&str>,
    last_event_id: Option<u64>,
) -> Sse {
    let mut request = origin.get(&format!("/v1/stream?{query}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-accel-buffering"], "no");
    Box::pin(response.bytes_stream().eventsource())
}

pub(crate) async fn next(stream: &mut Sse) -> SseEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no event in time")
        .expect("the stream ended")
        .unwrap()
}

/// The next `count` events, as (id, type, topic).
async fn take(stream: &mut Sse, count: usize) -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = next(stream).await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["id"].to_string(), event.id, "data.id is the SSE id");
        assert_eq!(data["type"].as_str(), Some(event.event.as_str()), "event: is the type");
        seen.push((event.id, event.event, data["topic"].as_str().unwrap().to_owned()));
    }
    seen
}

/// Nothing more arrives for a moment.
async fn quiet(stream: &mut Sse) {
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected {event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_their_topics_types_and_instruments_in_order() {
    let origin = TestOrigin::embedded().await;
    let token = Some(ADMIN_TOKEN);
    let mut aapl = subscribe(&origin, "topics=indicators.AAPL.*", token, None).await;
    let mut patterns = subscribe(&origin, "topics=patterns.**", token, None).await;
    let mut msft_any = subscribe(&origin, "topics=**&instruments=MSFT", token, None).await;
    let mut summaries = subscribe(&origin, "types=AnalysisSummary", token, None).await;
    let batch = [
        indicator("AAPL", "rsi14", 63.2),
        pattern("BTC-USD"),
        summary("MSFT", "steady"),
        indicator("MSFT", "rsi14", 40.0),
        indicator("AAPL", "macd", 1.5),
    ];
    let published = publish_batch(&origin, &batch).await;
    let ids: Vec<u64> = published["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let id = |n: u64| n.to_string();
    let got = take(&mut aapl, 2).await;
    assert_eq!(
        got,
        [
            (
                id(1),
                "TechnicalIndicatorComputed".into(),
                "indicators.AAPL.rsi14".into()
            ),
            (
                id(5),
                "TechnicalIndicatorComputed".into(),
                "indicators.AAPL.macd".into()
            ),
        ]
    );
    assert_eq!(take(&mut patterns, 1).await[0].0, id(2));
    let msft: Vec<String> = take(&mut msft_any, 2).await.into_iter().map(|e| e.0).collect();
    assert_eq!(msft, [id(3), id(4)]);
    assert_eq!(take(&mut summaries, 1).await[0].1, "AnalysisSummary");
    for stream in [&mut aapl, &mut patterns, &mut msft_any, &mut summaries] {
        quiet(stream).await;
    }

    // The origin's own events: a forecast write is announced on forecasts.{instrument}.{timeframe}.
    let mut forecasts = subscribe(&origin, "topics=forecasts.ES.F.*", token, None).await;
    origin.put("ES.F", "15m", &forecast(("lstm", "3.2.0"), 5000.0)).await;
    let announced = next(&mut forecasts).await;
    assert_eq!(announced.event, "ForecastUpdated");
    let data: Value = serde_json::from_str(&announced.data).unwrap();
    assert_eq!(data["topic"], "forecasts.ES.F.15m");
    assert_eq!(data["payload"]["change"], "written");
    assert_eq!(data["payload"]["version"], 1);
    assert_eq!(data["payload"]["model"], json!({"id": "lstm", "version": "3.2.0"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_resumes_from_its_last_event_id_without_gap_or_duplicate() {
    let origin = TestOrigin::embedded().await;
    let token = Some(ADMIN_TOKEN);
    let mut first = subscribe(&origin, "topics=indicators.**", token, None).await;
    for n in 0..3 {
        publish(&origin, &indicator("AAPL", "rsi14", f64::from(n))).await;
    }
    let seen = take(&mut first, 3).await;
    let last: u64 = seen[2].0.parse().unwrap();
    drop(first);
    // Missed while away: four events, one of another topic.
    for n in 0..3 {
        publish(&origin, &indicator("MSFT", "rsi14", f64::from(n))).await;
    }
    publish(&origin, &summary("AAPL", "not followed")).await;
    let mut resumed = subscribe(&origin, "topics=indicators.**", token, Some(last)).await;
    let replayed: Vec<String> = take(&mut resumed, 3).await.into_iter().map(|e| e.0).collect();
    assert_eq!(replayed, ["4", "5", "6"]);
    // Then live, and never a replayed one twice.
    publish(&origin, &indicator("AAPL", "rsi14", 9.0)).await;
    assert_eq!(take(&mut resumed, 1).await[0].0, "8");
    quiet(&mut resumed).await;

    // The same position as a query parameter, and a replay from an instant.
    let mut by_query = subscribe(
        &origin,
        &format!("topics=indicators.**&last_event_id={last}"),
        token,
        None,
    )
    .await;
    assert_eq!(take(&mut by_query, 1).await[0].0, "4");
    let mut since_start = subscribe(&origin, "topics=indicators.**&since=0", token, None).await;
    assert_eq!(take(&mut since_start, 1).await[0].0, "1");
    let far_future = "since=2100-01-01T00:00:00Z";
    let mut since_future = subscribe(&origin, &format!("topics=indicators.**&{far_future}"), token, None).await;
    quiet(&mut since_future).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_dropped_is_announced_as_a_gap_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.events.retention_entries = std::num::NonZeroUsize::new(5).unwrap();
    let origin = TestOrigin::start(config).await;
    for n in 0..10 {
        publish(&origin, &indicator("AAPL", "rsi14", f64::from(n))).await;
    }
    let mut stream = subscribe(&origin, "topics=indicators.**", Some(ADMIN_TOKEN), Some(1)).await;
    let gap = next(&mut stream).await;
    assert_eq!(gap.event, "gap");
    let gap: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!((gap["from"].clone(), gap["to"].clone()), (json!(2), json!(5)), "{gap}");
    let rest: Vec<String> = take(&mut stream, 5).await.into_iter().map(|e| e.0).collect();
    assert_eq!(rest, ["6", "7", "8", "9", "10"]);
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "origin_events_gaps_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_cut_off_with_an_overflow_while_others_keep_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.events.queue_events = std::num::NonZeroUsize::new(64).unwrap();
    config.http.max_body_bytes = std::num::NonZeroUsize::new(64 * 1024 * 1024).unwrap();
    let origin = TestOrigin::start(config).await;
    let token = Some(ADMIN_TOKEN);
    // Never read until the end: the socket buffers fill, then its queue.
    let mut stalled = subscribe(&origin, "topics=summaries.**", token, None).await;
    let mut keeping_up = subscribe(&origin, "topics=summaries.**", token, None).await;
    let text = "x".repeat(4000);
    // Bursts smaller than a queue: a reader that keeps up never overflows.
    let batch: Vec<Value> = (0..32).map(|_| summary("AAPL", &text)).collect();
    let mut expected = 0;
    for _ in 0..100 {
        publish_batch(&origin, &batch).await;
        expected += batch.len();
        let got = take(&mut keeping_up, batch.len()).await;
        assert_eq!(
            got.last().unwrap().0,
            expected.to_string(),
            "the reader that keeps up fell behind"
        );
    }
    let mut ids = Vec::new();
    let overflow = loop {
        let event = next(&mut stalled).await;
        if event.event == "overflow" {
            break event;
        }
        ids.push(event.id.parse::<u64>().unwrap());
    };
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "the stalled reader missed events before the overflow"
    );
    let notice: Value = serde_json::from_str(&overflow.data).unwrap();
    assert_eq!(notice["last_event_id"], json!(ids.last().copied().unwrap_or(0)));
    let end = tokio::time::timeout(WAIT, stalled.next())
        .await
        .expect("the stream did not end");
    assert!(end.is_none(), "the stream went on after the overflow");
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "origin_events_overflow_disconnects_total 1"),
        "{metrics}"
    );
    // It resumes where the overflow said, with nothing lost.
    let last = ids.last().copied().unwrap_or(0);
    let mut resumed = subscribe(&origin, "topics=summaries.**", token, Some(last)).await;
    assert_eq!(take(&mut resumed, 1).await[0].0, (last + 1).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_heartbeats_and_the_subscriber_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.events.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(config).await;
    let response = origin
        .get("/v1/stream?topics=indicators.**&batch_ms=400")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let mut chunks = response.bytes_stream();
    let opening = tokio::time::timeout(WAIT, chunks.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(opening.starts_with(b"retry: 2000\n\n"), "{opening:?}");
    let heartbeat = tokio::time::timeout(WAIT, chunks.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&heartbeat[..], b": keep-alive\n\n");
    for n in 0..3 {
        publish(&origin, &indicator("AAPL", "rsi14", f64::from(n))).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batched = loop {
        let chunk = tokio::time::timeout(WAIT, chunks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !chunk.starts_with(b":") {
            break chunk;
        }
    };
    let text = String::from_utf8(batched.to_vec()).unwrap();
    assert_eq!(text.matches("event: TechnicalIndicatorComputed").count(), 3, "{text}");

    let listed: Value = origin
        .admin(Method::GET, "/admin/v1/subscribers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscriber = &listed["subscribers"][0];
    assert_eq!(subscriber["topics"], json!(["indicators.**"]), "{listed}");
    assert_eq!(
        (subscriber["delivered"].clone(), subscriber["lag"].clone()),
        (json!(3), json!(0)),
        "{listed}"
    );
    assert_eq!(subscriber["principal"], "bootstrap", "{listed}");
    assert!(
        subscriber["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{listed}"
    );
    drop(chunks);
}

fn subscriber_token(name: &str, secret: &str, topics: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        hash: format_hash(&hash_token(secret)),
        scopes: vec!["events:subscribe".into()],
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_anonymous_topics_decide_who_may_follow_what() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: OriginConfig = support::config(dir.path());
    config.events.anonymous_topics = vec!["summaries.**".into()];
    config.auth.tokens = vec![subscriber_token("desk", "desk-secret", &["indicators.AAPL.*"])];
    let origin = TestOrigin::start(config).await;
    let mut anonymous = subscribe(&origin, "topics=summaries.AAPL", None, None).await;
    let refused = origin.get("/v1/stream?topics=indicators.**").send().await.unwrap();
    expect_error(refused, 401, "unauthorized").await;
    let mut desk = subscribe(&origin, "topics=indicators.AAPL.rsi14", Some("desk-secret"), None).await;
    let outside = origin
        .get("/v1/stream?topics=indicators.**")
        .bearer_auth("desk-secret")
        .send()
        .await
        .unwrap();
    expect_error(outside, 403, "forbidden").await;
    let unknown = origin.get("/v1/stream").bearer_auth("nope").send().await.unwrap();
    expect_error(unknown, 401, "unauthorized").await;
    publish(&origin, &summary("AAPL", "open to all")).await;
    publish(&origin, &indicator("AAPL", "rsi14", 1.0)).await;
    assert_eq!(take(&mut anonymous, 1).await[0].2, "summaries.AAPL");
    assert_eq!(take(&mut desk, 1).await[0].2, "indicators.AAPL.rsi14");
    // A subscriber token cannot publish.
    let publishing = origin
        .client
        .post(origin.url("/admin/v1/events"))
        .bearer_auth("desk-secret")
        .json(&summary("AAPL", "x"))
        .send()
        .await
        .unwrap();
    expect_error(publishing, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_publishes_and_streams_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.events.free_form_topics = vec!["custom.**".into()];
    let origin = TestOrigin::start(config).await;
    let raw = |body: &'static str| {
        origin
            .admin(Method::POST, "/admin/v1/events")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    expect_error(raw("{not json").await.unwrap(), 400, "malformed_json").await;
    let nan = r#"{"topic":"indicators.AAPL.rsi14","type":"TechnicalIndicatorComputed","instrument":"AAPL","payload":{"indicator":"rsi","value":NaN,"computed_at":"2026-11-23T14:00:00Z"}}"#;
    expect_error(raw(nan).await.unwrap(), 400, "malformed_json").await;
    let cases = [
        (
            json!({"topic": "a..b", "type": "AnalysisSummary", "instrument": "AAPL", "payload": {"summary": "x"}}),
            "invalid topic",
        ),
        (
            json!({"topic": "a.b", "type": "Mystery", "instrument": "AAPL", "payload": {}}),
            "unknown event type",
        ),
        (
            json!({"topic": "a.b", "type": "AnalysisSummary", "instrument": "AA PL", "payload": {"summary": "x"}}),
            "instrument",
        ),
        (
            json!({"topic": "a.b", "type": "AnalysisSummary", "instrument": "AAPL", "payload": {"summary": "x".repeat(20_000)}}),
            "bytes",
        ),
        (
            json!({"topic": "a.b", "type": "CorrelationUpdated", "instrument": "AAPL",
            "payload": {"other": "MSFT", "coefficient": 1.5, "window": "30d", "computed_at": "2026-11-23T14:00:00Z"}}),
            "coefficient",
        ),
        (
            json!({"topic": "a.b", "type": "AnalysisSummary", "instrument": "AAPL"}),
            "payload",
        ),
        (
            json!({"topic": "a.b", "type": "AnalysisSummary", "instrument": "AAPL", "payload": {"summary": "x"}, "extra": 1}),
            "extra",
        ),
    ];
    for (body, says) in cases {
        let response = origin
            .admin(Method::POST, "/admin/v1/events")
            .json(&body)
            .send()
            .await
            .unwrap();
        let message = expect_error(response, 422, "invalid_body").await;
        assert!(message.contains(says), "{says:?} not in {message:?}");
    }
    let custom = json!({"topic": "custom.desk", "type": "DeskSignal", "instrument": "AAPL", "payload": {"any": 1}});
    assert_eq!(publish(&origin, &custom).await, 1);

    let mixed = publish_batch(
        &origin,
        &[summary("AAPL", "ok"), json!({"topic": "x"}), summary("MSFT", "ok")],
    )
    .await;
    let statuses: Vec<(Value, Value)> = mixed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].clone(), r["id"].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (json!(201), json!(2)),
            (json!(422), Value::Null),
            (json!(201), json!(3))
        ]
    );
    for query in [
        "topics=a.**.b",
        "instruments=AA%20PL",
        "last_event_id=abc",
        "since=yesterday",
        "batch_ms=999999",
        "unknown=1",
    ] {
        let response = origin
            .get(&format!("/v1/stream?{query}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{query}: {body}");
    }
    let unauthorized = origin
        .client
        .post(origin.url("/admin/v1/events"))
        .json(&summary("AAPL", "x"))
        .send()
        .await
        .unwrap();
    expect_error(unauthorized, 401, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_to_one_origin_reaches_subscribers_of_another() {
    let redis = RedisServer::start().unwrap();
    let start = || async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = support::config(dir.path());
        config.storage.redis_url = Some(redis.url());
        (TestOrigin::start(config).await, dir)
    };
    let ((first, _first_dir), (second, _second_dir)) = (start().await, start().await);
    let mut on_second = subscribe(&second, "topics=indicators.**", Some(ADMIN_TOKEN), None).await;
    let id = publish(&first, &indicator("AAPL", "rsi14", 1.0)).await;
    assert_eq!(take(&mut on_second, 1).await[0].0, id.to_string());
    let id = publish(&second, &indicator("AAPL", "rsi14", 2.0)).await;
    let mut on_first = subscribe(&first, "topics=indicators.**", Some(ADMIN_TOKEN), Some(id - 1)).await;
    assert_eq!(take(&mut on_first, 1).await[0].0, id.to_string());
}

/// An origin whose tail falls behind the log's retention (here another origin appends and trims twenty
/// events at once) tells its live subscribers what they lost before it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_are_told_when_their_origin_fell_behind_retention() {
    let redis = RedisServer::start().unwrap();
    let start = |retention: usize| {
        let redis_url = redis.url();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let mut config = support::config(dir.path());
            config.storage.redis_url = Some(redis_url);
            config.events.retention_entries = std::num::NonZeroUsize::new(retention).unwrap();
            (TestOrigin::start(config).await, dir)
        }
    };
    let (publisher, _publisher_dir) = start(5).await;
    let (follower, _follower_dir) = start(1000).await;
    let mut stream = subscribe(&follower, "topics=indicators.**", Some(ADMIN_TOKEN), None).await;
    let first = publish(&publisher, &indicator("AAPL", "rsi14", 0.0)).await;
    assert_eq!(take(&mut stream, 1).await[0].0, first.to_string());

    let burst: Vec<Value> = (1..=20).map(|n| indicator("AAPL", "rsi14", f64::from(n))).collect();
    publish_batch(&publisher, &burst).await;
    let gap = next(&mut stream).await;
    assert_eq!(gap.event, "gap");
    let gap: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(
        (gap["from"].clone(), gap["to"].clone()),
        (json!(first + 1), json!(first + 15)),
        "{gap}"
    );
    let rest: Vec<u64> = take(&mut stream, 5)
        .await
        .iter()
        .map(|e| e.0.parse().unwrap())
        .collect();
    assert_eq!(rest, (first + 16..=first + 20).collect::<Vec<_>>());
}
