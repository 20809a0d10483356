//! The shared conformance suite and model test against the RocksDB store, plus the failure
//! modes only an on-disk store has.

use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::testing::{run_model_test, Harness, ModelConfig};
use liveresults_core::{LiveResultsWriter, OutboxRetention, ResultStore, RowMutation, StoreError};
use liveresults_rocksdb::rocksdb;
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
use tempfile::TempDir;

/// Opens stores in a temporary directory; `reopen` closes and reopens the same directory.
struct RocksHarness {
    dir: TempDir,
    options: RocksStoreOptions,
}

impl RocksHarness {
    fn new() -> Self {
        Self::with_options(RocksStoreOptions::new())
    }

    fn with_options(options: RocksStoreOptions) -> Self {
        RocksHarness {
            dir: tempfile::tempdir().expect("temp dir"),
            options,
        }
    }
}

#[async_trait]
impl Harness for RocksHarness {
    type Store = RocksStore;

    async fn open(&mut self, retention: OutboxRetention) -> RocksStore {
        self.options = self.options.clone().outbox_retention(retention);
        RocksStore::open(self.dir.path(), self.options.clone())
            .await
            .expect("open")
    }

    async fn reopen(&mut self, store: RocksStore) -> RocksStore {
        store.close().await.expect("close");
        RocksStore::open(self.dir.path(), self.options.clone())
            .await
            .expect("reopen")
    }

    fn durable(&self) -> bool {
        true
    }
}

liveresults_core::conformance_suite!(RocksHarness::new());

/// The same suite with a signature-index budget of zero rows: every commit uses the batched
/// `multi_get` fallback, which must count exactly as well.
mod without_signature_index {
    use super::*;

    fn harness() -> RocksHarness {
        RocksHarness::with_options(RocksStoreOptions::new().signature_index_bytes(0))
    }

    liveresults_core::conformance_suite!(harness());
}

#[test]
fn rocksdb_store_matches_the_model() {
    let config = ModelConfig {
        cases: liveresults_core::testing::env_number("PROPTEST_CASES", 32),
        ..ModelConfig::default()
    };
    run_model_test(RocksHarness::new, config);
}

#[test]
fn rocksdb_store_matches_the_model_over_budget() {
    let config = ModelConfig {
        cases: 12,
        ..ModelConfig::default()
    };
    run_model_test(
        || RocksHarness::with_options(RocksStoreOptions::new().signature_index_bytes(64)),
        config,
    );
}

#[tokio::test]
async fn second_handle_on_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    let err = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    first.close().await.unwrap();
}

#[tokio::test]
async fn unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    {
        let opts = RocksStoreOptions::new();
        let cfs = ["rows", "outbox", "meta", "checkpoints"];
        let db = rocksdb::DB::open_cf(&opts.db_options(), dir.path(), cfs).unwrap();
        db.put(b"liveresults.format_version", 99u32.to_be_bytes())
            .unwrap();
    }
    let err = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedFormat {
                found: 99,
                supported: 2
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_meta_record_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    store
        .apply_mutations("q", &[RowMutation::upsert(1, b"a")])
        .await
        .unwrap();
    store.close().await.unwrap();
    {
        let opts = RocksStoreOptions::new();
        let cfs = ["rows", "outbox", "meta", "checkpoints"];
        let db = rocksdb::DB::open_cf(&opts.db_options(), dir.path(), cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        let mut key = 1u16.to_be_bytes().to_vec();
        key.push(b'q');
        db.put_cf(meta, key, b"\x01garbage").unwrap();
    }
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    let err = store.query_info("q").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("\"q\""),
        "error names the query: {err}"
    );
    assert!(matches!(
        store.list_queries().await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn open_snapshots_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksStoreOptions::new().max_open_snapshots(1);
    let store = RocksStore::open(dir.path(), options).await.unwrap();
    let muts: Vec<_> = (0..100u64)
        .map(|i| RowMutation::upsert(i, b"row"))
        .collect();
    store.apply_mutations("q", &muts).await.unwrap();
    // 10 chunks, 2 in flight: the first snapshot's reader thread stays parked, holding its slot.
    let first = store.snapshot("q", 10).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(200), store.snapshot("q", 10)).await;
    assert!(waiting.is_err(), "a second snapshot must wait for the slot");
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), store.snapshot("q", 10))
        .await
        .expect("the slot is released when the first snapshot is dropped")
        .unwrap();
    assert_eq!(second.collect_rows().await.unwrap().len(), 100);
}

/// A reader that stops taking chunks gives its slot back after the idle timeout, and learns
/// so by an error: an abandoned snapshot never ends as if it were complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_snapshot_reader_is_abandoned_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksStoreOptions::new()
        .max_open_snapshots(1)
        .snapshot_wait(Duration::from_millis(50))
        .snapshot_idle_timeout(Duration::from_millis(100));
    let store = RocksStore::open(dir.path(), options).await.unwrap();
    let muts: Vec<_> = (0..100u64)
        .map(|i| RowMutation::upsert(i, b"row"))
        .collect();
    store.apply_mutations("q", &muts).await.unwrap();
    let mut idle = store.snapshot("q", 10).await.unwrap();
    let busy = store.snapshot("q", 10).await.unwrap_err();
    assert!(busy.is_transient(), "{busy}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = store
        .snapshot("q", 10)
        .await
        .expect("the idle reader's slot was released");
    assert_eq!(fresh.collect_rows().await.unwrap().len(), 100);
    let mut rows = 0;
    loop {
        match idle.next_chunk().await {
            Ok(Some(chunk)) => rows += chunk.len(),
            Ok(None) => panic!("an abandoned snapshot reported completion after {rows} rows"),
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                break;
            }
        }
    }
    assert!(rows < 100);
}
