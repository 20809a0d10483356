//! The `liveresults` command: serve the HTTP API, replay NDJSON, inspect and clear queries.
//!
//! Definition and glue only; the work happens in the library crates.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
