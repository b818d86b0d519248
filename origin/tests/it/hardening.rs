//! What hostile or unlucky input must not break: each test here is a defect that once was.

use std::time::Duration;

use loadtest::launch::{RedisServer, redis_command};
use reqwest::Method;
use serde_json::{Value, json};

use crate::events::{indicator, next, publish, subscribe};
use crate::support::{ADMIN_TOKEN, TestOrigin, expect_error, forecast};
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
