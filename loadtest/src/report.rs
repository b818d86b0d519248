//! The tables printed at the end of `loadtest origin`, `loadtest edge-hits` and `loadtest
//! invalidation`, and the JSON file with every figure.
#![allow(clippy::print_stdout)]

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::edge_hits::{self, CacheKind, Status};
use crate::invalidation::{self, Summary};
use crate::measure::Machine;
use crate::median::Median;
use crate::origin_throughput::{self, Backend};
use crate::sse;
use crate::webhooks;

/// `12%`, or `-` without a spread (one round).
fn spread(median: &Median) -> String {
    median
        .spread_pct
        .map_or_else(|| "-".to_owned(), |pct| format!("{pct:.0}%"))
}

/// Prints the read scenarios, the ceiling and the write rates as a table, with notes on how
/// they were measured and how the processes shared the CPUs.
pub fn print_table(report: &origin_throughput::Report) {
    let ceiling = report.ceiling.get.median_round();
    println!();
    println!(
        "{:<24}{:>11}{:>9}{:>9}{:>8}{:>9}  vs redis-benchmark GET",
        "scenario", "req/s", "p50 µs", "p99 µs", "spread", "errors"
    );
    for read in &report.reads {
        let result = read.reads.median_round();
        println!(
            "{:<24}{:>11.0}{:>9}{:>9}{:>8}{:>9}  {:.2}",
            read.scenario,
            read.reads.median.rps,
            result.p50_us,
            result.p99_us,
            spread(&read.reads.median),
            read.errors(),
            read.vs_ceiling
        );
    }
    let micros = |millis: Option<f64>| millis.map_or_else(|| "-".to_owned(), |ms| format!("{:.0}", ms * 1000.0));
    println!(
        "{:<24}{:>11.0}{:>9}{:>9}{:>8}{:>9}  1.00",
        "redis-benchmark GET",
        report.ceiling.get.median.rps,
        micros(ceiling.p50_latency_ms),
        micros(ceiling.p99_latency_ms),
        spread(&report.ceiling.get.median),
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

/// Prints the hit rates of every cache per scenario, their latency at half rate and their memory
/// per cached URL, with notes on how they were measured.
pub fn print_edge_table(report: &edge_hits::Report) {
    println!();
    println!(
        "{:<12}{:<9}{:>10}{:>9}{:>9}{:>10}{:>8}{:>8}{:>9}  vs best peer",
        "scenario", "cache", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "spread", "errors", "hits"
    );
    for scenario in &report.scenarios {
        for row in &scenario.rows {
            let load = &row.reads.median_round().load;
            println!(
                "{:<12}{:<9}{:>10.0}{:>9}{:>9}{:>10}{:>8}{:>8}{:>9}  {}",
                scenario.scenario,
                row.cache,
                row.reads.median.rps,
                load.p50_us,
                load.p99_us,
                load.p999_us,
                spread(&row.reads.median),
                row.errors(),
                percent(row.hit_ratio),
                row.vs_best_peer
                    .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
            );
        }
    }

    for half in &report.half_rate {
        println!();
        println!(
            "{}, every cache at {:.0} req/s: half the median of {} ({:.0} req/s), open loop",
            half.scenario, half.rate, half.reference, half.reference_rps
        );
        println!(
            "{:<12}{:<9}{:>10}{:>9}{:>9}{:>10}{:>8}{:>8}{:>9}",
            "", "cache", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "", "errors", "hits"
        );
        for row in &half.rows {
            let load = &row.measurement.load;
            println!(
                "{:<12}{:<9}{:>10.0}{:>9}{:>9}{:>10}{:>8}{:>8}{:>9}",
                "",
                row.cache,
                load.rps,
                load.p50_us,
                load.p99_us,
                load.p999_us,
                "",
                load.errors,
                percent(row.hit_ratio)
            );
        }
    }

    println!();
    let steps = report
        .caches
        .iter()
        .find_map(|record| record.memory.as_ref())
        .map(|memory| memory.steps.iter().map(|step| step.entries).collect::<Vec<_>>())
        .unwrap_or_default();
    let step_headers: String = steps
        .iter()
        .map(|entries| format!("{:>16}", format!("B/URL at {entries}")))
        .collect();
    println!(
        "{:<12}{:>12}{step_headers}  URLs read again that were hits",
        "memory", "at start MB"
    );
    for record in &report.caches {
        match (&record.status, &record.memory) {
            (Status::Skipped { reason }, _) => println!("{:<12}skipped: {reason}", record.cache),
            (_, Some(memory)) => {
                let per_url: String = memory
                    .steps
                    .iter()
                    .map(|step| format!("{:>16.0}", step.bytes_per_entry))
                    .collect();
                let sampled: Vec<String> = memory
                    .steps
                    .iter()
                    .map(|step| format!("{}/{}", step.sampled_hits, step.sampled))
                    .collect();
                println!(
                    "{:<12}{:>12.1}{per_url}  {}",
                    record.cache,
                    memory.before_bytes as f64 / 1e6,
                    sampled.join(", ")
                );
            }
            (_, None) => {}
        }
        if let Status::Failed { error } = &record.status {
            println!("{:<12}failed: {error}", record.cache);
        }
    }

    let settings = &report.settings;
    println!();
    println!(
        "rounds: {}, each reads every scenario from every cache in turn; req/s is the median over the rounds (of an",
        settings.rounds
    );
    println!("even count, the slower middle one), latencies are of that same round, errors and hits over all rounds;");
    println!("spread = (max - min) / median of the req/s of the rounds; vs best peer = req/s / the best peer's req/s");
    println!(
        "reads: {} keep-alive HTTP/1.1 connections from one thread, {:.1} s after {:.1} s of warm-up; GET bodies of {} bytes",
        settings.connections, settings.duration_secs, settings.warmup_secs, settings.response_body_bytes
    );
    println!(
        "hits: requests that did not reach the origin (its read count before and after each run) over all requests"
    );
    println!(
        "half rate: requests due at fixed intervals over the same connections; latency runs from when each was due"
    );
    println!(
        "memory: proportional set size summed over the cache's processes, after start and after warming (one GET per"
    );
    println!(
        "URL, up to {} URLs); {} MiB of cache each",
        settings.entries_large,
        settings.cache_bytes / (1024 * 1024)
    );
    if report.caches.iter().any(|record| record.cache == CacheKind::Nginx) {
        println!("  nginx keeps bodies in files read through the page cache, which no process's count includes");
    }
    if report.caches.iter().any(|record| record.cache == CacheKind::Varnish) {
        println!(
            "  Varnish's count includes its shared log on tmpfs, which fills as requests are logged (up to 80 MB)"
        );
    }
    for (program, version) in &report.machine.versions {
        println!("{program}: {version}");
    }
    match report.machine.pinning {
        Some(pinning) => println!(
            "{} CPUs: caches on CPU {} (one at a time under load, the others idle), origin and load generator on CPU {}",
            report.machine.nproc, pinning.server_cpu, pinning.load_cpu
        ),
        None => println!(
            "{} CPUs, no pinning: caches, origin and load generator share the CPUs",
            report.machine.nproc
        ),
    }
}

/// Prints the propagation times of a write to the edges as a table, with notes on how they were
/// measured.
pub fn print_invalidation_table(report: &invalidation::Report) {
    let row = |figure: &str, summary: &Summary| {
        println!(
            "{figure:<46}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>9}",
            summary.p50_ms, summary.p99_ms, summary.max_ms, summary.min_ms, summary.samples
        );
    };
    println!();
    println!(
        "{:<46}{:>10}{:>10}{:>10}{:>10}{:>9}",
        "figure", "p50 ms", "p99 ms", "max ms", "min ms", "samples"
    );
    row("PUT sent → answered", &report.put);
    for edge in &report.applied {
        row(&format!("PUT answered → applied at {}", edge.edge), &edge.summary);
    }
    row("PUT answered → applied at every edge", &report.applied_all);
    row("PUT sent → applied at every edge", &report.sent_applied_all);
    row("PUT sent → GET at edge-0 serves it", &report.visible);
    for phase in &report.rates {
        let rate = format!("{}/s ({:.0} achieved)", phase.rate, phase.achieved);
        row(&format!("{rate}: answered → every edge"), &phase.accepted_applied_all);
        row(&format!("{rate}: sent → every edge"), &phase.sent_applied_all);
    }

    let settings = &report.settings;
    println!();
    println!(
        "rounds: {}, each warms the forecast on each of {} edges (a GET, then a GET that must be a hit), writes a new",
        settings.rounds, settings.edges
    );
    println!(
        "version and waits until every edge applied it; then, edge-0 alone warm, writes again while GETs at edge-0"
    );
    println!("run back to back on one keep-alive connection until it serves the new version (the last row)");
    println!(
        "applied: the origin recorded the edge's ack, which the edge sends right after purging; a thread reads the"
    );
    println!(
        "origin's records every {} µs ({:.0} µs achieved), so a figure is late by one loopback trip of the ack plus",
        settings.ack_poll_interval_us, settings.ack_poll_period_us
    );
    println!("up to one look; below 0 when the ack was recorded before the PUT's answer reached the client");
    println!(
        "N/s: POST /admin/v1/invalidations at that rate for {} s, timed from each answer to the last edge's ack",
        settings.rate_duration_s
    );
    for measured in &report.hit_ratios {
        println!(
            "warming {}: {} of {} Zipf reads at one edge were hits, while {} writes rewrote forecasts",
            if measured.warming { "on " } else { "off" },
            percent(measured.ratio),
            measured.reads,
            measured.writes
        );
    }
    if settings.delay_ms > 0.0 {
        println!(
            "delay: a relay holds every datagram toward each edge {} ms (acks return undelayed), so the figures include it",
            settings.delay_ms
        );
    }
    println!(
        "origin: in this process on a runtime of its own (the same code as the origin executable, without its mimalloc),"
    );
    println!(
        "embedded store in a temporary directory, {} byte forecasts; edges: {} over HTTP/1.1 and QUIC",
        settings.forecast_body_bytes,
        settings.edge_bin.display()
    );
    match report.machine.pinning {
        Some(pinning) => println!(
            "{} CPUs: edges on CPU {}, origin and measurement (this process) on CPU {}",
            report.machine.nproc, pinning.server_cpu, pinning.load_cpu
        ),
        None => println!(
            "{} CPUs, no pinning: edges, origin and measurement share the CPUs",
            report.machine.nproc
        ),
    }
}

pub fn print_sse_table(report: &sse::Report) {
    println!();
    println!(
        "{:<8}{:>12}{:>10}{:>11}{:>16}{:>10}{:>10}{:>10}{:>9}{:>7}",
        "server",
        "subscribers",
        "events/s",
        "achieved",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "missing",
        "ended"
    );
    for m in &report.measurements {
        println!(
            "{:<8}{:>12}{:>10}{:>11.0}{:>16.0}{:>10.1}{:>10.1}{:>10.1}{:>9}{:>7}",
            m.server.to_string(),
            m.scenario.subscribers,
            m.scenario.rate,
            m.published_per_s,
            m.deliveries_per_s,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            m.missing,
            m.streams_ended
        );
    }
    println!();
    println!(
        "each scenario: subscribers open their streams, then events are published at the rate for a 2 s warm-up and {} s counted;",
        report.duration_s
    );
    println!("latency: publication (loadtest's clock) → the event read from the stream; the origin publishes each");
    println!(
        "10 ms tick as one batch (durable), nchan one POST per event (in memory); missing: expected deliveries that"
    );
    println!("did not arrive within 2 s after publishing stopped; ended: streams the server closed during the run");
    for skipped in &report.skipped {
        println!("skipped: {skipped}");
    }
    print_cpus(&report.machine, "server", "subscribers and publisher");
}

/// Which CPU the server (`server`) and this process (`load`) ran on.
fn print_cpus(machine: &Machine, server: &str, load: &str) {
    match machine.pinning {
        Some(pinning) => println!(
            "{} CPUs: {server} on CPU {}, {load} (this process, one thread) on CPU {}",
            machine.nproc, pinning.server_cpu, pinning.load_cpu
        ),
        None => println!("{} CPUs, no pinning", machine.nproc),
    }
}

/// Prints the `loadtest webhooks` table.
pub fn print_webhooks_table(report: &webhooks::Report) {
    println!();
    println!(
        "{:<10}{:>10}{:>10}{:>7}{:>14}{:>9}{:>9}{:>10}{:>11}{:>9}{:>9}{:>6}{:>10}",
        "backend",
        "endpoints",
        "events/s",
        "fail",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "delivered",
        "refused",
        "repeats",
        "dead",
        "drained s"
    );
    for m in &report.measurements {
        println!(
            "{:<10}{:>10}{:>10}{:>6}%{:>14.0}{:>9.1}{:>9.1}{:>10.1}{:>11}{:>9}{:>9}{:>6}{:>10.1}",
            m.backend.to_string(),
            m.scenario.endpoints,
            m.scenario.rate,
            m.scenario.failing_percent,
            m.deliveries_per_s,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            percent(m.delivered_ratio),
            m.refused,
            m.duplicates,
            m.dead_letters,
            m.drained_s
        );
    }
    println!();
    println!(
        "each scenario: endpoints registered, then events published at the rate for a 2 s warm-up and {} s counted;",
        report.duration_s
    );
    println!(
        "every event goes to every endpoint; latency: publication (loadtest's clock) → the first accepted request;"
    );
    println!(
        "delivered: messages accepted at least once, of every event × endpoint; refused: requests answered 503 on"
    );
    println!("purpose; repeats: messages accepted again after they were accepted (told apart by webhook-id); dead:");
    println!(
        "dead letters at the end; drained: from the end of publishing to the last message. Retry schedule {}",
        report.retry_schedule
    );
    let bad: u64 = report.measurements.iter().map(|m| m.bad_signatures).sum();
    println!("signatures checked on every request: {bad} did not verify");
    print_cpus(&report.machine, "origin", "receiver and publisher");
}

/// `99.98%`
fn percent(ratio: f64) -> String {
    format!("{:.2}%", ratio * 100.0)
}

/// Writes `report` as pretty JSON to `path`, creating its parent directories.
pub fn write_json(report: &impl Serialize, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create directory {}", parent.display()))?;
    }
    let json = serde_json::to_vec_pretty(report).context("serialize the report")?;
    std::fs::write(path, json).with_context(|| format!("write {}", path.display()))
}
