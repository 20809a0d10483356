//! `liveresults serve`: the HTTP API over a RocksDB (or in-memory) store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liveresults::runtime::Runtime;
use liveresults::MemoryStore;
use liveresults_server::{
    AppState, DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_LINES, DEFAULT_MAX_BODY_BYTES,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::config::{runtime_config, PipelineArgs};
use super::store::Opened;
use super::CliResult;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The RocksDB data directory (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "memory",
        conflicts_with = "memory"
    )]
    data: Option<PathBuf>,
    /// Keep everything in memory (lost on exit): for throwaway runs.
    #[arg(long)]
    memory: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Lines per ingest chunk; each chunk is one atomic commit.
    #[arg(long, default_value_t = DEFAULT_CHUNK_LINES)]
    chunk_lines: usize,
    /// Bytes after which an ingest chunk is committed even with fewer lines.
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES)]
    chunk_bytes: usize,
    /// Largest ingest body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: u64,
    /// Longest wait of a change-feed long-poll before it answers 204, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    long_poll_timeout_secs: u64,
    /// Seconds open connections get to finish after Ctrl-C / SIGTERM before they are dropped.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Runs the server until Ctrl-C / SIGTERM, then drains and closes everything in order:
/// HTTP (in-flight chunks finish, live readers end), the runtime, the store.
pub async fn run(args: Args) -> CliResult {
    let config = runtime_config(&args.pipeline)?;
    let store = match &args.data {
        Some(dir) if !args.memory => Opened::rocks(dir).await?,
        _ => Opened::Memory(Arc::new(MemoryStore::new())),
    };
    let runtime = Runtime::start(store.shared(), config, Vec::new())
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    // On stdout, flushed, so a parent process can read the port it got.
    let mut stdout = tokio::io::stdout();
    let line = format!("listening on {addr}\n");
    stdout
        .write_all(line.as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(|e| format!("writing to stdout: {e}"))?;
    tracing::info!(%addr, "serving");
    let state = AppState::new(runtime.handle())
        .chunk_lines(args.chunk_lines)
        .chunk_bytes(args.chunk_bytes)
        .max_body_bytes(args.max_body_bytes)
        .long_poll_timeout(Duration::from_secs(args.long_poll_timeout_secs))
        .shutdown_grace(Duration::from_secs(args.shutdown_grace_secs));
    let served = liveresults_server::serve(listener, state, shutdown_signal()).await;
    let stopped = runtime.shutdown().await;
    let closed = store.close().await;
    served.map_err(|e| format!("serving: {e}"))?;
    stopped.map_err(|e| format!("stopping the runtime: {e}"))?;
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}
