//! A snapshot response carries the changes committed between the snapshot and the response,
//! so a catch-up client (which reads one response) ends at the tail: made deterministic by
//! committing between the two steps of the handler.

use std::sync::Arc;

use liveresults_core::formats::parse_ndjson_line;
use liveresults_core::MemoryStore;
use liveresults_runtime::{Runtime, RuntimeConfig};
use serde_json::Value;

use super::log::{self, Found, From, QueryOffset};
use super::snapshot_response;
use crate::state::AppState;

fn add(sequence: u64) -> liveresults_core::formats::Event {
    let line = format!(
        r#"{{"query_id":"q","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{sequence}}},"row_signature":{sequence}}}]}}"#
    );
    parse_ndjson_line(1, &line).expect("a valid line")
}

/// `control` or `operation:txid` of each message.
fn kinds(messages: &[Value]) -> Vec<String> {
    let kind = |m: &Value| {
        let h = &m["headers"];
        match (h["control"].as_str(), h["operation"].as_str()) {
            (Some(control), _) => control.to_owned(),
            (None, Some(op)) => format!("{op}:{}", h["txid"].as_str().unwrap_or("-")),
            _ => "?".to_owned(),
        }
    };
    messages.iter().map(kind).collect()
}

#[tokio::test]
async fn a_snapshot_response_ends_with_the_changes_committed_after_it() {
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::start(store, RuntimeConfig::new(), Vec::new())
        .await
        .expect("runtime");
    let handle = runtime.handle();
    let state = AppState::new(handle.clone());
    for sequence in 1..=3 {
        handle.submit_and_wait(add(sequence)).await.expect("commit");
    }
    let found = log::read(&state, "q", From::Beginning, 1 << 20).await;
    let Ok(Found::Snapshot { snapshot, reset }) = found else {
        panic!("a read from -1 starts with a snapshot");
    };
    // Committed after the snapshot was taken, before the response is built.
    for sequence in 4..=6 {
        handle.submit_and_wait(add(sequence)).await.expect("commit");
    }
    let at = QueryOffset::tail(snapshot.info());
    let after = log::changes_after(&state, "q", at, 1 << 20)
        .await
        .expect("changes");
    let response = snapshot_response("q".to_owned(), snapshot, reset, after);
    let headers = response.headers().clone();
    let tail = QueryOffset::tail(&handle.store().query_info("q").await.expect("info"));
    assert_eq!(headers["stream-next-offset"], tail.to_string().as_str());
    assert_eq!(headers["stream-up-to-date"], "true");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let messages: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(
        kinds(&messages),
        [
            "snapshot-start",
            "insert:-",
            "insert:-",
            "insert:-",
            "snapshot-end",
            "upsert:4",
            "upsert:5",
            "upsert:6"
        ]
    );

    // A budget smaller than those changes: the response stops after the first commit, not
    // up to date, and names where the next read starts.
    let found = log::read(&state, "q", From::Beginning, 1 << 20).await;
    let Ok(Found::Snapshot { snapshot, .. }) = found else {
        panic!("a read from -1 starts with a snapshot");
    };
    handle.submit_and_wait(add(7)).await.expect("commit");
    handle.submit_and_wait(add(8)).await.expect("commit");
    let at = QueryOffset::tail(snapshot.info());
    let after = (log::changes_after(&state, "q", at, 1).await).expect("changes");
    let response = snapshot_response("q".to_owned(), snapshot, false, after);
    assert!(response.headers().get("stream-up-to-date").is_none());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let messages: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(
        kinds(&messages).last().map(String::as_str),
        Some("upsert:7")
    );
    runtime.shutdown().await.expect("shutdown");
}
