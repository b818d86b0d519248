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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::{Method, Uri};
use serde::Serialize;
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ceiling::{Ceiling, CeilingPlan, CeilingServer};
use crate::control::Control;
use crate::http::{self, LoadResult, Plan};
use crate::launch::{self, ChildProcess, Pinning, RedisServer};
use crate::measure::{self, Machine};
use crate::median::Rounds;

/// The environment variable that sets the origin's admin token.
pub const BOOTSTRAP_TOKEN_VARIABLE: &str = "ORIGIN_AUTH__BOOTSTRAP_TOKEN";
/// Concurrency of the writes that seed the instruments.
pub const SEED_CONNECTIONS: usize = 64;
/// Upper bound of seeding, whatever the number of instruments.
const SEED_TIME_LIMIT: Duration = Duration::from_secs(300);
/// How long a fresh origin may take to answer `GET /readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
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
    fn server_cpu(&self) -> Option<usize> {
        Pinning::server_cpu(self.pinning)
    }

    fn load_cpu(&self) -> Option<usize> {
        Pinning::load_cpu(self.pinning)
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
    #[serde(flatten)]
    pub reads: Rounds<LoadResult>,
    /// Median requests per second over the median of the ceiling.
    pub vs_ceiling: f64,
}

impl ReadScenario {
    /// Errors summed over every round.
    pub fn errors(&self) -> u64 {
        self.reads.rounds.iter().map(|result| result.errors).sum()
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
            .filter(|read| read.reads.rounds.iter().any(|result| !is_clean(result)))
            .map(|read| read.scenario.as_str())
            .collect();
        ensure!(failed.is_empty(), "reads failed in: {}", failed.join(", "));
        Ok(())
    }
}

/// Starts and seeds every scenario of `settings` and the ceiling, then measures them in rounds.
/// `nproc` is recorded as machine info.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    ensure!(!settings.backends.is_empty(), "no backend to measure");
    ensure!(settings.rounds > 0, "no round to measure");
    let token = random_token();
    let body = forecast_body(time::Duration::HOUR, 0).context("build the forecast body")?;
    let keys: Arc<[String]> = (0..settings.instruments)
        .map(|index| format!("{}/{TIMEFRAME}", instrument(index)))
        .collect();
    let paths = read_paths(&keys)?;

    // Dropped on any error or on Ctrl-C, and with them every process they started.
    let mut origins = Vec::new();
    let mut writes = Vec::new();
    for &backend in &settings.backends {
        for l1_cache in [true, false] {
            let scenario = scenario_name(backend, l1_cache);
            eprintln!("{scenario}: starting");
            let server = OriginServer::start(
                &settings.origin_bin,
                backend,
                l1_cache,
                &token,
                settings.server_cpu(),
                &[],
            )
            .await
            .with_context(|| format!("start {scenario}"))?;
            let seed = server
                .write(&keys, &token, &body, &format!("{scenario} writes"))
                .await
                .with_context(|| format!("seed {scenario}"))?;
            eprintln!("{scenario}: {:.0} writes/s", versions_per_sec(&seed));
            if l1_cache {
                writes.push(WriteScenario {
                    backend,
                    versions_per_sec: versions_per_sec(&seed),
                    result: seed,
                });
            }
            let origin = Origin {
                scenario,
                backend,
                l1_cache,
                server,
            };
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
        let rounds =
            Rounds::of(rounds, |result| result.rps).with_context(|| format!("{} was not measured", origin.scenario))?;
        reads.push(ReadScenario {
            vs_ceiling: rounds.median.rps / ceiling.get.median.rps,
            scenario: origin.scenario,
            backend: origin.backend,
            l1_cache: origin.l1_cache,
            reads: rounds,
        });
    }

    Ok(Report {
        machine: Machine::describe(nproc, settings.pinning, &[("redis-server", "--version")]),
        settings: SettingsRecord {
            origin_bin: settings.origin_bin.clone(),
            instruments: settings.instruments,
            duration_secs: settings.duration.as_secs_f64(),
            warmup_secs: measure::warmup(settings.duration).as_secs_f64(),
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

/// The read path of each forecast key (`I00042/1h`), built once for all reads.
pub fn read_paths(keys: &[String]) -> Result<Arc<[Uri]>> {
    keys.iter()
        .map(|key| Uri::try_from(format!("/v1/forecasts/{key}")).context("build a read path"))
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
    server: OriginServer,
}

impl Origin {
    /// Warms up, then reads random instruments for the configured duration.
    async fn read(&mut self, settings: &Settings, paths: &Arc<[Uri]>, round: &str) -> Result<LoadResult> {
        let scenario = &self.scenario;
        let read = measure::random_reads(Arc::clone(paths));
        let address = self.server.address();
        http::run(
            address,
            &Plan::timed(settings.connections, measure::warmup(settings.duration)),
            read.clone(),
        )
        .await
        .context("warm up")?;
        let plan =
            Plan::timed(settings.connections, settings.duration).with_progress(format!("{scenario} reads, {round}"));
        let reads = http::run(address, &plan, read).await.context("read")?;

        self.server.ensure_running()?;
        if !is_clean(&reads) {
            eprintln!(
                "{scenario}, {round}: {} errors, statuses {:?}{}",
                reads.errors,
                reads.statuses,
                self.server.process.log_excerpt()
            );
        }
        eprintln!("{scenario}, {round}: {:.0} reads/s", reads.rps);
        Ok(reads)
    }
}

/// An origin on a free port of 127.0.0.1 with its own data directory (and `redis-server`), killed
/// on drop.
pub struct OriginServer {
    address: SocketAddr,
    // Fields drop in order: the origin stops before its Redis and its data directory go.
    process: ChildProcess,
    _redis: Option<RedisServer>,
    _data_dir: TempDir,
}

impl OriginServer {
    /// Starts the origin `bin` (and its `redis-server`), both on `cpu` when given, and waits until
    /// it is ready. `token` becomes its admin token; `env` adds settings.
    pub async fn start(
        bin: &Path,
        backend: Backend,
        l1_cache: bool,
        token: &str,
        cpu: Option<usize>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        ensure!(
            bin.is_file(),
            "origin executable {} not found: build it with `cargo build --release -p origin` or pass --origin-bin",
            bin.display()
        );
        let redis = match backend {
            Backend::Embedded => None,
            Backend::Redis => Some(RedisServer::start_on_cpu(cpu)?),
        };
        let data_dir = tempfile::Builder::new()
            .prefix("loadtest-origin-")
            .tempdir()
            .context("create the origin data directory")?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));

        let mut command = launch::command_on_cpu(bin, cpu);
        launch::remove_env_prefixed(&mut command, "ORIGIN_");
        let redis_url = redis.as_ref().map(RedisServer::url);
        configure(
            &mut command,
            address,
            redis_url.as_deref(),
            data_dir.path(),
            Some(token),
            None,
        );
        command
            .env("ORIGIN_CACHE__ENABLED", l1_cache.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        let name = format!("origin-{backend}-l1-{}", if l1_cache { "on" } else { "off" });
        let mut process = ChildProcess::spawn(&name, command)?;
        launch::wait_ready(&mut process, &format!("http://{address}/readyz"), READY_TIMEOUT).await?;
        Ok(Self {
            address,
            process,
            _redis: redis,
            _data_dir: data_dir,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Writes `body` once to each forecast key (`I00042/1h`) with `PUT /admin/v1/forecasts/{key}`;
    /// each must be a first version (201). `label` starts the progress lines.
    pub async fn write(&self, keys: &Arc<[String]>, token: &str, body: &Bytes, label: &str) -> Result<LoadResult> {
        let plan = Plan::timed(SEED_CONNECTIONS, SEED_TIME_LIMIT)
            .with_requests(keys.len() as u64)
            .with_progress(label);
        let (keys, token, body) = (Arc::clone(keys), token.to_owned(), body.clone());
        let count = keys.len() as u64;
        let seed = http::run(self.address, &plan, move |index| {
            let key = usize::try_from(index)
                .ok()
                .and_then(|index| keys.get(index))
                .context("no forecast key for this write")?;
            http::json_request(
                Method::PUT,
                &format!("/admin/v1/forecasts/{key}"),
                body.clone(),
                Some(&token),
            )
        })
        .await
        .context("write the forecasts")?;
        ensure!(
            seed.count(201) == count,
            "writing expected 201 for {count} writes, got statuses {:?} and {} transport errors{}",
            seed.statuses,
            seed.transport_errors,
            self.process.log_excerpt()
        );
        Ok(seed)
    }

    /// Reads the origin has answered so far: its `origin_http_requests_total` of the `/v1/` routes.
    pub async fn reads_answered(&self) -> Result<u64> {
        let uri: Uri = format!("http://{}/metrics", self.address)
            .parse()
            .context("build the metrics url")?;
        let response = http::fetch(&uri).await.context("read the origin's metrics")?;
        ensure!(
            response.status().is_success(),
            "the origin answered {} to GET /metrics",
            response.status()
        );
        reads_in_metrics(&String::from_utf8_lossy(response.body()))
    }

    /// Fails when the origin has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!(
                "origin exited with {status} during the run{}",
                self.process.log_excerpt()
            );
        }
        Ok(())
    }
}

/// Sets the environment of the origin `command`: it listens on `listen`, stores in Redis at
/// `redis_url` or else in the embedded store in `data_dir`, and `token` is its admin token; without
/// one, the origin generates its own on the first start on `data_dir` and prints it. With `control`,
/// it serves the control plane there; without, none.
pub fn configure(
    command: &mut Command,
    listen: SocketAddr,
    redis_url: Option<&str>,
    data_dir: &Path,
    token: Option<&str>,
    control: Option<Control<'_>>,
) {
    command
        .env("ORIGIN_HTTP__LISTEN", listen.to_string())
        .env("ORIGIN_STORAGE__REDIS_URL", redis_url.unwrap_or_default())
        .env("ORIGIN_STORAGE__DATA_DIR", data_dir);
    match token {
        Some(token) => command.env(BOOTSTRAP_TOKEN_VARIABLE, token),
        None => command.env_remove(BOOTSTRAP_TOKEN_VARIABLE),
    };
    match control {
        Some(Control { address, tls }) => command
            .env("ORIGIN_QUIC__LISTEN", address.to_string())
            .env("ORIGIN_TLS__CA", &tls.ca)
            .env("ORIGIN_TLS__CERT", &tls.cert)
            .env("ORIGIN_TLS__KEY", &tls.key),
        // Empty: no control plane.
        None => command.env("ORIGIN_QUIC__LISTEN", ""),
    };
}

/// The sum of `origin_http_requests_total` over the read routes (`/v1/…`) in a Prometheus text
/// exposition.
fn reads_in_metrics(text: &str) -> Result<u64> {
    text.lines()
        .filter(|line| line.starts_with("origin_http_requests_total{") && line.contains("route=\"/v1/"))
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap_or_default();
            // Counters are printed as integers, but the format allows floats.
            value
                .parse::<f64>()
                .map(|value| value as u64)
                .with_context(|| format!("metric line {line:?} has no value"))
        })
        .sum()
}

/// The forecast written for every instrument: generated now, valid for `valid_for`, and with its
/// metadata padded so that the JSON is at least `min_bytes` long.
pub fn forecast_body(valid_for: time::Duration, min_bytes: usize) -> Result<Bytes> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("truncate the time to seconds")?;
    let generated_at = now.format(&Rfc3339).context("format generated_at")?;
    let valid_until = (now + valid_for).format(&Rfc3339).context("format valid_until")?;
    let mut body = serde_json::json!({
        "horizon": "1h",
        "generated_at": generated_at,
        "valid_until": valid_until,
        "model": { "id": "lstm", "version": "3.2.0" },
        "point": 187.42,
        "quantiles": { "0.05": 181.2, "0.5": 187.4, "0.95": 193.9 },
        "direction_prob_up": 0.61,
        "metadata": { "features": "ohlcv" },
    });
    let unpadded = serde_json::to_vec(&body).context("serialize the forecast")?.len();
    if unpadded < min_bytes {
        const PADDING_FIELD: &str = r#","padding":"""#;
        let padding = "x".repeat(min_bytes.saturating_sub(unpadded + PADDING_FIELD.len()));
        body["metadata"]["padding"] = padding.into();
    }
    Ok(serde_json::to_vec(&body).context("serialize the forecast")?.into())
}

pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
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
    fn forecast_body_is_valid_for_the_given_time() {
        let body: serde_json::Value = serde_json::from_slice(&forecast_body(time::Duration::HOUR, 0).unwrap()).unwrap();
        let parse = |field: &str| OffsetDateTime::parse(body[field].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(parse("valid_until") - parse("generated_at"), time::Duration::HOUR);
        assert_eq!(body["model"]["id"], "lstm");
        assert_eq!(body["quantiles"]["0.5"], 187.4);
        assert_eq!(body["metadata"], serde_json::json!({ "features": "ohlcv" }));
    }

    #[test]
    fn forecast_body_is_padded_to_the_given_size() {
        let body = forecast_body(time::Duration::DAY, 900).unwrap();
        assert_eq!(body.len(), 900);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let parse = |field: &str| OffsetDateTime::parse(body[field].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(parse("valid_until") - parse("generated_at"), time::Duration::DAY);
        assert_eq!(body["metadata"]["features"], "ohlcv");
    }

    #[test]
    fn counts_reads_in_metrics() {
        let text = r#"# HELP origin_http_requests_total HTTP requests answered
# TYPE origin_http_requests_total counter
origin_http_requests_total{method="GET",route="/v1/forecasts/{instrument}/{timeframe}",status="200"} 12
origin_http_requests_total{method="GET",route="/v1/forecasts/{instrument}/{timeframe}/versions/{version}",status="200"} 3
origin_http_requests_total{method="GET",route="/metrics",status="200"} 7
origin_http_requests_total{method="PUT",route="/admin/v1/forecasts/{instrument}/{timeframe}",status="201"} 15
origin_l1_lookups_total{result="hit"} 40
"#;
        assert_eq!(reads_in_metrics(text).unwrap(), 15);
        assert_eq!(reads_in_metrics("").unwrap(), 0);
        assert!(reads_in_metrics(r#"origin_http_requests_total{route="/v1/x"} many"#).is_err());
    }

    #[test]
    fn tokens_are_random_hex() {
        let token = random_token();
        assert_eq!(token.len(), 32);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(token, random_token());
    }
}
