use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use origin::config::OriginConfig;

/// Most requests allocate a few small buffers; mimalloc's thread-local free lists make that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The forecast origin: HTTP read and admin API over Redis or an embedded store.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see config/origin.toml); ORIGIN_* environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Reads a token on standard input and prints the hash to put in [[auth.tokens]].
    HashToken,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::HashToken) = cli.command {
        let mut token = String::new();
        std::io::stdin()
            .read_to_string(&mut token)
            .context("reading the token")?;
        let hash = origin::api::auth::hash_token(token.trim());
        #[allow(clippy::print_stdout)]
        {
            println!("{}", origin::api::auth::format_hash(&hash));
        }
        return Ok(());
    }
    let config: OriginConfig = shared::config::load("ORIGIN_", cli.config.as_deref())?;
    shared::telemetry::init(config.log.format, "info");
    shared::process::disable_transparent_huge_pages_or_warn();
    shared::process::raise_open_file_limit_and_log();
    tokio::runtime::Runtime::new()
        .context("starting the runtime")?
        .block_on(serve(config))
}

async fn serve(config: OriginConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let running = origin::server::start(&config, listener, std::future::pending()).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown(config.http.shutdown_grace).await
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
