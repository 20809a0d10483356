//! The `liveresults` command: serve the HTTP API, replay NDJSON, inspect and clear queries.
//!
//! Definition and glue only; the work happens in the library crates.

mod cli;

/// Rows are allocated by the task that parses them and freed by the query's pipeline on
/// another thread; glibc's allocator handles that pattern at about half mimalloc's speed
/// (measured by `benches/runtime.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
