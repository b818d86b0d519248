//! `loadtest origin`: read and write throughput of the origin per storage backend, with its L1
//! cache on and off, next to the GET ceiling of `redis-benchmark` on the same machine.
//!
//! Each scenario starts a fresh origin (and, for the Redis backend, a fresh `redis-server`) on
//! loopback, writes one forecast per instrument, warms up, then reads random instruments for the
//! configured duration. On two CPUs or more the servers run on CPU 0 and this process on CPU 1.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::Method;
use rand::Rng;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ceiling::{self, Ceiling, CeilingPlan};
use crate::http::{self, LoadResult, Plan};
use crate::launch::{self, ChildProcess, RedisServer};

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
    /// Size of the JSON body written per instrument; also the value size of the ceiling.
    pub forecast_body_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadScenario {
    /// Such as `origin embedded L1 on`.
    pub scenario: String,
    pub backend: Backend,
    pub l1_cache: bool,
    pub result: LoadResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriteScenario {
    pub backend: Backend,
    /// Forecasts written per second (responses 201 over the seeding time).
    pub versions_per_sec: f64,
    pub result: LoadResult,
}

impl Report {
    /// Fails when any read or write was answered with an unexpected status or not at all.
    pub fn ensure_clean(&self) -> Result<()> {
        let failed: Vec<&str> = self
            .reads
            .iter()
            .filter(|read| read.result.errors > 0 || read.result.count(200) != read.result.requests)
            .map(|read| read.scenario.as_str())
            .collect();
        ensure!(failed.is_empty(), "reads failed in: {}", failed.join(", "));
        Ok(())
    }
}

/// Runs every scenario of `settings`, then the ceiling. `nproc` is recorded as machine info.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    ensure!(
        settings.origin_bin.is_file(),
        "origin executable {} not found: build it with `cargo build --release -p origin` or pass --origin-bin",
        settings.origin_bin.display()
    );
    ensure!(!settings.backends.is_empty(), "no backend to measure");
    let token = random_token();
    let body = forecast_body().context("build the forecast body")?;

    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for &backend in &settings.backends {
        for l1_cache in [true, false] {
            let scenario = scenario_name(backend, l1_cache);
            let measured = measure_origin(settings, backend, l1_cache, &token, &body)
                .await
                .with_context(|| format!("measure {scenario}"))?;
            if l1_cache {
                writes.push(WriteScenario {
                    backend,
                    versions_per_sec: measured.seed.count(201) as f64 / measured.seed.elapsed_secs.max(f64::EPSILON),
                    result: measured.seed,
                });
            }
            reads.push(ReadScenario {
                scenario,
                backend,
                l1_cache,
                result: measured.reads,
            });
        }
    }

    eprintln!("redis-benchmark GET ceiling");
    let ceiling_requests = (settings.duration.as_secs_f64() * CEILING_RATE_ESTIMATE as f64) as u64;
    let ceiling_plan = CeilingPlan {
        requests: ceiling_requests.max(CEILING_MIN_REQUESTS),
        value_size: body.len(),
        server_cpu: settings.server_cpu(),
        client_cpu: settings.load_cpu(),
        timeout: (settings.duration * 10).max(Duration::from_secs(60)),
    };
    let ceiling = ceiling::measure(&ceiling_plan)?;

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

struct Measured {
    seed: LoadResult,
    reads: LoadResult,
}

async fn measure_origin(
    settings: &Settings,
    backend: Backend,
    l1_cache: bool,
    token: &str,
    body: &Bytes,
) -> Result<Measured> {
    let scenario = scenario_name(backend, l1_cache);
    eprintln!("{scenario}: starting");
    // Locals drop in reverse order: the origin stops before its Redis and its data directory go.
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
    let mut origin = ChildProcess::spawn(&name, command)?;
    wait_ready(&mut origin, address).await?;

    let seed = seed(settings, address, token, body, &scenario).await?;
    ensure!(
        seed.count(201) == settings.instruments,
        "seeding expected 201 for {} writes, got statuses {:?} and {} transport errors{}",
        settings.instruments,
        seed.statuses,
        seed.transport_errors,
        origin.log_excerpt()
    );

    let instruments = settings.instruments;
    let read = move |_| {
        let index = rand::rng().random_range(0..instruments);
        http::get(&format!("/v1/forecasts/{}/{TIMEFRAME}", instrument(index)))
    };
    http::run(address, &Plan::timed(settings.connections, settings.warmup()), read)
        .await
        .context("warm up")?;
    let plan = Plan::timed(settings.connections, settings.duration).with_progress(format!("{scenario} reads"));
    let reads = http::run(address, &plan, read).await.context("read")?;

    if let Some(status) = origin.try_wait()? {
        bail!("origin exited with {status} during the run{}", origin.log_excerpt());
    }
    if reads.errors > 0 || reads.count(200) != reads.requests {
        eprintln!(
            "{scenario}: {} errors, statuses {:?}{}",
            reads.errors,
            reads.statuses,
            origin.log_excerpt()
        );
    }
    eprintln!(
        "{scenario}: {:.0} reads/s, {:.0} writes/s",
        reads.rps,
        seed.count(201) as f64 / seed.elapsed_secs.max(f64::EPSILON)
    );
    Ok(Measured { seed, reads })
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

/// Writes one forecast per instrument with `PUT /admin/v1/forecasts/{instrument}/1h`.
async fn seed(
    settings: &Settings,
    address: SocketAddr,
    token: &str,
    body: &Bytes,
    scenario: &str,
) -> Result<LoadResult> {
    let plan = Plan::timed(SEED_CONNECTIONS, SEED_TIME_LIMIT)
        .with_requests(settings.instruments)
        .with_progress(format!("{scenario} writes"));
    let token = token.to_owned();
    let body = body.clone();
    http::run(address, &plan, move |index| {
        http::json_request(
            Method::PUT,
            &format!("/admin/v1/forecasts/{}/{TIMEFRAME}", instrument(index)),
            body.clone(),
            Some(&token),
        )
    })
    .await
    .context("seed the instruments")
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
