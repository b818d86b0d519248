//! An HTTP/1.1 load generator on keep-alive hyper client connections.
//!
//! [`run`] drives a fixed number of connections, each sending one request at a time, until a
//! deadline or a request count is reached. A generator closure builds each request from its
//! index, so a run can read random keys or write each key once. Latency runs from just before a
//! request is built until its whole response body has arrived.
//!
//! With a rate ([`Plan::at_rate`]) the run is open-loop: request `i` is due `i / rate` seconds
//! after the start, the first connection free then sends it, and its latency runs from when it was
//! due, so that a server falling behind shows as latency rather than as fewer requests.
//!
//! The generator runs on one thread next to the servers it measures, so the per-request path is
//! kept light: two clock reads (the latency timestamps), one timer per connection rather than one
//! per request, and response bodies dropped frame by frame instead of collected.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// Requests and responses as the generator sends and reads them.
pub type Body = Full<Bytes>;

/// Highest latency the histograms track; slower requests are recorded as this value.
const MAX_TRACKED_LATENCY_US: u64 = 60_000_000;
/// Pause before reconnecting after a failed connect, so a dead server is not hammered.
const RECONNECT_DELAY: Duration = Duration::from_millis(10);
/// Timeout of a connect made by [`Connection::open`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one exchange on a [`Connection`]: generous, as a durable write in a debug build on a
/// busy machine may take a while, and the latency figures never depend on it; it only ends a hang.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// With a rate, how long before a request is due the timer hands over to yielding (see
/// [`release_due`]): tokio's timer has millisecond steps.
const SPIN_WINDOW: Duration = Duration::from_millis(2);

/// What one [`run`] does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Connections open at once, each with one request in flight.
    pub connections: usize,
    /// Upper bound of the run: no request starts after it.
    pub duration: Duration,
    /// Stop after this many requests have been started, when given.
    pub requests: Option<u64>,
    /// A request without a response after this long counts as an error and its connection is
    /// replaced.
    pub request_timeout: Duration,
    /// Prefix of the progress lines; `None` prints none.
    pub progress: Option<String>,
    /// Requests per second at fixed intervals (open loop); `None` sends each request as soon as a
    /// connection is free.
    pub rate: Option<f64>,
}

impl Plan {
    /// A run of `connections` for `duration`, with a 10 s request timeout and no progress lines.
    pub fn timed(connections: usize, duration: Duration) -> Self {
        Self {
            connections,
            duration,
            requests: None,
            request_timeout: Duration::from_secs(10),
            progress: None,
            rate: None,
        }
    }

    /// Sends `rate` requests per second at fixed intervals (see the module documentation).
    pub fn at_rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Stops after `requests` requests (still bounded by the duration).
    pub fn with_requests(mut self, requests: u64) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Prints a progress line to stderr every second, starting with `label`.
    pub fn with_progress(mut self, label: impl Into<String>) -> Self {
        self.progress = Some(label.into());
        self
    }
}

/// The outcome of one [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Responses received, whatever their status.
    pub requests: u64,
    /// Responses with a 2xx or 304 status.
    pub ok: u64,
    /// Responses with another status, plus transport errors.
    pub errors: u64,
    /// Failed connects, failed requests and timeouts.
    pub transport_errors: u64,
    /// Connections replaced after the server closed them between requests (not errors).
    pub reconnects: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed_secs: f64,
    /// Responses per second over `elapsed_secs`.
    pub rps: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LoadResult {
    /// How many responses had `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// A GET request for `path` (the Host header is added by [`run`]).
pub fn get(path: &str) -> Result<Request<Body>> {
    Request::get(path)
        .body(Body::default())
        .with_context(|| format!("build GET {path}"))
}

/// A GET request for `uri`, a path built once and cloned per request (the Host header is added
/// by [`run`]).
pub fn get_uri(uri: Uri) -> Request<Body> {
    let mut request = Request::new(Body::default());
    *request.uri_mut() = uri;
    request
}

/// A request with a JSON body and, when `bearer` is given, `Authorization: Bearer <token>`.
pub fn json_request(method: Method, path: &str, body: Bytes, bearer: Option<&str>) -> Result<Request<Body>> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(body))
        .with_context(|| format!("build {method} {path}"))
}

/// Sends one GET for `uri` (`http://HOST:PORT/path`) over a new connection and returns the status.
pub async fn get_status(uri: &Uri) -> Result<StatusCode> {
    Ok(fetch(uri).await?.status())
}

/// Sends one GET for `uri` (`http://HOST:PORT/path`) over a new connection and returns the whole
/// response.
pub async fn fetch(uri: &Uri) -> Result<Response<Bytes>> {
    let authority = uri.authority().with_context(|| format!("{uri} has no host and port"))?;
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    send(authority.as_str(), get(path)?)
        .await
        .with_context(|| format!("GET {uri}"))
}

/// Sends `request`, whose URI is a path, to `authority` (`HOST:PORT`) over a new connection with a
/// Host header, and returns the whole response. Connecting has 1 s, the exchange 10 s.
pub async fn send(authority: &str, request: Request<Body>) -> Result<Response<Bytes>> {
    Connection::open(authority).await?.send(request).await
}

/// One keep-alive connection, for requests sent one after another.
pub struct Connection {
    host: HeaderValue,
    sender: SendRequest<Body>,
}

impl Connection {
    /// Connects to `authority` (`HOST:PORT`), within 1 s.
    pub async fn open(authority: &str) -> Result<Self> {
        let host = HeaderValue::from_str(authority).with_context(|| format!("{authority:?} is no Host header"))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
            .await
            .with_context(|| format!("connect to {authority}: timed out"))?
            .with_context(|| format!("connect to {authority}"))?;
        Ok(Self {
            host,
            sender: handshake(stream).await?,
        })
    }

    /// Sends `request`, whose URI is a path, with a Host header, and returns the whole response,
    /// within 10 s.
    pub async fn send(&mut self, mut request: Request<Body>) -> Result<Response<Bytes>> {
        request.headers_mut().insert(HOST, self.host.clone());
        let exchange = async {
            self.sender.ready().await.context("the connection closed")?;
            let response = self.sender.send_request(request).await.context("send the request")?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.context("read the response body")?.to_bytes();
            anyhow::Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .context("timed out")?
    }
}

/// Runs `plan` against `address`; `generate` builds the request with the given index (0, 1, …).
pub async fn run<G>(address: SocketAddr, plan: &Plan, generate: G) -> Result<LoadResult>
where
    G: Fn(u64) -> Result<Request<Body>> + Send + Sync + 'static,
{
    ensure!(plan.connections > 0, "a load run needs at least one connection");
    if let Some(rate) = plan.rate {
        ensure!(rate.is_finite() && rate > 0.0, "rate {rate} is not a positive number");
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        address,
        host: HeaderValue::from_str(&address.to_string()).context("use the target address as Host header")?,
        generate,
        started,
        pace: plan.rate.map(|rate| Pace {
            rate,
            due: Semaphore::new(0),
        }),
        deadline: started + plan.duration,
        limit: plan.requests,
        request_timeout: plan.request_timeout,
        next_index: AtomicU64::new(0),
        completed: AtomicU64::new(0),
    });

    // Helpers of the connections, stopped when the connections are done.
    let mut progress = JoinSet::new();
    if let Some(label) = &plan.progress {
        progress.spawn(print_progress(label.clone(), Arc::clone(&shared)));
    }
    progress.spawn(release_due(Arc::clone(&shared), plan.connections));
    let mut workers = JoinSet::new();
    for _ in 0..plan.connections {
        workers.spawn(drive_connection(Arc::clone(&shared)));
    }
    let mut total = Tally::new()?;
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a load connection task failed")??;
        total.merge(tally)?;
    }
    let elapsed = started.elapsed();
    progress.abort_all();
    Ok(total.into_result(elapsed))
}

struct Shared<G> {
    address: SocketAddr,
    host: HeaderValue,
    generate: G,
    started: Instant,
    pace: Option<Pace>,
    deadline: Instant,
    limit: Option<u64>,
    request_timeout: Duration,
    /// Index of the next request to start.
    next_index: AtomicU64,
    /// Responses received so far, for progress lines.
    completed: AtomicU64,
}

impl<G> Shared<G> {
    /// The index of the next request and when it is due (`now` without a rate), or `None` when
    /// the run is over.
    fn claim(&self, now: Instant) -> Option<(u64, Instant)> {
        if now >= self.deadline {
            return None;
        }
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|limit| index >= limit) {
            return None;
        }
        let Some(pace) = &self.pace else {
            return Some((index, now));
        };
        let due = self.started + Duration::from_secs_f64(index as f64 / pace.rate);
        (due < self.deadline).then_some((index, due))
    }
}

/// How an open-loop run keeps its rate.
struct Pace {
    /// Requests per second.
    rate: f64,
    /// One permit per request that has fallen due; a connection takes one before each request.
    due: Semaphore,
}

/// With a rate, adds a permit for each request as it falls due, until every request due before
/// the deadline (and within the request limit) is released; then one more for each of the
/// `connections`, whose claims find the run over, so that none waits for the deadline.
///
/// Between requests less than [`SPIN_WINDOW`] apart it yields to the runtime instead of sleeping:
/// a timer rounded to the next millisecond would add up to a millisecond to every latency measured
/// from when requests were due. That keeps this thread busy during such runs.
async fn release_due<G>(shared: Arc<Shared<G>>, connections: usize) {
    let Some(pace) = &shared.pace else {
        return;
    };
    let duration = shared.deadline.saturating_duration_since(shared.started);
    let mut total = (duration.as_secs_f64() * pace.rate).ceil() as u64;
    if let Some(limit) = shared.limit {
        total = total.min(limit);
    }
    let mut released = 0;
    while released < total {
        let elapsed = shared.started.elapsed().as_secs_f64();
        let due = ((elapsed * pace.rate) as u64).saturating_add(1).min(total);
        if due > released {
            pace.due
                .add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
            released = due;
        }
        let next = shared.started + Duration::from_secs_f64(released as f64 / pace.rate);
        match next.checked_duration_since(Instant::now()) {
            Some(wait) if wait > SPIN_WINDOW => tokio::time::sleep_until((next - SPIN_WINDOW).into()).await,
            _ => tokio::task::yield_now().await,
        }
    }
    pace.due.add_permits(connections);
}

/// What one connection saw.
struct Tally {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    reconnects: u64,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
                .context("create a latency histogram")?,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            reconnects: 0,
        })
    }

    fn record(&mut self, status: StatusCode, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        *self.statuses.entry(status.as_u16()).or_default() += 1;
    }

    fn merge(&mut self, other: Self) -> Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merge latency histograms")?;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        self.reconnects += other.reconnects;
        Ok(())
    }

    fn into_result(self, elapsed: Duration) -> LoadResult {
        let requests: u64 = self.statuses.values().sum();
        let ok: u64 = self
            .statuses
            .iter()
            .filter(|&(&status, _)| is_ok(status))
            .map(|(_, count)| count)
            .sum();
        let elapsed_secs = elapsed.as_secs_f64();
        let histogram = &self.latency_us;
        LoadResult {
            requests,
            ok,
            errors: requests - ok + self.transport_errors,
            transport_errors: self.transport_errors,
            reconnects: self.reconnects,
            statuses: self.statuses,
            elapsed_secs,
            rps: if elapsed_secs > 0.0 {
                requests as f64 / elapsed_secs
            } else {
                0.0
            },
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

fn is_ok(status: u16) -> bool {
    (200..300).contains(&status) || status == 304
}

/// An HTTP/1.1 client connection over `stream`, driven by a task of its own.
pub async fn handshake(stream: TcpStream) -> Result<SendRequest<Body>> {
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // A broken connection shows up as an error of the next request on its sender.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn connect(address: SocketAddr) -> Result<SendRequest<Body>> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to {address}"))?;
    handshake(stream).await
}

async fn exchange(sender: &mut SendRequest<Body>, request: Request<Body>) -> Result<StatusCode> {
    let response = sender.send_request(request).await.context("send the request")?;
    let status = response.status();
    drain(response.into_body()).await?;
    Ok(status)
}

/// Reads a response body to its end without keeping it.
async fn drain(mut body: Incoming) -> Result<()> {
    while let Some(frame) = body.frame().await {
        frame.context("read the response body")?;
    }
    Ok(())
}

/// Awaits `exchange` until `limit`; `None` when it did not finish by then.
///
/// `timer` is the connection's one timer, due no later than `limit`. It is only moved (to `limit`)
/// when it fires early, about once per request timeout, rather than registered for every request.
async fn within<T>(
    exchange: impl Future<Output = T>,
    timer: &mut Pin<&mut Sleep>,
    limit: tokio::time::Instant,
) -> Option<T> {
    let mut exchange = pin!(exchange);
    loop {
        tokio::select! {
            biased;
            output = &mut exchange => return Some(output),
            () = timer.as_mut() => {
                if tokio::time::Instant::now() >= limit {
                    return None;
                }
                timer.as_mut().reset(limit);
            }
        }
    }
}

/// Sends requests over one connection at a time, replacing it when it fails, until the run is over.
async fn drive_connection<G>(shared: Arc<Shared<G>>) -> Result<Tally>
where
    G: Fn(u64) -> Result<Request<Body>>,
{
    let mut tally = Tally::new()?;
    let deadline = tokio::time::Instant::from_std(shared.deadline);
    // Never later than the limit of any request to come: see `within`.
    let mut timer = pin!(tokio::time::sleep(shared.request_timeout));
    'connect: while Instant::now() < shared.deadline {
        let mut sender = match tokio::time::timeout_at(deadline, connect(shared.address)).await {
            Ok(Ok(sender)) => sender,
            Ok(Err(_)) => {
                tally.transport_errors += 1;
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
            Err(_) => break,
        };
        loop {
            // A connection the server closed after the previous response is not an error.
            if !sender.is_ready() {
                match tokio::time::timeout(shared.request_timeout, sender.ready()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => {
                        tally.reconnects += 1;
                        continue 'connect;
                    }
                }
            }
            if let Some(pace) = &shared.pace {
                match tokio::time::timeout_at(deadline, pace.due.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) | Err(_) => break 'connect,
                }
            }
            let Some((index, sent)) = shared.claim(Instant::now()) else {
                break 'connect;
            };
            let mut request = (shared.generate)(index)?;
            request.headers_mut().entry(HOST).or_insert_with(|| shared.host.clone());
            let limit = tokio::time::Instant::from_std(sent + shared.request_timeout);
            match within(exchange(&mut sender, request), &mut timer, limit).await {
                Some(Ok(status)) => {
                    tally.record(status, sent.elapsed());
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(_)) | None => {
                    tally.transport_errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    Ok(tally)
}

async fn print_progress<G>(label: String, shared: Arc<Shared<G>>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    let mut previous = (Instant::now(), 0);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let completed = shared.completed.load(Ordering::Relaxed);
        let rate = (completed - previous.1) as f64 / (now - previous.0).as_secs_f64();
        eprintln!("{label}: {completed} requests, {rate:.0}/s");
        previous = (now, completed);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every request on a connection with a fixed `200 ok`, skipping
    /// request bodies announced by Content-Length.
    async fn fixed_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    loop {
                        let mut content_length = 0;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                content_length = value.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; content_length];
                        reader.read_exact(&mut body).await.unwrap();
                        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if write.write_all(response).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn timed_run_counts_responses_and_latencies() {
        let address = fixed_server().await;
        let plan = Plan::timed(4, Duration::from_millis(300));
        let result = run(address, &plan, |index| get(&format!("/item/{}", index % 10)))
            .await
            .unwrap();
        assert!(result.requests > 0);
        assert_eq!(result.ok, result.requests);
        assert_eq!(result.errors, 0);
        assert_eq!(result.count(200), result.requests);
        assert!(result.p50_us <= result.p99_us && result.p99_us <= result.max_us);
        assert!(result.rps > 0.0);
    }

    #[tokio::test]
    async fn counted_run_sends_each_index_once() {
        let address = fixed_server().await;
        let plan = Plan::timed(8, Duration::from_secs(30)).with_requests(100);
        let body = Bytes::from_static(br#"{"point":1.0}"#);
        let result = run(address, &plan, move |index| {
            json_request(Method::PUT, &format!("/admin/{index}"), body.clone(), Some("token"))
        })
        .await
        .unwrap();
        assert_eq!(result.requests, 100);
        assert_eq!(result.count(200), 100);
        assert_eq!(result.errors, 0);
    }

    #[tokio::test]
    async fn unreachable_server_gives_transport_errors_until_the_deadline() {
        let address = SocketAddr::from(([127, 0, 0, 1], crate::launch::free_port().unwrap()));
        let plan = Plan::timed(2, Duration::from_millis(100));
        let result = run(address, &plan, |_| get("/")).await.unwrap();
        assert_eq!(result.requests, 0);
        assert!(result.transport_errors > 0);
        assert_eq!(result.errors, result.transport_errors);
    }

    #[tokio::test]
    async fn requests_without_an_answer_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Accepts connections and never answers.
        tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
            }
        });
        // Each request times out after 100 ms, not at the end of the run.
        let mut plan = Plan::timed(1, Duration::from_secs(1));
        plan.request_timeout = Duration::from_millis(100);
        let started = Instant::now();
        let result = run(address, &plan, |_| get("/")).await.unwrap();
        assert_eq!(result.requests, 0);
        assert!(result.transport_errors >= 5, "{} timeouts", result.transport_errors);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn generator_errors_end_the_run() {
        let address = fixed_server().await;
        let plan = Plan::timed(1, Duration::from_secs(5));
        let result = run(address, &plan, |_| get("not a path")).await;
        assert!(result.is_err());
    }

    #[test]
    fn a_rate_spaces_requests_until_the_deadline() {
        let started = Instant::now();
        let shared = Shared {
            address: SocketAddr::from(([127, 0, 0, 1], 1)),
            host: HeaderValue::from_static("127.0.0.1:1"),
            generate: (),
            started,
            pace: Some(Pace {
                rate: 4.0,
                due: Semaphore::new(0),
            }),
            deadline: started + Duration::from_secs(1),
            limit: None,
            request_timeout: Duration::from_secs(1),
            next_index: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        };
        let claims: Vec<_> = std::iter::from_fn(|| shared.claim(started)).collect();
        let due = |millis| started + Duration::from_millis(millis);
        assert_eq!(claims, [(0, due(0)), (1, due(250)), (2, due(500)), (3, due(750))]);
        assert_eq!(shared.claim(due(1000)), None);
    }

    #[tokio::test]
    async fn a_rated_run_sends_what_is_due_within_the_duration() {
        let address = fixed_server().await;
        let plan = Plan::timed(4, Duration::from_secs(30))
            .with_requests(20)
            .at_rate(1000.0);
        let result = run(address, &plan, |_| get("/")).await.unwrap();
        assert_eq!(result.requests, 20);
        assert_eq!(result.errors, 0);
        assert!(result.p50_us <= result.p99_us && result.p99_us <= result.p999_us);
    }

    #[tokio::test]
    async fn fetch_returns_headers_and_body() {
        let address = fixed_server().await;
        let uri: Uri = format!("http://{address}/item").parse().unwrap();
        let response = fetch(&uri).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-length"], "2");
        assert_eq!(response.body().as_ref(), b"ok");
    }

    #[tokio::test]
    async fn get_status_reads_the_status() {
        let address = fixed_server().await;
        let uri: Uri = format!("http://{address}/readyz").parse().unwrap();
        assert_eq!(get_status(&uri).await.unwrap(), StatusCode::OK);
    }
}
