//! Command-line arguments of the `loadtest` binary and the parsers they need.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::edge_hits::{self, CacheKind};
use crate::invalidation;
use crate::launch::Pinning;
use crate::local;
use crate::origin_throughput::{self, Backend};
use crate::sse;
use crate::webhooks;

/// Settings of `loadtest origin --quick`, a smoke run for tests.
const QUICK_INSTRUMENTS: u64 = 200;
const QUICK_DURATION: Duration = Duration::from_secs(2);
const QUICK_ROUNDS: u32 = 1;
/// Settings of `loadtest edge-hits --quick`.
const QUICK_EDGE_INSTRUMENTS: u64 = 100;
const QUICK_EDGE_ENTRIES: u64 = 500;
const QUICK_EDGE_DURATION: Duration = Duration::from_secs(1);
/// Settings of `loadtest invalidation --quick`.
const QUICK_INVALIDATION_ROUNDS: u32 = 20;
const QUICK_INVALIDATION_EDGES: usize = 1;
const QUICK_INVALIDATION_RATE: u32 = 100;
/// The scenario of `loadtest sse --quick`.
const QUICK_SSE: sse::Scenario = sse::Scenario {
    subscribers: 50,
    rate: 20,
};
/// The scenario of `loadtest webhooks --quick`.
const QUICK_WEBHOOKS: webhooks::Scenario = webhooks::Scenario {
    endpoints: 10,
    rate: 20,
    failing_percent: 30,
};
const QUICK_HIT_RATIO_DURATION: Duration = Duration::from_secs(6);

/// Arguments of every measurement: how the load is run and where the figures go.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// How long each measured run lasts, such as `10s`, `500ms` or `1m`
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Keep-alive connections of the read load
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub connections: u16,
    /// Rounds, each measuring every scenario in turn; the table shows the median of each scenario
    /// over the rounds
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Where to write all figures as JSON [default: `loadtest/COMMAND.json` in the target directory]
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl LoadArgs {
    /// Where the JSON report of `command` goes.
    pub fn json_path(&self, exe_dir: &Path, command: &str) -> PathBuf {
        json_path(self.json.as_deref(), exe_dir, command)
    }
}

/// `json`, or else `loadtest/COMMAND.json` in the target directory, the parent of `exe_dir`.
fn json_path(json: Option<&Path>, exe_dir: &Path, command: &str) -> PathBuf {
    json.map_or_else(
        || {
            let target = exe_dir.parent().unwrap_or(exe_dir);
            target.join("loadtest").join(format!("{command}.json"))
        },
        Path::to_owned,
    )
}

/// Arguments of `loadtest origin`.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginArgs {
    /// The origin executable [default: `origin` next to this executable]
    #[arg(long)]
    pub origin_bin: Option<PathBuf>,
    /// Instruments written once each and then read at random (named I00000, I00001, …)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=99_999))]
    pub instruments: u64,
    /// Storage backends to measure
    #[arg(long, value_enum, value_delimiter = ',', default_value = "embedded,redis")]
    pub backends: Vec<Backend>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// A fast smoke run: 200 instruments, 2 s per scenario, one round
    #[arg(long, conflicts_with_all = ["instruments", "duration", "rounds"])]
    pub quick: bool,
}

impl OriginArgs {
    /// The settings of this run; defaults of paths are relative to `exe_dir`, the directory of
    /// the running executable (such as `target/release`).
    pub fn settings(&self, exe_dir: &Path, pinning: Option<Pinning>) -> origin_throughput::Settings {
        let (instruments, duration, rounds) = if self.quick {
            (QUICK_INSTRUMENTS, QUICK_DURATION, QUICK_ROUNDS)
        } else {
            (self.instruments, self.load.duration, self.load.rounds)
        };
        origin_throughput::Settings {
            origin_bin: self.origin_bin.clone().unwrap_or_else(|| exe_dir.join("origin")),
            instruments,
            duration,
            connections: usize::from(self.load.connections),
            backends: distinct(&self.backends),
            rounds,
            pinning,
        }
    }
}

/// Arguments of `loadtest edge-hits`.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeHitsArgs {
    /// The edge executable [default: `edge` next to this executable]
    #[arg(long)]
    pub edge_bin: Option<PathBuf>,
    /// The origin executable [default: `origin` next to this executable]
    #[arg(long)]
    pub origin_bin: Option<PathBuf>,
    /// Caches to measure; those not installed are skipped
    #[arg(long, value_enum, value_delimiter = ',', default_value = "edge,nginx,varnish")]
    pub caches: Vec<CacheKind>,
    /// Instruments; the current 1h forecast of each is one of the URLs read at random
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=99_999))]
    pub instruments: u64,
    /// URLs cached for the second memory figure: current versions and versions/1 of up to seven
    /// timeframes, so more than --instruments and at most 14 times it
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(2..))]
    pub entries_large: u64,
    #[command(flatten)]
    pub load: LoadArgs,
    /// A fast smoke run: 100 instruments, 500 URLs, 1 s per run, one round
    #[arg(long, conflicts_with_all = ["instruments", "entries_large", "duration", "rounds"])]
    pub quick: bool,
}

impl EdgeHitsArgs {
    /// The settings of this run; defaults of paths are relative to `exe_dir`, the directory of
    /// the running executable (such as `target/release`).
    pub fn settings(&self, exe_dir: &Path, pinning: Option<Pinning>) -> edge_hits::Settings {
        let (instruments, entries_large, duration, rounds) = if self.quick {
            (
                QUICK_EDGE_INSTRUMENTS,
                QUICK_EDGE_ENTRIES,
                QUICK_EDGE_DURATION,
                QUICK_ROUNDS,
            )
        } else {
            (
                self.instruments,
                self.entries_large,
                self.load.duration,
                self.load.rounds,
            )
        };
        edge_hits::Settings {
            origin_bin: self.origin_bin.clone().unwrap_or_else(|| exe_dir.join("origin")),
            edge_bin: self.edge_bin.clone().unwrap_or_else(|| exe_dir.join("edge")),
            caches: distinct(&self.caches),
            instruments,
            entries_large,
            duration,
            connections: usize::from(self.load.connections),
            rounds,
            pinning,
        }
    }
}

/// Arguments of `loadtest sse`.
#[derive(Debug, Clone, clap::Args)]
pub struct SseArgs {
    /// The origin executable [default: `origin` next to this executable]
    #[arg(long)]
    pub origin_bin: Option<PathBuf>,
    /// Servers to measure; nchan is skipped when nginx or libnginx-mod-nchan is not installed
    #[arg(long, value_enum, value_delimiter = ',', default_value = "origin,nchan")]
    pub servers: Vec<sse::Server>,
    /// Scenarios, comma-separated, each SUBSCRIBERSxEVENTS_PER_SECOND
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario,
        default_value = "1000x100,10000x10,1000x400,1000x1000,1000x2000")]
    pub scenarios: Vec<sse::Scenario>,
    /// How long each scenario is counted (after a 2 s warm-up)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Where to write all figures as JSON [default: `loadtest/sse.json` in the target directory]
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A fast smoke run: 50 subscribers × 20 events/s for 1 s
    #[arg(long, conflicts_with_all = ["scenarios", "duration"])]
    pub quick: bool,
}

impl SseArgs {
    pub fn settings(&self, exe_dir: &Path, pinning: Option<Pinning>) -> sse::Settings {
        let (scenarios, duration) = if self.quick {
            (vec![QUICK_SSE], Duration::from_secs(1))
        } else {
            (self.scenarios.clone(), self.duration)
        };
        sse::Settings {
            origin_bin: self.origin_bin.clone().unwrap_or_else(|| exe_dir.join("origin")),
            servers: distinct(&self.servers),
            scenarios,
            duration,
            pinning,
        }
    }

    pub fn json_path(&self, exe_dir: &Path) -> PathBuf {
        json_path(self.json.as_deref(), exe_dir, "sse")
    }
}

/// `COUNTxRATE` in `text` (`load`, a part of it): a count of `what` and events per second.
fn count_and_rate(text: &str, load: &str, what: &str) -> Result<(usize, u32)> {
    let (count, rate) = load
        .split_once('x')
        .with_context(|| format!("scenario {text:?} is not {}xRATE", what.to_uppercase()))?;
    let count = count.trim().parse().with_context(|| format!("{what} of {text:?}"))?;
    let rate = rate
        .trim()
        .parse()
        .with_context(|| format!("events per second of {text:?}"))?;
    Ok((count, rate))
}

/// `1000x100`: subscribers and events per second.
fn parse_scenario(text: &str) -> Result<sse::Scenario> {
    let (subscribers, rate) = count_and_rate(text, text, "subscribers")?;
    ensure!(
        (1..=15_000).contains(&subscribers) && (1..=100_000).contains(&rate),
        "scenario {text:?}: 1 to 15000 subscribers, 1 to 100000 events per second"
    );
    Ok(sse::Scenario { subscribers, rate })
}

/// Arguments of `loadtest webhooks`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhooksArgs {
    /// The origin executable [default: `origin` next to this executable]
    #[arg(long)]
    pub origin_bin: Option<PathBuf>,
    /// Storage backends of the origin
    #[arg(long, value_enum, value_delimiter = ',', default_value = "embedded,redis")]
    pub backends: Vec<Backend>,
    /// Scenarios, comma-separated, each ENDPOINTSxEVENTS_PER_SECOND, optionally @PERCENT of the
    /// receiver's answers failing (503)
    #[arg(long, value_delimiter = ',', value_parser = parse_webhook_scenario,
        default_value = "1x1000,10x100,100x10,1x8000,10x1200,100x120,10x100@30")]
    pub scenarios: Vec<webhooks::Scenario>,
    /// How long each scenario is counted (after a 2 s warm-up)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The origin's retry schedule (`webhooks.retry_schedule`): short, so that retries end within
    /// the run; twelve attempts leave a message refused by all of them at 30% failing answers a
    /// chance of 0.3¹² ≈ 5·10⁻⁷
    #[arg(long, default_value = "0s,50ms,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s")]
    pub retry_schedule: String,
    /// Longest wait for the last messages after publishing stops
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drain_limit: Duration,
    /// Where to write all figures as JSON [default: `loadtest/webhooks.json` in the target directory]
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A fast smoke run on the embedded store: 10 endpoints × 20 events/s with 30% of answers failing, for 1 s
    #[arg(long, conflicts_with_all = ["scenarios", "duration", "backends"])]
    pub quick: bool,
}

impl WebhooksArgs {
    pub fn settings(&self, exe_dir: &Path, pinning: Option<Pinning>) -> webhooks::Settings {
        let (backends, scenarios, duration) = if self.quick {
            (vec![Backend::Embedded], vec![QUICK_WEBHOOKS], Duration::from_secs(1))
        } else {
            (distinct(&self.backends), self.scenarios.clone(), self.duration)
        };
        webhooks::Settings {
            origin_bin: self.origin_bin.clone().unwrap_or_else(|| exe_dir.join("origin")),
            backends,
            scenarios,
            duration,
            drain_limit: self.drain_limit,
            retry_schedule: self.retry_schedule.clone(),
            pinning,
        }
    }

    pub fn json_path(&self, exe_dir: &Path) -> PathBuf {
        json_path(self.json.as_deref(), exe_dir, "webhooks")
    }
}

/// `10x100` or `10x100@30`: endpoints, events per second, and the percentage of failing answers.
fn parse_webhook_scenario(text: &str) -> Result<webhooks::Scenario> {
    let (load, failing) = text.split_once('@').unwrap_or((text, "0"));
    let (endpoints, rate) = count_and_rate(text, load, "endpoints")?;
    let failing_percent: u8 = failing
        .trim()
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("failing percentage of {text:?}"))?;
    ensure!(
        (1..=1000).contains(&endpoints) && (1..=100_000).contains(&rate) && failing_percent < 100,
        "scenario {text:?}: 1 to 1000 endpoints, 1 to 100000 events per second, below 100% failing"
    );
    Ok(webhooks::Scenario {
        endpoints,
        rate,
        failing_percent,
    })
}

/// Arguments of `loadtest invalidation`.
#[derive(Debug, Clone, clap::Args)]
pub struct InvalidationArgs {
    /// The edge executable [default: `edge` next to this executable]
    #[arg(long)]
    pub edge_bin: Option<PathBuf>,
    /// Edges, named edge-0, edge-1, … in region `local`
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub edges: u16,
    /// Rounds, each timing one write until every edge applied it and one until edge-0 serves it
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rounds: u32,
    /// Then, invalidations per second issued through the admin API, comma-separated, each rate for
    /// `--rate-duration`: accepted → applied by every edge
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub rates: Vec<u32>,
    /// How long each rate lasts
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub rate_duration: Duration,
    /// Then, twice (warming off, on): Zipf reads at one edge while forecasts are rewritten 50 times a
    /// second, for this long each; the share of hits
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub hit_ratio_duration: Duration,
    /// One-way delay added between the origin and each edge (datagrams toward the edge are held this
    /// long by a relay), such as `40ms` [default: none]
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// Where to write all figures as JSON [default: `loadtest/invalidation.json` in the target
    /// directory]
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A fast smoke run: 20 rounds, one edge, 100/s for one second, hit ratios for 6 s each
    #[arg(long, conflicts_with_all = ["edges", "rounds", "rates", "rate_duration", "hit_ratio_duration"])]
    pub quick: bool,
}

impl InvalidationArgs {
    /// The settings of this run; the default edge is in `exe_dir`, the directory of the running
    /// executable (such as `target/release`).
    pub fn settings(&self, exe_dir: &Path, pinning: Option<Pinning>) -> invalidation::Settings {
        let (edges, rounds, rates, rate_duration, hit_ratio_duration) = if self.quick {
            (
                QUICK_INVALIDATION_EDGES,
                QUICK_INVALIDATION_ROUNDS,
                vec![QUICK_INVALIDATION_RATE],
                Duration::from_secs(1),
                QUICK_HIT_RATIO_DURATION,
            )
        } else {
            (
                usize::from(self.edges),
                self.rounds,
                self.rates.clone(),
                self.rate_duration,
                self.hit_ratio_duration,
            )
        };
        invalidation::Settings {
            edge_bin: self.edge_bin.clone().unwrap_or_else(|| exe_dir.join("edge")),
            edges,
            rounds,
            rates,
            rate_duration,
            delay: self.delay.unwrap_or_default(),
            hit_ratio_duration,
            pinning,
        }
    }

    /// Where the JSON report goes.
    pub fn json_path(&self, exe_dir: &Path) -> PathBuf {
        json_path(self.json.as_deref(), exe_dir, "invalidation")
    }
}

/// Arguments of `loadtest up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Address of the origin's API
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_loopback_address)]
    pub origin_listen: SocketAddr,
    /// Address of the edge, for readers
    #[arg(long, default_value = "127.0.0.1:8081", value_parser = parse_loopback_address)]
    pub edge_listen: SocketAddr,
    /// Address of the edge's /metrics and /healthz
    #[arg(long, default_value = "127.0.0.1:9081", value_parser = parse_loopback_address)]
    pub edge_metrics_listen: SocketAddr,
    /// UDP address of the origin's control plane (QUIC), which the edge dials
    #[arg(long, default_value = "127.0.0.1:4433", value_parser = parse_loopback_address)]
    pub control_listen: SocketAddr,
    /// Folder of the origin's embedded store, kept across runs
    #[arg(long, default_value = ".data/origin")]
    pub data_dir: PathBuf,
    /// Folder of the control plane's development CA, certificates and keys, made where missing
    #[arg(long, default_value = "certs")]
    pub certs_dir: PathBuf,
    /// Run the origin and the edge next to this executable as they are: no `cargo build` first, even
    /// when cargo runs this executable
    #[arg(long)]
    pub no_build: bool,
}

impl UpArgs {
    /// The settings of this run, with the executables in `exe_dir`, the directory of the running
    /// executable (such as `target/release`).
    pub fn settings(&self, exe_dir: &Path) -> local::Settings {
        local::Settings {
            bin_dir: exe_dir.to_owned(),
            origin_listen: self.origin_listen,
            edge_listen: self.edge_listen,
            edge_metrics_listen: self.edge_metrics_listen,
            control_listen: self.control_listen,
            data_dir: self.data_dir.clone(),
            certs_dir: self.certs_dir.clone(),
        }
    }
}

/// `values` without repetitions, in the order they first appear.
fn distinct<T: PartialEq + Copy>(values: &[T]) -> Vec<T> {
    let mut kept = Vec::with_capacity(values.len());
    for &value in values {
        if !kept.contains(&value) {
            kept.push(value);
        }
    }
    kept
}

/// Parses a positive duration written as a whole number and a unit: `500ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("duration {text:?} has no unit (ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    ensure!(!number.is_empty(), "duration {text:?} does not start with a number");
    let number: u64 = number.parse().with_context(|| format!("number of duration {text:?}"))?;
    let duration = match unit.trim() {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        "h" => number.checked_mul(3600).map(Duration::from_secs),
        other => bail!("unit {other:?} of duration {text:?} is not one of ms, s, m, h"),
    }
    .with_context(|| format!("duration {text:?} is too long"))?;
    ensure!(!duration.is_zero(), "duration {text:?} is zero");
    Ok(duration)
}

/// Parses a loopback address with a port, such as `127.0.0.1:8080`: loadtest's servers listen on
/// loopback only, on a port known in advance.
pub fn parse_loopback_address(text: &str) -> Result<SocketAddr> {
    let address: SocketAddr = text
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not an IP address and port, such as 127.0.0.1:8080"))?;
    ensure!(
        address.ip().is_loopback(),
        "{address} is not on loopback (127.0.0.1 or ::1), where loadtest's servers listen"
    );
    ensure!(address.port() != 0, "{address} has no port");
    Ok(address)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("3 s").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn rejects_bad_durations() {
        for text in [
            "",
            "10",
            "s",
            "ms",
            "-1s",
            "1.5s",
            "10 sec",
            "0s",
            "10d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
        assert!(parse_duration(&format!("{}h", u64::MAX)).is_err());
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        origin: OriginArgs,
    }

    #[derive(Debug, Parser)]
    struct EdgeCli {
        #[command(flatten)]
        edge: EdgeHitsArgs,
    }

    #[test]
    fn defaults_follow_the_executable() {
        let cli = Cli::try_parse_from(["loadtest"]).unwrap();
        let exe_dir = Path::new("/w/target/release");
        let settings = cli.origin.settings(exe_dir, None);
        assert_eq!(settings.origin_bin, Path::new("/w/target/release/origin"));
        assert_eq!(settings.instruments, 10_000);
        assert_eq!(settings.duration, Duration::from_secs(10));
        assert_eq!(settings.connections, 64);
        assert_eq!(settings.backends, [Backend::Embedded, Backend::Redis]);
        assert_eq!(settings.rounds, 3);
        assert_eq!(
            cli.origin.load.json_path(exe_dir, "origin"),
            Path::new("/w/target/loadtest/origin.json")
        );
    }

    #[test]
    fn quick_and_explicit_arguments() {
        let cli = Cli::try_parse_from(["loadtest", "--quick", "--backends", "redis"]).unwrap();
        let settings = cli.origin.settings(Path::new("."), None);
        assert_eq!(settings.instruments, 200);
        assert_eq!(settings.duration, Duration::from_secs(2));
        assert_eq!(settings.backends, [Backend::Redis]);
        assert_eq!(settings.rounds, 1);

        let cli =
            Cli::try_parse_from(["loadtest", "--duration", "500ms", "--connections", "8", "--rounds", "5"]).unwrap();
        let settings = cli.origin.settings(Path::new("."), None);
        assert_eq!(settings.duration, Duration::from_millis(500));
        assert_eq!(settings.connections, 8);
        assert_eq!(settings.rounds, 5);

        assert!(Cli::try_parse_from(["loadtest", "--quick", "--duration", "5s"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--quick", "--rounds", "3"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--rounds", "0"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--rounds", "21"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--backends", "sqlite"]).is_err());

        let cli = Cli::try_parse_from(["loadtest", "--backends", "redis,embedded,redis"]).unwrap();
        let settings = cli.origin.settings(Path::new("."), None);
        assert_eq!(settings.backends, [Backend::Redis, Backend::Embedded]);
    }

    #[derive(Debug, Parser)]
    struct InvalidationCli {
        #[command(flatten)]
        invalidation: InvalidationArgs,
    }

    #[test]
    fn invalidation_defaults_and_quick() {
        let exe_dir = Path::new("/w/target/release");
        let cli = InvalidationCli::try_parse_from(["loadtest"]).unwrap();
        let settings = cli.invalidation.settings(exe_dir, None);
        assert_eq!(settings.edge_bin, Path::new("/w/target/release/edge"));
        assert_eq!((settings.edges, settings.rounds), (3, 200));
        assert_eq!(
            cli.invalidation.json_path(exe_dir),
            Path::new("/w/target/loadtest/invalidation.json")
        );

        let cli = InvalidationCli::try_parse_from(["loadtest", "--quick", "--json", "/tmp/i.json"]).unwrap();
        let settings = cli.invalidation.settings(exe_dir, None);
        assert_eq!((settings.edges, settings.rounds), (1, 20));
        assert_eq!(cli.invalidation.json_path(exe_dir), Path::new("/tmp/i.json"));

        let cli = InvalidationCli::try_parse_from(["loadtest", "--edges", "16", "--rounds", "5"]).unwrap();
        let settings = cli.invalidation.settings(exe_dir, None);
        assert_eq!((settings.edges, settings.rounds), (16, 5));
        assert_eq!(settings.rates, [1, 100, 1000]);
        assert_eq!(settings.delay, Duration::ZERO);
        let cli = InvalidationCli::try_parse_from(["loadtest", "--rates", "10,20", "--delay", "40ms"]).unwrap();
        let settings = cli.invalidation.settings(exe_dir, None);
        assert_eq!(
            (settings.rates, settings.delay),
            (vec![10, 20], Duration::from_millis(40))
        );

        assert!(InvalidationCli::try_parse_from(["loadtest", "--quick", "--edges", "2"]).is_err());
        assert!(InvalidationCli::try_parse_from(["loadtest", "--edges", "0"]).is_err());
        assert!(InvalidationCli::try_parse_from(["loadtest", "--rounds", "0"]).is_err());
    }

    #[derive(Debug, Parser)]
    struct UpCli {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn up_defaults_are_those_of_the_servers() {
        let cli = UpCli::try_parse_from(["loadtest"]).unwrap();
        let settings = cli.up.settings(Path::new("/w/target/release"));
        assert_eq!(settings.bin_dir, Path::new("/w/target/release"));
        assert_eq!(settings.origin_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.edge_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(settings.edge_metrics_listen.to_string(), "127.0.0.1:9081");
        assert_eq!(settings.control_listen.to_string(), "127.0.0.1:4433");
        assert_eq!(settings.data_dir, Path::new(".data/origin"));
        assert_eq!(settings.certs_dir, Path::new("certs"));
        assert!(!cli.up.no_build);

        let cli = UpCli::try_parse_from([
            "loadtest",
            "--origin-listen",
            "127.0.0.1:1080",
            "--edge-listen",
            "[::1]:1081",
            "--edge-metrics-listen",
            "127.0.0.2:1082",
            "--control-listen",
            "127.0.0.1:1083",
            "--data-dir",
            "/tmp/d",
            "--certs-dir",
            "/tmp/c",
            "--no-build",
        ])
        .unwrap();
        let settings = cli.up.settings(Path::new("."));
        assert_eq!(settings.origin_listen.to_string(), "127.0.0.1:1080");
        assert_eq!(settings.edge_listen.to_string(), "[::1]:1081");
        assert_eq!(settings.edge_metrics_listen.to_string(), "127.0.0.2:1082");
        assert_eq!(settings.control_listen.to_string(), "127.0.0.1:1083");
        assert_eq!(settings.data_dir, Path::new("/tmp/d"));
        assert_eq!(settings.certs_dir, Path::new("/tmp/c"));
        assert!(cli.up.no_build);
    }

    #[test]
    fn up_listens_on_loopback_only() {
        for address in [
            "0.0.0.0:8080",
            "192.168.1.2:8080",
            "127.0.0.1:0",
            "127.0.0.1",
            "localhost:8080",
        ] {
            assert!(parse_loopback_address(address).is_err(), "{address} was accepted");
            assert!(UpCli::try_parse_from(["loadtest", "--origin-listen", address]).is_err());
        }
    }

    #[test]
    fn edge_hits_defaults_follow_the_executable() {
        let cli = EdgeCli::try_parse_from(["loadtest"]).unwrap();
        let exe_dir = Path::new("/w/target/release");
        let settings = cli.edge.settings(exe_dir, None);
        assert_eq!(settings.edge_bin, Path::new("/w/target/release/edge"));
        assert_eq!(settings.origin_bin, Path::new("/w/target/release/origin"));
        assert_eq!(settings.caches, [CacheKind::Edge, CacheKind::Nginx, CacheKind::Varnish]);
        assert_eq!(settings.instruments, 10_000);
        assert_eq!(settings.entries_large, 100_000);
        assert_eq!(settings.duration, Duration::from_secs(10));
        assert_eq!(settings.connections, 64);
        assert_eq!(settings.rounds, 3);
        assert_eq!(
            cli.edge.load.json_path(exe_dir, "edge-hits"),
            Path::new("/w/target/loadtest/edge-hits.json")
        );
    }

    #[test]
    fn edge_hits_quick_and_explicit_arguments() {
        let cli = EdgeCli::try_parse_from(["loadtest", "--quick", "--caches", "nginx,edge,nginx"]).unwrap();
        let settings = cli.edge.settings(Path::new("."), None);
        assert_eq!(settings.instruments, 100);
        assert_eq!(settings.entries_large, 500);
        assert_eq!(settings.duration, Duration::from_secs(1));
        assert_eq!(settings.rounds, 1);
        assert_eq!(settings.caches, [CacheKind::Nginx, CacheKind::Edge]);

        let cli = EdgeCli::try_parse_from([
            "loadtest",
            "--entries-large",
            "20000",
            "--edge-bin",
            "/opt/edge",
            "--rounds",
            "5",
        ])
        .unwrap();
        let settings = cli.edge.settings(Path::new("."), None);
        assert_eq!(settings.entries_large, 20_000);
        assert_eq!(settings.edge_bin, Path::new("/opt/edge"));
        assert_eq!(settings.rounds, 5);

        assert!(EdgeCli::try_parse_from(["loadtest", "--quick", "--entries-large", "5"]).is_err());
        assert!(EdgeCli::try_parse_from(["loadtest", "--caches", "squid"]).is_err());
        assert!(EdgeCli::try_parse_from(["loadtest", "--entries-large", "1"]).is_err());
    }

    #[test]
    fn webhook_scenarios_name_endpoints_rate_and_failing_answers() {
        let scenario = |endpoints, rate, failing_percent| webhooks::Scenario {
            endpoints,
            rate,
            failing_percent,
        };
        assert_eq!(parse_webhook_scenario("10x100").unwrap(), scenario(10, 100, 0));
        assert_eq!(parse_webhook_scenario("10x100@30").unwrap(), scenario(10, 100, 30));
        assert_eq!(parse_webhook_scenario(" 1 x 5 @ 5% ").unwrap(), scenario(1, 5, 5));
        for text in ["10", "0x10", "10x0", "10x100@100", "10x100@", "x@30", "10x100@-1"] {
            assert!(parse_webhook_scenario(text).is_err(), "{text:?} was accepted");
        }
    }
}
