//! Restart equivalence on the RocksDB store (property): random two-query streams with two
//! restarts at random points, the store closed and reopened at each. The final materialized
//! view equals that of a run without restarts, the store's rows and a plain model, and a
//! durable `NdjsonLog` that missed the middle run replays to the same rows.

#[path = "../crates/runtime/tests/runtime/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use liveresults::runtime::reactions::{MaterializedView, NdjsonLog};
use liveresults::runtime::Reaction;
use liveresults::{MemoryStore, OutboxRetention, ResultStore, RocksStore, RocksStoreOptions};
use proptest::prelude::*;
use serde_json::Value as Json;

use support::*;

fn retention(small: bool) -> OutboxRetention {
    if small {
        OutboxRetention {
            max_entries: 3,
            max_bytes: 1 << 20,
        }
    } else {
        OutboxRetention::default()
    }
}

/// Opens the store, runs one phase, and closes the store again.
async fn rocks_phase(
    dir: &Path,
    small: bool,
    config: liveresults::runtime::RuntimeConfig,
    reactions: Vec<Arc<dyn Reaction>>,
    events: &[liveresults::core::formats::Event],
) {
    let store = Arc::new(
        RocksStore::open(
            dir,
            RocksStoreOptions::new().outbox_retention(retention(small)),
        )
        .await
        .expect("open store"),
    );
    run_phase(store.clone(), config, reactions, events).await;
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the runtime kept a reference to the store after shutdown");
    };
    store.close().await.expect("close store");
}

async fn check(scenario: Scenario) {
    let (events, model_a, model_b) = scenario.build();
    let config = scenario.config();

    let baseline = Arc::new(MaterializedView::new("view"));
    let memory = Arc::new(MemoryStore::with_retention(retention(
        scenario.small_outbox,
    )));
    run_phase(memory, config.clone(), vec![baseline.clone()], &events).await;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let log_path = tmp.path().join("log.ndjson");
    let (c1, c2) = scenario.cut_points(events.len());
    let open_log = || async { Arc::new(NdjsonLog::open("log", &log_path).await.unwrap()) };
    let view1: Arc<dyn Reaction> = Arc::new(MaterializedView::new("view"));
    let log: Arc<dyn Reaction> = open_log().await;
    rocks_phase(
        &dir,
        scenario.small_outbox,
        config.clone(),
        vec![view1, log],
        &events[..c1],
    )
    .await;
    let view2: Arc<dyn Reaction> = Arc::new(MaterializedView::new("view"));
    rocks_phase(
        &dir,
        scenario.small_outbox,
        config.clone(),
        vec![view2],
        &events[c1..c2],
    )
    .await;
    let last = Arc::new(MaterializedView::new("view"));
    let log: Arc<dyn Reaction> = open_log().await;
    rocks_phase(
        &dir,
        scenario.small_outbox,
        config.clone(),
        vec![last.clone(), log],
        &events[c2..],
    )
    .await;

    let store = RocksStore::open(&dir, RocksStoreOptions::new())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let mut replay: BTreeMap<String, BTreeMap<u64, Json>> = BTreeMap::new();
    for line in text.lines() {
        apply_log_line(&mut replay, &serde_json::from_str(line).unwrap());
    }
    for (q, model) in [("a", &model_a), ("b", &model_b)] {
        let expected = model_values(model);
        assert_eq!(
            baseline.query(q).rows,
            expected,
            "query {q}: baseline view vs model"
        );
        assert_eq!(
            last.query(q).rows,
            baseline.query(q).rows,
            "query {q}: restarted view"
        );
        assert_eq!(store_rows(&store, q).await, expected, "query {q}: store");
        assert_eq!(
            store.query_info(q).await.unwrap().row_count,
            expected.len() as u64
        );
        let logged = replay.get(q).cloned().unwrap_or_default();
        assert_eq!(model_values(&logged), expected, "query {q}: replayed log");
    }
    store.close().await.unwrap();
}

proptest! {
    // `PROPTEST_CASES` raises the count for a longer hunt.
    #![proptest_config(ProptestConfig { cases: liveresults_core::testing::env_number("PROPTEST_CASES", 12), ..ProptestConfig::default() })]

    #[test]
    fn restarts_on_rocksdb_do_not_change_the_final_view(scenario in scenario_strategy(40)) {
        block_on(check(scenario));
    }
}
