//! Command-line arguments of the `loadtest` binary and the parsers they need.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::origin::{Backend, Pinning, Settings};

/// Settings of `--quick`, a smoke run for tests.
const QUICK_INSTRUMENTS: u64 = 200;
const QUICK_DURATION: Duration = Duration::from_secs(2);
const QUICK_ROUNDS: u32 = 1;

/// Arguments of `loadtest origin`.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginArgs {
    /// The origin executable [default: `origin` next to this executable]
    #[arg(long)]
    pub origin_bin: Option<PathBuf>,
    /// Instruments written once each and then read at random (named I00000, I00001, …)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=99_999))]
    pub instruments: u64,
    /// How long each read scenario runs, such as `10s`, `500ms` or `1m`
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Keep-alive connections of the read load
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub connections: u16,
    /// Where to write all figures as JSON [default: `loadtest/origin.json` in the target directory]
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Storage backends to measure
    #[arg(long, value_enum, value_delimiter = ',', default_value = "embedded,redis")]
    pub backends: Vec<Backend>,
    /// Rounds, each reading every scenario in turn and then running the ceiling; the table shows
    /// the median of each scenario over the rounds
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// A fast smoke run: 200 instruments, 2 s per scenario, one round
    #[arg(long, conflicts_with_all = ["instruments", "duration", "rounds"])]
    pub quick: bool,
}

impl OriginArgs {
    /// The settings of this run; defaults of paths are relative to `exe_dir`, the directory of
    /// the running executable (such as `target/release`).
    pub fn settings(&self, exe_dir: &Path, pinning: Option<Pinning>) -> Settings {
        let (instruments, duration, rounds) = if self.quick {
            (QUICK_INSTRUMENTS, QUICK_DURATION, QUICK_ROUNDS)
        } else {
            (self.instruments, self.duration, self.rounds)
        };
        let mut backends = self.backends.clone();
        backends.dedup();
        Settings {
            origin_bin: self.origin_bin.clone().unwrap_or_else(|| exe_dir.join("origin")),
            instruments,
            duration,
            connections: usize::from(self.connections),
            backends,
            rounds,
            pinning,
        }
    }

    /// Where the JSON report goes.
    pub fn json_path(&self, exe_dir: &Path) -> PathBuf {
        self.json
            .clone()
            .unwrap_or_else(|| exe_dir.parent().unwrap_or(exe_dir).join("loadtest").join("origin.json"))
    }
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
            cli.origin.json_path(exe_dir),
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
    }
}
