//! Restart equivalence (property): random streams of adds, updates, deletes, aggregations,
//! noops, control signals and redeliveries over a few signatures of two queries, with two
//! restarts at random points. The final materialized view equals that of a run without
//! restarts, the store's snapshot and a plain model; a durable view that was away for the
//! middle run catches up (or rebuilds) to the same rows.

use std::sync::Arc;

use liveresults_core::{MemoryStore, OutboxRetention, ResultStore};
use liveresults_runtime::reactions::MaterializedView;
use liveresults_runtime::Reaction;
use proptest::prelude::*;

use super::reactors::*;
use super::support::*;

fn new_store(small_outbox: bool) -> Arc<MemoryStore> {
    Arc::new(if small_outbox {
        MemoryStore::with_retention(OutboxRetention {
            max_entries: 3,
            max_bytes: 1 << 20,
        })
    } else {
        MemoryStore::new()
    })
}

async fn check(scenario: Scenario) {
    let (events, model_a, model_b) = scenario.build();
    let config = scenario.config();

    let baseline_store = new_store(scenario.small_outbox);
    let baseline = Arc::new(MaterializedView::new("view"));
    run_phase(
        baseline_store.clone(),
        config.clone(),
        vec![baseline.clone()],
        &events,
    )
    .await;

    let store = new_store(scenario.small_outbox);
    let durable = Arc::new(DurableView::new("durable"));
    let (c1, c2) = scenario.cut_points(events.len());
    let view1: Arc<dyn Reaction> = Arc::new(MaterializedView::new("view"));
    run_phase(
        store.clone(),
        config.clone(),
        vec![view1, durable.clone()],
        &events[..c1],
    )
    .await;
    let view2: Arc<dyn Reaction> = Arc::new(MaterializedView::new("view"));
    run_phase(store.clone(), config.clone(), vec![view2], &events[c1..c2]).await;
    let last = Arc::new(MaterializedView::new("view"));
    run_phase(
        store.clone(),
        config.clone(),
        vec![last.clone(), durable.clone()],
        &events[c2..],
    )
    .await;

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
        assert_eq!(store_rows(&*store, q).await, expected, "query {q}: store");
        assert_eq!(
            durable.view.query(q).rows,
            expected,
            "query {q}: durable view"
        );
        let dstore: &dyn ResultStore = &*store;
        assert_eq!(
            dstore.query_info(q).await.unwrap().row_count,
            expected.len() as u64
        );
    }
}

proptest! {
    // `PROPTEST_CASES` raises the count for a longer hunt.
    #![proptest_config(ProptestConfig { cases: liveresults_core::testing::env_number("PROPTEST_CASES", 64), ..ProptestConfig::default() })]

    #[test]
    fn restarts_do_not_change_the_final_view(scenario in scenario_strategy(40)) {
        block_on(check(scenario));
    }
}
