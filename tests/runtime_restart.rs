//! Restart equivalence on the RocksDB store (property): the same property as the runtime
//! crate's in-memory run (`liveresults_runtime::testing::check_restarts`), with the store
//! closed and reopened from its directory at every restart.

use std::path::PathBuf;
use std::sync::Arc;

use liveresults::{OutboxRetention, RocksStore, RocksStoreOptions};
use liveresults_runtime::testing::{
    block_on, check_restarts, scenario_strategy, Scenario, StoreFactory,
};
use proptest::prelude::*;

/// A RocksDB store in a temporary directory, opened afresh for every phase.
struct RocksStores {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl RocksStores {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().join("store");
        RocksStores { _tmp: tmp, dir }
    }
}

impl StoreFactory for RocksStores {
    type Store = RocksStore;

    async fn open(&mut self, retention: OutboxRetention) -> Arc<RocksStore> {
        let options = RocksStoreOptions::new().outbox_retention(retention);
        Arc::new(
            RocksStore::open(&self.dir, options)
                .await
                .expect("open store"),
        )
    }

    async fn close(&mut self, store: Arc<RocksStore>) {
        let Ok(store) = Arc::try_unwrap(store) else {
            panic!("the runtime kept a reference to the store after shutdown");
        };
        store.close().await.expect("close store");
    }
}

fn check(scenario: Scenario) {
    block_on(check_restarts(scenario, RocksStores::new()));
}

proptest! {
    // `PROPTEST_CASES` raises the count for a longer hunt.
    #![proptest_config(ProptestConfig { cases: liveresults_core::testing::env_number("PROPTEST_CASES", 12), ..ProptestConfig::default() })]

    #[test]
    fn restarts_on_rocksdb_do_not_change_the_final_view(scenario in scenario_strategy(40)) {
        check(scenario);
    }
}
