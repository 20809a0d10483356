//! Reading state back: a store's rows and sequence, a model's rows as the store holds them,
//! and an `NdjsonLog` replayed into rows.

use std::collections::BTreeMap;
use std::path::Path;

use liveresults_core::codec::row::decode_row;
use liveresults_core::row::Value;
use liveresults_core::ResultStore;
use serde_json::Value as Json;

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

/// Replays an `NdjsonLog` file into rows per query (see [`apply_log_line`]); every line must
/// parse.
pub fn replay_log_file(path: &Path) -> BTreeMap<String, BTreeMap<u64, Json>> {
    let text = std::fs::read_to_string(path).expect("read the NDJSON log");
    let mut replay = BTreeMap::new();
    for line in text.lines() {
        let line: Json = serde_json::from_str(line).expect("every log line parses");
        apply_log_line(&mut replay, &line);
    }
    replay
}
