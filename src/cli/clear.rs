//! `liveresults clear QUERY`: remove a query's rows, outbox and checkpoints.

use super::stats::known;
use super::store::{with_rocks, DataArgs};
use super::CliResult;

/// Arguments of `clear`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The query to clear.
    query: String,
    #[command(flatten)]
    data: DataArgs,
}

/// Clears the query in the store (no server may hold the directory: the store is locked).
pub async fn run(args: Args) -> CliResult {
    let query = args.query.clone();
    let (before, after) = with_rocks(&args.data.data, |store| async move {
        let before = known(&*store, &query).await?;
        let after = store
            .clear_query(&query)
            .await
            .map_err(|e| format!("clearing {query:?}: {e}"))?;
        Ok((before, after))
    })
    .await?;
    println!(
        "cleared {}: {} rows removed, epoch {} -> {}",
        args.query, before.row_count, before.epoch, after.epoch
    );
    Ok(())
}
