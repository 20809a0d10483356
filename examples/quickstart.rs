//! A tour of the store: commit result diffs with their sequence, restart, and rebuild from a
//! point-in-time snapshot instead of replaying history.
//!
//! Run: `scripts/quickstart.sh` (or `cargo run --release --example quickstart`).

use liveresults::{Commit, ResultStore, RocksStore, RocksStoreOptions, RowMutation, SequenceSpan};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    println!("store directory: {}", dir.path().display());

    let store = RocksStore::open(dir.path(), RocksStoreOptions::new()).await?;
    // Sequence 1: three orders enter the "open-orders" result set.
    let rows = [
        (11, r#"{"order":11,"customer":"ada","total":40}"#),
        (12, r#"{"order":12,"customer":"bob","total":75}"#),
        (13, r#"{"order":13,"customer":"cy","total":12}"#),
    ];
    let adds: Vec<_> = rows
        .iter()
        .map(|(sig, json)| RowMutation::upsert(*sig, json.as_bytes()))
        .collect();
    store
        .commit(
            "open-orders",
            Commit::sequenced(&adds, SequenceSpan::single(1), b"3 added"),
        )
        .await?;
    // Sequence 2: order 12 is paid (leaves the result set), order 13 grows.
    let diff = [
        RowMutation::delete(12),
        RowMutation::upsert(13, br#"{"order":13,"customer":"cy","total":99}"#),
    ];
    store
        .commit(
            "open-orders",
            Commit::sequenced(&diff, SequenceSpan::single(2), b"1 removed, 1 updated"),
        )
        .await?;
    let info = store.query_info("open-orders").await?;
    println!(
        "committed sequence {:?}, {} live rows",
        info.sequence, info.row_count
    );
    store.close().await?;

    println!("-- restart --");
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new()).await?;
    let mut snapshot = store.snapshot("open-orders", 1024).await?;
    println!(
        "snapshot at sequence {:?} with {} rows:",
        snapshot.info().sequence,
        snapshot.info().row_count
    );
    while let Some(chunk) = snapshot.next_chunk().await? {
        for (signature, data) in chunk.iter() {
            println!("  {signature:>3}  {}", String::from_utf8_lossy(data));
        }
    }
    for entry in store.read_outbox("open-orders", Some(1), 10).await? {
        println!(
            "outbox after 1: sequence {} -> {}",
            entry.span.last,
            String::from_utf8_lossy(&entry.payload)
        );
    }
    let cleared = store.clear_query("open-orders").await?;
    println!(
        "after clear: {} rows, epoch {}",
        cleared.row_count, cleared.epoch
    );
    store.close().await?;
    Ok(())
}
