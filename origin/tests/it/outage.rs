//! What the origin does while Redis is down: reads from its L1 cache, 503 with Retry-After for writes,
//! not ready; and how it recovers by itself when Redis is back.

use std::time::Duration;

use loadtest::launch::RedisServer;
use reqwest::Method;

use crate::support::{self, TestOrigin, expect_error, forecast};

async fn wait_for_status(origin: &TestOrigin, path: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = origin.get(path).send().await.unwrap().status().as_u16();
        if answer == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} still answers {answer}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_and_recovers() {
    let mut redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.redis_url = Some(redis.url());
    config.storage.operation_timeout = Duration::from_millis(500);
    let origin = TestOrigin::start(config).await;

    let written = origin.put("OUT", "1h", &forecast(("m", "1"), 10.0)).await;
    let cached = origin.get("/v1/forecasts/OUT/1h").send().await.unwrap();
    assert_eq!(cached.status(), 200);
    let etag = cached.headers()["etag"].clone();

    redis.stop().unwrap();
    wait_for_status(&origin, "/readyz", 503).await;

    let read = origin.get("/v1/forecasts/OUT/1h").send().await.unwrap();
    assert_eq!(
        read.status(),
        200,
        "a cached forecast must be served while Redis is down"
    );
    assert_eq!(read.headers()["etag"], etag);

    let refused = origin
        .admin(Method::PUT, "/admin/v1/forecasts/OUT/1h")
        .json(&forecast(("m", "1"), 11.0))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    expect_error(refused, 503, "unavailable").await;

    let uncached = origin.get("/v1/forecasts/NOPE/1h").send().await.unwrap();
    expect_error(uncached, 503, "unavailable").await;

    redis.restart().unwrap();
    wait_for_status(&origin, "/readyz", 200).await;
    let again = origin.put("OUT", "1h", &forecast(("m", "1"), 12.0)).await;
    assert_eq!(
        again["version"],
        written["version"].as_u64().unwrap() + 1,
        "the refused write was stored"
    );
    let read = origin.get("/v1/forecasts/OUT/1h").send().await.unwrap();
    let body: serde_json::Value = read.json().await.unwrap();
    assert_eq!(body["point"], 12.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_starts_while_redis_is_down() {
    let mut redis = RedisServer::start().unwrap();
    redis.stop().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.redis_url = Some(redis.url());
    config.storage.operation_timeout = Duration::from_millis(300);
    let origin = TestOrigin::start(config).await;
    let health = origin.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
    wait_for_status(&origin, "/readyz", 503).await;
    redis.restart().unwrap();
    wait_for_status(&origin, "/readyz", 200).await;
    origin.put("LATE", "1h", &forecast(("m", "1"), 1.0)).await;
}
