//! The ceiling that origin reads are compared to: what `redis-benchmark` reaches for GET against a
//! fresh `redis-server` on this machine, with values the size of one forecast. The server is started
//! and written once, then measured once per round.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::launch::{self, RedisServer};
use crate::median::Rounds;

/// Parallel connections of `redis-benchmark` (its default).
pub const CLIENTS: u32 = 50;
/// Keys read at random (`-r`); each is written first so that every GET finds a value.
pub const KEYS: u64 = 10_000;
/// Random SETs that write the keys first: ten per key leave none unwritten in practice.
const POPULATE_REQUESTS: u64 = KEYS * 10;

/// One line of `redis-benchmark --csv` output. Redis 7 prints all columns; older versions only
/// the test and the rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchmarkRow {
    pub test: String,
    pub rps: f64,
    pub avg_latency_ms: Option<f64>,
    pub min_latency_ms: Option<f64>,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
}

/// Finds the row of `test` (such as `GET`) in the output of `redis-benchmark --csv`.
pub fn parse_csv(output: &str, test: &str) -> Result<BenchmarkRow> {
    let fields = output
        .lines()
        .map(|line| {
            line.trim()
                .split(',')
                .map(|field| field.trim().trim_matches('"'))
                .collect::<Vec<_>>()
        })
        .find(|fields| fields.first() == Some(&test))
        .with_context(|| format!("no {test:?} row in redis-benchmark output {output:?}"))?;
    let rps = fields.get(1).with_context(|| format!("no rate in the {test:?} row"))?;
    let rps = rps
        .parse()
        .with_context(|| format!("rate {rps:?} of the {test:?} row"))?;
    let latency = |column: usize| -> Result<Option<f64>> {
        fields
            .get(column)
            .map(|value| {
                value
                    .parse()
                    .with_context(|| format!("column {column} {value:?} of the {test:?} row"))
            })
            .transpose()
    };
    Ok(BenchmarkRow {
        test: test.to_owned(),
        rps,
        avg_latency_ms: latency(2)?,
        min_latency_ms: latency(3)?,
        p50_latency_ms: latency(4)?,
        p95_latency_ms: latency(5)?,
        p99_latency_ms: latency(6)?,
        max_latency_ms: latency(7)?,
    })
}

/// How to measure the ceiling.
#[derive(Debug, Clone)]
pub struct CeilingPlan {
    /// GET requests to send (`-n`).
    pub requests: u64,
    /// Size of each value in bytes (`-d`).
    pub value_size: usize,
    /// CPU of the `redis-server` under test.
    pub server_cpu: Option<usize>,
    /// CPU of `redis-benchmark`.
    pub client_cpu: Option<usize>,
    /// Upper bound of each `redis-benchmark` run; a slower run is killed and is an error.
    pub timeout: Duration,
}

/// The measured ceiling and how it was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub requests: u64,
    pub clients: u32,
    pub keys: u64,
    pub value_size: usize,
    /// The GET row of each round.
    #[serde(flatten)]
    pub get: Rounds<BenchmarkRow>,
}

/// A `redis-server` with the keys written, measured by `redis-benchmark` once per round; killed on
/// drop.
#[derive(Debug)]
pub struct CeilingServer {
    plan: CeilingPlan,
    server: RedisServer,
    rounds: Vec<BenchmarkRow>,
}

impl CeilingServer {
    /// Starts a fresh `redis-server` and writes the keys.
    pub async fn start(plan: CeilingPlan) -> Result<Self> {
        ensure!(
            launch::find_on_path("redis-benchmark").is_some(),
            "redis-benchmark is not on PATH: install the Debian package `redis-server` (apt-get install redis-server)"
        );
        let server = Self {
            server: RedisServer::start_on_cpu(plan.server_cpu)?,
            plan,
            rounds: Vec::new(),
        };
        launch::run_bounded_async(
            "redis-benchmark-set",
            server.benchmark("set", POPULATE_REQUESTS),
            server.plan.timeout,
        )
        .await
        .context("write the keys for the GET ceiling")?;
        Ok(server)
    }

    /// Measures GET once (no pipelining) and keeps the row as the next round.
    pub async fn measure_round(&mut self) -> Result<&BenchmarkRow> {
        let output = launch::run_bounded_async(
            "redis-benchmark-get",
            self.benchmark("get", self.plan.requests),
            self.plan.timeout,
        )
        .await
        .context("measure the GET ceiling")?;
        self.rounds.push(parse_csv(&output, "GET")?);
        self.rounds.last().context("no GET row was kept")
    }

    /// Every round measured so far and their median; stops the server.
    pub fn finish(self) -> Result<Ceiling> {
        Ok(Ceiling {
            requests: self.plan.requests,
            clients: CLIENTS,
            keys: KEYS,
            value_size: self.plan.value_size,
            get: Rounds::of(self.rounds, |row| row.rps).context("the GET ceiling was not measured")?,
        })
    }

    fn benchmark(&self, test: &str, requests: u64) -> Command {
        let mut command = launch::command_on_cpu("redis-benchmark", self.plan.client_cpu);
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.server.port().to_string(),
            "-t",
            test,
            "-n",
            &requests.to_string(),
            "-c",
            &CLIENTS.to_string(),
            "-d",
            &self.plan.value_size.to_string(),
            "-r",
            &KEYS.to_string(),
            "--csv",
        ]);
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS_7_OUTPUT: &str = r#""test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"GET","72727.27","0.367","0.128","0.343","0.615","0.999","2.351"
"#;

    #[test]
    fn parses_redis_7_csv() {
        let row = parse_csv(REDIS_7_OUTPUT, "GET").unwrap();
        assert_eq!(
            row,
            BenchmarkRow {
                test: "GET".to_owned(),
                rps: 72727.27,
                avg_latency_ms: Some(0.367),
                min_latency_ms: Some(0.128),
                p50_latency_ms: Some(0.343),
                p95_latency_ms: Some(0.615),
                p99_latency_ms: Some(0.999),
                max_latency_ms: Some(2.351),
            }
        );
    }

    #[test]
    fn parses_two_column_csv_among_other_rows() {
        let output = "\"SET\",\"90000.00\"\r\n\"GET\",\"139275.91\"\r\n";
        let row = parse_csv(output, "GET").unwrap();
        assert_eq!(row.rps, 139275.91);
        assert_eq!(row.p50_latency_ms, None);
        assert_eq!(parse_csv(output, "SET").unwrap().rps, 90000.0);
    }

    #[test]
    fn rejects_missing_or_malformed_rows() {
        assert!(parse_csv("", "GET").is_err());
        assert!(parse_csv(REDIS_7_OUTPUT, "SET").is_err());
        assert!(parse_csv("\"GET\"\n", "GET").is_err());
        assert!(parse_csv("\"GET\",\"fast\"\n", "GET").is_err());
        assert!(parse_csv("\"GET\",\"1.0\",\"slow\"\n", "GET").is_err());
    }
}
