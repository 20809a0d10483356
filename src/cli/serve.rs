//! `liveresults serve`: the HTTP API over a RocksDB, Redis or PostgreSQL (both shared by
//! several hosts) or in-memory store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liveresults::runtime::Runtime;
use liveresults::MemoryStore;
use liveresults_server::limits::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUERIES, DEFAULT_MAX_QUERY_ID_BYTES,
};
use liveresults_server::{
    AppState, Security, Tokens, DEFAULT_CHANGES_MAX_BYTES, DEFAULT_CHUNK_BYTES,
    DEFAULT_CHUNK_LINES, DEFAULT_MAX_BODY_BYTES,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::config::{runtime_config, PipelineArgs};
use super::hosts::HostArgs;
use super::retention::RetentionArgs;
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
        required_unless_present_any = ["memory", "redis", "postgres"],
        conflicts_with = "memory"
    )]
    data: Option<PathBuf>,
    /// Keep everything in memory (lost on exit): for throwaway runs.
    #[arg(long)]
    memory: bool,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Lines per ingest chunk; each chunk is one atomic commit (1 to 1,000,000).
    #[arg(long, default_value_t = DEFAULT_CHUNK_LINES, value_parser = in_range(1, 1_000_000))]
    chunk_lines: usize,
    /// Bytes after which an ingest chunk is committed even with fewer lines (1 B to 1 GiB).
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES, value_parser = in_range(1, 1 << 30))]
    chunk_bytes: usize,
    /// Largest ingest body in bytes (at least 1).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_body_bytes: u64,
    /// Bytes of messages per change-feed response (catch-up, long-poll, one SSE data event;
    /// always at least one message): bounds the memory a client that stops reading can hold
    /// (1 KiB to 1 GiB).
    #[arg(long, default_value_t = DEFAULT_CHANGES_MAX_BYTES,
          value_parser = in_range(1 << 10, 1 << 30))]
    changes_max_bytes: usize,
    /// Longest wait of a long-poll (change feeds and /v1/stream reads) before it answers 204,
    /// in seconds (0 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    long_poll_timeout_secs: u64,
    /// Seconds open connections get to finish after Ctrl-C / SIGTERM before they are dropped
    /// (0 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_secs: u64,
    /// Bearer tokens, one `ROLE:TOKEN` per line (role read, write or admin; `#` comments).
    /// Tokens in the LIVERESULTS_TOKENS variable (`ROLE:TOKEN`, comma-separated) are added.
    /// Without any token the server is open to whoever reaches it.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Accepted Host header values, comma-separated (`name` any port, `name:port` one port);
    /// others get 421. Default: any Host.
    #[arg(long, value_name = "HOST,HOST", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// A browser origin (`https://app.example`) allowed to call the API (CORS); repeatable.
    /// Default: none, and writes from a foreign Origin are refused.
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// Seconds a client gets to send a request's headers (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_secs: u64,
    /// Longest pause, in seconds, between two pieces of a request body (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_read_timeout_secs: u64,
    /// Connections served at once; more wait in the listen backlog (1 to 1,048,576).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = in_range(1, liveresults_server::limits::MAX_CONNECTIONS))]
    max_connections: usize,
    /// Queries the server holds; a first write to one more gets 403 (1 to 100,000,000).
    #[arg(long, default_value_t = DEFAULT_MAX_QUERIES, value_parser = in_range(1, 100_000_000))]
    max_queries: usize,
    /// Durable Streams at /v1/stream the server holds; creating one more gets 403 and
    /// creates nothing (1 to 100,000,000).
    #[arg(long, default_value_t = liveresults_server::streams::DEFAULT_MAX_STREAMS,
          value_parser = in_range(1, 100_000_000))]
    max_streams: usize,
    /// Idempotent producers (Producer-Id) one stream keeps state for; a new producer's first
    /// append beyond it gets 403 and appends nothing (1 to 10,000,000).
    #[arg(long, default_value_t = liveresults_server::streams::DEFAULT_MAX_PRODUCERS,
          value_parser = in_range(1, 10_000_000))]
    max_stream_producers: usize,
    /// Durable Streams subscriptions (/v1/stream/__ds/subscriptions) the server keeps; creating
    /// one more gets 403 (1 to 1,000,000). Each links at most 1,000 streams.
    #[arg(long, default_value_t = liveresults_server::streams::subscription::DEFAULT_MAX_SUBSCRIPTIONS,
          value_parser = in_range(1, 1_000_000))]
    max_subscriptions: usize,
    /// Development only: subscription webhooks may target `http://localhost` /
    /// `http://127.0.0.x` and names resolving to loopback. Off (the default), webhooks must be
    /// https to public addresses, so a client cannot make the server POST to local ports.
    #[arg(long)]
    allow_dev_webhooks: bool,
    /// Longest query id in bytes; longer ids get 400 (1 to 65,535).
    #[arg(long, default_value_t = DEFAULT_MAX_QUERY_ID_BYTES,
          value_parser = in_range(1, liveresults::core::rules::MAX_QUERY_ID_BYTES))]
    max_query_id_bytes: usize,
}

/// A clap parser for a `usize` between `min` and `max`, saying the range when refused.
pub(super) fn in_range(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |text: &str| {
        let value: usize = text
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number from {min} to {max}"))?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("{value} is out of range: from {min} to {max}"))
        }
    }
}

/// The tokens of `--token-file` and `LIVERESULTS_TOKENS` (read off the executor threads).
async fn tokens(file: Option<&PathBuf>) -> Result<Tokens, String> {
    let mut tokens = Tokens::new();
    if let Some(path) = file {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        let origin = path.display().to_string();
        tokens = tokens.add(&text, &origin).map_err(|e| e.to_string())?;
    }
    if let Some(text) = std::env::var_os(TOKENS_VAR) {
        let text = text
            .into_string()
            .map_err(|_| format!("{TOKENS_VAR} is not UTF-8"))?;
        tokens = tokens.add(&text, TOKENS_VAR).map_err(|e| e.to_string())?;
    }
    Ok(tokens)
}

/// The environment variable holding extra tokens.
const TOKENS_VAR: &str = "LIVERESULTS_TOKENS";

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
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
    let tokens = tokens(args.token_file.as_ref()).await?;
    let security = Security::new()
        .tokens(tokens)
        .allowed_hosts(args.allowed_hosts.clone())
        .cors_origins(args.cors_origin.clone());
    let retention = args.retention.retention();
    let store = match (&args.data, &args.hosts.redis, &args.hosts.postgres) {
        (_, _, Some(url)) => Opened::postgres(url, retention).await?,
        (_, Some(url), None) => Opened::redis(url, retention).await?,
        (Some(dir), None, None) if !args.memory => Opened::rocks(dir, retention).await?,
        _ => Opened::Memory(Arc::new(MemoryStore::with_retention(retention))),
    };
    let long_poll = Duration::from_secs(args.long_poll_timeout_secs);
    // Streams live where the hosts meet: on Redis when it is shared, else beside the data.
    let home = match (&args.hosts.redis, &args.data) {
        (Some(url), _) => super::streams::Home::Redis(url),
        (None, Some(dir)) => super::streams::Home::Data(dir),
        (None, None) => super::streams::Home::Memory,
    };
    let (max_streams, max_producers) = (args.max_streams, args.max_stream_producers);
    let max_subscriptions = args.max_subscriptions;
    let streams = super::streams::open(
        home,
        long_poll,
        max_streams,
        max_producers,
        max_subscriptions,
        args.allow_dev_webhooks,
    )
    .await?;
    // Bound before the runtime starts: a host sharing the store advertises this address.
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    let config = args.hosts.apply(config, addr)?;
    let runtime = Runtime::start(store.shared(), config, Vec::new())
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    // On stdout, flushed, so a parent process can read the port it got.
    let mut stdout = tokio::io::stdout();
    let line = format!("listening on {addr}\n");
    stdout
        .write_all(line.as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(|e| format!("writing to stdout: {e}"))?;
    tracing::info!(%addr, tokens = security.requires_tokens(), "serving");
    if !security.requires_tokens() && !addr.ip().is_loopback() {
        let warning = format!(
            "WARNING: listening on {addr}, which is not a loopback address, WITHOUT ACCESS \
             CONTROL: anyone who reaches this port can ingest, clear and delete queries. \
             Configure tokens with --token-file or {TOKENS_VAR}."
        );
        eprintln!("\n{}\n{warning}\n{}\n", "!".repeat(78), "!".repeat(78));
        tracing::warn!("{warning}");
    }
    let state = AppState::new(runtime.handle())
        .chunk_lines(args.chunk_lines)
        .chunk_bytes(args.chunk_bytes)
        .max_body_bytes(args.max_body_bytes)
        .changes_max_bytes(args.changes_max_bytes)
        .long_poll_timeout(Duration::from_secs(args.long_poll_timeout_secs))
        .shutdown_grace(Duration::from_secs(args.shutdown_grace_secs))
        .header_read_timeout(Duration::from_secs(args.header_read_timeout_secs))
        .body_read_timeout(Duration::from_secs(args.body_read_timeout_secs))
        .max_connections(args.max_connections)
        .max_queries(args.max_queries)
        .max_query_id_bytes(args.max_query_id_bytes)
        .security(security)
        .streams(streams.clone());
    let served = liveresults_server::serve(listener, state, shutdown_signal()).await;
    let stopped = runtime.shutdown().await;
    let closed = store.close().await;
    let streams_closed = streams.close().await;
    served.map_err(|e| format!("serving: {e}"))?;
    stopped.map_err(|e| format!("stopping the runtime: {e}"))?;
    closed?;
    streams_closed.map_err(|e| format!("closing the streams store: {e}"))?;
    tracing::info!("stopped cleanly");
    Ok(())
}
