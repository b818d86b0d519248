//! `loadtest webhooks`: signed webhook deliveries from the origin to a receiver in this process.
//!
//! For each backend and scenario (endpoints × events per second, and a share of failing answers)
//! loadtest starts an origin whose webhooks may target 127.0.0.1 over plain http, registers the
//! endpoints (paths of one receiver, each taking the run's topic), publishes events at the rate for a
//! 2 s warm-up and the counted time, then waits until every message was accepted or the drain limit
//! passed. The receiver checks every signature with its endpoint's secret, answers 503 to the
//! failing share of requests (drawn at random) and 204 to the others, and counts per message
//! (endpoint and `webhook-id`) how often it refused and accepted it. Each event carries as `value`
//! the microseconds since the run started at which it was published: latency is publication → the
//! first accepted request. The origin (and its `redis-server`) runs on CPU 0, loadtest on CPU 1.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};
use shared::webhooks::Secret;

use crate::http::{self, Connection};
use crate::launch::Pinning;
use crate::measure::Machine;
use crate::origin_throughput::{Backend, OriginServer, random_token};
use crate::sse::{self, OriginPublisher, TOPIC, WARM_UP, Window};

/// How often the drain checks whether every message was accepted.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Endpoints, events per second and the share of answers that fail, of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    pub endpoints: usize,
    pub rate: u32,
    pub failing_percent: u8,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub origin_bin: PathBuf,
    pub backends: Vec<Backend>,
    pub scenarios: Vec<Scenario>,
    pub duration: Duration,
    /// Longest wait, after publishing stops, for the last messages.
    pub drain_limit: Duration,
    /// The origin's `webhooks.retry_schedule`.
    pub retry_schedule: String,
    pub pinning: Option<Pinning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub backend: Backend,
    pub scenario: Scenario,
    /// Events published, warm-up included.
    pub published: u64,
    /// Events published per second in the counted time.
    pub published_per_s: f64,
    /// Messages expected: every event to every endpoint.
    pub messages: u64,
    /// Messages the receiver accepted at least once.
    pub delivered: u64,
    pub delivered_ratio: f64,
    /// Messages of the counted time first accepted, per second of the time they took (the counted
    /// time, or longer when they arrived late).
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests the receiver got.
    pub requests: u64,
    /// Requests the receiver answered 503 on purpose.
    pub refused: u64,
    /// Messages accepted more than once, told apart by `webhook-id`.
    pub duplicates: u64,
    /// Requests whose signature did not verify.
    pub bad_signatures: u64,
    /// Dead letters the origin holds after the drain.
    pub dead_letters: u64,
    /// From the end of publishing to the last first acceptance.
    pub drained_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub duration_s: f64,
    pub retry_schedule: String,
    pub measurements: Vec<Measurement>,
}

/// Runs every scenario on every backend.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    let mut measurements = Vec::new();
    for &backend in &settings.backends {
        for &scenario in &settings.scenarios {
            eprintln!(
                "{backend}: {} endpoints × {} events/s, {}% of answers failing",
                scenario.endpoints, scenario.rate, scenario.failing_percent
            );
            let measured = measure(settings, backend, scenario)
                .await
                .with_context(|| format!("{backend}: {scenario:?}"))?;
            eprintln!(
                "  {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, {} of {} delivered, {} duplicates",
                measured.deliveries_per_s,
                measured.p50_ms,
                measured.p99_ms,
                measured.delivered,
                measured.messages,
                measured.duplicates
            );
            measurements.push(measured);
        }
    }
    Ok(Report {
        machine: Machine::describe(nproc, settings.pinning, &[]),
        duration_s: settings.duration.as_secs_f64(),
        retry_schedule: settings.retry_schedule.clone(),
        measurements,
    })
}

/// What the receiver saw of one message.
#[derive(Debug, Default)]
struct Tally {
    published_us: u64,
    accepted: u32,
    first_accepted_us: u64,
}

/// A webhook receiver: verifies, answers, counts.
struct Receiver {
    started: Instant,
    failing: f64,
    /// Each endpoint's secret, by the number in its path.
    secrets: RwLock<Vec<Secret>>,
    messages: Mutex<HashMap<(usize, u64), Tally>>,
    requests: AtomicU64,
    refused: AtomicU64,
    bad_signatures: AtomicU64,
    /// Messages accepted at least once.
    delivered: AtomicU64,
}

impl Receiver {
    fn new(failing_percent: u8) -> Self {
        Self {
            started: Instant::now(),
            failing: f64::from(failing_percent) / 100.0,
            secrets: RwLock::default(),
            messages: Mutex::default(),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    fn verified(&self, endpoint: usize, headers: &HeaderMap, body: &[u8]) -> Option<u64> {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?.parse().ok()?;
        let secrets = self.secrets.read().unwrap_or_else(PoisonError::into_inner);
        if !secrets
            .get(endpoint)?
            .verify(id, timestamp, body, header("webhook-signature")?)
        {
            return None;
        }
        id.strip_prefix("msg_")?.parse().ok()
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(endpoint): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = receiver.started.elapsed().as_micros() as u64;
    receiver.requests.fetch_add(1, Ordering::Relaxed);
    let Some(event) = receiver.verified(endpoint, &headers, &body) else {
        receiver.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    };
    if rand::random::<f64>() < receiver.failing {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut messages = receiver.messages.lock().unwrap_or_else(PoisonError::into_inner);
    let tally = messages.entry((endpoint, event)).or_default();
    tally.accepted += 1;
    if tally.accepted == 1 {
        tally.published_us = sse::values(&body).next().unwrap_or(0);
        tally.first_accepted_us = at;
        receiver.delivered.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}

/// Sends one admin request with a JSON body (or none); answers the JSON answer after checking its
/// status.
async fn admin(
    connection: &mut Connection,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let body = body
        .map(|body| serde_json::to_vec(&body))
        .transpose()?
        .unwrap_or_default();
    let request = http::json_request(method.clone(), path, body.into(), Some(token))?;
    let response = connection.send(request).await?;
    ensure!(
        response.status().is_success(),
        "{method} {path} answered {}: {}",
        response.status(),
        String::from_utf8_lossy(response.body())
    );
    serde_json::from_slice(response.body()).with_context(|| format!("{method} {path} answered no JSON"))
}

async fn measure(settings: &Settings, backend: Backend, scenario: Scenario) -> Result<Measurement> {
    let receiver = Arc::new(Receiver::new(scenario.failing_percent));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let receiver_address: SocketAddr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook/{endpoint}", axum::routing::post(receive))
        .with_state(receiver.clone());
    // Dropped however this ends, and with it the receiver.
    let mut serving = tokio::task::JoinSet::new();
    serving.spawn(async move { axum::serve(listener, app).await });

    let token = random_token();
    let env = [
        ("ORIGIN_WEBHOOKS__ALLOWED_TARGETS", "127.0.0.1"),
        ("ORIGIN_WEBHOOKS__ALLOW_HTTP", "true"),
        ("ORIGIN_WEBHOOKS__RETRY_SCHEDULE", settings.retry_schedule.as_str()),
    ];
    let cpu = Pinning::server_cpu(settings.pinning);
    let mut origin = OriginServer::start(&settings.origin_bin, backend, true, &token, cpu, &env).await?;
    let mut connection = Connection::open(&origin.address().to_string()).await?;
    let mut endpoints = Vec::with_capacity(scenario.endpoints);
    for n in 0..scenario.endpoints {
        let url = format!("http://{receiver_address}/hook/{n}");
        let body = json!({"url": url, "topics": [TOPIC], "description": format!("loadtest {n}")});
        let created = admin(&mut connection, &token, Method::POST, "/admin/v1/webhooks", Some(body)).await?;
        let secret = created["secret"].as_str().context("no secret in the answer")?;
        receiver
            .secrets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Secret::parse(secret)?);
        endpoints.push(created["id"].as_str().context("no id in the answer")?.to_owned());
    }

    let window = Window::default();
    let publishing = Instant::now();
    window.set(receiver.started, publishing + WARM_UP, settings.duration);
    let end = publishing + WARM_UP + settings.duration;
    let mut publisher = OriginPublisher {
        connection: Connection::open(&origin.address().to_string()).await?,
        token: token.clone(),
    };
    let (published, counted) =
        sse::publish_paced(&mut publisher, scenario.rate, receiver.started, end, &window).await?;
    ensure!(counted > 0, "nothing was published in the counted time");
    let messages = published * scenario.endpoints as u64;
    let drain_deadline = Instant::now() + settings.drain_limit;
    while receiver.delivered.load(Ordering::Relaxed) < messages && Instant::now() < drain_deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let mut dead_letters = 0;
    for id in &endpoints {
        let stats = admin(
            &mut connection,
            &token,
            Method::GET,
            &format!("/admin/v1/webhooks/{id}/stats"),
            None,
        )
        .await?;
        dead_letters += stats["dead_letters"].as_u64().context("no dead_letters in the stats")?;
    }
    origin.ensure_running()?;
    let run = Run {
        backend,
        scenario,
        published,
        counted,
        dead_letters,
        end_us: end.duration_since(receiver.started).as_micros() as u64,
    };
    summarize(&receiver, &window, settings.duration, &run)
}

/// What a run did, besides what the receiver saw.
struct Run {
    backend: Backend,
    scenario: Scenario,
    /// Events published, and those of them in the counted time.
    published: u64,
    counted: u64,
    dead_letters: u64,
    /// When publishing ended, in microseconds since the run started.
    end_us: u64,
}

fn summarize(receiver: &Receiver, window: &Window, duration: Duration, run: &Run) -> Result<Measurement> {
    let messages = run.published * run.scenario.endpoints as u64;
    let tallies = receiver.messages.lock().unwrap_or_else(PoisonError::into_inner);
    let mut latencies = Histogram::<u64>::new(3)?;
    let (mut counted_deliveries, mut last_counted_us, mut last_us, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
    for tally in tallies.values() {
        duplicates += u64::from(tally.accepted.saturating_sub(1));
        last_us = last_us.max(tally.first_accepted_us);
        if window.contains(tally.published_us) {
            counted_deliveries += 1;
            last_counted_us = last_counted_us.max(tally.first_accepted_us);
            let _ = latencies.record(tally.first_accepted_us.saturating_sub(tally.published_us));
        }
    }
    let delivered = receiver.delivered.load(Ordering::Relaxed);
    let millis = |micros: u64| micros as f64 / 1000.0;
    Ok(Measurement {
        backend: run.backend,
        scenario: run.scenario,
        published: run.published,
        published_per_s: run.counted as f64 / duration.as_secs_f64(),
        messages,
        delivered,
        delivered_ratio: if messages == 0 {
            0.0
        } else {
            delivered as f64 / messages as f64
        },
        deliveries_per_s: window.per_second(counted_deliveries, last_counted_us),
        p50_ms: millis(latencies.value_at_quantile(0.5)),
        p99_ms: millis(latencies.value_at_quantile(0.99)),
        max_ms: millis(latencies.max()),
        requests: receiver.requests.load(Ordering::Relaxed),
        refused: receiver.refused.load(Ordering::Relaxed),
        duplicates,
        bad_signatures: receiver.bad_signatures.load(Ordering::Relaxed),
        dead_letters: run.dead_letters,
        drained_s: last_us.saturating_sub(run.end_us) as f64 / 1e6,
    })
}
