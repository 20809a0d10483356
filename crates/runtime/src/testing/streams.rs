//! Random event streams of two formats over a few signatures, with the rows a query must hold
//! after them (a plain model), and their deterministic interleaving across queries.

use std::collections::BTreeMap;

use liveresults_core::formats::Event;
use serde_json::{json, Value as Json};

use super::events::*;

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
                lib(query, s, &[add(k, v)])
            }
            Op::LibUpdate(k, v) => {
                model.insert(k, row(k, v));
                lib(query, s, &[update(k, v - 1, v)])
            }
            Op::LibDelete(k) => {
                model.remove(&k);
                lib(query, s, &[delete(k)])
            }
            Op::LibAggregation(k, v) => {
                model.insert(k, row(k, v));
                lib(query, s, &[aggregation(k, v)])
            }
            Op::LibNoop => lib(query, s, &[json!({"type": "noop"})]),
            Op::PlatAdd(g, n) => {
                let r = prow(g, n);
                model.insert(whole_sig(&r), r.clone());
                platform(query, s, &[r], &[], &[])
            }
            Op::PlatDelete(g, n) => {
                let r = prow(g, n);
                model.remove(&whole_sig(&r));
                platform(query, s, &[], &[], &[r])
            }
            Op::PlatGroupedUpdate(g, n0, n1) => {
                let (before, after) = (prow(g, n0), prow(g, n1));
                model.insert(grouped_sig(&after), after.clone());
                platform(
                    query,
                    s,
                    &[],
                    &[json!({"before": before, "after": after, "groupingKeys": ["g"]})],
                    &[],
                )
            }
            Op::PlatUpdate(g, n0, n1) => {
                let (before, after) = (prow(g, n0), prow(g, n1));
                model.remove(&whole_sig(&before));
                model.insert(whole_sig(&after), after.clone());
                platform(
                    query,
                    s,
                    &[],
                    &[json!({"before": before, "after": after})],
                    &[],
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
