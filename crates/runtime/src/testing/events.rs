//! Event builders for both Drasi formats: drasi-lib `QueryResult`s over rows `{"k", "v"}`
//! (upstream signature `k`) and platform change/control events over rows `{"g", "n"}`.

use liveresults_core::formats::{parse_event, Event};
use liveresults_core::row::Value;
use liveresults_core::signature::{columns_signature, row_signature, KeyColumns};
use serde_json::{json, Value as Json};

/// Parses an event built as JSON; the builders below produce only valid events.
pub fn event(json: &Json) -> Event {
    match parse_event(&json.to_string()) {
        Ok(event) => event,
        Err(e) => panic!("test built an invalid event {json}: {e}"),
    }
}

/// A drasi-lib `QueryResult` with the given diffs.
pub fn lib(query: &str, sequence: u64, diffs: &[Json]) -> Event {
    event(
        &json!({"query_id": query, "sequence": sequence, "timestamp": 1_740_830_400_000u64,
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
    lib(query, sequence, &[add(k, v)])
}

/// A Drasi platform change event.
pub fn platform(
    query: &str,
    sequence: u64,
    added: &[Json],
    updated: &[Json],
    deleted: &[Json],
) -> Event {
    event(
        &json!({"kind": "change", "queryId": query, "sequence": sequence,
                 "sourceTimeMs": 1_740_830_400_000u64, "addedResults": added,
                 "updatedResults": updated, "deletedResults": deleted}),
    )
}

/// A Drasi platform control event (`bootstrapStarted`, `running`, `deleted`, ...).
pub fn control(query: &str, sequence: u64, kind: &str) -> Event {
    event(
        &json!({"kind": "control", "queryId": query, "sequence": sequence,
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
