//! Helpers shared by the runtime tests (and, through `#[path]`, by the root package's RocksDB
//! restart and crash tests): event builders for both Drasi formats, store readers, a random
//! event stream with its plain model, and restart-equivalence scenarios. Test reactions live
//! in `reactors.rs` (they need `async-trait`, which the root package does not depend on).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use liveresults_core::codec::row::decode_row;
use liveresults_core::formats::{parse_event, Event};
use liveresults_core::row::Value;
use liveresults_core::signature::{columns_signature, row_signature, KeyColumns};
use liveresults_core::ResultStore;
use liveresults_runtime::Reaction;
use serde_json::{json, Value as Json};

// ---------------------------------------------------------------------------------------------
// Event builders.

/// Parses an event built as JSON; the builders below produce only valid events.
pub fn event(json: Json) -> Event {
    match parse_event(&json.to_string()) {
        Ok(event) => event,
        Err(e) => panic!("test built an invalid event {json}: {e}"),
    }
}

/// A drasi-lib `QueryResult` with the given diffs.
pub fn lib(query: &str, sequence: u64, diffs: Vec<Json>) -> Event {
    event(
        json!({"query_id": query, "sequence": sequence, "timestamp": 1_740_830_400_000u64,
                 "results": diffs}),
    )
}

/// A drasi-lib row `{"k": k, "v": v}`.
pub fn row(k: u64, v: i64) -> Json {
    json!({"k": k, "v": v})
}

/// drasi-lib `ADD` of row `{k, v}` with signature `k`.
pub fn add(k: u64, v: i64) -> Json {
    json!({"type": "ADD", "data": row(k, v), "row_signature": k})
}

/// drasi-lib `DELETE` of signature `k`.
pub fn delete(k: u64) -> Json {
    json!({"type": "DELETE", "data": row(k, 0), "row_signature": k})
}

/// drasi-lib `UPDATE` of signature `k` from `v0` to `v1`.
pub fn update(k: u64, v0: i64, v1: i64) -> Json {
    json!({"type": "UPDATE", "data": row(k, v1), "before": row(k, v0), "after": row(k, v1),
           "row_signature": k})
}

/// drasi-lib `aggregation` of signature `k` to `v`.
pub fn aggregation(k: u64, v: i64) -> Json {
    json!({"type": "aggregation", "before": null, "after": row(k, v), "row_signature": k})
}

/// A one-diff drasi-lib event adding `{k, v}`.
pub fn lib_add(query: &str, sequence: u64, k: u64, v: i64) -> Event {
    lib(query, sequence, vec![add(k, v)])
}

/// A Drasi platform change event.
pub fn platform(
    query: &str,
    sequence: u64,
    added: Vec<Json>,
    updated: Vec<Json>,
    deleted: Vec<Json>,
) -> Event {
    event(
        json!({"kind": "change", "queryId": query, "sequence": sequence,
                 "sourceTimeMs": 1_740_830_400_000u64, "addedResults": added,
                 "updatedResults": updated, "deletedResults": deleted}),
    )
}

/// A Drasi platform control event (`bootstrapStarted`, `running`, `deleted`, ...).
pub fn control(query: &str, sequence: u64, kind: &str) -> Event {
    event(
        json!({"kind": "control", "queryId": query, "sequence": sequence,
                 "sourceTimeMs": 1_740_830_400_000u64, "controlSignal": {"kind": kind}}),
    )
}

/// The platform row `{"g": g, "n": n}` (no signature: the runtime hashes it).
pub fn prow(g: u64, n: i64) -> Json {
    json!({"g": g, "n": n})
}

/// The signature of a platform row under whole-row keys.
pub fn whole_sig(row: &Json) -> u64 {
    row_signature(&Value::from(row), &KeyColumns::WholeRow)
}

/// The signature of a platform row grouped by `g`.
pub fn grouped_sig(row: &Json) -> u64 {
    columns_signature(&Value::from(row), &["g".to_owned()])
}

/// An event as one NDJSON line (without the newline).
pub fn ndjson_line(json: &Json) -> String {
    json.to_string()
}

// ---------------------------------------------------------------------------------------------
// Reading state.

/// Every row of a query in the store, decoded.
pub async fn store_rows(store: &dyn ResultStore, query: &str) -> BTreeMap<u64, Value> {
    let rows = store
        .snapshot(query, 7)
        .await
        .expect("snapshot")
        .collect_rows()
        .await
        .expect("snapshot rows");
    rows.into_iter()
        .map(|(sig, bytes)| (sig, decode_row(&bytes).expect("stored row decodes")))
        .collect()
}

/// The store's committed sequence of a query.
pub async fn stored_sequence(store: &dyn ResultStore, query: &str) -> Option<u64> {
    store.query_info(query).await.expect("query_info").sequence
}

/// A model's rows as the store holds them.
pub fn model_values(model: &BTreeMap<u64, Json>) -> BTreeMap<u64, Value> {
    model.iter().map(|(k, v)| (*k, Value::from(v))).collect()
}

/// Waits (up to 10 s) until `check` holds; reactions run asynchronously.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Applies a logged change's row operations (the `NdjsonLog` line format) to `rows`.
pub fn apply_log_line(rows: &mut BTreeMap<String, BTreeMap<u64, Json>>, line: &Json) {
    let query = line["query_id"].as_str().expect("query_id").to_owned();
    let q = rows.entry(query).or_default();
    match line["type"].as_str() {
        Some("reset") => q.clear(),
        Some("snapshot") => {
            for r in line["rows"].as_array().expect("rows") {
                q.insert(r["signature"].as_u64().expect("sig"), r["row"].clone());
            }
        }
        Some("change") => {
            for e in line["events"].as_array().expect("events") {
                let Some(upserts) = e["upserts"].as_array() else {
                    continue; // a control event
                };
                // Within one event the runtime applies operations in order; the log splits
                // them into upserts and deletes, which is equivalent because one event
                // never both deletes and upserts the same signature in these streams.
                for d in e["deletes"].as_array().expect("deletes") {
                    q.remove(&d.as_u64().expect("sig"));
                }
                for u in upserts {
                    q.insert(u["signature"].as_u64().expect("sig"), u["row"].clone());
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Random streams with a plain model.

/// One step of a random stream.
#[derive(Debug, Clone)]
pub enum Op {
    /// drasi-lib ADD of `{k, v}` (signature `k`).
    LibAdd(u64, i64),
    /// drasi-lib UPDATE of signature `k` to `v`.
    LibUpdate(u64, i64),
    /// drasi-lib DELETE of signature `k`.
    LibDelete(u64),
    /// drasi-lib aggregation of signature `k` to `v`.
    LibAggregation(u64, i64),
    /// drasi-lib event with only a `noop` diff.
    LibNoop,
    /// Platform add of `{g, n}` (whole-row signature).
    PlatAdd(u64, i64),
    /// Platform delete of `{g, n}` (whole-row signature).
    PlatDelete(u64, i64),
    /// Platform update of group `g` from `n0` to `n1`, grouped by `g`.
    PlatGroupedUpdate(u64, i64, i64),
    /// Platform update of `{g, n0}` to `{g, n1}` without grouping keys (delete + upsert).
    PlatUpdate(u64, i64, i64),
    /// A `running` control signal.
    Running,
    /// Redelivery of the event `back` events before (clamped): must change nothing.
    Duplicate(usize),
}

/// The events of `ops` for `query`, numbered from 1 (duplicates reuse an earlier number),
/// and the rows the query must hold after all of them.
pub fn stream(query: &str, ops: &[Op]) -> (Vec<Event>, BTreeMap<u64, Json>) {
    let mut events: Vec<Event> = Vec::new();
    let mut model: BTreeMap<u64, Json> = BTreeMap::new();
    let mut sequence = 0u64;
    for op in ops {
        if let Op::Duplicate(back) = op {
            if !events.is_empty() {
                let i = events.len() - 1 - back % events.len();
                let again = events[i].clone();
                events.push(again);
            }
            continue;
        }
        sequence += 1;
        let s = sequence;
        let e = match *op {
            Op::LibAdd(k, v) => {
                model.insert(k, row(k, v));
                lib(query, s, vec![add(k, v)])
            }
            Op::LibUpdate(k, v) => {
                model.insert(k, row(k, v));
                lib(query, s, vec![update(k, v - 1, v)])
            }
            Op::LibDelete(k) => {
                model.remove(&k);
                lib(query, s, vec![delete(k)])
            }
            Op::LibAggregation(k, v) => {
                model.insert(k, row(k, v));
                lib(query, s, vec![aggregation(k, v)])
            }
            Op::LibNoop => lib(query, s, vec![json!({"type": "noop"})]),
            Op::PlatAdd(g, n) => {
                let r = prow(g, n);
                model.insert(whole_sig(&r), r.clone());
                platform(query, s, vec![r], vec![], vec![])
            }
            Op::PlatDelete(g, n) => {
                let r = prow(g, n);
                model.remove(&whole_sig(&r));
                platform(query, s, vec![], vec![], vec![r])
            }
            Op::PlatGroupedUpdate(g, n0, n1) => {
                let (before, after) = (prow(g, n0), prow(g, n1));
                model.insert(grouped_sig(&after), after.clone());
                platform(
                    query,
                    s,
                    vec![],
                    vec![json!({"before": before, "after": after, "groupingKeys": ["g"]})],
                    vec![],
                )
            }
            Op::PlatUpdate(g, n0, n1) => {
                let (before, after) = (prow(g, n0), prow(g, n1));
                model.remove(&whole_sig(&before));
                model.insert(whole_sig(&after), after.clone());
                platform(
                    query,
                    s,
                    vec![],
                    vec![json!({"before": before, "after": after})],
                    vec![],
                )
            }
            Op::Running => control(query, s, "running"),
            Op::Duplicate(_) => unreachable!("handled above"),
        };
        events.push(e);
    }
    (events, model)
}

/// Interleaves the streams of several queries deterministically by `picks` (each pick names
/// the query whose next event goes next), appending what remains in query order.
pub fn interleave(mut streams: Vec<Vec<Event>>, picks: &[usize]) -> Vec<Event> {
    for s in &mut streams {
        s.reverse();
    }
    let mut out = Vec::new();
    for &p in picks {
        let n = streams.len();
        if let Some(e) = streams[p % n].pop() {
            out.push(e);
        }
    }
    for mut s in streams {
        while let Some(e) = s.pop() {
            out.push(e);
        }
    }
    out
}

/// A proptest strategy for one op over a few signatures.
pub fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let k = 0u64..6;
    let v = -3i64..4;
    prop_oneof![
        3 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::LibAdd(k, v)),
        2 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::LibUpdate(k, v)),
        2 => k.clone().prop_map(Op::LibDelete),
        1 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::LibAggregation(k, v)),
        1 => Just(Op::LibNoop),
        2 => (k.clone(), v.clone()).prop_map(|(g, n)| Op::PlatAdd(g, n)),
        1 => (k.clone(), v.clone()).prop_map(|(g, n)| Op::PlatDelete(g, n)),
        1 => (k.clone(), v.clone(), v.clone()).prop_map(|(g, a, b)| Op::PlatGroupedUpdate(g, a, b)),
        1 => (k, v.clone(), v).prop_map(|(g, a, b)| Op::PlatUpdate(g, a, b)),
        1 => Just(Op::Running),
        2 => (0usize..8).prop_map(Op::Duplicate),
    ]
}

// ---------------------------------------------------------------------------------------------
// Restart equivalence runs.

/// Submits `events` to a fresh runtime on `store` with `reactions`, then shuts it down (which
/// commits and delivers everything queued).
pub async fn run_phase(
    store: Arc<dyn ResultStore>,
    config: liveresults_runtime::RuntimeConfig,
    reactions: Vec<Arc<dyn Reaction>>,
    events: &[Event],
) {
    let rt = liveresults_runtime::Runtime::start(store, config, reactions)
        .await
        .expect("runtime starts");
    let h = rt.handle();
    for e in events {
        h.submit(e.clone()).await.expect("submit");
    }
    rt.shutdown().await.expect("shutdown");
    for s in h.statuses() {
        assert_eq!(
            s.state,
            liveresults_runtime::QueryState::Running,
            "query {} stopped",
            s.query_id
        );
    }
    assert!(
        h.reaction_failures().is_empty(),
        "{:?}",
        h.reaction_failures()
    );
}

/// A random two-query scenario for the restart-equivalence properties.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub a: Vec<Op>,
    pub b: Vec<Op>,
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
    pub fn config(&self) -> liveresults_runtime::RuntimeConfig {
        liveresults_runtime::RuntimeConfig::new()
            .group_commit(self.group, Duration::ZERO)
            .snapshot_chunk_rows(3)
            .default_query(liveresults_runtime::QueryConfig {
                policy: liveresults_runtime::RecoveryPolicy::AutoReset,
                ..Default::default()
            })
    }
}

/// A proptest strategy for scenarios.
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

/// Runs `future` to completion on a fresh two-worker runtime (property tests are sync).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(future)
}
