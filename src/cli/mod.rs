//! Command-line definition and dispatch: one module per subcommand, each with its arguments
//! and its `run`.

mod clear;
mod config;
mod consume;
mod dump;
mod hosts;
mod replay;
mod retention;
mod serve;
mod stats;
mod store;
mod streams;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What a subcommand fails with: a message for stderr (the binary is glue, so a message is all
/// the caller needs).
pub type CliResult<T = ()> = Result<T, String>;

/// A live-query results reaction store.
#[derive(Debug, Parser)]
#[command(name = "liveresults", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest arguments costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (ingest, snapshots, change feed, metrics).
    Serve(serve::Args),
    /// Feed NDJSON events (a file, or - for stdin) through the runtime into a store.
    Replay(replay::Args),
    /// Consume Drasi result events from Redis Streams (a consumer group) into a store.
    Consume(consume::Args),
    /// Show the sequence, row count and epoch of one query or of every query.
    Stats(stats::Args),
    /// Write a query's snapshot as NDJSON on stdout.
    Dump(dump::Args),
    /// Clear a query: remove its rows, outbox and checkpoints (its epoch increments).
    Clear(clear::Args),
    /// Check a data directory's integrity offline: exit 0 clean, 1 damaged, 2 cannot check.
    Verify(verify::Args),
}

/// Parses arguments, sets up logging (`RUST_LOG`, to stderr) and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that `dump` output and `listening on` stay clean on stdout.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let result = match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Dump(args) => dump::run(args).await,
            Command::Clear(args) => clear::run(args).await,
            // Its exit status tells clean, damaged and could-not-check apart.
            Command::Verify(args) => return verify::run(args).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        }
    })
}
