//! `liveresults replay FILE|-`: NDJSON events through the runtime into the store, resumable.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use liveresults::runtime::{run_ndjson, Runtime, DEFAULT_MAX_LINE_BYTES};
use tokio::io::{AsyncBufRead, BufReader};

use super::config::{runtime_config, PipelineArgs};
use super::retention::RetentionArgs;
use super::store::DataArgs;
use super::CliResult;

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NDJSON input file, or `-` for stdin.
    input: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Replays the input; events already committed (at or below a query's stored sequence) are
/// skipped, so rerunning after an interruption resumes where it stopped.
pub async fn run(args: Args) -> CliResult {
    let config = runtime_config(&args.pipeline)?;
    let reader: Box<dyn AsyncBufRead + Unpin + Send> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(tokio::io::stdin()))
    } else {
        let file = tokio::fs::File::open(&args.input)
            .await
            .map_err(|e| format!("opening {}: {e}", args.input.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let store = args.data.open_with(args.retention.retention()).await?;
    let runtime = Runtime::start(store.shared(), config, Vec::new())
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} lines in {elapsed} ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let handle = runtime.handle();
    let result = run_ndjson(reader, &handle, DEFAULT_MAX_LINE_BYTES, |report| {
        bar.set_position(report.lines as u64);
        if report.submitted % 1024 == 1 {
            bar.set_message(format!(
                "{} submitted, {} already committed",
                report.submitted, report.resumed_past
            ));
        }
    })
    .await;
    bar.finish_and_clear();
    // Whatever happened, what was committed is made durable and the store closed cleanly.
    let stopped = runtime.shutdown().await;
    let closed = store.close().await;
    let report = result.map_err(|e| format!("replay stopped at {e}"))?;
    stopped.map_err(|e| format!("stopping the runtime: {e}"))?;
    closed?;
    let rate = report.lines as f64 / bar.elapsed().as_secs_f64().max(1e-9);
    println!(
        "replayed {} lines ({rate:.0} lines/s): {} events committed, {} skipped as already committed",
        report.lines, report.submitted, report.resumed_past
    );
    if report.resumed_past > 0 {
        println!(
            "resumed: {} events were already in the store",
            report.resumed_past
        );
    }
    Ok(())
}
