//! The restart-equivalence property, once for every backend: random streams of adds, updates,
//! deletes, aggregations, noops, control signals and redeliveries over a few signatures of two
//! queries, run with two restarts at random points (the store closed and reopened at each).
//! The final materialized view must equal that of a run without restarts, the store's rows
//! and a plain model; durable reactions that were away for the middle run (a view kept in
//! memory, and an `NdjsonLog` reopened from its file) must catch up, or rebuild, to the same
//! rows.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use liveresults_core::formats::Event;
use liveresults_core::{MemoryStore, OutboxRetention, ResultStore};
use serde_json::Value as Json;

use super::reactors::DurableView;
use super::state::{model_values, replay_log_file, store_rows};
use super::streams::{interleave, op_strategy, stream, Op};
use crate::config::{QueryConfig, RecoveryPolicy, RuntimeConfig};
use crate::reaction::Reaction;
use crate::reactions::{MaterializedView, NdjsonLog};
use crate::runtime::Runtime;
use crate::status::QueryState;

/// Submits `events` to a fresh runtime on `store` with `reactions`, then shuts it down (which
/// commits and delivers everything queued); no query may stop and no reaction may fail.
pub async fn run_phase(
    store: Arc<dyn ResultStore>,
    config: RuntimeConfig,
    reactions: Vec<Arc<dyn Reaction>>,
    events: &[Event],
) {
    let rt = Runtime::start(store, config, reactions)
        .await
        .expect("runtime starts");
    let h = rt.handle();
    for e in events {
        h.submit(e.clone()).await.expect("submit");
    }
    rt.shutdown().await.expect("shutdown");
    for s in h.statuses() {
        assert_eq!(s.state, QueryState::Running, "query {} stopped", s.query_id);
    }
    assert!(
        h.reaction_failures().is_empty(),
        "{:?}",
        h.reaction_failures()
    );
}

/// A random two-query scenario for the restart-equivalence property.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The operations of query "a".
    pub a: Vec<Op>,
    /// The operations of query "b".
    pub b: Vec<Op>,
    /// How the two streams interleave (see [`interleave`]).
    pub picks: Vec<usize>,
    /// Restart points, as per-mille of the event count.
    pub cuts: (u16, u16),
    /// Group commit size.
    pub group: usize,
    /// Keep only 3 outbox entries (so durable reactions may have to rebuild).
    pub small_outbox: bool,
}

impl Scenario {
    /// The interleaved events and the expected rows of queries "a" and "b".
    pub fn build(&self) -> (Vec<Event>, BTreeMap<u64, Json>, BTreeMap<u64, Json>) {
        let (ea, ma) = stream("a", &self.a);
        let (eb, mb) = stream("b", &self.b);
        (interleave(vec![ea, eb], &self.picks), ma, mb)
    }

    /// The two restart points as event indexes, in order.
    pub fn cut_points(&self, n: usize) -> (usize, usize) {
        let c1 = n * usize::from(self.cuts.0.min(1000)) / 1000;
        let c2 = n * usize::from(self.cuts.1.min(1000)) / 1000;
        (c1.min(c2), c1.max(c2))
    }

    /// The runtime configuration: AutoReset (so a durable reaction behind the outbox
    /// rebuilds), this scenario's group commit size.
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig::new()
            .group_commit(self.group, Duration::ZERO)
            .snapshot_chunk_rows(3)
            .default_query(QueryConfig {
                policy: RecoveryPolicy::AutoReset,
                ..Default::default()
            })
    }

    /// The outbox retention of this scenario's stores.
    pub fn retention(&self) -> OutboxRetention {
        if self.small_outbox {
            OutboxRetention {
                max_entries: 3,
                max_bytes: 1 << 20,
            }
        } else {
            OutboxRetention::default()
        }
    }
}

/// A proptest strategy for scenarios of up to `max_ops` operations per query.
pub fn scenario_strategy(max_ops: usize) -> impl proptest::strategy::Strategy<Value = Scenario> {
    use proptest::prelude::*;
    (
        proptest::collection::vec(op_strategy(), 0..max_ops),
        proptest::collection::vec(op_strategy(), 0..max_ops),
        proptest::collection::vec(0usize..2, 0..2 * max_ops),
        (0u16..=1000, 0u16..=1000),
        1usize..6,
        any::<bool>(),
    )
        .prop_map(|(a, b, picks, cuts, group, small_outbox)| Scenario {
            a,
            b,
            picks,
            cuts,
            group,
            small_outbox,
        })
}

/// Opens and closes the backend under test for [`check_restarts`]: each phase runs a fresh
/// runtime on the store as the previous phases left it. Implementations may write the methods
/// as `async fn`.
pub trait StoreFactory {
    /// The backend.
    type Store: ResultStore + 'static;

    /// Opens the store (the same data every time), keeping at most `retention` in the outbox.
    fn open(&mut self, retention: OutboxRetention) -> impl Future<Output = Arc<Self::Store>>;

    /// Closes a store [`StoreFactory::open`] returned, once its runtime has shut down.
    fn close(&mut self, store: Arc<Self::Store>) -> impl Future<Output = ()>;
}

/// The in-memory store as a [`StoreFactory`]: closing keeps it, so reopening finds its data.
#[derive(Debug, Default)]
pub struct MemoryStores {
    store: Option<Arc<MemoryStore>>,
}

impl StoreFactory for MemoryStores {
    type Store = MemoryStore;

    async fn open(&mut self, retention: OutboxRetention) -> Arc<MemoryStore> {
        Arc::clone(
            self.store
                .get_or_insert_with(|| Arc::new(MemoryStore::with_retention(retention))),
        )
    }

    async fn close(&mut self, _store: Arc<MemoryStore>) {}
}

/// Opens the store, runs one phase on it, and closes it again.
async fn phase<F: StoreFactory>(
    stores: &mut F,
    retention: OutboxRetention,
    config: &RuntimeConfig,
    reactions: Vec<Arc<dyn Reaction>>,
    events: &[Event],
) {
    let store = stores.open(retention).await;
    let dyn_store: Arc<dyn ResultStore> = store.clone();
    run_phase(dyn_store, config.clone(), reactions, events).await;
    stores.close(store).await;
}

async fn open_log(path: &Path) -> Arc<dyn Reaction> {
    Arc::new(
        NdjsonLog::open("log", path)
            .await
            .expect("open the NDJSON log"),
    )
}

/// Runs `scenario` once without restarts (on a memory store, the baseline) and once with two
/// restarts on `stores`, then checks that every view, the store and the replayed log hold the
/// model's rows.
pub async fn check_restarts<F: StoreFactory>(scenario: Scenario, mut stores: F) {
    let (events, model_a, model_b) = scenario.build();
    let config = scenario.config();
    let retention = scenario.retention();

    let baseline = Arc::new(MaterializedView::new("view"));
    let memory = Arc::new(MemoryStore::with_retention(retention));
    run_phase(memory, config.clone(), vec![baseline.clone()], &events).await;

    let tmp = tempfile::tempdir().expect("temporary directory");
    let log_path = tmp.path().join("log.ndjson");
    let durable = Arc::new(DurableView::new("durable"));
    let (c1, c2) = scenario.cut_points(events.len());
    let view1: Arc<dyn Reaction> = Arc::new(MaterializedView::new("view"));
    let reactions: Vec<Arc<dyn Reaction>> = vec![view1, durable.clone(), open_log(&log_path).await];
    phase(&mut stores, retention, &config, reactions, &events[..c1]).await;
    // The durable reactions are away for the middle run.
    let view2: Arc<dyn Reaction> = Arc::new(MaterializedView::new("view"));
    phase(
        &mut stores,
        retention,
        &config,
        vec![view2],
        &events[c1..c2],
    )
    .await;
    let last = Arc::new(MaterializedView::new("view"));
    let reactions: Vec<Arc<dyn Reaction>> =
        vec![last.clone(), durable.clone(), open_log(&log_path).await];
    phase(&mut stores, retention, &config, reactions, &events[c2..]).await;

    let store = stores.open(retention).await;
    let replay = replay_log_file(&log_path);
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
            store.query_info(q).await.expect("query_info").row_count,
            expected.len() as u64,
            "query {q}: row count"
        );
        assert_eq!(
            durable.view.query(q).rows,
            expected,
            "query {q}: durable view"
        );
        let logged = replay.get(q).cloned().unwrap_or_default();
        assert_eq!(model_values(&logged), expected, "query {q}: replayed log");
    }
    stores.close(store).await;
}

/// Runs `future` to completion on a fresh two-worker runtime (property tests are sync).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(future)
}
