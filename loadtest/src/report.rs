//! The table printed at the end of `loadtest origin`, and the JSON file with every figure.
#![allow(clippy::print_stdout)]

use std::path::Path;

use anyhow::{Context, Result};

use crate::median::Median;
use crate::origin::{Backend, Report};

/// Prints the read scenarios, the ceiling and the write rates as a table, with notes on how
/// they were measured and how the processes shared the CPUs.
pub fn print_table(report: &Report) {
    let ceiling = report.ceiling.median_row();
    let spread = |median: &Median| {
        median
            .spread_pct
            .map_or_else(|| "-".to_owned(), |pct| format!("{pct:.0}%"))
    };
    println!();
    println!(
        "{:<24}{:>11}{:>9}{:>9}{:>8}{:>9}  vs redis-benchmark GET",
        "scenario", "req/s", "p50 µs", "p99 µs", "spread", "errors"
    );
    for read in &report.reads {
        let result = read.median_result();
        println!(
            "{:<24}{:>11.0}{:>9}{:>9}{:>8}{:>9}  {:.2}",
            read.scenario,
            read.median.rps,
            result.p50_us,
            result.p99_us,
            spread(&read.median),
            read.errors(),
            read.vs_ceiling
        );
    }
    let micros = |millis: Option<f64>| millis.map_or_else(|| "-".to_owned(), |ms| format!("{:.0}", ms * 1000.0));
    println!(
        "{:<24}{:>11.0}{:>9}{:>9}{:>8}{:>9}  1.00",
        "redis-benchmark GET",
        report.ceiling.median.rps,
        micros(ceiling.p50_latency_ms),
        micros(ceiling.p99_latency_ms),
        spread(&report.ceiling.median),
        "-"
    );
    for write in &report.writes {
        println!(
            "{:<24}{:>11.0} versions/s",
            format!("writes {}", write.backend),
            write.versions_per_sec
        );
    }

    let settings = &report.settings;
    println!();
    println!(
        "rounds: {}, each reads every scenario in turn, then runs redis-benchmark; req/s is the median over the rounds",
        settings.rounds
    );
    println!("(of an even count, the slower middle one), p50/p99 are of that same round, errors are summed over");
    println!("the rounds; ratios are of medians; spread = (max - min) / median of the req/s of the rounds");
    println!(
        "reads: {} instruments, {} keep-alive HTTP/1.1 connections from one thread, {:.1} s after {:.1} s of warm-up",
        settings.instruments, settings.connections, settings.duration_secs, settings.warmup_secs
    );
    println!(
        "writes: one PUT per instrument over {} connections, {} byte bodies, once per origin before the rounds",
        settings.seed_connections, settings.forecast_body_bytes
    );
    println!(
        "redis-benchmark: -t get -c {} -d {} -r {} -n {}, no pipelining",
        report.ceiling.clients, report.ceiling.value_size, report.ceiling.keys, report.ceiling.requests
    );
    match report.machine.pinning {
        Some(pinning) => {
            println!(
                "{} CPUs: servers under test (origin, redis-server) on CPU {}, load generators on CPU {}",
                report.machine.nproc, pinning.server_cpu, pinning.load_cpu
            );
            println!(
                "every origin and redis-server stays up across the rounds; those not measured wait idle on CPU {}",
                pinning.server_cpu
            );
            if settings.backends.contains(&Backend::Redis) {
                println!(
                    "origin redis: redis-server shares CPU {} with origin",
                    pinning.server_cpu
                );
            }
        }
        None => println!(
            "{} CPUs, no pinning: servers and load generators share the CPUs",
            report.machine.nproc
        ),
    }
}

/// Writes `report` as pretty JSON to `path`, creating its parent directories.
pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create directory {}", parent.display()))?;
    }
    let json = serde_json::to_vec_pretty(report).context("serialize the report")?;
    std::fs::write(path, json).with_context(|| format!("write {}", path.display()))
}
