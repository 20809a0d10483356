//! Sources: the NDJSON reader (commit, bad line, resume, over-long line) and the channel source.

use std::sync::Arc;

use liveresults_core::formats::FormatError;
use liveresults_core::ndjson::NdjsonError;
use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::reactions::MaterializedView;
use liveresults_runtime::testing::*;
use liveresults_runtime::{channel_source, run_ndjson, RuntimeConfig, SourceError, SourceReport};
use serde_json::json;

use super::start;

/// NDJSON of both formats for two queries: `lib` events of query "a", platform ones of "b".
fn input(n: u64) -> String {
    let mut text = String::new();
    for s in 1..=n {
        text.push_str(&json!({"query_id": "a", "sequence": s, "timestamp": 1, "results": [add(s % 7, s as i64)]}).to_string());
        text.push('\n');
        text.push_str(&json!({"kind": "change", "queryId": "b", "sequence": s, "addedResults": [prow(s % 5, s as i64)]}).to_string());
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn run_ndjson_commits_everything_then_resumes_past_it() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(MaterializedView::new("view"));
    let rt = start(&store, RuntimeConfig::new(), vec![view.clone()]).await;
    let text = format!("{}\n\n", input(30)); // blank lines are fine
    let mut progressed = 0;
    let report = run_ndjson(text.as_bytes(), &rt.handle(), 1 << 20, |_| progressed += 1)
        .await
        .unwrap();
    assert_eq!(
        report,
        SourceReport {
            lines: 62,
            submitted: 60,
            resumed_past: 0
        }
    );
    assert_eq!(progressed, 60);
    assert_eq!(stored_sequence(&*store, "a").await, Some(30));
    assert_eq!(stored_sequence(&*store, "b").await, Some(30));
    // A second run over a longer input skips what is committed.
    let more = input(40);
    let report = run_ndjson(more.as_bytes(), &rt.handle(), 1 << 20, |_| {})
        .await
        .unwrap();
    assert_eq!(report.resumed_past, 60);
    assert_eq!(report.submitted, 20);
    rt.shutdown().await.unwrap();
    assert_eq!(stored_sequence(&*store, "a").await, Some(40));
    assert_eq!(view.query("a").rows, store_rows(&*store, "a").await);
    assert_eq!(view.query("b").rows, store_rows(&*store, "b").await);
    assert_eq!(store.query_info("a").await.unwrap().row_count, 7);
}

#[tokio::test]
async fn a_bad_line_is_reported_with_its_number_and_earlier_lines_stay_committed() {
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    let mut text = input(10); // lines 1..=20
    text.push_str(r#"{"query_id": "a", "sequence": 11, "results": [{"type": "MOVE"}]}"#);
    text.push('\n');
    text.push_str(&input(12)); // never reached
    let err = run_ndjson(text.as_bytes(), &rt.handle(), 1 << 20, |_| {})
        .await
        .unwrap_err();
    match &err {
        SourceError::Line(e) => {
            assert_eq!(e.line, 21);
            assert!(
                matches!(e.source, FormatError::UnknownVariant { .. }),
                "{e}"
            );
            assert_eq!(e.source.field(), Some("results[0].type"));
        }
        other => panic!("expected a line error, got {other}"),
    }
    // Checked at once, without waiting: the run waited for what it had submitted.
    assert_eq!(stored_sequence(&*store, "a").await, Some(10));
    assert_eq!(stored_sequence(&*store, "b").await, Some(10));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_over_long_line_is_rejected() {
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    let long = json!({"query_id": "a", "sequence": 2, "results": [{"type": "ADD", "data": {"pad": "x".repeat(500)}, "row_signature": 1}]}).to_string();
    let text = format!("{}\n{long}\n", lib_line(1));
    let err = run_ndjson(text.as_bytes(), &rt.handle(), 256, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Ndjson(NdjsonError::LineTooLong {
                line: 2,
                limit: 256
            })
        ),
        "{err}"
    );
    assert_eq!(stored_sequence(&*store, "a").await, Some(1));
    // The same line fits under a larger limit, with or without a final newline.
    let report = run_ndjson(long.as_bytes(), &rt.handle(), 1024, |_| {})
        .await
        .unwrap();
    assert_eq!(report.submitted, 1);
    assert_eq!(stored_sequence(&*store, "a").await, Some(2));
    rt.shutdown().await.unwrap();
}

fn lib_line(s: u64) -> String {
    json!({"query_id": "a", "sequence": s, "results": [add(s, 0)]}).to_string()
}

#[tokio::test]
async fn channel_source_submits_in_order_and_reports_refusals() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(MaterializedView::new("view"));
    let rt = start(&store, RuntimeConfig::new(), vec![view.clone()]).await;
    let (tx, task) = channel_source(rt.handle(), 4);
    for s in 1..=50 {
        tx.send(lib_add("q", s, s % 9, s as i64)).await.unwrap();
    }
    drop(tx);
    task.await.unwrap().unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(stored_sequence(&*store, "q").await, Some(50));
    assert_eq!(view.query("q").rows, store_rows(&*store, "q").await);
    assert_eq!(view.query("q").rows.len(), 9);
}

#[tokio::test]
async fn a_refused_event_is_reported_with_its_own_line() {
    // Regression: only each query's last event was checked, so a Strict gap on line 11 was
    // reported (after reading the whole input) as a refusal of the last line.
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    let mut text = String::new();
    for s in (1..=10).chain(15..=400) {
        text.push_str(&lib_line(s));
        text.push('\n');
    }
    let err = run_ndjson(text.as_bytes(), &rt.handle(), 1 << 20, |_| {})
        .await
        .unwrap_err();
    match &err {
        SourceError::Submit { line, source } => {
            assert_eq!(*line, 11, "{err}");
            assert!(
                matches!(
                    source,
                    liveresults_runtime::SubmitError::QueryStopped {
                        reason: liveresults_runtime::StopReason::Gap {
                            committed: Some(10),
                            received: 15
                        },
                        ..
                    }
                ),
                "{source}"
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert_eq!(stored_sequence(&*store, "a").await, Some(10));
    rt.shutdown().await.unwrap();
}
