//! `liveresults clear QUERY`: remove a query's rows, outbox and checkpoints.

use super::stats::known;
use super::store::{with_store, DataArgs};
use super::CliResult;

/// Arguments of `clear`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The query to clear.
    query: String,
    #[command(flatten)]
    data: DataArgs,
}

/// Clears the query in the store. No server may hold a RocksDB directory (the store is
/// locked); on a shared Redis store a query some host owns is refused, because the store does
/// not fence clears: that host must clear it (`DELETE /queries/{id}`), or be stopped first.
pub async fn run(args: Args) -> CliResult {
    let query = args.query.clone();
    let (before, after) = with_store(&args.data, |store| async move {
        let before = known(&*store, &query).await?;
        if let Some(leases) = store.leases() {
            let holder = (leases.holder(&query).await)
                .map_err(|e| format!("reading the lease of {query:?}: {e}"))?;
            if let Some(holder) = holder {
                return Err(format!(
                    "query {query:?} is owned by host {:?} at {}: clear it there \
                     (DELETE /queries/{{id}}), or stop that host and let its lease expire",
                    holder.holder, holder.address
                ));
            }
        }
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
