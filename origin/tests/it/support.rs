//! A real origin on a free loopback port, and helpers to talk to it.

use std::path::Path;

use origin::api::auth::{format_hash, hash_token};
use origin::config::{OriginConfig, TokenConfig};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Configuration for tests: a free port, the embedded store in `dir`, a known admin token.
pub fn config(dir: &Path) -> OriginConfig {
    let mut config = OriginConfig::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.data_dir = dir.to_path_buf();
    config.auth.bootstrap_token = Some(ADMIN_TOKEN.to_owned());
    config
}

pub struct TestOrigin {
    pub base: String,
    pub client: reqwest::Client,
    pub state: origin::api::AppState,
    running: Option<origin::server::Running>,
    _dir: Option<TempDir>,
}

impl TestOrigin {
    /// An origin on the embedded store in a fresh folder.
    pub async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut origin = Self::start(config(dir.path())).await;
        origin._dir = Some(dir);
        origin
    }

    pub async fn start(config: OriginConfig) -> Self {
        let listener = tokio::net::TcpListener::bind(config.http.listen).await.unwrap();
        let running = origin::server::start(&config, listener, std::future::pending())
            .await
            .unwrap();
        Self {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            state: running.state.clone(),
            running: Some(running),
            _dir: None,
        }
    }

    /// An origin for outside tools (a fuzzer, a generated client) to be pointed at: on loopback, and
    /// taking webhook targets in the discard-only prefix only (see [`allow_discard_targets`]).
    pub async fn start_for_tools(mut config: OriginConfig) -> Self {
        allow_discard_targets(&mut config);
        let origin = Self::start(config).await;
        assert!(
            origin.base.starts_with("http://127.0.0.1:"),
            "the origin must listen on loopback: {}",
            origin.base
        );
        origin
    }

    /// Stops the origin; once it has stopped, nothing of it holds the store, so that another origin
    /// can open it.
    pub async fn stop(mut self) {
        let running = self.running.take().expect("a started origin");
        let store = std::sync::Arc::downgrade(self.state.forecasts.store());
        drop(self);
        running.shutdown(std::time::Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.strong_count(), 0, "the stopped origin still holds its store");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// An admin request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN)
    }

    /// Writes `body` as the next version of `instrument`/`timeframe`; panics unless it is stored.
    pub async fn put(&self, instrument: &str, timeframe: &str, body: &Value) -> Value {
        let response = self
            .admin(
                reqwest::Method::PUT,
                &format!("/admin/v1/forecasts/{instrument}/{timeframe}"),
            )
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "write failed with {status}: {value}");
        value
    }
}

/// An origin a test did not stop is stopped in the background.
impl Drop for TestOrigin {
    fn drop(&mut self) {
        if let (Some(running), Ok(runtime)) = (self.running.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(running.shutdown(std::time::Duration::from_secs(1)));
        }
    }
}

/// Webhook targets over https in the discard-only prefix `100::/64` (RFC 6666) only: an endpoint
/// registered at an address literal there (`https://[100::1]/hook`) is accepted without resolving a
/// name, and nothing ever answers there.
pub fn allow_discard_targets(config: &mut OriginConfig) {
    config.webhooks.allowed_targets = vec!["100::/64".to_owned()];
    config.webhooks.allow_http = false;
}

/// A valid forecast body from `model` with value `point`, valid for the next hour.
pub fn forecast(model: (&str, &str), point: f64) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let format = &time::format_description::well_known::Rfc3339;
    json!({
        "horizon": "1h",
        "generated_at": now.format(format).unwrap(),
        "valid_until": (now + time::Duration::hours(1)).format(format).unwrap(),
        "model": {"id": model.0, "version": model.1},
        "point": point,
        "quantiles": {"0.05": point - 5.0, "0.5": point, "0.95": point + 5.0},
        "direction_prob_up": 0.61,
        "metadata": {"features": "ohlcv"}
    })
}

/// An instrument name no other test uses.
pub fn unique_instrument(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id() % 10_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The JSON of an admin GET that must answer 200.
pub async fn admin_get(origin: &TestOrigin, path: &str) -> Value {
    let response = origin.admin(reqwest::Method::GET, path).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// A configured token `name` whose value is `secret`, with `scopes`.
pub fn token(name: &str, secret: &str, scopes: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        hash: format_hash(&hash_token(secret)),
        scopes: scopes.iter().map(|&scope| scope.to_owned()).collect(),
        topics: Vec::new(),
    }
}

/// Asserts the API's error shape and code, and returns the message.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(
        response.status().as_u16(),
        status,
        "unexpected status for expected {code}"
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    message
}

/// `command` with its proxies cleared, so that a tool it runs reaches the loopback origin directly and
/// nothing else.
pub fn without_proxies(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command.env("NO_PROXY", "*");
    for variable in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(variable);
    }
    command
}
