//! What the edge tests share: the real `edge` binary on free loopback ports, a scripted origin whose
//! answers each test sets, the real origin in-process, and bounded waits.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method};
use loadtest::launch::{ChildProcess, free_port, wait_ready};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(50);
/// An edge started on a port found free a moment earlier may lose it to another test in between.
const START_ATTEMPTS: usize = 3;

/// Calls `attempt` until it returns `Some`, every 50 ms for at most [`WAIT`]; panics naming `what`
/// when it never does.
pub async fn eventually<T>(what: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What the scripted origin answers to a path.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Duration,
    /// Sends only this many body bytes after announcing the whole length, then drops the connection.
    cut_after: Option<usize>,
    /// Answers with the request's value of this header as the body.
    echo: Option<String>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            cut_after: None,
            echo: None,
        }
    }

    /// A 200 with `body` and this `Cache-Control`.
    pub fn cached(body: impl Into<Bytes>, cache_control: &str) -> Self {
        Self::new(200, body).header("cache-control", cache_control)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Announces the whole body in `Content-Length`, sends `bytes` of it and drops the connection.
    pub fn cut_after(mut self, bytes: usize) -> Self {
        self.cut_after = Some(bytes);
        self
    }

    /// Answers with the value of the request header `name` as the body.
    pub fn echo(mut self, name: &str) -> Self {
        self.echo = Some(name.to_owned());
        self
    }

    fn etag(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("etag"))
            .map(|(_, value)| value.as_str())
    }
}

/// A request the scripted origin received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Script {
    /// Replies by method (`None`: any method) and path with query.
    replies: HashMap<(Option<Method>, String), Reply>,
    /// Requests received, by path with query.
    requests: HashMap<String, Vec<Recorded>>,
}

type SharedScript = Arc<Mutex<Script>>;

/// A real HTTP server on a free port whose answers tests set per path. It answers `If-None-Match`
/// naming the reply's `ETag` with 304, and 404 for paths it has no reply for.
pub struct ScriptedOrigin {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    script: SharedScript,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl ScriptedOrigin {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = SharedScript::default();
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            url,
            script,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Answers every method on `path` (with its query) with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.script().replies.insert((None, path.to_owned()), reply);
    }

    /// Answers `method` on `path` with `reply`, before what [`ScriptedOrigin::set`] gave for it.
    pub fn set_for(&self, method: Method, path: &str, reply: Reply) {
        self.script().replies.insert((Some(method), path.to_owned()), reply);
    }

    /// The requests received for `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.script().requests.get(path).cloned().unwrap_or_default()
    }

    /// How many requests of any method `path` received.
    pub fn count(&self, path: &str) -> usize {
        self.script().requests.get(path).map_or(0, Vec::len)
    }

    /// How many GET requests `path` received.
    pub fn gets(&self, path: &str) -> usize {
        self.requests(path)
            .iter()
            .filter(|request| request.method == Method::GET)
            .count()
    }

    /// Stops listening and closes idle connections, so the next connection attempt is refused.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the scripted origin stops")
                .unwrap()
                .unwrap();
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn answer(State(script): State<SharedScript>, request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let method = request.method().clone();
    let headers = request.headers().clone();
    let reply = {
        let mut script = script.lock().unwrap();
        script.requests.entry(path.clone()).or_default().push(Recorded {
            method: method.clone(),
            headers: headers.clone(),
        });
        let exact = script.replies.get(&(Some(method), path.clone()));
        exact.or_else(|| script.replies.get(&(None, path))).cloned()
    };
    let Some(reply) = reply else {
        return Response::builder()
            .status(404)
            .header("cache-control", "no-store")
            .body(Body::from("no reply scripted"))
            .unwrap();
    };
    tokio::time::sleep(reply.delay).await;

    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let not_modified = reply.etag().is_some_and(|etag| {
        headers
            .get_all(http::header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|candidate| candidate.trim() == etag || candidate.trim() == "*")
    });
    if not_modified {
        return response.status(304).body(Body::empty()).unwrap();
    }
    let body = match &reply.echo {
        Some(name) => Bytes::copy_from_slice(headers.get(name.as_str()).map_or(&b""[..], |value| value.as_bytes())),
        None => reply.body.clone(),
    };
    let body = match reply.cut_after {
        Some(cut) => {
            response = response.header(http::header::CONTENT_LENGTH, body.len());
            let parts: Vec<std::io::Result<Bytes>> = vec![
                Ok(body.slice(..cut.min(body.len()))),
                Err(std::io::Error::other("the script cuts the body here")),
            ];
            Body::from_stream(futures::stream::iter(parts))
        }
        None => Body::from(body),
    };
    response.body(body).unwrap()
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// The `Cache-Status` header, `""` when absent.
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    /// Whether this is a fresh hit: `Cache-Status` says hit with no detail (stale answers have one).
    pub fn is_hit(&self) -> bool {
        self.cache_status().starts_with("edge; hit;") && !self.cache_status().contains("detail=")
    }

    /// The `ttl` of `Cache-Status` (RFC 9211).
    pub fn ttl(&self) -> i64 {
        let status = self.cache_status();
        let ttl = status
            .split(';')
            .find_map(|part| part.trim().strip_prefix("ttl="))
            .unwrap_or_else(|| panic!("no ttl in Cache-Status {status:?}"));
        ttl.parse().unwrap()
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// Sends `request` and reads the whole response; panics if the exchange fails.
pub async fn fetch(request: reqwest::RequestBuilder) -> Fetched {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    Fetched { status, headers, body }
}

/// A client that ignores proxy settings of the environment: every test talks to loopback directly.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The real `edge` binary on free loopback ports, killed when dropped.
pub struct Edge {
    pub process: ChildProcess,
    /// `http://127.0.0.1:PORT` of the proxy.
    pub base: String,
    /// `http://127.0.0.1:PORT` of `/metrics` and `/healthz`.
    pub operations: String,
    client: reqwest::Client,
}

impl Edge {
    /// An edge in front of `upstream`, configured by the default file plus `env` (`EDGE_*` pairs).
    pub async fn start(upstream: &str, env: &[(&str, &str)]) -> Self {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(upstream, env).await {
                Ok(edge) => return edge,
                Err(error) => errors.push(format!("{error:#}")),
            }
        }
        panic!("the edge did not start: {}", errors.join("\n---\n"));
    }

    async fn try_start(upstream: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let operations = format!("127.0.0.1:{}", free_port()?);
        let mut command = edge_command();
        command
            .env("EDGE_HTTP__LISTEN", &listen)
            .env("EDGE_METRICS__LISTEN", &operations)
            .env("EDGE_UPSTREAM__URL", upstream);
        command.envs(env.iter().copied());
        let mut process = ChildProcess::spawn("edge", command)?;
        let operations = format!("http://{operations}");
        wait_ready(&mut process, &format!("{operations}/healthz"), WAIT).await?;
        // The proxy service binds its listener on its own runtime, maybe after the operations one.
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(&listen).await.is_err() {
            if let Some(status) = process.try_wait()? {
                bail!("the edge exited with {status}{}", process.log_excerpt());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the edge never listened on {listen}{}", process.log_excerpt());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Self {
            process,
            base: format!("http://{listen}"),
            operations,
            client: client(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Fetched {
        fetch(self.request(Method::GET, path)).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.operations))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// The value of one series of `/metrics`, such as `edge_cache_requests_total{status="hit"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }

    /// The edge's whole log so far (JSON lines). Tests that read it need the log file, so they do not
    /// work with `LOADTEST_VERBOSE=1`, which sends the output to the terminal instead.
    pub fn log(&self) -> String {
        let path = self.process.log_path().expect("the edge's output goes to a log file");
        std::fs::read_to_string(path).unwrap()
    }
}

/// The edge binary with the shipped defaults, JSON logs at the default level, and no `EDGE_*`
/// variable inherited from the environment of the tests.
pub fn edge_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edge"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EDGE_") {
            command.env_remove(name);
        }
    }
    command
        .args(["--config", concat!(env!("CARGO_MANIFEST_DIR"), "/../config/edge.toml")])
        .env_remove("RUST_LOG")
        .env("EDGE_LOG__FORMAT", "json");
    command
}

/// `len` random bytes: a body that does not compress.
pub fn random_bytes(len: usize) -> Bytes {
    (0..len).map(|_| rand::random::<u8>()).collect::<Vec<u8>>().into()
}

/// `len` random bytes as `2 * len` hex digits: a cache key for a key file, or a unique marker.
pub fn random_hex(len: usize) -> String {
    hex::encode(random_bytes(len))
}

/// Writes `keys` one per line to `path`, replacing the file in one step so a reload never reads half.
pub fn write_key_file(path: &Path, keys: &[&str]) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, keys.join("\n") + "\n").unwrap();
    std::fs::rename(&staging, path).unwrap();
}

pub const ADMIN_TOKEN: &str = "edge-test-admin-token";

/// The real origin (`origin::server::start`) in this process, on the embedded store in a fresh folder.
pub struct RealOrigin {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Its control plane, when started with one.
    pub control: Option<origin::control::ControlPlane>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl RealOrigin {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// An origin whose control plane listens on a free UDP port with the certificates of `pki`.
    pub async fn with_control_plane(pki: &crate::control_origin::Pki) -> Self {
        Self::with_control_plane_on(pki, None).await
    }

    /// The same, storing in the Redis at `redis_url` when given (several origins can share it).
    pub async fn with_control_plane_on(pki: &crate::control_origin::Pki, redis_url: Option<String>) -> Self {
        Self::with_control_plane_and(pki, redis_url, |_| {}).await
    }

    /// The same, with more settings.
    pub async fn with_control_plane_and(
        pki: &crate::control_origin::Pki,
        redis_url: Option<String>,
        adjust: impl FnOnce(&mut origin::config::OriginConfig),
    ) -> Self {
        Self::start_with(|config| {
            config.quic.listen = Some("127.0.0.1:0".parse().unwrap());
            config.quic.heartbeat_interval = std::time::Duration::from_millis(200);
            config.quic.poll_interval = std::time::Duration::from_millis(20);
            config.tls = pki.origin_tls();
            config.storage.redis_url = redis_url;
            adjust(config);
        })
        .await
    }

    async fn start_with(adjust: impl FnOnce(&mut origin::config::OriginConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = origin::config::OriginConfig::default();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.data_dir = dir.path().to_path_buf();
        config.auth.bootstrap_token = Some(ADMIN_TOKEN.to_owned());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind(config.http.listen).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = origin::server::start(&config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        Self {
            url: format!("http://{}", running.addr),
            control: running.control,
            client: client(),
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// Writes a forecast valid for the next hour as the next version of `instrument`/`timeframe`;
    /// returns the new version's ETag.
    pub async fn put_forecast(&self, instrument: &str, timeframe: &str, point: f64) -> String {
        let request = self
            .client
            .put(format!("{}/admin/v1/forecasts/{instrument}/{timeframe}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&forecast(point));
        let written = fetch(request).await;
        assert!(
            written.status < 300,
            "write failed with {}: {}",
            written.status,
            written.text()
        );
        written
            .header("etag")
            .expect("a write answers with the ETag")
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> Fetched {
        fetch(self.client.get(format!("{}{path}", self.url))).await
    }

    /// A read of the admin API with the admin token.
    pub async fn admin_get(&self, path: &str) -> Fetched {
        fetch(self.client.get(format!("{}{path}", self.url)).bearer_auth(ADMIN_TOKEN)).await
    }

    /// A JSON request to the admin API with the admin token.
    pub async fn admin_post(&self, path: &str, body: &Value) -> Fetched {
        let request = self.client.post(format!("{}{path}", self.url));
        fetch(request.bearer_auth(ADMIN_TOKEN).json(body)).await
    }
}

impl Drop for RealOrigin {
    fn drop(&mut self) {
        if let Some(control) = &self.control {
            control.close();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A valid forecast body with value `point`, valid for the next hour.
fn forecast(point: f64) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let format = &time::format_description::well_known::Rfc3339;
    json!({
        "horizon": "1h",
        "generated_at": now.format(format).unwrap(),
        "valid_until": (now + time::Duration::hours(1)).format(format).unwrap(),
        "model": {"id": "lstm", "version": "3.2.0"},
        "point": point,
        "quantiles": {"0.05": point - 5.0, "0.5": point, "0.95": point + 5.0},
        "direction_prob_up": 0.61
    })
}
