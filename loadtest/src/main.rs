//! `loadtest`: measurements of the system on loopback. See `loadtest --help`.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use loadtest::cli::{EdgeHitsArgs, InvalidationArgs, OriginArgs, SseArgs, UpArgs, WebhooksArgs};
use loadtest::launch::Pinning;
use loadtest::local::{self, Token};
use loadtest::{edge_hits, invalidation, origin_throughput, report, sse, webhooks};

#[derive(Debug, Parser)]
#[command(about = "Starts a local topology on loopback and measures it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read and write throughput of the origin per backend, L1 cache on and off, next to the
    /// GET ceiling of redis-benchmark
    Origin(OriginArgs),
    /// Cache hits of the edge next to nginx proxy_cache and Varnish: throughput, latency at half
    /// rate, and memory per cached URL
    EdgeHits(EdgeHitsArgs),
    /// How long a forecast write takes to be applied by every edge over the QUIC control plane:
    /// the origin in this process, edges in front of it
    Invalidation(InvalidationArgs),
    /// Event fan-out over SSE: publish-to-receive latency and deliveries per second, the origin
    /// beside nginx + nchan
    Sse(SseArgs),
    /// Signed webhook deliveries to a receiver in this process: deliveries per second with 1, 10 and
    /// 100 endpoints, publish-to-delivery latency, and eventual delivery with failing answers
    Webhooks(WebhooksArgs),
    /// Runs the origin (embedded store) and an edge in front of it until Ctrl-C, and prints their
    /// addresses, the admin token and commands to try; under `cargo run`, builds them first
    Up(UpArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Origin(args) => origin_command(&args),
        Command::EdgeHits(args) => edge_hits_command(&args),
        Command::Invalidation(args) => invalidation_command(&args),
        Command::Sse(args) => sse_command(&args),
        Command::Webhooks(args) => webhooks_command(&args),
        Command::Up(args) => up_command(&args),
    }
}

fn up_command(args: &UpArgs) -> Result<()> {
    let settings = args.settings(&exe_dir()?);
    // `cargo run` tells the program it runs which cargo that is, and which package.
    let cargo = std::env::var_os("CARGO").filter(|_| !args.no_build);
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    local::ensure_built(&settings, cargo.as_deref(), manifest_dir.as_deref())?;
    let token = Token::new(std::env::var(origin_throughput::BOOTSTRAP_TOKEN_VARIABLE).ok());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?
        .block_on(local::run(&settings, &token))
}

fn origin_command(args: &OriginArgs) -> Result<()> {
    let exe_dir = exe_dir()?;
    let json_path = args.load.json_path(&exe_dir, "origin");
    let report = measure(&json_path, report::print_table, |nproc, pinning| {
        let settings = args.settings(&exe_dir, pinning);
        async move { origin_throughput::run(&settings, nproc).await }
    })?;
    report.ensure_clean()
}

fn edge_hits_command(args: &EdgeHitsArgs) -> Result<()> {
    let exe_dir = exe_dir()?;
    let json_path = args.load.json_path(&exe_dir, "edge-hits");
    let report = measure(&json_path, report::print_edge_table, |nproc, pinning| {
        let settings = args.settings(&exe_dir, pinning);
        async move { edge_hits::run(&settings, nproc).await }
    })?;
    report.ensure_clean()
}

fn invalidation_command(args: &InvalidationArgs) -> Result<()> {
    let exe_dir = exe_dir()?;
    measure(
        &args.json_path(&exe_dir),
        report::print_invalidation_table,
        |nproc, pinning| {
            let settings = args.settings(&exe_dir, pinning);
            async move { invalidation::run(&settings, nproc).await }
        },
    )
    .map(drop)
}

fn sse_command(args: &SseArgs) -> Result<()> {
    let exe_dir = exe_dir()?;
    measure(&args.json_path(&exe_dir), report::print_sse_table, |nproc, pinning| {
        let settings = args.settings(&exe_dir, pinning);
        async move { sse::run(&settings, nproc).await }
    })
    .map(drop)
}

fn webhooks_command(args: &WebhooksArgs) -> Result<()> {
    let exe_dir = exe_dir()?;
    measure(
        &args.json_path(&exe_dir),
        report::print_webhooks_table,
        |nproc, pinning| {
            let settings = args.settings(&exe_dir, pinning);
            async move { webhooks::run(&settings, nproc).await }
        },
    )
    .map(drop)
}

/// Runs a measurement (see [`run_pinned`]), prints its table with `print` and writes its report as
/// JSON to `json_path`; answers the report.
fn measure<R, W>(json_path: &Path, print: fn(&R), work: impl FnOnce(usize, Option<Pinning>) -> W) -> Result<R>
where
    R: serde::Serialize,
    W: Future<Output = Result<R>>,
{
    let report = run_pinned(work)?;
    print(&report);
    report::write_json(&report, json_path)?;
    eprintln!("figures written to {}", json_path.display());
    Ok(report)
}

/// Pins this process (see [`Pinning::apply`]) and runs the measurement that `work` makes from the
/// CPU count and the pinning on one thread, until it ends or Ctrl-C comes.
fn run_pinned<T, W>(work: impl FnOnce(usize, Option<Pinning>) -> W) -> Result<T>
where
    W: Future<Output = Result<T>>,
{
    // Counted before pinning, which narrows what this process sees to one CPU.
    let nproc = std::thread::available_parallelism().map_or(1, usize::from);
    // Before the runtime starts, so that every thread of the load generator inherits the CPU.
    let pinning = Pinning::apply(nproc)?;
    // One thread drives the whole load, on the CPU this process is pinned to.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?;
    runtime.block_on(until_ctrl_c(work(nproc, pinning)))
}

/// Runs `work` unless Ctrl-C comes first; then `work` is dropped, and with it every process it
/// started.
async fn until_ctrl_c<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        signal = tokio::signal::ctrl_c() => {
            signal.context("listen for ctrl-c")?;
            bail!("interrupted")
        }
    }
}

fn exe_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("find the running executable")?;
    exe.parent()
        .map(PathBuf::from)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}
