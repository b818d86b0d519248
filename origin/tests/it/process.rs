//! The real `origin` binary: configuration layers, the generated admin token, SIGTERM.

use std::process::Command;
use std::time::Duration;

use loadtest::launch::{ChildProcess, free_port, wait_http_ok};

use crate::support::forecast;

pub(crate) struct Binary {
    pub(crate) process: ChildProcess,
    pub(crate) base: String,
}

/// The origin binary on a free port with the shipped config file, the embedded store in `data_dir`,
/// and `extra_env` on top.
pub(crate) fn start(data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Binary {
    let port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_origin"));
    let config_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/origin.toml");
    command
        .args(["--config", config_file])
        .env("ORIGIN_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("ORIGIN_STORAGE__DATA_DIR", data_dir)
        .env("ORIGIN_STORAGE__REDIS_URL", "")
        .env("ORIGIN_LOG__FORMAT", "json")
        .env_remove("ORIGIN_AUTH__BOOTSTRAP_TOKEN");
    for (name, value) in extra_env {
        command.env(name, value);
    }
    Binary {
        process: ChildProcess::spawn("origin", command).unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    }
}

impl Binary {
    pub(crate) async fn ready(&self) {
        if let Err(error) = wait_http_ok(&format!("{}/readyz", self.base), Duration::from_secs(20)).await {
            panic!("origin did not become ready: {error:#}{}", self.process.log_excerpt());
        }
    }

    fn generated_token(&self) -> Option<String> {
        let log = self.process.log_tail(200);
        let start = log.find("ft_")?;
        Some(
            log[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        )
    }

    async fn put(&self, token: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .put(format!("{}/admin/v1/forecasts/BIN/1h", self.base))
            .bearer_auth(token)
            .json(&forecast(("m", "1"), 1.0))
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_token_is_shown_once_and_sigterm_stops_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), &[]);
    first.ready().await;
    let token = first
        .generated_token()
        .expect("the first start prints a generated token");
    assert_eq!(first.put(&token).await, 201);
    assert_eq!(first.put("ft_wrong").await, 401);
    let status = first.process.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "SIGTERM ended the origin with {status}");

    let second = start(dir.path(), &[]);
    second.ready().await;
    assert_eq!(second.generated_token(), None, "a second start printed a new token");
    assert_eq!(
        second.put(&token).await,
        200,
        "the generated token no longer works after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let origin = start(
        dir.path(),
        &[
            ("ORIGIN_AUTH__BOOTSTRAP_TOKEN", "env-token"),
            ("ORIGIN_AUTH__PUBLIC_READS", "false"),
        ],
    );
    origin.ready().await;
    assert_eq!(origin.generated_token(), None, "a bootstrap token was configured");
    assert_eq!(origin.put("env-token").await, 201);
    let anonymous = reqwest::get(format!("{}/v1/forecasts/BIN/1h", origin.base))
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "public_reads=false from the environment was ignored"
    );
}

#[test]
fn a_bad_config_is_refused_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_origin"))
        .env("ORIGIN_HTTP__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.to_lowercase().contains("http.listen"),
        "the error does not name the key: {stderr}"
    );
}

/// SIGKILL while deliveries are in flight and retries are queued: after a restart on the same store,
/// every message reaches the receiver at least once (the same `webhook-id` when twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_a_sigkill_mid_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = crate::webhooks::Receiver::start().await;
    let env = [
        ("ORIGIN_AUTH__BOOTSTRAP_TOKEN", "kill-token"),
        ("ORIGIN_WEBHOOKS__ALLOWED_TARGETS", "127.0.0.1"),
        ("ORIGIN_WEBHOOKS__ALLOW_HTTP", "true"),
        ("ORIGIN_WEBHOOKS__RETRY_SCHEDULE", "0s,300ms,300ms,300ms,300ms,300ms"),
    ];
    let mut first = start(dir.path(), &env);
    first.ready().await;
    let client = reqwest::Client::new();
    let admin = |path: &str| client.post(format!("{}{path}", first.base)).bearer_auth("kill-token");
    let created: serde_json::Value = admin("/admin/v1/webhooks")
        .json(&serde_json::json!({"url": receiver.url, "topics": ["indicators.**"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["id"].is_string(), "{created}");
    // The first answers fail, so retries are queued when the origin dies.
    for _ in 0..30 {
        receiver.answer(503, Vec::new());
    }
    let events: Vec<serde_json::Value> = (0..50)
        .map(|n| {
            serde_json::json!({
                "topic": "indicators.AAPL.rsi14", "type": "TechnicalIndicatorComputed", "instrument": "AAPL",
                "payload": {"indicator": "rsi", "period": 14, "value": n, "computed_at": "2026-11-23T14:00:00Z"},
            })
        })
        .collect();
    let published: serde_json::Value = admin("/admin/v1/events:batch")
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = published["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("msg_{}", r["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(ids.len(), 50);
    receiver.wait_for(20).await;
    first.process.kill().unwrap();

    let second = start(dir.path(), &env);
    second.ready().await;
    let arrivals = receiver.wait_delivered(&ids, Duration::from_secs(30)).await;
    assert!(
        arrivals.keys().all(|id| ids.contains(id)),
        "an unknown message arrived: {arrivals:?}"
    );
}

/// A write is stored, its announcement cannot be (the logs refuse appends), and the origin is killed
/// before it could try again: the next origin on the same Redis announces the change, with exactly one
/// `ForecastUpdated` event for each stored version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stored_before_a_sigkill_is_announced_by_the_next_origin() {
    let redis = loadtest::launch::RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let env = [
        ("ORIGIN_AUTH__BOOTSTRAP_TOKEN", "kill-token"),
        ("ORIGIN_STORAGE__REDIS_URL", url.as_str()),
    ];
    let first = start(dir.path(), &env);
    first.ready().await;
    assert_eq!(first.put("kill-token").await, 201);
    let acl = |keys: &[&str]| {
        let mut args = vec!["ACL", "SETUSER", "default", "resetkeys"];
        args.extend_from_slice(keys);
        loadtest::launch::redis_command(redis.port(), &args).unwrap();
    };
    acl(&["~fc:*", "~model:*", "~audit", "~auth:*", "~changes:*"]);
    assert_eq!(first.put("kill-token").await, 503, "stored, not announced");
    let mut first = first;
    first.process.kill().unwrap();
    acl(&["allkeys"]);

    let second = start(dir.path(), &env);
    second.ready().await;
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let versions = loop {
        let stream = client
            .get(format!("{}/v1/stream?topics=forecasts.**&since=0", second.base))
            .bearer_auth("kill-token")
            .send()
            .await
            .unwrap();
        let mut body = stream.bytes_stream();
        let mut text = String::new();
        // The replay comes in the first chunks; a moment without more ends the look.
        while let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut body)).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let versions: Vec<u64> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str::<serde_json::Value>(data).unwrap())
            .map(|event| event["payload"]["version"].as_u64().unwrap())
            .collect();
        if versions.len() >= 2 || std::time::Instant::now() > deadline {
            break versions;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(versions, [1, 2], "one event per stored version");
}

/// The admin token generated at first start is a token like the others: revoked, it stays revoked
/// across restarts, and no new one is generated in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_admin_token_can_be_revoked_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &[]);
    first.ready().await;
    let generated = first
        .generated_token()
        .expect("the first start prints a generated token");
    let client = reqwest::Client::new();
    let made: serde_json::Value = client
        .post(format!("{}/admin/v1/tokens", first.base))
        .bearer_auth(&generated)
        .json(&serde_json::json!({"name": "successor", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let successor = made["secret"].as_str().unwrap().to_owned();
    let revoked = client
        .delete(format!("{}/admin/v1/tokens/generated-admin", first.base))
        .bearer_auth(&successor)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(first.put(&generated).await, 401);
    let mut first = first;
    first.process.terminate(Duration::from_secs(10)).unwrap();

    let second = start(dir.path(), &[]);
    second.ready().await;
    assert_eq!(
        second.generated_token(),
        None,
        "a revoked generated token is not replaced"
    );
    assert_eq!(second.put(&generated).await, 401);
    assert_eq!(second.put(&successor).await, 201);
}
