//! `liveresults dump QUERY`: the snapshot as NDJSON on stdout, in the shape of the HTTP
//! snapshot (a header line, then one `{"signature", "row"}` line per row).

use std::io::ErrorKind;

use liveresults::ResultStore;
use liveresults_server::render;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::stats::known;
use super::store::{with_store, DataArgs};
use super::CliResult;

/// Rows read from the store per chunk.
const CHUNK_ROWS: usize = 4096;

/// Arguments of `dump`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The query to dump.
    query: String,
    #[command(flatten)]
    data: DataArgs,
}

/// Streams the snapshot; a closed stdout (`dump | head`) ends it quietly.
pub async fn run(args: Args) -> CliResult {
    let query = args.query;
    let result = with_store(&args.data, |store| async move {
        Ok(write(&*store, &query).await)
    })
    .await?;
    match result {
        Err(Failure::Io(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Io(e)) => Err(format!("writing to stdout: {e}")),
        Err(Failure::Other(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

enum Failure {
    Io(std::io::Error),
    Other(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Other(e)
    }
}

async fn write(store: &dyn ResultStore, query: &str) -> Result<(), Failure> {
    known(store, query).await?;
    let mut snapshot = store
        .snapshot(query, CHUNK_ROWS)
        .await
        .map_err(|e| format!("snapshot of {query:?}: {e}"))?;
    let mut out = BufWriter::with_capacity(1 << 16, tokio::io::stdout());
    let mut line = render::snapshot_header(snapshot.info()).to_string();
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    while let Some(chunk) = snapshot
        .next_chunk()
        .await
        .map_err(|e| format!("snapshot of {query:?}: {e}"))?
    {
        for (signature, data) in chunk.iter() {
            let row = render::snapshot_row(query, signature, data).map_err(|e| e.to_string())?;
            line.clear();
            line.push_str(&row.to_string());
            line.push('\n');
            out.write_all(line.as_bytes()).await?;
        }
    }
    out.flush().await?;
    Ok(())
}
