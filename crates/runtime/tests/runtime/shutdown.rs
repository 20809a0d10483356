//! Graceful shutdown: what was queued is committed and delivered; nothing is accepted after.

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::MemoryStore;
use liveresults_runtime::reactions::MaterializedView;
use liveresults_runtime::testing::*;
use liveresults_runtime::{RuntimeConfig, SubmitError};

use super::start;

#[tokio::test]
async fn events_queued_before_shutdown_are_committed_and_delivered() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(MaterializedView::new("view"));
    let slow = Arc::new(Recorder::new("slow").slow(Duration::from_micros(300)));
    let config = RuntimeConfig::new().queue_capacity(10_000);
    let rt = start(&store, config, vec![view.clone(), slow.clone()]).await;
    let h = rt.handle();
    for q in ["a", "b", "c"] {
        for s in 1..=200u64 {
            h.submit(lib_add(q, s, s % 50, s as i64)).await.unwrap();
        }
    }
    rt.shutdown().await.unwrap();
    for q in ["a", "b", "c"] {
        assert_eq!(stored_sequence(&*store, q).await, Some(200), "query {q}");
        assert_eq!(view.query(q).rows, store_rows(&*store, q).await);
        assert_eq!(view.query(q).sequence, Some(200));
    }
    assert_eq!(slow.events.load(std::sync::atomic::Ordering::SeqCst), 600);
    let after = h.submit(lib_add("a", 201, 1, 1)).await.unwrap_err();
    assert!(matches!(after, SubmitError::ShuttingDown), "{after}");
    let new_query = h.submit(lib_add("new", 1, 1, 1)).await.unwrap_err();
    assert!(
        matches!(new_query, SubmitError::ShuttingDown),
        "{new_query}"
    );
    assert_eq!(stored_sequence(&*store, "a").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_racing_with_new_queries_neither_hangs_nor_loses_accepted_events() {
    // Regression: a query first submitted while shutdown ran got a pipeline nobody closed,
    // whose reaction senders kept `shutdown` waiting forever.
    for round in 0..20u64 {
        let store = Arc::new(MemoryStore::new());
        let view = Arc::new(MaterializedView::new("view"));
        let rt = start(&store, RuntimeConfig::new(), vec![view.clone()]).await;
        let h = rt.handle();
        let submitter = tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..200u64 {
                let q = format!("q{i}");
                if h.submit(lib_add(&q, 1, 1, 1)).await.is_ok() {
                    accepted.push(q);
                }
                tokio::task::yield_now().await;
            }
            accepted
        });
        tokio::time::sleep(Duration::from_micros(50 * round)).await;
        tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
            .await
            .expect("shutdown hung")
            .unwrap();
        for q in submitter.await.unwrap() {
            assert_eq!(
                stored_sequence(&*store, &q).await,
                Some(1),
                "accepted {q} lost"
            );
        }
    }
}
