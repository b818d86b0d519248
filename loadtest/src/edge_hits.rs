//! `loadtest edge-hits`: how fast the edge serves cache hits next to nginx `proxy_cache` and
//! Varnish, its latency below saturation, and the memory each cached URL costs.
//!
//! One origin (embedded store) holds the forecasts, valid for the whole run. Each cache runs in
//! front of it on the server CPU, with the origin and this process on the other one. A cache that
//! is not installed is skipped; one that fails is reported and the others go on.
//!
//! 1. Each cache is started and warmed in two steps, one GET per URL: first the URLs the scenarios
//!    read, then more up to `entries_large`. Its resident memory is read before and after each
//!    step, and a sample of the URLs is read again to check that they are hits.
//! 2. Rounds: in each, every scenario (one hot URL; random URLs) is read from every cache in turn.
//!    The origin's count of reads before and after each run tells how many requests missed.
//! 3. Every cache is read once more per scenario at half the best peer's median rate, open loop, so
//!    that latency is compared where no cache is saturated.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hyper::header::HeaderMap;
use hyper::{StatusCode, Uri};
use serde::Serialize;
use tempfile::TempDir;

use crate::control::Control;
use crate::http::{self, LoadResult, Plan};
use crate::launch::{self, ChildProcess, Pinning, ProcessTree};
use crate::measure::{self, Machine};
use crate::median::Rounds;
use crate::origin_throughput::{self, Backend, OriginServer};
use crate::peers;

/// Memory for cached entries in every cache: the edge's budget, nginx's `max_size`, Varnish's
/// malloc storage. All URLs of a run fit, so nothing is evicted.
const CACHE_BYTES: u64 = 1 << 30;
/// Size of each forecast as written; the origin adds its key, version and update time, which
/// makes a GET body of about 1 KB.
const FORECAST_BYTES: usize = 930;
/// The forecasts stay fresh in every cache for the whole run.
const VALID_FOR: time::Duration = time::Duration::DAY;
/// Timeframes written, in the order their URLs are warmed; the scenarios read the first one.
const TIMEFRAMES: [&str; 7] = ["1h", "1m", "5m", "15m", "4h", "1d", "1w"];
/// URLs of each forecast: its current version and its version 1.
const URLS_PER_FORECAST: [&str; 2] = ["", "/versions/1"];
/// Most URLs a run can warm per instrument.
const MAX_URLS_PER_INSTRUMENT: u64 = (TIMEFRAMES.len() * URLS_PER_FORECAST.len()) as u64;
/// How long a fresh cache may take to answer through to the origin.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of one warming step, whatever its number of URLs.
const WARM_TIME_LIMIT: Duration = Duration::from_secs(300);
/// URLs read again after each warming step to check that they are hits.
const WARM_SAMPLE: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// Our edge (`edge` next to this executable, or --edge-bin)
    Edge,
    /// nginx proxy_cache (Debian package nginx)
    Nginx,
    /// Varnish (Debian package varnish)
    Varnish,
}

impl CacheKind {
    pub fn is_peer(self) -> bool {
        self != Self::Edge
    }
}

impl fmt::Display for CacheKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that table columns can set a width.
        f.pad(match self {
            Self::Edge => "edge",
            Self::Nginx => "nginx",
            Self::Varnish => "varnish",
        })
    }
}

/// What one `loadtest edge-hits` run measures.
#[derive(Debug, Clone)]
pub struct Settings {
    pub origin_bin: PathBuf,
    pub edge_bin: PathBuf,
    pub caches: Vec<CacheKind>,
    /// Instruments; the current forecast of each on the first timeframe is a URL read at random.
    pub instruments: u64,
    /// URLs cached by the second warming step.
    pub entries_large: u64,
    /// Length of each measured run.
    pub duration: Duration,
    pub connections: usize,
    /// Each round reads every scenario from every cache once.
    pub rounds: u32,
    pub pinning: Option<Pinning>,
}

/// Everything one run measured, as written to the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: SettingsRecord,
    pub caches: Vec<CacheRecord>,
    pub scenarios: Vec<ScenarioReport>,
    pub half_rate: Vec<HalfRateReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsRecord {
    pub origin_bin: PathBuf,
    pub edge_bin: PathBuf,
    pub caches: Vec<CacheKind>,
    pub instruments: u64,
    pub entries_large: u64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub connections: usize,
    pub rounds: u32,
    pub cache_bytes: u64,
    /// Size of each forecast as written.
    pub forecast_body_bytes: usize,
    /// Size of the body of a GET of one forecast.
    pub response_body_bytes: usize,
}

/// What became of one cache, and its memory.
#[derive(Debug, Clone, Serialize)]
pub struct CacheRecord {
    pub cache: CacheKind,
    #[serde(flatten)]
    pub status: Status,
    /// `None` when it was skipped or failed before it was warmed.
    pub memory: Option<Memory>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    Measured,
    /// Not installed here.
    Skipped {
        reason: String,
    },
    /// Did not start, warm or answer; figures measured before that are kept.
    Failed {
        error: String,
    },
}

/// Resident memory of a cache (see [`ProcessTree::resident_bytes`]) as it is warmed.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// After start, with the one URL read to tell that it is ready.
    pub before_bytes: u64,
    pub steps: Vec<MemoryStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryStep {
    /// URLs cached by the end of this step.
    pub entries: u64,
    pub resident_bytes: u64,
    /// (resident − before) / entries.
    pub bytes_per_entry: f64,
    /// URLs read again after this step, and how many of them were hits.
    pub sampled: u64,
    pub sampled_hits: u64,
}

/// One measured run against one cache.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub load: LoadResult,
    /// Reads the origin answered during the run: requests the cache did not answer from its store.
    pub origin_reads: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `hot key` or `N keys`.
    pub scenario: String,
    pub keys: usize,
    pub rows: Vec<CacheRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheRow {
    pub cache: CacheKind,
    #[serde(flatten)]
    pub reads: Rounds<Measurement>,
    /// Over every round.
    pub hit_ratio: f64,
    /// Median requests per second over the best median of a peer; `None` without peers.
    pub vs_best_peer: Option<f64>,
}

impl CacheRow {
    /// Errors summed over every round.
    pub fn errors(&self) -> u64 {
        self.reads.rounds.iter().map(|round| round.load.errors).sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HalfRateReport {
    pub scenario: String,
    /// The cache whose median rate was halved: the fastest peer, or the fastest cache without peers.
    pub reference: CacheKind,
    pub reference_rps: f64,
    /// Requests per second sent to every cache.
    pub rate: f64,
    pub rows: Vec<HalfRateRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HalfRateRow {
    pub cache: CacheKind,
    pub hit_ratio: f64,
    #[serde(flatten)]
    pub measurement: Measurement,
}

impl Report {
    /// Fails when a cache failed, missed, or answered a read with an error.
    pub fn ensure_clean(&self) -> Result<()> {
        let mut problems = Vec::new();
        for record in &self.caches {
            if let Status::Failed { error } = &record.status {
                problems.push(format!("{} failed: {error}", record.cache));
            }
            for step in record.memory.iter().flat_map(|memory| &memory.steps) {
                if step.sampled_hits < step.sampled {
                    problems.push(format!(
                        "{}: {} of {} URLs read again after warming {} were hits",
                        record.cache, step.sampled_hits, step.sampled, step.entries
                    ));
                }
            }
        }
        let rows = self.scenarios.iter().flat_map(|scenario| {
            let rows = scenario.rows.iter();
            rows.map(move |row| (&scenario.scenario, row.cache, row.errors(), row.hit_ratio))
        });
        let half_rate_rows = self.half_rate.iter().flat_map(|half| {
            let rows = half.rows.iter();
            rows.map(move |row| (&half.scenario, row.cache, row.measurement.load.errors, row.hit_ratio))
        });
        for (scenario, cache, errors, hit_ratio) in rows.chain(half_rate_rows) {
            if errors > 0 {
                problems.push(format!("{cache}, {scenario}: {errors} errors"));
            }
            if hit_ratio < 1.0 {
                problems.push(format!("{cache}, {scenario}: hit ratio {hit_ratio:.4}"));
            }
        }
        if !self.caches.iter().any(|record| record.status == Status::Measured) {
            problems.push("no cache was measured".to_owned());
        }
        ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

/// Starts the origin and every cache of `settings`, warms them and measures them. `nproc` is
/// recorded as machine info.
pub async fn run(settings: &Settings, nproc: usize) -> Result<Report> {
    ensure!(!settings.caches.is_empty(), "no cache to measure");
    ensure!(settings.rounds > 0, "no round to measure");
    ensure!(
        settings.entries_large > settings.instruments
            && settings.entries_large <= settings.instruments * MAX_URLS_PER_INSTRUMENT,
        "--entries-large {} must exceed --instruments {} and be at most {MAX_URLS_PER_INSTRUMENT} times it",
        settings.entries_large,
        settings.instruments
    );
    let (forecast_keys, url_keys) = urls(settings.instruments, settings.entries_large);
    let paths = origin_throughput::read_paths(&url_keys)?;
    let token = origin_throughput::random_token();
    let body = origin_throughput::forecast_body(VALID_FOR, FORECAST_BYTES).context("build the forecast body")?;

    eprintln!("origin: starting");
    let load_cpu = Pinning::load_cpu(settings.pinning);
    let mut origin = OriginServer::start(&settings.origin_bin, Backend::Embedded, true, &token, load_cpu, &[]).await?;
    origin
        .write(&forecast_keys.into(), &token, &body, "origin writes")
        .await
        .context("write the forecasts")?;
    let response = http::fetch(&url(origin.address(), &paths[0])?).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "the origin answered {} to GET {}",
        response.status(),
        paths[0]
    );
    let instruments = usize::try_from(settings.instruments).context("instruments do not fit in memory")?;
    let scenarios = [
        Scenario {
            name: "hot key".to_owned(),
            paths: paths[..1].into(),
        },
        Scenario {
            name: format!("{instruments} keys"),
            paths: paths[..instruments].into(),
        },
    ];

    // Dropped on any error or on Ctrl-C, and with them every process they started.
    let (mut contenders, mut caches) = prepare_all(settings, origin.address(), &paths).await;

    for round in 1..=settings.rounds {
        let label = format!("round {round}/{}", settings.rounds);
        for (index, scenario) in scenarios.iter().enumerate() {
            for contender in contenders.iter_mut().filter(|contender| contender.failure.is_none()) {
                let label = format!("{} {}, {label}", contender.cache.kind, scenario.name);
                let plan = Plan::timed(settings.connections, settings.duration).with_progress(&label);
                if let Some(measurement) = contender.read(&mut origin, &plan, scenario, &label).await? {
                    contender.rounds[index].push(measurement);
                }
            }
        }
    }

    let mut reports = Vec::new();
    let mut half_rate = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let rows = scenario_rows(&contenders, index, settings.rounds)?;
        if let Some(reference) = reference(&rows) {
            half_rate.push(read_at_half_rate(&mut contenders, &mut origin, settings, scenario, reference).await?);
        }
        reports.push(ScenarioReport {
            scenario: scenario.name.clone(),
            keys: scenario.paths.len(),
            rows,
        });
    }

    for contender in &contenders {
        caches.push(CacheRecord {
            cache: contender.cache.kind,
            status: contender
                .failure
                .clone()
                .map_or(Status::Measured, |error| Status::Failed { error }),
            memory: Some(contender.memory.clone()),
        });
    }
    caches.sort_by_key(|record| settings.caches.iter().position(|&kind| kind == record.cache));

    Ok(Report {
        machine: Machine::describe(nproc, settings.pinning, &[("nginx", "-v"), ("varnishd", "-V")]),
        settings: SettingsRecord {
            origin_bin: settings.origin_bin.clone(),
            edge_bin: settings.edge_bin.clone(),
            caches: settings.caches.clone(),
            instruments: settings.instruments,
            entries_large: settings.entries_large,
            duration_secs: settings.duration.as_secs_f64(),
            warmup_secs: measure::warmup(settings.duration).as_secs_f64(),
            connections: settings.connections,
            rounds: settings.rounds,
            cache_bytes: CACHE_BYTES,
            forecast_body_bytes: body.len(),
            response_body_bytes: response.body().len(),
        },
        caches,
        scenarios: reports,
        half_rate,
    })
}

/// The forecast keys to write (`I00042/1h`) and the URL keys to warm (`I00042/1h`,
/// `I00042/1h/versions/1`), `entries` of them in warming order: the current version of every
/// instrument on the first timeframe (what the scenarios read), then their version 1, then the
/// same on the next timeframe.
fn urls(instruments: u64, entries: u64) -> (Vec<String>, Vec<String>) {
    let mut forecasts = Vec::new();
    let mut urls = Vec::new();
    for timeframe in TIMEFRAMES {
        if urls.len() as u64 >= entries {
            break;
        }
        forecasts.extend((0..instruments).map(|index| format!("{}/{timeframe}", origin_throughput::instrument(index))));
        for suffix in URLS_PER_FORECAST {
            let timeframe_urls =
                (0..instruments).map(|index| format!("{}/{timeframe}{suffix}", origin_throughput::instrument(index)));
            urls.extend(timeframe_urls);
        }
    }
    urls.truncate(usize::try_from(entries).unwrap_or(usize::MAX));
    (forecasts, urls)
}

/// Whether a response is a hit of the cache that sent it: the last entry of its `Cache-Status`
/// (RFC 9211), the one that cache added, has the `hit` parameter.
pub fn is_hit(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get_all("cache-status").iter().next_back() else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let last = value.rsplit(',').next().unwrap_or_default();
    last.split(';')
        .skip(1)
        .any(|param| matches!(param.trim(), "hit" | "hit=?1"))
}

/// Requests answered from the caches' stores over all requests of `measurements`; 0 without any.
fn hit_ratio(measurements: &[Measurement]) -> f64 {
    let requests: u64 = measurements.iter().map(|measurement| measurement.load.requests).sum();
    let misses: u64 = measurements.iter().map(|measurement| measurement.origin_reads).sum();
    if requests == 0 {
        return 0.0;
    }
    requests.saturating_sub(misses) as f64 / requests as f64
}

/// The fastest peer by median rate, or the fastest cache when no peer was measured.
fn reference(rows: &[CacheRow]) -> Option<(CacheKind, f64)> {
    fastest(rows, true).or_else(|| fastest(rows, false))
}

/// The cache of `rows` (only peers when `peers_only`) with the highest median rate, and that rate.
fn fastest(rows: &[CacheRow], peers_only: bool) -> Option<(CacheKind, f64)> {
    rows.iter()
        .filter(|row| !peers_only || row.cache.is_peer())
        .map(|row| (row.cache, row.reads.median.rps))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The rows of scenario `index`: every cache measured in all rounds, compared with the best peer.
fn scenario_rows(contenders: &[Contender], index: usize, rounds: u32) -> Result<Vec<CacheRow>> {
    let mut rows = Vec::new();
    for contender in contenders {
        let measurements = &contender.rounds[index];
        if measurements.len() != rounds as usize {
            continue;
        }
        let hit_ratio = hit_ratio(measurements);
        let reads = Rounds::of(measurements.clone(), |measurement| measurement.load.rps)
            .with_context(|| format!("{} was not measured", contender.cache.kind))?;
        rows.push(CacheRow {
            cache: contender.cache.kind,
            reads,
            hit_ratio,
            vs_best_peer: None,
        });
    }
    let best_peer = fastest(&rows, true);
    for row in &mut rows {
        row.vs_best_peer = best_peer.map(|(_, best)| row.reads.median.rps / best);
    }
    Ok(rows)
}

/// What one scenario reads: a random one of `paths` per request.
struct Scenario {
    name: String,
    paths: Arc<[Uri]>,
}

/// The executable of `kind`, or why it cannot run here.
fn executable(kind: CacheKind, settings: &Settings) -> Result<PathBuf, String> {
    let on_path = |program: &str, package: &str| {
        launch::find_on_path(program)
            .ok_or_else(|| format!("{program} is not on PATH: install the Debian package {package}"))
    };
    match kind {
        CacheKind::Edge if settings.edge_bin.is_file() => Ok(settings.edge_bin.clone()),
        CacheKind::Edge => Err(format!(
            "{} not found: build it with `cargo build --release -p edge` or pass --edge-bin",
            settings.edge_bin.display()
        )),
        CacheKind::Nginx => on_path("nginx", "nginx"),
        CacheKind::Varnish => on_path("varnishd", "varnish"),
    }
}

/// `http://ADDRESS/path`
fn url(address: SocketAddr, path: &Uri) -> Result<Uri> {
    format!("http://{address}{path}")
        .parse()
        .with_context(|| format!("build the url of {path}"))
}

/// Starts and warms every cache of `settings` in turn: those that are ready to be measured, and a
/// record of each that was skipped or failed.
async fn prepare_all(
    settings: &Settings,
    origin: SocketAddr,
    paths: &Arc<[Uri]>,
) -> (Vec<Contender>, Vec<CacheRecord>) {
    let mut contenders = Vec::new();
    let mut records = Vec::new();
    for &kind in &settings.caches {
        let status = match executable(kind, settings) {
            Err(reason) => {
                eprintln!("{kind}: skipped, {reason}");
                Status::Skipped { reason }
            }
            Ok(program) => {
                eprintln!("{kind}: starting");
                match prepare(kind, &program, settings, origin, paths).await {
                    Ok(contender) => {
                        contenders.push(contender);
                        continue;
                    }
                    Err(error) => {
                        eprintln!("{kind}: failed: {error:#}");
                        Status::Failed {
                            error: format!("{error:#}"),
                        }
                    }
                }
            }
        };
        records.push(CacheRecord {
            cache: kind,
            status,
            memory: None,
        });
    }
    (contenders, records)
}

/// Reads `scenario` from every contender at half the median rate of `reference`, open loop.
async fn read_at_half_rate(
    contenders: &mut [Contender],
    origin: &mut OriginServer,
    settings: &Settings,
    scenario: &Scenario,
    (reference, reference_rps): (CacheKind, f64),
) -> Result<HalfRateReport> {
    let rate = reference_rps / 2.0;
    let mut rows = Vec::new();
    for contender in contenders.iter_mut().filter(|contender| contender.failure.is_none()) {
        let label = format!("{} {}, half rate", contender.cache.kind, scenario.name);
        let plan = Plan::timed(settings.connections, settings.duration)
            .at_rate(rate)
            .with_progress(&label);
        if let Some(measurement) = contender.read(origin, &plan, scenario, &label).await? {
            rows.push(HalfRateRow {
                cache: contender.cache.kind,
                hit_ratio: hit_ratio(std::slice::from_ref(&measurement)),
                measurement,
            });
        }
    }
    Ok(HalfRateReport {
        scenario: scenario.name.clone(),
        reference,
        reference_rps,
        rate,
        rows,
    })
}

/// Starts and warms a cache (see the module documentation).
async fn prepare(
    kind: CacheKind,
    program: &Path,
    settings: &Settings,
    origin: SocketAddr,
    paths: &Arc<[Uri]>,
) -> Result<Contender> {
    let cache = Cache::start(kind, program, origin, Pinning::server_cpu(settings.pinning), &paths[0]).await?;
    let mut memory = Memory {
        before_bytes: cache.process.resident_bytes()?,
        steps: Vec::new(),
    };
    let mut warmed = 0;
    for entries in [settings.instruments, settings.entries_large] {
        let end = usize::try_from(entries).context("entries do not fit in memory")?;
        cache.warm(paths, warmed..end, settings.connections).await?;
        warmed = end;
        let (sampled, sampled_hits) = cache.sample_hits(&paths[..end]).await?;
        let resident_bytes = cache.process.resident_bytes()?;
        let step = MemoryStep {
            entries,
            resident_bytes,
            bytes_per_entry: (resident_bytes as f64 - memory.before_bytes as f64) / entries as f64,
            sampled,
            sampled_hits,
        };
        eprintln!(
            "{kind}: {entries} URLs cached, {:.0} bytes each, {sampled_hits} of {sampled} read again were hits",
            step.bytes_per_entry
        );
        memory.steps.push(step);
    }
    Ok(Contender {
        cache,
        memory,
        rounds: vec![Vec::new(); 2],
        failure: None,
    })
}

/// A cache under test and what it measured so far.
struct Contender {
    cache: Cache,
    memory: Memory,
    /// Per scenario, the measurement of each round.
    rounds: Vec<Vec<Measurement>>,
    /// Why it stopped being measured.
    failure: Option<String>,
}

impl Contender {
    /// Warms up, then reads `scenario` with `plan`; `label` names the run in messages. A failure
    /// of the cache is recorded and gives `None`; a failure of the origin is an error.
    async fn read(
        &mut self,
        origin: &mut OriginServer,
        plan: &Plan,
        scenario: &Scenario,
        label: &str,
    ) -> Result<Option<Measurement>> {
        let result = self.cache.read(origin, plan, &scenario.paths).await;
        origin.ensure_running()?;
        match result {
            Ok(measurement) => {
                eprintln!(
                    "{label}: {:.0} req/s, {} errors, {} reads reached the origin",
                    measurement.load.rps, measurement.load.errors, measurement.origin_reads
                );
                Ok(Some(measurement))
            }
            Err(error) => {
                eprintln!("{label}: failed: {error:#}");
                self.failure = Some(format!("{label}: {error:#}"));
                Ok(None)
            }
        }
    }
}

/// A cache running on loopback in front of the origin.
struct Cache {
    kind: CacheKind,
    address: SocketAddr,
    // Declared before `_dir` so that the processes stop before their directory is removed.
    process: ProcessTree,
    _dir: Option<TempDir>,
}

impl Cache {
    /// Starts `kind` from `program` on `cpu` and waits until it answers `ready` (a path of the
    /// origin, which it then holds) with 200.
    async fn start(
        kind: CacheKind,
        program: &Path,
        origin: SocketAddr,
        cpu: Option<usize>,
        ready: &Uri,
    ) -> Result<Self> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));
        let (process, dir) = match kind {
            CacheKind::Edge => (start_edge(program, address, origin, cpu)?, None),
            CacheKind::Nginx => {
                let (process, dir) = peers::start_nginx(program, address, origin, CACHE_BYTES, cpu)?;
                (process, Some(dir))
            }
            CacheKind::Varnish => {
                let (process, dir) = peers::start_varnish(program, address, origin, CACHE_BYTES, cpu)?;
                (process, Some(dir))
            }
        };
        let mut cache = Self {
            kind,
            address,
            process,
            _dir: dir,
        };
        let ready = url(address, ready)?.to_string();
        launch::wait_ready(cache.process.root_mut(), &ready, READY_TIMEOUT).await?;
        Ok(cache)
    }

    /// GETs each URL of `paths[range]` once; each must answer 200.
    async fn warm(&self, paths: &Arc<[Uri]>, range: Range<usize>, connections: usize) -> Result<()> {
        let count = range.len() as u64;
        let plan = Plan::timed(connections, WARM_TIME_LIMIT)
            .with_requests(count)
            .with_progress(format!("{} warming", self.kind));
        let paths = Arc::clone(paths);
        let first = range.start;
        let result = http::run(self.address, &plan, move |index| {
            let path = usize::try_from(index)
                .ok()
                .and_then(|index| paths.get(first + index))
                .context("no URL for this request")?;
            Ok(http::get_uri(path.clone()))
        })
        .await
        .context("warm")?;
        ensure!(
            result.count(200) == count && result.errors == 0,
            "warming {count} URLs got statuses {:?} and {} transport errors{}",
            result.statuses,
            result.transport_errors,
            self.process.root().log_excerpt()
        );
        Ok(())
    }

    /// Reads URLs spread evenly over `paths` once more, each on a new connection, and counts
    /// those answered 200 as a hit: (read, hits).
    async fn sample_hits(&self, paths: &[Uri]) -> Result<(u64, u64)> {
        let mut indexes: Vec<usize> = (0..WARM_SAMPLE).map(|step| step * paths.len() / WARM_SAMPLE).collect();
        indexes.dedup();
        let mut hits = 0;
        for &index in &indexes {
            let response = http::fetch(&url(self.address, &paths[index])?).await?;
            if response.status() == StatusCode::OK && is_hit(response.headers()) {
                hits += 1;
            }
        }
        Ok((indexes.len() as u64, hits))
    }

    /// Warms up, then reads random `paths` with `plan`, counting the origin's reads meanwhile.
    async fn read(&mut self, origin: &OriginServer, plan: &Plan, paths: &Arc<[Uri]>) -> Result<Measurement> {
        let read = measure::random_reads(Arc::clone(paths));
        let warmup = Plan {
            duration: measure::warmup(plan.duration),
            progress: None,
            ..plan.clone()
        };
        http::run(self.address, &warmup, read.clone())
            .await
            .context("warm up")?;
        let before = origin.reads_answered().await?;
        let load = http::run(self.address, plan, read).await.context("read")?;
        let origin_reads = origin.reads_answered().await?.saturating_sub(before);
        let root = self.process.root_mut();
        if let Some(status) = root.try_wait()? {
            bail!(
                "{} exited with {status} during the run{}",
                root.name(),
                root.log_excerpt()
            );
        }
        Ok(Measurement { load, origin_reads })
    }
}

/// Starts the edge `program`, configured by environment variables only.
fn start_edge(program: &Path, listen: SocketAddr, origin: SocketAddr, cpu: Option<usize>) -> Result<ProcessTree> {
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, launch::free_port()?));
    let mut command = launch::command_on_cpu(program, cpu);
    launch::remove_env_prefixed(&mut command, "EDGE_");
    configure(&mut command, listen, metrics, origin, None);
    command
        .env("EDGE_CACHE__MEMORY_BYTES", CACHE_BYTES.to_string())
        .env("RUST_LOG", "warn");
    // One process: nothing of its own to stop, so it is killed at once.
    Ok(ProcessTree::new(ChildProcess::spawn("edge", command)?, Duration::ZERO))
}

/// Sets the environment of the edge `command`: it listens on `listen` for readers and on `metrics`
/// for `/metrics` and `/healthz`, in front of the origin at `origin`. With `control`, it follows
/// the origin's control plane there and stores the responses it pushes for the hosts readers use
/// (`listen` and `localhost` on its port); without, it runs standalone.
pub fn configure(
    command: &mut Command,
    listen: SocketAddr,
    metrics: SocketAddr,
    origin: SocketAddr,
    control: Option<Control<'_>>,
) {
    command
        .env("EDGE_HTTP__LISTEN", listen.to_string())
        .env("EDGE_METRICS__LISTEN", metrics.to_string())
        .env("EDGE_UPSTREAM__URL", format!("http://{origin}"));
    match control {
        Some(Control { address, tls }) => command
            .env("EDGE_CONTROL__ORIGINS", address.to_string())
            .env("EDGE_TLS__CA", &tls.ca)
            .env("EDGE_TLS__CERT", &tls.cert)
            .env("EDGE_TLS__KEY", &tls.key)
            .env(
                "EDGE_CONTROL__WARM_HOSTS",
                format!("{listen},localhost:{}", listen.port()),
            ),
        // Empty: standalone.
        None => command.env("EDGE_CONTROL__ORIGINS", ""),
    };
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &value in values {
            headers.append("cache-status", HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn tells_hits_by_the_last_cache_status_entry() {
        assert!(is_hit(&headers(&["edge; hit"])));
        assert!(is_hit(&headers(&["nginx; hit"])));
        assert!(is_hit(&headers(&["edge; hit=?1; ttl=300"])));
        assert!(is_hit(&headers(&["origin-shield; fwd=miss, edge; hit"])));
        assert!(is_hit(&headers(&["origin-shield; fwd=miss", "edge; hit"])));
        assert!(!is_hit(&headers(&["edge; fwd=miss; stored"])));
        assert!(!is_hit(&headers(&["edge; hit, varnish; fwd=miss"])));
        assert!(!is_hit(&headers(&["edge; hit=?0"])));
        assert!(!is_hit(&headers(&["hit"])));
        assert!(!is_hit(&headers(&[])));
    }

    #[test]
    fn urls_start_with_the_scenario_keys_and_cover_the_entries() {
        let (forecasts, urls) = urls(3, 8);
        assert_eq!(
            forecasts,
            [
                "I00000/1h",
                "I00001/1h",
                "I00002/1h",
                "I00000/1m",
                "I00001/1m",
                "I00002/1m"
            ]
        );
        assert_eq!(
            urls,
            [
                "I00000/1h",
                "I00001/1h",
                "I00002/1h",
                "I00000/1h/versions/1",
                "I00001/1h/versions/1",
                "I00002/1h/versions/1",
                "I00000/1m",
                "I00001/1m",
            ]
        );
        let (forecasts, all) = super::urls(10, 10 * MAX_URLS_PER_INSTRUMENT);
        assert_eq!(forecasts.len(), 70);
        assert_eq!(all.len(), 140);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }

    fn measurement(requests: u64, origin_reads: u64, rps: f64) -> Measurement {
        let load = LoadResult {
            requests,
            ok: requests,
            errors: 0,
            transport_errors: 0,
            reconnects: 0,
            statuses: [(200, requests)].into(),
            elapsed_secs: 1.0,
            rps,
            mean_us: 100.0,
            p50_us: 100,
            p90_us: 100,
            p99_us: 100,
            p999_us: 100,
            max_us: 100,
        };
        Measurement { load, origin_reads }
    }

    fn row(cache: CacheKind, rps: f64) -> CacheRow {
        CacheRow {
            cache,
            reads: Rounds::of(vec![measurement(10, 0, rps)], |m| m.load.rps).unwrap(),
            hit_ratio: 1.0,
            vs_best_peer: None,
        }
    }

    #[test]
    fn hit_ratio_counts_reads_that_reached_the_origin() {
        assert_eq!(hit_ratio(&[measurement(90, 0, 1.0), measurement(10, 10, 1.0)]), 0.9);
        assert_eq!(hit_ratio(&[measurement(10, 20, 1.0)]), 0.0);
        assert_eq!(hit_ratio(&[]), 0.0);
    }

    #[test]
    fn the_reference_is_the_fastest_peer() {
        let rows = [
            row(CacheKind::Edge, 300.0),
            row(CacheKind::Nginx, 200.0),
            row(CacheKind::Varnish, 100.0),
        ];
        assert_eq!(reference(&rows), Some((CacheKind::Nginx, 200.0)));
        assert_eq!(reference(&rows[..1]), Some((CacheKind::Edge, 300.0)));
        assert_eq!(reference(&[]), None);
    }
}
