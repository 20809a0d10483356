//! `liveresults clear QUERY`: remove a query's rows, outbox and checkpoints.

use liveresults_core::{QueryInfo, ResultStore, StoreError};

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
/// locked); on a shared store (Redis, PostgreSQL) a query some host owns is refused: that host
/// must clear it (`DELETE /queries/{id}`), or be stopped first.
pub async fn run(args: Args) -> CliResult {
    let query = args.query.clone();
    let (before, after) = with_store(&args.data, |store| async move {
        let before = known(&*store, &query).await?;
        let after = clear_unowned(&*store, &query).await?;
        Ok((before, after))
    })
    .await?;
    println!(
        "cleared {}: {} rows removed, epoch {} -> {}",
        args.query, before.row_count, before.epoch, after.epoch
    );
    Ok(())
}

/// Clears `query` unless a host holds its lease. The clear carries no fencing token, so the
/// store refuses it while a lease is live, checking in the same atomic step as the clear:
/// reading the lease first and clearing after would let a host take the query in between and
/// have it cleared under its feet. The refusal names the holder (and its address, read
/// afterwards, when it still holds the lease).
async fn clear_unowned(store: &dyn ResultStore, query: &str) -> CliResult<QueryInfo> {
    match store.clear_query_fenced(query, None).await {
        Ok(info) => Ok(info),
        Err(StoreError::Fenced {
            live: Some((holder, _)),
            ..
        }) => {
            let address = match store.leases() {
                Some(leases) => (leases.holder(query).await.ok().flatten())
                    .filter(|h| h.holder == holder)
                    .map(|h| format!(" at {}", h.address)),
                None => None,
            };
            Err(format!(
                "query {query:?} is owned by host {holder:?}{}: clear it there \
                 (DELETE /queries/{{id}}), or stop that host and let its lease expire",
                address.unwrap_or_default()
            ))
        }
        Err(e) => Err(format!("clearing {query:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use liveresults_core::lease::{LeaseClaim, LeaseOutcome, Leases};
    use liveresults_core::{Commit, MemoryStore, RowMutation, SequenceSpan};

    use super::*;

    /// While a host holds the lease the clear is refused by the store itself, naming the
    /// host and its address, and nothing changes; once the lease is gone it clears.
    #[tokio::test]
    async fn a_query_a_host_owns_is_refused_atomically_naming_the_host() {
        let store = MemoryStore::new();
        let rows = [RowMutation::upsert(1, b"r")];
        let commit = Commit::sequenced(&rows, SequenceSpan::single(1), b"p");
        store.commit("q", commit).await.unwrap();
        let claim = LeaseClaim {
            holder: "a",
            address: "http://a:8080",
            ttl: Duration::from_secs(60),
        };
        let LeaseOutcome::Granted { token } = store.acquire("q", claim).await.unwrap() else {
            panic!("the lease is free");
        };
        let before = store.query_info("q").await.unwrap();
        let refused = clear_unowned(&store, "q").await.unwrap_err();
        assert!(
            refused.contains("owned by host \"a\" at http://a:8080"),
            "{refused}"
        );
        assert_eq!(store.query_info("q").await.unwrap(), before);
        store.release("q", token).await.unwrap();
        let after = clear_unowned(&store, "q").await.unwrap();
        assert_eq!((after.epoch, after.sequence), (1, None));
    }
}
