//! What the origin does while Redis is down: reads from its L1 cache, 503 with Retry-After for writes,
//! not ready; and how it recovers by itself when Redis is back. And when only the invalidation log is
//! down: a change that was stored but that edges were not told about is never answered as a success.

use std::time::Duration;

use loadtest::launch::{RedisCluster, RedisServer, redis_command};
use reqwest::Method;
use serde_json::{Value, json};

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
    // The L1 cache follows the log for changes made through other origins; a look at it between the read
    // below and the outage would drop the entry for this origin's own write, leaving nothing to serve.
    config.cache.follow_interval = Duration::from_secs(3600);
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

/// The port of the Cluster master that serves `key`.
fn master_of(cluster: &RedisCluster, key: &str) -> u16 {
    let any = cluster.nodes()[0].port();
    let slot: u16 = redis_command(any, &["CLUSTER", "KEYSLOT", key])
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let nodes = redis_command(any, &["CLUSTER", "NODES"]).unwrap().unwrap();
    // `<id> <ip>:<port>@<bus port> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges>…`
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let port = fields[1].split([':', '@']).nth(1).unwrap().parse().unwrap();
        for range in &fields[8..] {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            if (low.parse().unwrap()..=high.parse().unwrap()).contains(&slot) {
                return port;
            }
        }
    }
    panic!("no master serves slot {slot}: {nodes}");
}

/// The JSON answer of an admin request, which must have `status`.
async fn admin_json(origin: &TestOrigin, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
    let mut request = origin.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{path}");
    response.json().await.unwrap()
}

/// The expected answer to a change that was stored while its invalidation could not be.
async fn not_invalidated(response: reqwest::Response, key: &str, version: u64) {
    assert_eq!(response.headers()["retry-after"], "1");
    let message = expect_error(response, 503, "invalidation_failed").await;
    assert!(
        message.contains(&format!("{key} changed (version {version})")) && message.contains("records both"),
        "the message must name the stored version and say the origin finishes the announcement: {message}"
    );
}

/// A real partial outage: the Cluster master holding the invalidation log dies while the one holding a
/// forecast lives on. Writing the forecast succeeds, appending its invalidation cannot: the answer is a
/// 503 that says so, never a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stored_while_the_log_is_down_is_not_answered_as_a_success() {
    let cluster = RedisCluster::start().unwrap();
    let log_master = master_of(&cluster, "invalidations:{inv}");
    // A forecast and a model whose keys live on other masters than the log.
    let instrument = (0..)
        .map(|i| format!("LIVE{i}"))
        .find(|i| master_of(&cluster, &format!("fc:{{{i}}}:1h")) != log_master)
        .unwrap();
    let model = (0..)
        .map(|i| format!("m{i}"))
        .find(|m| master_of(&cluster, &format!("model:{{{m}@1}}")) != log_master)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.redis_url = Some(cluster.urls().join(","));
    config.storage.redis_cluster = true;
    config.storage.operation_timeout = Duration::from_secs(1);
    let origin = TestOrigin::start(config).await;
    origin.put(&instrument, "1h", &forecast((&model, "1"), 1.0)).await;

    for node in cluster.nodes().iter().filter(|n| n.port() != log_master) {
        redis_command(node.port(), &["CONFIG", "SET", "cluster-require-full-coverage", "no"]).unwrap();
    }
    // The server closes the connection instead of answering.
    let _ = redis_command(log_master, &["SHUTDOWN", "NOSAVE"]);

    let key = format!("{instrument}:1h");
    let path = format!("/admin/v1/forecasts/{instrument}/1h");
    let written = origin
        .admin(Method::PUT, &path)
        .json(&forecast((&model, "1"), 2.0))
        .send()
        .await
        .unwrap();
    not_invalidated(written, &key, 2).await;
    let history = admin_json(&origin, Method::GET, &format!("{path}/versions"), None, 200).await;
    assert_eq!(history["current"], 2, "the write was stored all the same: {history}");
    let read: Value = origin
        .get(&format!("/v1/forecasts/{instrument}/1h"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["point"], 2.0);

    let deleted = origin.admin(Method::DELETE, &path).send().await.unwrap();
    not_invalidated(deleted, &key, 2).await;
    let purge = origin
        .admin(Method::POST, "/admin/v1/invalidations")
        .json(&json!({"tags": [key]}))
        .send()
        .await
        .unwrap();
    expect_error(purge, 503, "unavailable").await;
}

/// The logs alone refuse appends (their keys are closed to the origin's Redis user), forecasts still
/// write: each kind of change is answered 503 `invalidation_failed` and recorded in the audit log; once
/// the logs are open again the origin announces every one of those changes by itself, each with one
/// invalidation and one `ForecastUpdated` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stored_while_the_logs_are_closed_are_announced_once_they_open() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.redis_url = Some(redis.url());
    let origin = TestOrigin::start(config).await;
    origin.put("LOG", "1h", &forecast(("m", "1"), 1.0)).await;
    let acl = |keys: &[&str]| {
        let mut args = vec!["ACL", "SETUSER", "default", "resetkeys"];
        args.extend_from_slice(keys);
        redis_command(redis.port(), &args).unwrap();
    };
    acl(&["~fc:*", "~model:*", "~audit", "~auth:*", "~changes:*"]);

    let path = "/admin/v1/forecasts/LOG/1h";
    let written = origin
        .admin(Method::PUT, path)
        .json(&forecast(("m", "1"), 2.0))
        .send()
        .await
        .unwrap();
    not_invalidated(written, "LOG:1h", 2).await;
    let audit = admin_json(&origin, Method::GET, "/admin/v1/audit?limit=1", None, 200).await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (entry["action"].clone(), entry["status"].clone()),
        (json!("forecast.write"), json!(503))
    );
    assert_eq!(entry["detail"]["version"], 2);

    let rollback = origin
        .admin(Method::POST, &format!("{path}/rollback"))
        .json(&json!({"to_version": 1}))
        .send()
        .await
        .unwrap();
    not_invalidated(rollback, "LOG:1h", 3).await;
    let write = json!({"instrument": "LOG", "timeframe": "1d", "forecast": forecast(("m", "1"), 3.0)});
    let batch = admin_json(
        &origin,
        Method::POST,
        "/admin/v1/forecasts:batch",
        Some(json!({"writes": [write]})),
        200,
    )
    .await;
    let item = &batch["results"][0];
    assert_eq!(
        (item["status"].clone(), item["error"]["code"].clone()),
        (json!(503), json!("invalidation_failed"))
    );
    let metrics = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("origin_storage_errors_total{") && l.contains("operation=\"invalidation_append\"")),
        "{metrics}"
    );

    acl(&["allkeys"]);
    // The write of version 1 was announced at once (invalidation 1, event 1); the three changes made
    // while the logs were closed follow, in the order they were made, each once.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let invalidations = loop {
        let log = admin_json(&origin, Method::GET, "/admin/v1/invalidations", None, 200).await;
        if log["head"] == 4 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tags: Vec<Value> = invalidations["invalidations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["tags"][0].clone())
        .collect();
    assert_eq!(
        tags,
        [json!("LOG:1h"), json!("LOG:1h"), json!("LOG:1h"), json!("LOG:1d")],
        "{invalidations}"
    );
    let stream = origin
        .get("/v1/stream?topics=forecasts.**&since=0")
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let mut body = stream.bytes_stream();
    let mut text = String::new();
    while text.matches("event: ForecastUpdated").count() < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut body))
            .await
            .expect("four ForecastUpdated events")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let changes: Vec<(String, String, u64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str::<Value>(data).unwrap())
        .map(|event| {
            let key = format!(
                "{}:{}",
                event["instrument"].as_str().unwrap(),
                event["timeframe"].as_str().unwrap()
            );
            let payload = &event["payload"];
            (
                key,
                payload["change"].as_str().unwrap().to_owned(),
                payload["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("LOG:1h", "written", 1),
        ("LOG:1h", "written", 2),
        ("LOG:1h", "rolled_back", 3),
        ("LOG:1d", "written", 1),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(key, change, version)| ((*key).to_owned(), (*change).to_owned(), *version))
        .collect();
    assert_eq!(changes, expected, "{text}");
    origin.put("LOG", "1h", &forecast(("m", "1"), 4.0)).await;
}
