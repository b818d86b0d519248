//! `loadtest origin`: read and write throughput of the origin per storage backend, with its L1
//! cache on and off, next to the GET ceiling of `redis-benchmark` on the same machine.
//!
//! Each scenario starts its own origin (and, for the Redis backend, its own `redis-server`) on
//! loopback and writes one forecast per instrument, once. Then come the rounds: each warms up and
//! reads random instruments for the configured duration from every scenario in turn, then runs the
//! ceiling, so that the noise of the machine falls on all of them alike; the report keeps every
//! round and the median per scenario. All servers stay up until the last round is over. On two
//! CPUs or more the servers run on CPU 0 and this process on CPU 1.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::{Method, Uri};
use rand::Rng;
use serde::Serialize;
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ceiling::{self, Ceiling, CeilingPlan, CeilingServer};
use crate::http::{self, LoadResult, Plan};
use crate::launch::{self, ChildProcess, RedisServer};
use crate::median::Median;

/// Concurrency of the writes that seed the instruments.
pub const SEED_CONNECTIONS: usize = 64;
/// Upper bound of seeding, whatever the number of instruments.
const SEED_TIME_LIMIT: Duration = Duration::from_secs(300);
/// How long a fresh origin may take to answer `GET /readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// One readiness probe; the origin process is checked for an early exit in between.
const READY_PROBE: Duration = Duration::from_millis(250);
/// Rate used to size the `redis-benchmark` run so that it lasts about as long as a read scenario.
const CEILING_RATE_ESTIMATE: u64 = 150_000;
const CEILING_MIN_REQUESTS: u64 = 100_000;
const TIMEFRAME: &str = "1h";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The origin's embedded store in its data directory
    Embedded,
    /// A `redis-server` of its own
    Redis,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::Redis => "redis",
        })
    }
}

/// Which CPU the servers under test and the load generator run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pinning {
    pub server_cpu: usize,
    pub load_cpu: usize,
}

impl Pinning {
    /// With two CPUs or more and `taskset` available, pins this process to CPU 1 and returns the
    /// pinning that servers started later should follow (CPU 0). Call it before any thread starts:
    /// threads and children inherit the affinity.
    pub fn apply(nproc: usize) -> Result<Option<Self>> {
        if nproc < 2 || !launch::taskset_available() {
            return Ok(None);
        }
        let pinning = Self {
            server_cpu: 0,
            load_cpu: 1,
        };
        launch::pin_process(std::process::id(), pinning.load_cpu).context("pin the load generator")?;
        Ok(Some(pinning))
    }
}

/// What one `loadtest origin` run measures.
#[derive(Debug, Clone)]
pub struct Settings {
    pub origin_bin: PathBuf,
    pub instruments: u64,
    /// Length of each read scenario.
    pub duration: Duration,
    /// Connections of the read load.
    pub connections: usize,
    pub backends: Vec<Backend>,
    /// Each round reads every scenario once and runs the ceiling once.
    pub rounds: u32,
    pub pinning: Option<Pinning>,
}

impl Settings {
    /// Reads before each measured read scenario, not counted: they fill the L1 cache.
    pub fn warmup(&self) -> Duration {
        (self.duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    fn server_cpu(&self) -> Option<usize> {
        self.pinning.map(|pinning| pinning.server_cpu)
    }

    fn load_cpu(&self) -> Option<usize> {
        self.pinning.map(|pinning| pinning.load_cpu)
    }
}

/// Everything one run measured, as written to the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: SettingsRecord,
    pub reads: Vec<ReadScenario>,
    pub writes: Vec<WriteScenario>,
    pub ceiling: Ceiling,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process before it pinned itself.
    pub nproc: usize,
    pub pinning: Option<Pinning>,
    pub git_rev: Option<String>,
    pub redis_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsRecord {
    pub origin_bin: PathBuf,
    pub instruments: u64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub connections: usize,
    pub seed_connections: usize,
    pub backends: Vec<Backend>,
    pub rounds: u32,
    /// Size of the JSON body written per instrument; also the value size of the ceiling.
    pub forecast_body_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadScenario {
    /// Such as `origin embedded L1 on`.
    pub scenario: String,
    pub backend: Backend,
    pub l1_cache: bool,
    /// The result of each round, in order.
    pub rounds: Vec<LoadResult>,
    pub median: Median,
    /// Median requests per second over the median of the ceiling.
    pub vs_ceiling: f64,
}

impl ReadScenario {
    /// The result of the round whose rate is the median.
    pub fn median_result(&self) -> &LoadResult {
        &self.rounds[self.median.round_index]
    }

    /// Errors summed over every round.
    pub fn errors(&self) -> u64 {
        self.rounds.iter().map(|result| result.errors).sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WriteScenario {
    pub backend: Backend,
    /// Forecasts written per second (responses 201 over the seeding time).
    pub versions_per_sec: f64,
    pub result: LoadResult,
}

impl Report {
    /// Fails when any read of any round was answered with an unexpected status or not at all.
    pub fn ensure_clean(&self) -> Result<()> {
        let failed: Vec<&str> = self
            .reads
            .iter()
            .filter(|read| read.rounds.iter().any(|result| !is_clean(result)))
            .map(|read| read.scenario.as_str())
            .collect();
        ensure!(failed.is_empty(), "reads failed in: {}", failed.join(", "));
        Ok(())
    }
}

/// Starts and seeds every scenario of `settings` and the ceiling, then measures them in rounds.
/// `nproc` is recorded as machine info.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    ensure!(
        settings.origin_bin.is_file(),
        "origin executable {} not found: build it with `cargo build --release -p origin` or pass --origin-bin",
        settings.origin_bin.display()
    );
    ensure!(!settings.backends.is_empty(), "no backend to measure");
    ensure!(settings.rounds > 0, "no round to measure");
    let token = random_token();
    let body = forecast_body().context("build the forecast body")?;
    let paths = read_paths(settings.instruments)?;

    // Dropped on any error or on Ctrl-C, and with them every process they started.
    let mut origins = Vec::new();
    let mut writes = Vec::new();
    for &backend in &settings.backends {
        for l1_cache in [true, false] {
            let scenario = scenario_name(backend, l1_cache);
            let origin = Origin::start(settings, backend, l1_cache, &token)
                .await
                .with_context(|| format!("start {scenario}"))?;
            let seed = origin
                .seed(settings, &token, &body)
                .await
                .with_context(|| format!("seed {scenario}"))?;
            if l1_cache {
                writes.push(WriteScenario {
                    backend,
                    versions_per_sec: versions_per_sec(&seed),
                    result: seed,
                });
            }
            origins.push((origin, Vec::new()));
        }
    }

    eprintln!("redis-benchmark GET ceiling: starting");
    let ceiling_requests = (settings.duration.as_secs_f64() * CEILING_RATE_ESTIMATE as f64) as u64;
    let ceiling_plan = CeilingPlan {
        requests: ceiling_requests.max(CEILING_MIN_REQUESTS),
        value_size: body.len(),
        server_cpu: settings.server_cpu(),
        client_cpu: settings.load_cpu(),
        timeout: (settings.duration * 10).max(Duration::from_secs(60)),
    };
    let mut ceiling = CeilingServer::start(ceiling_plan).await?;

    for round in 1..=settings.rounds {
        let label = format!("round {round}/{}", settings.rounds);
        for (origin, results) in &mut origins {
            let result = origin
                .read(settings, &paths, &label)
                .await
                .with_context(|| format!("measure {} in {label}", origin.scenario))?;
            results.push(result);
        }
        eprintln!("redis-benchmark GET ceiling, {label}");
        let row = ceiling
            .measure_round()
            .await
            .with_context(|| format!("ceiling in {label}"))?;
        eprintln!("redis-benchmark GET ceiling, {label}: {:.0} GET/s", row.rps);
    }
    let ceiling = ceiling.finish()?;

    let mut reads = Vec::new();
    for (origin, rounds) in origins {
        let rates: Vec<f64> = rounds.iter().map(|result| result.rps).collect();
        let median = Median::of(&rates).with_context(|| format!("{} was not measured", origin.scenario))?;
        reads.push(ReadScenario {
            vs_ceiling: median.rps / ceiling.median.rps,
            scenario: origin.scenario.clone(),
            backend: origin.backend,
            l1_cache: origin.l1_cache,
            rounds,
            median,
        });
    }

    Ok(Report {
        machine: Machine {
            nproc,
            pinning: settings.pinning,
            git_rev: git_rev(),
            redis_version: ceiling::redis_version(),
        },
        settings: SettingsRecord {
            origin_bin: settings.origin_bin.clone(),
            instruments: settings.instruments,
            duration_secs: settings.duration.as_secs_f64(),
            warmup_secs: settings.warmup().as_secs_f64(),
            connections: settings.connections,
            seed_connections: SEED_CONNECTIONS,
            backends: settings.backends.clone(),
            rounds: settings.rounds,
            forecast_body_bytes: body.len(),
        },
        reads,
        writes,
        ceiling,
    })
}

/// The row name of a read scenario.
pub fn scenario_name(backend: Backend, l1_cache: bool) -> String {
    format!("origin {backend} L1 {}", if l1_cache { "on" } else { "off" })
}

/// `I00042`
pub fn instrument(index: u64) -> String {
    format!("I{index:05}")
}

/// The request path of every instrument, built once for all reads.
fn read_paths(instruments: u64) -> Result<Arc<[Uri]>> {
    (0..instruments)
        .map(|index| {
            let path = format!("/v1/forecasts/{}/{TIMEFRAME}", instrument(index));
            Uri::try_from(path).context("build a read path")
        })
        .collect()
}

fn is_clean(result: &LoadResult) -> bool {
    result.errors == 0 && result.count(200) == result.requests
}

/// Forecasts written per second (responses 201 over the seeding time).
fn versions_per_sec(seed: &LoadResult) -> f64 {
    seed.count(201) as f64 / seed.elapsed_secs.max(f64::EPSILON)
}

/// The origin of one scenario, up from its start to the end of the last round.
struct Origin {
    scenario: String,
    backend: Backend,
    l1_cache: bool,
    address: SocketAddr,
    // Fields drop in order: the origin stops before its Redis and its data directory go.
    process: ChildProcess,
    _redis: Option<RedisServer>,
    _data_dir: TempDir,
}

impl Origin {
    /// Starts the origin (and its `redis-server`) and waits until it is ready.
    async fn start(settings: &Settings, backend: Backend, l1_cache: bool, token: &str) -> Result<Self> {
        let scenario = scenario_name(backend, l1_cache);
        eprintln!("{scenario}: starting");
        let redis = match backend {
            Backend::Embedded => None,
            Backend::Redis => Some(RedisServer::start_on_cpu(settings.server_cpu())?),
        };
        let data_dir = tempfile::Builder::new()
            .prefix("loadtest-origin-")
            .tempdir()
            .context("create the origin data directory")?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));

        let mut command = launch::command_on_cpu(&settings.origin_bin, settings.server_cpu());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ORIGIN_") {
                command.env_remove(key);
            }
        }
        command
            .env("ORIGIN_HTTP__LISTEN", address.to_string())
            .env(
                "ORIGIN_STORAGE__REDIS_URL",
                redis.as_ref().map(RedisServer::url).unwrap_or_default(),
            )
            .env("ORIGIN_STORAGE__DATA_DIR", data_dir.path())
            .env("ORIGIN_AUTH__BOOTSTRAP_TOKEN", token)
            .env("ORIGIN_CACHE__ENABLED", l1_cache.to_string())
            .env("RUST_LOG", "warn");
        let name = format!("origin-{backend}-l1-{}", if l1_cache { "on" } else { "off" });
        let mut process = ChildProcess::spawn(&name, command)?;
        wait_ready(&mut process, address).await?;
        Ok(Self {
            scenario,
            backend,
            l1_cache,
            address,
            process,
            _redis: redis,
            _data_dir: data_dir,
        })
    }

    /// Writes one forecast per instrument with `PUT /admin/v1/forecasts/{instrument}/1h`.
    async fn seed(&self, settings: &Settings, token: &str, body: &Bytes) -> Result<LoadResult> {
        let plan = Plan::timed(SEED_CONNECTIONS, SEED_TIME_LIMIT)
            .with_requests(settings.instruments)
            .with_progress(format!("{} writes", self.scenario));
        let token = token.to_owned();
        let body = body.clone();
        let seed = http::run(self.address, &plan, move |index| {
            http::json_request(
                Method::PUT,
                &format!("/admin/v1/forecasts/{}/{TIMEFRAME}", instrument(index)),
                body.clone(),
                Some(&token),
            )
        })
        .await
        .context("seed the instruments")?;
        ensure!(
            seed.count(201) == settings.instruments,
            "seeding expected 201 for {} writes, got statuses {:?} and {} transport errors{}",
            settings.instruments,
            seed.statuses,
            seed.transport_errors,
            self.process.log_excerpt()
        );
        eprintln!("{}: {:.0} writes/s", self.scenario, versions_per_sec(&seed));
        Ok(seed)
    }

    /// Warms up, then reads random instruments for the configured duration.
    async fn read(&mut self, settings: &Settings, paths: &Arc<[Uri]>, round: &str) -> Result<LoadResult> {
        let scenario = &self.scenario;
        let paths = Arc::clone(paths);
        let read = move |_| Ok(http::get_uri(paths[rand::rng().random_range(0..paths.len())].clone()));
        http::run(
            self.address,
            &Plan::timed(settings.connections, settings.warmup()),
            read.clone(),
        )
        .await
        .context("warm up")?;
        let plan =
            Plan::timed(settings.connections, settings.duration).with_progress(format!("{scenario} reads, {round}"));
        let reads = http::run(self.address, &plan, read).await.context("read")?;

        if let Some(status) = self.process.try_wait()? {
            bail!(
                "origin exited with {status} during the run{}",
                self.process.log_excerpt()
            );
        }
        if !is_clean(&reads) {
            eprintln!(
                "{scenario}, {round}: {} errors, statuses {:?}{}",
                reads.errors,
                reads.statuses,
                self.process.log_excerpt()
            );
        }
        eprintln!("{scenario}, {round}: {:.0} reads/s", reads.rps);
        Ok(reads)
    }
}

/// Polls `GET /readyz` until it answers 200, failing early when the origin exits.
async fn wait_ready(origin: &mut ChildProcess, address: SocketAddr) -> Result<()> {
    let url = format!("http://{address}/readyz");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let probe = launch::wait_http_ok(&url, READY_PROBE).await;
        if probe.is_ok() {
            return Ok(());
        }
        if let Some(status) = origin.try_wait()? {
            bail!(
                "origin exited with {status} before it was ready{}",
                origin.log_excerpt()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            let error = probe.err().map(|error| format!("{error:#}")).unwrap_or_default();
            bail!(
                "origin was not ready within {READY_TIMEOUT:?}: {error}{}",
                origin.log_excerpt()
            );
        }
    }
}

/// The forecast written for every instrument: generated now, valid for an hour.
pub fn forecast_body() -> Result<Bytes> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("truncate the time to seconds")?;
    let generated_at = now.format(&Rfc3339).context("format generated_at")?;
    let valid_until = (now + time::Duration::HOUR)
        .format(&Rfc3339)
        .context("format valid_until")?;
    let body = serde_json::json!({
        "horizon": "1h",
        "generated_at": generated_at,
        "valid_until": valid_until,
        "model": { "id": "lstm", "version": "3.2.0" },
        "point": 187.42,
        "quantiles": { "0.05": 181.2, "0.5": 187.4, "0.95": 193.9 },
        "direction_prob_up": 0.61,
        "metadata": { "features": "ohlcv" },
    });
    Ok(serde_json::to_vec(&body).context("serialize the forecast")?.into())
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn git_rev() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_instruments_and_scenarios() {
        assert_eq!(instrument(42), "I00042");
        assert_eq!(instrument(99_999), "I99999");
        assert_eq!(scenario_name(Backend::Embedded, true), "origin embedded L1 on");
        assert_eq!(scenario_name(Backend::Redis, false), "origin redis L1 off");
    }

    #[test]
    fn forecast_body_is_valid_for_an_hour() {
        let body: serde_json::Value = serde_json::from_slice(&forecast_body().unwrap()).unwrap();
        let parse = |field: &str| OffsetDateTime::parse(body[field].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(parse("valid_until") - parse("generated_at"), time::Duration::HOUR);
        assert_eq!(body["model"]["id"], "lstm");
        assert_eq!(body["quantiles"]["0.5"], 187.4);
    }

    #[test]
    fn tokens_are_random_hex() {
        let token = random_token();
        assert_eq!(token.len(), 32);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(token, random_token());
    }
}
