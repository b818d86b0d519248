//! `loadtest invalidation`: how long a forecast write takes to be applied by every edge over the
//! QUIC control plane, on loopback.
//!
//! The origin (embedded store in a temporary directory, control plane on a free UDP port) runs in
//! this process, on a tokio runtime of its own, so that the acknowledgement each edge sends after
//! applying an invalidation is read where the origin records it (`origin_throughput::control::Edges`) by a
//! thread that looks every [`ACK_POLL_INTERVAL`], without a request that would compete with the
//! traffic measured. The edges are the `edge` executable, each with its own identity (`edge-0`,
//! `edge-1`, … in region `local`) from a development PKI written into a temporary directory, in
//! front of the origin over HTTP and connected to it over QUIC.
//!
//! Each round warms one forecast on every edge (a GET, then a GET that must be a hit), writes a new
//! version (PUT), and times, from the moment the PUT is answered (its invalidation is durable then),
//! until each edge has acknowledged it. A second write per round, with edge-0 alone warmed, times
//! from the moment it is sent until a GET at edge-0 (sent back to back on a keep-alive connection)
//! returns the new version, for comparison with what a reader sees. With two CPUs or more and
//! `taskset`, the edges run on CPU 0 and this process, the origin with it, on CPU 1.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::origin::control::{ControlPlane, Edges};
use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::header::ETAG;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use shared::tls::{self, EdgeIdentity};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::control::{self, Control, TlsFiles};
use crate::http::{self, Body, Connection};
use crate::launch::{self, ChildProcess, Pinning};
use crate::measure::Machine;
use crate::relay::DelayRelay;
use crate::{edge_hits, origin_throughput as origin_server};

/// How often the acknowledgements the origin recorded are looked at.
pub const ACK_POLL_INTERVAL: Duration = Duration::from_micros(100);
/// The region of every edge.
const REGION: &str = "local";
/// How long an edge may take to start and connect to the control plane.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long every edge may take to apply one invalidation, and edge-0 to serve the new version.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the measurement looks whether every edge has applied; the times come from the
/// acknowledgement thread, not from this.
const WAIT_POLL: Duration = Duration::from_millis(1);
/// GETs of a warm-up until one is a hit.
const WARM_ATTEMPTS: usize = 5;
/// The forecast written and read.
const KEY: &str = "INVAL/1h";

/// What one `loadtest invalidation` run measures.
#[derive(Debug, Clone)]
pub struct Settings {
    pub edge_bin: PathBuf,
    pub edges: usize,
    pub rounds: u32,
    /// Invalidations per second of the rate phases, after the rounds.
    pub rates: Vec<u32>,
    pub rate_duration: Duration,
    /// One-way delay toward each edge.
    pub delay: Duration,
    /// How long each hit-ratio run lasts (warming off, then on); zero: none.
    pub hit_ratio_duration: Duration,
    pub pinning: Option<Pinning>,
}

/// Everything one run measured, as written to the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: SettingsRecord,
    /// PUT sent → answered.
    pub put: Summary,
    /// PUT answered → acknowledged by each edge.
    pub applied: Vec<EdgeSummary>,
    /// PUT answered → acknowledged by the last edge.
    pub applied_all: Summary,
    /// PUT sent → acknowledged by the last edge.
    pub sent_applied_all: Summary,
    /// PUT sent → a GET at edge-0 returns the new version.
    pub visible: Summary,
    /// Each rate phase: invalidations issued through the admin API at a fixed rate.
    pub rates: Vec<RateSummary>,
    /// Zipf-distributed reads at one edge while forecasts are rewritten, warming off and on.
    pub hit_ratios: Vec<HitRatio>,
    /// The newest sequence of the invalidation log at the end.
    pub log_head: u64,
    /// The last sequence each edge acknowledged at the end.
    pub final_acks: Vec<FinalAck>,
    /// Every sample, in microseconds, in the order of the rounds.
    pub samples: Samples,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsRecord {
    pub edge_bin: PathBuf,
    pub edges: usize,
    pub rounds: u32,
    pub rate_duration_s: f64,
    /// One-way delay added toward each edge, in milliseconds.
    pub delay_ms: f64,
    pub origin: &'static str,
    pub ack_poll_interval_us: u64,
    /// The mean time between two looks at the acknowledgements, as achieved.
    pub ack_poll_period_us: f64,
    pub forecast_body_bytes: usize,
}

/// Percentiles of signed durations: an edge may acknowledge before the PUT's answer has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub min_ms: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `micros`; `None` without any.
    pub fn of(micros: &[i64]) -> Option<Self> {
        let mut sorted = micros.to_vec();
        sorted.sort_unstable();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let rank = |quantile: f64| {
            let index = (quantile * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        let millis = |micros: i64| micros as f64 / 1000.0;
        Some(Self {
            samples: sorted.len(),
            p50_ms: millis(rank(0.5)),
            p99_ms: millis(rank(0.99)),
            max_ms: millis(max),
            min_ms: millis(min),
        })
    }
}

/// Reads at one edge during a write-heavy run.
#[derive(Debug, Clone, Serialize)]
pub struct HitRatio {
    /// Whether the origin pushed the keys the edge reported hottest after each write.
    pub warming: bool,
    /// Reads counted (after the warm-up), and how many were hits.
    pub reads: u64,
    pub hits: u64,
    pub ratio: f64,
    /// Forecast writes during the counted reads.
    pub writes: u64,
}

/// One rate phase.
#[derive(Debug, Clone, Serialize)]
pub struct RateSummary {
    /// Invalidations per second asked for.
    pub rate: u32,
    /// Invalidations per second achieved (each is sent when the previous one is answered).
    pub achieved: f64,
    /// Admin API answered (accepted, durable) → acknowledged by the last edge.
    pub accepted_applied_all: Summary,
    /// Sent to the admin API → acknowledged by the last edge: an upper bound of the same.
    pub sent_applied_all: Summary,
    /// Every sample of `accepted_applied_all`, in microseconds.
    pub accepted_applied_all_us: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeSummary {
    pub edge: String,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct FinalAck {
    pub edge: String,
    pub acked: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    pub put_us: Vec<i64>,
    /// Per edge, in the order of `applied`.
    pub applied_us: Vec<Vec<i64>>,
    pub applied_all_us: Vec<i64>,
    pub sent_applied_all_us: Vec<i64>,
    pub visible_us: Vec<i64>,
}

/// Starts the topology of `settings`, measures its rounds and stops it. `nproc` is recorded as
/// machine info.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    ensure!(settings.edges > 0, "no edge to measure");
    ensure!(settings.rounds > 0, "no round to measure");
    ensure!(
        settings.edge_bin.is_file(),
        "edge executable {} not found: build it with `cargo build --release -p edge` or pass --edge-bin",
        settings.edge_bin.display()
    );
    let identities = (0..settings.edges)
        .map(|index| EdgeIdentity::new(format!("edge-{index}"), REGION))
        .collect::<Result<Vec<_>, _>>()
        .context("name the edges")?;
    let pki = tempfile::Builder::new()
        .prefix("loadtest-pki-")
        .tempdir()
        .context("create the PKI directory")?;
    tls::write_dev_pki(pki.path(), &identities).context("write the development PKI")?;

    let token = origin_server::random_token();
    let origin = InProcessOrigin::start(pki.path(), &token, true).await?;
    eprintln!(
        "origin: in this process, http://{}, control plane on udp {}",
        origin.address, origin.control.addr
    );
    let mut edges = Vec::new();
    let mut relays = Vec::new();
    for identity in &identities {
        let cpu = Pinning::server_cpu(settings.pinning);
        let control = if settings.delay.is_zero() {
            origin.control.addr
        } else {
            let relay = DelayRelay::start(origin.control.addr, settings.delay).await?;
            let address = relay.address;
            relays.push(relay);
            address
        };
        edges.push(EdgeServer::start(&settings.edge_bin, identity, pki.path(), &origin, control, cpu).await?);
        eprintln!("{}: connected to the control plane", identity.name());
    }

    let watch = AckWatch::start(origin.control.edges.clone());
    let body = origin_server::forecast_body(time::Duration::HOUR, 0).context("build the forecast body")?;
    let mut writer = Writer::open(origin.address, &token, body.clone()).await?;
    let (mut etag, _) = writer.put().await.context("write the first version")?;
    let mut head = writer.log_head().await?;
    watch.wait_applied(&edges, head).await?;

    let mut samples = Samples {
        applied_us: vec![Vec::new(); edges.len()],
        ..Samples::default()
    };
    for round in 1..=settings.rounds {
        // Every edge holds the current version; a write purges it everywhere.
        for edge in &mut edges {
            edge.warm(&etag).await?;
        }
        let (new_etag, put) = writer.put().await?;
        head += 1;
        let applied = watch.wait_applied(&edges, head).await?;
        samples.put_us.push(micros_between(put.sent, put.answered));
        for (index, at) in applied.iter().enumerate() {
            samples.applied_us[index].push(micros_between(put.answered, *at));
        }
        let last = applied.iter().max().copied().unwrap_or(put.answered);
        samples.applied_all_us.push(micros_between(put.answered, last));
        samples.sent_applied_all_us.push(micros_between(put.sent, last));
        etag = new_etag;

        // Edge-0 alone holds the current version; GETs until it serves the next.
        edges[0].warm(&etag).await?;
        let (written, seen) = tokio::join!(writer.put(), edges[0].until_changed(&etag));
        let ((new_etag, put), (seen_etag, seen_at)) = (written?, seen?);
        ensure!(
            seen_etag == new_etag,
            "edge-0 served {seen_etag} after the write of {new_etag}"
        );
        samples.visible_us.push(micros_between(put.sent, seen_at));
        head += 1;
        watch.wait_applied(&edges, head).await?;
        etag = new_etag;

        let logged = writer.log_head().await?;
        ensure!(
            logged == head,
            "the invalidation log is at {logged} after round {round}, expected {head}: a write did not append exactly one invalidation"
        );
        for edge in &mut edges {
            edge.ensure_running()?;
        }
        if round % 50 == 0 || round == settings.rounds {
            eprintln!("round {round}/{}", settings.rounds);
        }
    }
    let mut rates = Vec::new();
    for &rate in &settings.rates {
        let phase = rate_phase(&mut writer, &watch, &edges, rate, settings.rate_duration).await?;
        head = phase.head;
        eprintln!(
            "{rate}/s: accepted → applied by all {} edges p50 {:.2} ms, p99 {:.2} ms",
            edges.len(),
            phase.summary.accepted_applied_all.p50_ms,
            phase.summary.accepted_applied_all.p99_ms
        );
        rates.push(phase.summary);
    }
    drop(relays);
    let ack_poll_period_us = watch.stop();
    let acks = origin.control.edges.list();
    // The edges are killed as they are dropped: the hit-ratio runs have the machine to themselves.
    drop((edges, writer, origin));
    let mut hit_ratios = Vec::new();
    if !settings.hit_ratio_duration.is_zero() {
        for warming in [false, true] {
            let measured = hit_ratio(settings, pki.path(), &identities[0], warming).await?;
            eprintln!(
                "warming {}: {:.1}% hits of {} reads, {} writes",
                if warming { "on" } else { "off" },
                measured.ratio * 100.0,
                measured.reads,
                measured.writes
            );
            hit_ratios.push(measured);
        }
    }
    let final_acks = identities
        .iter()
        .map(|identity| FinalAck {
            edge: identity.name().to_owned(),
            acked: acks
                .iter()
                .filter(|status| status.name == identity.name())
                .filter_map(|status| status.acked)
                .max(),
        })
        .collect();

    let summary = |micros: &[i64], what: &str| Summary::of(micros).with_context(|| format!("no sample of {what}"));
    let applied = identities
        .iter()
        .zip(&samples.applied_us)
        .map(|(identity, micros)| {
            Ok(EdgeSummary {
                edge: identity.name().to_owned(),
                summary: summary(micros, identity.name())?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Report {
        machine: Machine::describe(nproc, settings.pinning, &[]),
        settings: SettingsRecord {
            edge_bin: settings.edge_bin.clone(),
            edges: settings.edges,
            rounds: settings.rounds,
            rate_duration_s: settings.rate_duration.as_secs_f64(),
            delay_ms: settings.delay.as_secs_f64() * 1000.0,
            origin: "in-process",
            ack_poll_interval_us: ACK_POLL_INTERVAL.as_micros() as u64,
            ack_poll_period_us,
            forecast_body_bytes: body.len(),
        },
        put: summary(&samples.put_us, "PUT")?,
        applied,
        applied_all: summary(&samples.applied_all_us, "every edge")?,
        sent_applied_all: summary(&samples.sent_applied_all_us, "every edge from the PUT")?,
        visible: summary(&samples.visible_us, "GET at edge-0")?,
        rates,
        hit_ratios,
        log_head: head,
        final_acks,
        samples,
    })
}

/// Forecasts of a hit-ratio run, read with Zipf-distributed popularity.
const HIT_RATIO_KEYS: usize = 200;
/// Forecast writes per second during a hit-ratio run, their keys Zipf-distributed too.
const HIT_RATIO_WRITES_PER_S: u32 = 50;
/// Reads before this are not counted: the edge fills, and reports its hottest keys once.
const HIT_RATIO_WARM_UP: Duration = Duration::from_secs(3);
/// The edges' stats interval: how soon the origin learns their hottest keys.
const STATS_INTERVAL: &str = "1s";

/// Popularity by rank, P(k) ∝ 1/k (Zipf with exponent 1), sampled by inverse CDF.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / rank as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let cumulative = weights
            .iter()
            .map(|weight| {
                sum += weight / total;
                sum
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut impl rand::Rng) -> usize {
        let u: f64 = rng.random();
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

fn hit_ratio_key(rank: usize) -> String {
    format!("Z{rank:03}/1h")
}

/// One origin and one edge: reads of Zipf-popular forecasts, back to back on one connection, while
/// a writer rewrites forecasts (also Zipf-popular) at a fixed rate; the share of reads that hit.
async fn hit_ratio(settings: &Settings, pki: &Path, identity: &EdgeIdentity, warming: bool) -> Result<HitRatio> {
    let token = origin_server::random_token();
    let origin = InProcessOrigin::start(pki, &token, warming).await?;
    let cpu = Pinning::server_cpu(settings.pinning);
    let mut edge = EdgeServer::start(&settings.edge_bin, identity, pki, &origin, origin.control.addr, cpu).await?;
    let body = origin_server::forecast_body(time::Duration::HOUR, 0).context("build the forecast body")?;
    let mut writer = Writer::open(origin.address, &token, body).await?;
    for rank in 0..HIT_RATIO_KEYS {
        writer.put_key(&hit_ratio_key(rank)).await?;
    }
    let zipf = Zipf::new(HIT_RATIO_KEYS);
    let started = Instant::now();
    let counted_from = started + HIT_RATIO_WARM_UP;
    let deadline = started + settings.hit_ratio_duration.max(HIT_RATIO_WARM_UP * 2);
    let write = async {
        let mut rng = rand::rng();
        let interval = Duration::from_secs(1) / HIT_RATIO_WRITES_PER_S;
        let mut writes = 0u64;
        let mut due = started;
        while due < deadline {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            writer.put_key(&hit_ratio_key(zipf.sample(&mut rng))).await?;
            if due >= counted_from {
                writes += 1;
            }
            due += interval;
        }
        anyhow::Ok(writes)
    };
    let read = async {
        let mut rng = rand::rng();
        let (mut reads, mut hits) = (0u64, 0u64);
        while Instant::now() < deadline {
            let path = format!("/v1/forecasts/{}", hit_ratio_key(zipf.sample(&mut rng)));
            let response = edge.get_path(&path).await?;
            if Instant::now() >= counted_from {
                reads += 1;
                hits += u64::from(edge_hits::is_hit(response.headers()));
            }
        }
        anyhow::Ok((reads, hits))
    };
    let (writes, read) = tokio::join!(write, read);
    let (writes, (reads, hits)) = (writes?, read?);
    edge.ensure_running()?;
    Ok(HitRatio {
        warming,
        reads,
        hits,
        ratio: if reads == 0 { 0.0 } else { hits as f64 / reads as f64 },
        writes,
    })
}

struct Phase {
    summary: RateSummary,
    head: u64,
}

/// Issues invalidations through the admin API at `rate` per second for `duration` (each one sent
/// when it is due, or as soon as the previous one is answered when behind), waits until every edge
/// applied the last, and times each from its answer to the last edge's acknowledgement.
async fn rate_phase(
    writer: &mut Writer,
    watch: &AckWatch,
    edges: &[EdgeServer],
    rate: u32,
    duration: Duration,
) -> Result<Phase> {
    ensure!(rate > 0, "a rate of 0 invalidations per second");
    let interval = Duration::from_secs(1) / rate;
    let count = (duration.as_secs_f64() * f64::from(rate)).ceil().max(1.0) as u32;
    let started = Instant::now();
    let mut accepted = Vec::with_capacity(count as usize);
    for index in 0..count {
        let due = started + interval * index;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let sent = Instant::now();
        let (sequence, answered) = writer.invalidate().await?;
        accepted.push((sequence, sent, answered));
    }
    let achieved = f64::from(count) / started.elapsed().as_secs_f64();
    let head = accepted.last().map_or(0, |&(sequence, ..)| sequence);
    watch.wait_applied(edges, head).await?;
    let (mut from_answer, mut from_sending) = (Vec::new(), Vec::new());
    for &(sequence, sent, answered) in &accepted {
        let last = edges
            .iter()
            .map(|edge| watch.applied_at(&edge.name, sequence))
            .collect::<Option<Vec<Instant>>>()
            .and_then(|times| times.into_iter().max())
            .context("an acknowledgement was not recorded")?;
        from_answer.push(micros_between(answered, last));
        from_sending.push(micros_between(sent, last));
    }
    Ok(Phase {
        summary: RateSummary {
            rate,
            achieved,
            accepted_applied_all: Summary::of(&from_answer).context("no invalidation issued")?,
            sent_applied_all: Summary::of(&from_sending).context("no invalidation issued")?,
            accepted_applied_all_us: from_answer,
        },
        head,
    })
}

/// `to - from` in microseconds, negative when `to` came first.
fn micros_between(from: Instant, to: Instant) -> i64 {
    let micros = |duration: Duration| i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
    match to.checked_duration_since(from) {
        Some(after) => micros(after),
        None => -micros(from - to),
    }
}

/// The origin, served by this process on a runtime of its own until dropped.
struct InProcessOrigin {
    address: SocketAddr,
    control: ControlPlane,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<Runtime>,
    _data_dir: TempDir,
}

impl InProcessOrigin {
    /// Starts the origin with its embedded store in a temporary directory, `token` as its admin
    /// token, and its control plane on a free UDP port with the origin's files in `pki`.
    /// With `warming`, the origin pushes the keys edges report hottest after each write.
    async fn start(pki: &Path, token: &str, warming: bool) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("loadtest-origin-")
            .tempdir()
            .context("create the origin data directory")?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let files = TlsFiles::origin(pki);
        let mut config = ::origin::config::OriginConfig::default();
        config.http.listen = loopback;
        config.storage.redis_url = None;
        config.storage.data_dir = data_dir.path().to_owned();
        config.auth.bootstrap_token = Some(token.to_owned());
        config.quic.listen = Some(loopback);
        config.warming.edge_hot_keys = warming;
        config.tls = files;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("origin")
            .build()
            .context("build the origin's runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let running = runtime
            .spawn(async move {
                let listener = tokio::net::TcpListener::bind(config.http.listen)
                    .await
                    .context("bind the origin's listener")?;
                ::origin::server::start(&config, listener, async {
                    let _ = stopped.await;
                })
                .await
            })
            .await
            .context("start the origin")??;
        Ok(Self {
            address: running.addr,
            control: running.control.context("the origin started without a control plane")?,
            stop: Some(stop),
            runtime: Some(runtime),
            _data_dir: data_dir,
        })
    }
}

impl Drop for InProcessOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.control.close();
        // Dropping a runtime waits for its tasks, which an async context must not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An edge process in front of the origin, connected to its control plane, with a keep-alive
/// connection to read through it.
struct EdgeServer {
    name: String,
    process: ChildProcess,
    connection: Connection,
}

impl EdgeServer {
    /// Starts the edge `bin` as `identity` on `cpu` and waits until it is connected to the
    /// control plane.
    async fn start(
        bin: &Path,
        identity: &EdgeIdentity,
        pki: &Path,
        origin: &InProcessOrigin,
        control_address: SocketAddr,
        cpu: Option<usize>,
    ) -> Result<Self> {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));
        let tls = TlsFiles::edge(pki, identity);
        let mut command = launch::command_on_cpu(bin, cpu);
        launch::remove_env_prefixed(&mut command, "EDGE_");
        let control = Control {
            address: control_address,
            tls: &tls,
        };
        edge_hits::configure(&mut command, listen, metrics, origin.address, Some(control));
        command
            .env("EDGE_CONTROL__STATS_INTERVAL", STATS_INTERVAL)
            .env("RUST_LOG", "warn");
        let name = identity.name().to_owned();
        let mut process = ChildProcess::spawn(&name, command)?;
        launch::wait_listening(&mut process, listen, READY_TIMEOUT).await?;
        let url = format!("http://{metrics}/metrics");
        launch::wait_metric(&mut [&mut process], &url, control::CONNECTED_METRIC, READY_TIMEOUT).await?;
        let connection = Connection::open(&listen.to_string()).await?;
        Ok(Self {
            name,
            process,
            connection,
        })
    }

    async fn get(&mut self) -> Result<Response<Bytes>> {
        self.get_path(&read_path()).await
    }

    async fn get_path(&mut self, path: &str) -> Result<Response<Bytes>> {
        let response = self
            .connection
            .send(http::get(path)?)
            .await
            .with_context(|| format!("GET {path} at {}", self.name))?;
        ensure!(
            response.status() == StatusCode::OK,
            "{} answered {} to GET {path}{}",
            self.name,
            response.status(),
            self.process.log_excerpt()
        );
        Ok(response)
    }

    /// GETs the forecast until the edge answers with a hit of the version `etag`.
    async fn warm(&mut self, etag: &str) -> Result<()> {
        for _ in 0..WARM_ATTEMPTS {
            let response = self.get().await?;
            let served = etag_of(&response)?;
            ensure!(served == etag, "{} served {served} instead of {etag}", self.name);
            if edge_hits::is_hit(response.headers()) {
                return Ok(());
            }
        }
        bail!("{} did not serve a hit within {WARM_ATTEMPTS} GETs", self.name)
    }

    /// GETs the forecast back to back until the edge serves another version than `etag`: that
    /// version, and when its answer arrived.
    async fn until_changed(&mut self, etag: &str) -> Result<(String, Instant)> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        while Instant::now() < deadline {
            let response = self.get().await?;
            let arrived = Instant::now();
            let served = etag_of(&response)?;
            if served != etag {
                return Ok((served, arrived));
            }
        }
        bail!(
            "{} still served {etag} {APPLY_TIMEOUT:?} after a write{}",
            self.name,
            self.process.log_excerpt()
        )
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!("{} exited with {status}{}", self.name, self.process.log_excerpt());
        }
        Ok(())
    }
}

fn read_path() -> String {
    format!("/v1/forecasts/{KEY}")
}

fn etag_of(response: &Response<Bytes>) -> Result<String> {
    let etag = response.headers().get(ETAG).context("no ETag in the answer")?;
    Ok(etag.to_str().context("an ETag that is not text")?.to_owned())
}

/// When a write was sent and when its answer had arrived.
struct Put {
    sent: Instant,
    answered: Instant,
}

/// The admin client: writes the forecast and reads the invalidation log, on one keep-alive
/// connection to the origin.
struct Writer {
    connection: Connection,
    token: String,
    body: Bytes,
}

impl Writer {
    async fn open(origin: SocketAddr, token: &str, body: Bytes) -> Result<Self> {
        Ok(Self {
            connection: Connection::open(&origin.to_string()).await?,
            token: token.to_owned(),
            body,
        })
    }

    /// Writes a new version of the forecast: its ETag, and when the PUT was sent and answered.
    async fn put(&mut self) -> Result<(String, Put)> {
        self.put_key(KEY).await
    }

    /// Writes a new version of `key` (`INSTRUMENT/TIMEFRAME`).
    async fn put_key(&mut self, key: &str) -> Result<(String, Put)> {
        let request = self.request(Method::PUT, &format!("/admin/v1/forecasts/{key}"), self.body.clone())?;
        let sent = Instant::now();
        let response = self.connection.send(request).await.context("PUT the forecast")?;
        let answered = Instant::now();
        ensure!(
            matches!(response.status(), StatusCode::OK | StatusCode::CREATED),
            "PUT answered {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        );
        Ok((etag_of(&response)?, Put { sent, answered }))
    }

    /// The newest sequence of the invalidation log.
    /// Posts an invalidation of a tag nothing carries; answers its sequence and when it was accepted.
    async fn invalidate(&mut self) -> Result<(u64, Instant)> {
        let body = Bytes::from_static(br#"{"tags":["loadtest-rate"]}"#);
        let request = self.request(Method::POST, "/admin/v1/invalidations", body)?;
        let response = self.connection.send(request).await.context("POST an invalidation")?;
        let answered = Instant::now();
        ensure!(
            response.status() == StatusCode::ACCEPTED,
            "POST /admin/v1/invalidations answered {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        );
        let accepted: serde_json::Value = serde_json::from_slice(response.body()).context("parse the answer")?;
        let sequence = accepted["seq"].as_u64().context("no seq in the answer")?;
        Ok((sequence, answered))
    }

    async fn log_head(&mut self) -> Result<u64> {
        let request = self.request(Method::GET, "/admin/v1/invalidations?limit=1", Bytes::new())?;
        let response = self
            .connection
            .send(request)
            .await
            .context("read the invalidation log")?;
        ensure!(
            response.status() == StatusCode::OK,
            "the invalidation log answered {}",
            response.status()
        );
        let log: serde_json::Value = serde_json::from_slice(response.body()).context("parse the invalidation log")?;
        log["head"].as_u64().context("the invalidation log is empty")
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Body>> {
        http::json_request(method, path, body, Some(&self.token))
    }
}

/// Per edge, each new acknowledged sequence and when it was first seen.
type Seen = BTreeMap<String, Vec<(u64, Instant)>>;

/// The acknowledgements the origin records, looked at every [`ACK_POLL_INTERVAL`] by a thread of
/// its own: per edge, each new acknowledged sequence and when it was first seen.
struct AckWatch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl AckWatch {
    fn start(edges: Edges) -> Self {
        let seen = Arc::new(Mutex::new(Seen::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let thread = {
            let (seen, stop, polls) = (Arc::clone(&seen), Arc::clone(&stop), Arc::clone(&polls));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let acks = edges.acks();
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    for (name, acked) in acks {
                        let Some(acked) = acked else { continue };
                        let history = seen.entry(name).or_default();
                        if history.last().is_none_or(|&(last, _)| acked > last) {
                            history.push((acked, now));
                        }
                    }
                    drop(seen);
                    polls.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(ACK_POLL_INTERVAL);
                }
            })
        };
        Self {
            seen,
            stop,
            polls,
            started: Instant::now(),
            thread: Some(thread),
        }
    }

    /// When `edge` was first seen to have acknowledged `sequence` or a later one.
    fn applied_at(&self, edge: &str, sequence: u64) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Acknowledgements only move up: the first at or past `sequence` is found by bisection.
        let history = seen.get(edge)?;
        let first = history.partition_point(|&(acked, _)| acked < sequence);
        history.get(first).map(|&(_, at)| at)
    }

    /// Waits until every edge of `edges` has acknowledged `sequence`: when each was seen to.
    async fn wait_applied(&self, edges: &[EdgeServer], sequence: u64) -> Result<Vec<Instant>> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            let applied: Vec<Option<Instant>> =
                edges.iter().map(|edge| self.applied_at(&edge.name, sequence)).collect();
            if let Some(all) = applied.iter().copied().collect::<Option<Vec<_>>>() {
                return Ok(all);
            }
            if Instant::now() >= deadline {
                let late: Vec<String> = edges
                    .iter()
                    .zip(&applied)
                    .filter(|(_, at)| at.is_none())
                    .map(|(edge, _)| format!("{}{}", edge.name, edge.process.log_excerpt()))
                    .collect();
                bail!(
                    "invalidation {sequence} was not acknowledged within {APPLY_TIMEOUT:?} by {}",
                    late.join(", ")
                );
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Stops the thread; the mean time between its looks, in microseconds.
    fn stop(mut self) -> f64 {
        self.halt();
        self.started.elapsed().as_secs_f64() * 1e6 / self.polls.load(Ordering::Relaxed).max(1) as f64
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AckWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_signed_micros_by_nearest_rank() {
        let micros: Vec<i64> = (1..=100).rev().map(|value| value * 10).collect();
        let summary = Summary::of(&micros).unwrap();
        assert_eq!(summary.samples, 100);
        assert_eq!(summary.p50_ms, 0.5);
        assert_eq!(summary.p99_ms, 0.99);
        assert_eq!(summary.max_ms, 1.0);
        assert_eq!(summary.min_ms, 0.01);
        let one = Summary::of(&[-250]).unwrap();
        assert_eq!(
            (one.p50_ms, one.p99_ms, one.max_ms, one.min_ms),
            (-0.25, -0.25, -0.25, -0.25)
        );
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn durations_are_negative_when_the_end_comes_first() {
        let start = Instant::now();
        let later = start + Duration::from_micros(1500);
        assert_eq!(micros_between(start, later), 1500);
        assert_eq!(micros_between(later, start), -1500);
        assert_eq!(micros_between(start, start), 0);
    }
}
