//! `liveresults verify [QUERY]`: an offline integrity check of a RocksDB data directory.
//!
//! Exit status: 0 when the store is clean, 1 when damage was found (the report lists it), 2
//! when the check could not run (bad arguments, no store, a server holds the lock, an I/O
//! error). Scripts can tell "damaged" from "could not look".

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use liveresults::rocksdb::{verify_with, VerifyOptions};
use liveresults::{OutboxRetention, StoreError};

/// Exit status of a clean store.
pub const EXIT_CLEAN: u8 = 0;
/// Exit status when the report lists damage.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit status when the check could not run (clap uses 2 for usage errors too).
pub const EXIT_UNUSABLE: u8 = 2;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check only this query's records (default: the whole store).
    query: Option<String>,
    /// The RocksDB data directory to check (never created; no server may hold it).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Outbox entry limit the store was written with.
    #[arg(long, value_name = "N", default_value_t = OutboxRetention::default().max_entries)]
    outbox_max_entries: usize,
    /// Outbox payload byte limit the store was written with.
    #[arg(long, value_name = "BYTES", default_value_t = OutboxRetention::default().max_bytes)]
    outbox_max_bytes: u64,
    /// Accept holes between outbox entries: sequences upstream skipped (the auto-skip-gap
    /// policy). Under strict and auto-reset a hole is a lost entry.
    #[arg(long)]
    allow_gaps: bool,
    /// Do not decode outbox payloads (stores written through the library with payloads of
    /// their own rather than by the runtime).
    #[arg(long)]
    opaque_payloads: bool,
    /// Do not decode rows (stores written through the LiveResultsWriter trait, whose rows are
    /// the writer's own bytes).
    #[arg(long)]
    opaque_rows: bool,
    /// Most problems listed; the rest are counted.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_findings: usize,
}

/// Runs the check on the blocking pool (it is all blocking RocksDB reads) and prints the
/// report on stdout.
pub async fn run(args: Args) -> ExitCode {
    match tokio::task::spawn_blocking(move || check(&args)).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: the check failed: {e}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

fn check(args: &Args) -> ExitCode {
    let options = VerifyOptions::new()
        .outbox_retention(OutboxRetention {
            max_entries: args.outbox_max_entries,
            max_bytes: args.outbox_max_bytes,
        })
        .allow_sequence_gaps(args.allow_gaps)
        .opaque_payloads(args.opaque_payloads)
        .opaque_rows(args.opaque_rows)
        .max_findings(args.max_findings);
    let shown = args.data.display();
    let report = match verify_with(&args.data, args.query.as_deref(), &options) {
        Ok(report) => report,
        // RocksDB refused its own files: that is damage, not a usage problem.
        Err(e @ StoreError::Corrupt { .. }) => {
            eprintln!("error: {shown} is damaged, RocksDB cannot open it: {e}");
            return ExitCode::from(EXIT_DAMAGED);
        }
        Err(e) => {
            eprintln!("error: cannot verify {shown}: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    if let Some(query) = &args.query {
        if report.records_checked && report.is_clean() && report.queries == 0 {
            eprintln!("error: query {query:?} not found in {shown}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    }
    let scope = match &args.query {
        Some(query) => format!("query {query:?} in {shown}"),
        None => shown.to_string(),
    };
    let mut out = std::io::stdout().lock();
    let written = write!(out, "verify {scope}\n{report}").and_then(|()| out.flush());
    match written {
        // `verify | head`: the status still says what was found.
        Err(e) if e.kind() != ErrorKind::BrokenPipe => {
            eprintln!("error: writing to stdout: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
        _ => {}
    }
    ExitCode::from(if report.is_clean() {
        EXIT_CLEAN
    } else {
        EXIT_DAMAGED
    })
}
