//! `loadtest sse`: event fan-out over Server-Sent Events, the origin beside nginx + nchan.
//!
//! For each scenario (subscribers × events per second) and each server, loadtest opens the
//! subscribers' streams, publishes at the rate for the duration, and records for every event every
//! subscriber receives the time from its publication (each event carries, as `value`, the
//! microseconds since the run started at which it was published; receivers read it back from the
//! raw stream). Deliveries per second count what subscribers received. The server runs on CPU 0,
//! loadtest (subscribers and publisher, one thread) on CPU 1.
//!
//! The origin's publisher sends a tick's events as one batch (`POST /admin/v1/events:batch`, one
//! durable append); nchan takes one message per POST (kept in memory, not durable), sent one after
//! another on one connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::http::{self, Body, Connection};
use crate::launch::{self, ChildProcess, Pinning};
use crate::measure::Machine;
use crate::peers::{self, Peer};

/// Publications per second are sent in ticks of this length.
const TICK: Duration = Duration::from_millis(10);
/// Events published before this are not counted: streams settle.
pub(crate) const WARM_UP: Duration = Duration::from_secs(2);
/// Time given to the last events to arrive after publishing stops.
const DRAIN: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Subscribers connecting at once while streams are opened.
const CONNECT_BATCH: usize = 200;
/// The topic every event of a run is published on.
pub(crate) const TOPIC: &str = "bench.load";

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Origin,
    Nchan,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Server::Origin => "origin",
            Server::Nchan => "nchan",
        })
    }
}

/// Subscribers and events per second of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    pub subscribers: usize,
    pub rate: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub origin_bin: PathBuf,
    pub servers: Vec<Server>,
    pub scenarios: Vec<Scenario>,
    pub duration: Duration,
    pub pinning: Option<Pinning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub server: Server,
    pub scenario: Scenario,
    /// Events published during the counted time.
    pub published: u64,
    /// Events published per second during the counted time (below the rate when publishing could not
    /// keep up: nchan takes one event per request).
    pub published_per_s: f64,
    /// Events published in the counted time that subscribers received, per second of the time they
    /// took to arrive (the counted time, or longer when they arrived late).
    pub deliveries_per_s: f64,
    /// Deliveries expected (published × subscribers) that did not arrive by the end of the drain.
    pub missing: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Subscribers whose stream ended during the run.
    pub streams_ended: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub duration_s: f64,
    pub measurements: Vec<Measurement>,
    /// Servers not measured, and why.
    pub skipped: Vec<String>,
}

/// Runs every scenario against every server available.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    let mut measurements = Vec::new();
    let mut skipped = Vec::new();
    let nginx = launch::find_on_path("nginx");
    for &server in &settings.servers {
        if server == Server::Nchan && !nchan_installed(nginx.as_deref()) {
            skipped.push("nchan: nginx or libnginx-mod-nchan is not installed".to_owned());
            continue;
        }
        for &scenario in &settings.scenarios {
            eprintln!(
                "{server}: {} subscribers × {} events/s",
                scenario.subscribers, scenario.rate
            );
            let target = Target::start(server, settings, nginx.as_deref()).await?;
            let measured = measure(&target, server, scenario, settings.duration).await?;
            eprintln!(
                "  {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, {} missing",
                measured.deliveries_per_s, measured.p50_ms, measured.p99_ms, measured.missing
            );
            measurements.push(measured);
        }
    }
    Ok(Report {
        machine: Machine::describe(nproc, settings.pinning, &[]),
        duration_s: settings.duration.as_secs_f64(),
        measurements,
        skipped,
    })
}

fn nchan_installed(nginx: Option<&Path>) -> bool {
    nginx.is_some() && Path::new(NCHAN_MODULE).is_file()
}

const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// A server under test, stopped when dropped.
enum Target {
    Origin {
        address: SocketAddr,
        token: String,
        _process: ChildProcess,
        _data: TempDir,
    },
    Nchan {
        address: SocketAddr,
        _peer: Peer,
    },
}

impl Target {
    async fn start(server: Server, settings: &Settings, nginx: Option<&Path>) -> Result<Self> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));
        let cpu = Pinning::server_cpu(settings.pinning);
        match server {
            Server::Origin => {
                ensure!(
                    settings.origin_bin.is_file(),
                    "origin executable {} not found: build it with `cargo build --release -p origin`",
                    settings.origin_bin.display()
                );
                let data = tempfile::Builder::new().prefix("loadtest-sse-").tempdir()?;
                let token = crate::origin_throughput::random_token();
                let mut command = launch::command_on_cpu(&settings.origin_bin, cpu);
                launch::remove_env_prefixed(&mut command, "ORIGIN_");
                crate::origin_throughput::configure(&mut command, address, None, data.path(), Some(&token), None);
                command
                    .env("ORIGIN_EVENTS__ANONYMOUS_TOPICS", "bench.**")
                    .env("RUST_LOG", "warn");
                let mut process = ChildProcess::spawn("origin", command)?;
                launch::wait_ready(&mut process, &format!("http://{address}/readyz"), READY_TIMEOUT).await?;
                Ok(Self::Origin {
                    address,
                    token,
                    _process: process,
                    _data: data,
                })
            }
            Server::Nchan => {
                let nginx = nginx.context("nginx is not installed")?;
                let peer = peers::start_nchan(nginx, NCHAN_MODULE, address, cpu)?;
                launch::wait_http_ok(&format!("http://{address}/healthz"), READY_TIMEOUT).await?;
                Ok(Self::Nchan { address, _peer: peer })
            }
        }
    }

    fn address(&self) -> SocketAddr {
        match self {
            Self::Origin { address, .. } | Self::Nchan { address, .. } => *address,
        }
    }

    fn stream_path(&self) -> String {
        match self {
            Self::Origin { .. } => format!("/v1/stream?topics={TOPIC}"),
            Self::Nchan { .. } => "/sub".to_owned(),
        }
    }

    /// Publishes `values` (microseconds since the run's start) as events, in one go where the server
    /// takes batches.
    async fn publish(&self, connection: &mut Connection, values: &[u64], end: Instant) -> Result<usize> {
        match self {
            Self::Origin { token, .. } => {
                publish_batch(connection, token, values).await?;
                Ok(values.len())
            }
            Self::Nchan { .. } => {
                let mut sent = 0;
                for &value in values {
                    if Instant::now() >= end {
                        break;
                    }
                    let body = serde_json::to_vec(&event(value))?;
                    let request = http::json_request(Method::POST, "/pub", body.into(), None)?;
                    let response = connection.send(request).await?;
                    ensure!(
                        response.status().is_success(),
                        "publishing answered {}",
                        response.status()
                    );
                    sent += 1;
                }
                Ok(sent)
            }
        }
    }
}

/// Publishes `values` to the origin as one batch of events (one durable append).
pub(crate) async fn publish_batch(connection: &mut Connection, token: &str, values: &[u64]) -> Result<()> {
    let events: Vec<serde_json::Value> = values.iter().map(|&value| event(value)).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "events": events }))?;
    let request = http::json_request(Method::POST, "/admin/v1/events:batch", body.into(), Some(token))?;
    let response = connection.send(request).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "publishing answered {}",
        response.status()
    );
    Ok(())
}

/// Where events are published.
pub(crate) trait Publisher {
    /// Publishes one event per value; answers how many were taken before `end`.
    async fn publish(&mut self, values: &[u64], end: Instant) -> Result<usize>;
}

/// The origin's batch API over one connection.
pub(crate) struct OriginPublisher {
    pub(crate) connection: Connection,
    pub(crate) token: String,
}

impl Publisher for OriginPublisher {
    async fn publish(&mut self, values: &[u64], _end: Instant) -> Result<usize> {
        publish_batch(&mut self.connection, &self.token, values).await?;
        Ok(values.len())
    }
}

/// A server under test and a connection to it.
struct TargetPublisher<'a> {
    target: &'a Target,
    connection: Connection,
}

impl Publisher for TargetPublisher<'_> {
    async fn publish(&mut self, values: &[u64], end: Instant) -> Result<usize> {
        self.target.publish(&mut self.connection, values, end).await
    }
}

/// Publishes at `rate` events per second until `end`, each tick's due events in one call, each
/// carrying as value the microseconds since `started` at which it was sent; paced by the clock, not
/// by ticks, so that a late tick publishes what is due and the rate holds. Answers how many were
/// published in all and how many within `window`.
pub(crate) async fn publish_paced(
    publisher: &mut impl Publisher,
    rate: u32,
    started: Instant,
    end: Instant,
    window: &Window,
) -> Result<(u64, u64)> {
    let publishing = Instant::now();
    let (mut sent, mut counted) = (0u64, 0u64);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        let due = (publishing.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        let count = due.saturating_sub(sent) as usize;
        if count == 0 {
            continue;
        }
        let now = started.elapsed().as_micros() as u64;
        let done = publisher.publish(&vec![now; count], end).await? as u64;
        sent += done;
        if window.contains(now) {
            counted += done;
        }
    }
    Ok((sent, counted))
}

/// The event published: an indicator whose value is the instant of publication.
fn event(value: u64) -> serde_json::Value {
    serde_json::json!({
        "topic": TOPIC, "type": "TechnicalIndicatorComputed", "instrument": "BENCH", "timeframe": "1m",
        "payload": {"indicator": "bench", "value": value, "computed_at": "2026-11-23T14:00:00Z"}
    })
}

/// The counted window, in microseconds since the run's start: events published within it count.
#[derive(Default)]
pub(crate) struct Window {
    from: AtomicU64,
    until: AtomicU64,
}

impl Window {
    /// From `from` for `length`, both measured from `started`.
    pub(crate) fn set(&self, started: Instant, from: Instant, length: Duration) {
        let micros = |at: Instant| at.duration_since(started).as_micros() as u64;
        self.from.store(micros(from), Ordering::Relaxed);
        self.until.store(micros(from + length), Ordering::Relaxed);
    }

    pub(crate) fn contains(&self, value: u64) -> bool {
        (self.from.load(Ordering::Relaxed)..self.until.load(Ordering::Relaxed)).contains(&value)
    }

    /// `count` arrivals per second over the time they took: from the window's start to `last_at`
    /// (microseconds since the run's start), or the window's length when they came within it.
    pub(crate) fn per_second(&self, count: u64, last_at: u64) -> f64 {
        let from = self.from.load(Ordering::Relaxed);
        let span = last_at.max(self.until.load(Ordering::Relaxed)).saturating_sub(from);
        count as f64 / Duration::from_micros(span).as_secs_f64()
    }
}

/// What one subscriber saw in the counted window.
struct Received {
    latencies: Histogram<u64>,
    deliveries: u64,
    /// When the last counted event arrived, in microseconds since the run's start.
    last_at: u64,
    ended: bool,
}

async fn measure(target: &Target, server: Server, scenario: Scenario, duration: Duration) -> Result<Measurement> {
    let started = Instant::now();
    let window = Arc::new(Window::default());
    let (stop, stopped) = watch::channel(false);
    let mut subscribers = Vec::with_capacity(scenario.subscribers);
    let path = target.stream_path();
    for chunk_start in (0..scenario.subscribers).step_by(CONNECT_BATCH) {
        let count = CONNECT_BATCH.min(scenario.subscribers - chunk_start);
        let opening: Vec<_> = (0..count)
            .map(|_| tokio::spawn(open_stream(target.address(), path.clone())))
            .collect();
        for body in opening {
            let body = body.await.context("a subscriber task failed")??;
            let latencies = Histogram::<u64>::new(3)?;
            subscribers.push(tokio::spawn(follow(
                body,
                started,
                window.clone(),
                stopped.clone(),
                latencies,
            )));
        }
    }
    let publishing = Instant::now();
    window.set(started, publishing + WARM_UP, duration);
    let mut publisher = TargetPublisher {
        target,
        connection: Connection::open(&target.address().to_string()).await?,
    };
    let end = publishing + WARM_UP + duration;
    let (_, published) = publish_paced(&mut publisher, scenario.rate, started, end, &window).await?;
    tokio::time::sleep(DRAIN).await;
    stop.send_replace(true);
    let mut latencies = Histogram::<u64>::new(3)?;
    let (mut deliveries, mut ended, mut last_at) = (0u64, 0usize, 0u64);
    for subscriber in subscribers {
        let received = subscriber.await.context("a subscriber task failed")?;
        latencies.add(&received.latencies)?;
        deliveries += received.deliveries;
        ended += usize::from(received.ended);
        last_at = last_at.max(received.last_at);
    }
    ensure!(published > 0, "nothing was published in the counted time");
    let millis = |micros: u64| micros as f64 / 1000.0;
    Ok(Measurement {
        server,
        scenario,
        published,
        published_per_s: published as f64 / duration.as_secs_f64(),
        deliveries_per_s: window.per_second(deliveries, last_at),
        missing: (published * scenario.subscribers as u64).saturating_sub(deliveries),
        p50_ms: millis(latencies.value_at_quantile(0.5)),
        p99_ms: millis(latencies.value_at_quantile(0.99)),
        max_ms: millis(latencies.max()),
        streams_ended: ended,
    })
}

type StreamBody = hyper::body::Incoming;

/// Opens one stream; answers its body once the server has answered 200.
async fn open_stream(address: SocketAddr, path: String) -> Result<StreamBody> {
    let stream = TcpStream::connect(address).await.context("connect a subscriber")?;
    let mut sender = http::handshake(stream).await?;
    let request = Request::get(path.as_str())
        .header(hyper::header::HOST, address.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Body::default())?;
    let response = sender.send_request(request).await.context("subscribe")?;
    if response.status() != StatusCode::OK {
        bail!("subscribing answered {}", response.status());
    }
    // The connection lives in its own task; the sender may go.
    Ok(response.into_body())
}

/// Reads a stream until told to stop, timing every event published in the counted window.
async fn follow(
    mut body: StreamBody,
    started: Instant,
    window: Arc<Window>,
    mut stop: watch::Receiver<bool>,
    latencies: Histogram<u64>,
) -> Received {
    let mut received = Received {
        latencies,
        deliveries: 0,
        last_at: 0,
        ended: false,
    };
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stop.changed() => return received,
        };
        let Some(Ok(frame)) = frame else {
            received.ended = true;
            return received;
        };
        let Ok(data) = frame.into_data() else { continue };
        let now = started.elapsed().as_micros() as u64;
        partial.extend_from_slice(&data);
        // Values are read from complete lines only; the rest waits for the next frame.
        let complete = partial.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        for value in values(&partial[..complete]) {
            if window.contains(value) {
                received.deliveries += 1;
                received.last_at = now;
                let _ = received.latencies.record(now.saturating_sub(value));
            }
        }
        partial.drain(..complete);
    }
}

/// Every `"value":N` in `bytes`.
pub(crate) fn values(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const KEY: &[u8] = b"\"value\":";
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let at = rest.windows(KEY.len()).position(|window| window == KEY)?;
        let digits = &rest[at + KEY.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
        let value = std::str::from_utf8(&digits[..end]).ok()?.parse().ok();
        rest = &digits[end..];
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_from_raw_streams_of_either_server() {
        let origin = b"id: 3\nevent: X\ndata: {\"id\":3,\"payload\":{\"indicator\":\"bench\",\"value\":1234}}\n\n";
        assert_eq!(values(origin).collect::<Vec<_>>(), [1234]);
        let nchan = b"id: 1:0\ndata: {\"payload\":{\"value\":7}}\n\nid: 1:1\ndata: {\"payload\":{\"value\":8}}\n\n";
        assert_eq!(values(nchan).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(values(b": keep-alive\n\n").count(), 0);
    }

    #[test]
    fn the_window_counts_from_its_start_to_before_its_end() {
        let window = Window::default();
        window.from.store(10, Ordering::Relaxed);
        window.until.store(20, Ordering::Relaxed);
        assert!(!window.contains(9) && window.contains(10) && window.contains(19) && !window.contains(20));
    }
}
