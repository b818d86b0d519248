use std::path::PathBuf;

use clap::Parser;
use edge::config::EdgeConfig;

/// Most requests allocate a few small buffers; mimalloc's thread-local free lists make that cheap.
/// Every block is zeroed when freed: request and response buffers (pingora's included) held
/// plaintext of cached responses, which must not outlive them in freed memory.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<mimalloc::MiMalloc> = zeroizing_alloc::ZeroAlloc(mimalloc::MiMalloc);

/// The edge: a caching proxy with an encrypted in-memory HTTP cache in front of the origin.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see config/edge.toml); EDGE_* environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: EdgeConfig = shared::config::load("EDGE_", cli.config.as_deref())?;
    // pingora-cache warns that its header compression has no dictionary; the edge stores headers in its
    // own format and never uses that compression for them.
    shared::telemetry::init(config.log.format, "info,pingora_cache::meta=error");
    shared::process::disable_transparent_huge_pages_or_warn();
    shared::process::raise_open_file_limit_and_log();
    let edge = edge::server::build(&config)?;
    tracing::info!(
        listen = %config.http.listen,
        metrics = %config.metrics.listen,
        upstream = %config.upstream.url.join(","),
        "edge listening"
    );
    // Pingora builds its own runtimes and exits the process when it stops.
    edge.server.run_forever()
}
