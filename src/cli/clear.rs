//! `liveresults clear QUERY`: remove a query's rows, outbox and checkpoints.

use super::stats::known;
use super::store::{DataArgs, Opened};
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
    let store = Opened::rocks(&args.data.data).await?;
    let shared = store.shared();
    let result = async {
        let before = known(&*shared, &args.query).await?;
        let after = shared
            .clear_query(&args.query)
            .await
            .map_err(|e| format!("clearing {:?}: {e}", args.query))?;
        Ok::<_, String>((before, after))
    }
    .await;
    drop(shared);
    store.close().await?;
    let (before, after) = result?;
    println!(
        "cleared {}: {} rows removed, epoch {} -> {}",
        args.query, before.row_count, before.epoch, after.epoch
    );
    Ok(())
}
