//! `RuntimeHandle::remove_query`: the query goes from the store, the status registry and the
//! reactions' progress; reactions are reset; other queries are untouched; events queued
//! behind the removal are refused, not left waiting; the next submit re-creates the query
//! above every epoch of the removed one.

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::{Checkpoint, MemoryStore, QueryInfo, ResultStore};
use liveresults_runtime::reactions::MaterializedView;
use liveresults_runtime::testing::*;
use liveresults_runtime::{Applied, QueryConfig, RecoveryPolicy, RuntimeConfig, RuntimeHandle};
use liveresults_runtime::{StopReason, SubmitError};
use tokio::sync::Semaphore;

use super::start;

/// Waits at most 10 s: a removal or an answer that never comes fails the test, not CI.
async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

/// Waits until `n` submissions wait in the query's pipeline queue: what was sent is in line,
/// in the order it was sent, behind the pipeline's current work.
async fn queued(h: &RuntimeHandle, query: &str, n: usize) {
    within("the submissions to queue", async {
        while h.queued(query) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(h.queued(query), n, "more queued than sent");
}

#[tokio::test]
async fn remove_forgets_the_query_everywhere_and_leaves_others_alone() {
    let store = Arc::new(MemoryStore::new());
    let rec = Arc::new(Recorder::new("rec").durable(7));
    let view = Arc::new(MaterializedView::new("view"));
    let rt = start(
        &store,
        RuntimeConfig::new(),
        vec![rec.clone(), view.clone()],
    )
    .await;
    let h = rt.handle();
    for s in 1..=3 {
        h.submit_and_wait(lib_add("q", s, s, 1)).await.unwrap();
    }
    h.submit_and_wait(lib_add("other", 1, 1, 1)).await.unwrap();
    h.reactions_caught_up("q").await.unwrap();
    h.reactions_caught_up("other").await.unwrap();
    let saved = store.checkpoint("rec", "q").await.unwrap();
    assert_eq!(
        saved,
        Some(Checkpoint {
            sequence: Some(3),
            config_hash: 7
        })
    );

    let removed = within("the removal", h.remove_query("q")).await.unwrap();
    assert_eq!(
        (removed.sequence, removed.row_count, removed.epoch),
        (Some(3), 3, 0)
    );
    // The store: gone, and its checkpoint with it.
    assert_eq!(store.query_info("q").await.unwrap(), QueryInfo::empty("q"));
    let listed: Vec<_> = store.list_queries().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].query_id, "other");
    assert_eq!(store.checkpoint("rec", "q").await.unwrap(), None);
    // The runtime: no status, so no metrics labels and no lag for it.
    assert!(h.status("q").is_none());
    let statuses: Vec<_> = h.statuses().into_iter().map(|s| s.query_id).collect();
    assert_eq!(statuses, ["other"]);
    // The reactions were reset (to the epoch a re-created query starts at) and then forgot it.
    h.reactions_caught_up("other").await.unwrap();
    let seen_q: Vec<_> = rec
        .seen()
        .into_iter()
        .filter(|s| match s {
            Seen::Reset(q, _) | Seen::SnapshotRows(q, _) | Seen::SnapshotDone(q, _) => q == "q",
            Seen::Change(q, ..) => q == "q",
        })
        .collect();
    assert_eq!(seen_q.last(), Some(&Seen::Reset("q".into(), 1)));
    assert!(view.query("q").rows.is_empty());
    assert_eq!(view.query("other").rows.len(), 1);
    assert!(h.reaction_failures().is_empty());
    assert_eq!(h.status("other").unwrap().sequence, Some(1));

    // Written again: a new query, above the removed one's epoch, from any sequence.
    assert_eq!(
        h.submit_and_wait(lib_add("q", 1, 9, 2)).await.unwrap(),
        Applied::Committed { sequence: 1 }
    );
    let status = h.status("q").unwrap();
    assert_eq!(
        (status.epoch, status.sequence, status.row_count),
        (1, Some(1), 1)
    );
    h.reactions_caught_up("q").await.unwrap();
    assert_eq!(view.query("q").rows.len(), 1);
    assert_eq!(view.query("q").epoch, 1);
    rt.shutdown().await.unwrap();

    // A restart knows only what is stored: the new `q` and `other`.
    let rt = start(&store, RuntimeConfig::new(), Vec::new()).await;
    let statuses: Vec<_> = (rt.handle().statuses().into_iter())
        .map(|s| (s.query_id, s.epoch, s.sequence))
        .collect();
    assert_eq!(
        statuses,
        [("other".into(), 0, Some(1)), ("q".into(), 1, Some(1))]
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_queued_behind_a_removal_are_refused_not_left_waiting() {
    let store = Arc::new(MemoryStore::new());
    // The reaction holds every delivery until the gate opens, and its queue holds one: the
    // third commit's delivery blocks the pipeline, so what follows waits in its queue, in
    // submission order.
    let gate = Arc::new(Semaphore::new(0));
    let rec = Arc::new(Recorder::new("rec").gated(gate.clone()));
    let config = RuntimeConfig::new().reaction_queue_capacity(1);
    let rt = start(&store, config, vec![rec.clone()]).await;
    let h = rt.handle();
    for s in 1..=3 {
        h.submit_and_wait(lib_add("q", s, s, 1)).await.unwrap();
    }
    let before = h.submit_tracked(lib_add("q", 4, 4, 1)).await.unwrap();
    let removal = {
        let h = h.clone();
        tokio::spawn(async move { h.remove_query("q").await })
    };
    // The event before and the removal wait in the queue; what follows queues behind them.
    queued(&h, "q", 2).await;
    assert!(!removal.is_finished(), "the pipeline was not held");
    let behind = h.submit_tracked(lib_add("q", 5, 5, 1)).await.unwrap();
    let batch_behind = {
        let h = h.clone();
        tokio::spawn(async move { h.commit_batch("q", vec![lib_add("q", 6, 6, 1)]).await })
    };
    queued(&h, "q", 4).await;

    gate.add_permits(1_000);
    let removed = within("the removal", removal).await.unwrap().unwrap();
    assert_eq!(
        removed.sequence,
        Some(4),
        "the event queued before it was committed"
    );
    assert_eq!(
        within("the event before", before.wait()).await.unwrap(),
        Applied::Committed { sequence: 4 }
    );
    for (what, result) in [
        (
            "the event behind",
            within("the event behind", behind.wait()).await,
        ),
        (
            "the batch behind",
            within("the batch behind", batch_behind).await.unwrap(),
        ),
    ] {
        match result {
            Err(SubmitError::QueryStopped {
                reason: StopReason::Removed,
                ..
            }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(store.query_info("q").await.unwrap(), QueryInfo::empty("q"));
    assert!(h.status("q").is_none());
    // Submitting again starts a new pipeline: the query is back, in a new epoch.
    assert_eq!(
        h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap(),
        Applied::Committed { sequence: 1 }
    );
    assert_eq!(store.query_info("q").await.unwrap().epoch, 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stopped_query_can_be_removed_and_an_unknown_one_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::new().default_query(QueryConfig {
        policy: RecoveryPolicy::Strict,
        ..QueryConfig::default()
    });
    let rt = start(&store, config, Vec::new()).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    assert!(h.submit_and_wait(lib_add("q", 5, 5, 1)).await.is_err());
    assert!(matches!(
        h.status("q").unwrap().state,
        liveresults_runtime::QueryState::Stopped(StopReason::Gap { .. })
    ));
    let removed = h.remove_query("q").await.unwrap();
    assert_eq!(removed.sequence, Some(1));
    assert!(h.status("q").is_none());
    // The new query accepts events from the start again.
    assert_eq!(
        h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap(),
        Applied::Committed { sequence: 1 }
    );

    let nothing = h.remove_query("never").await.unwrap();
    assert_eq!(nothing, QueryInfo::empty("never"));
    assert!(h.status("never").is_none());
    let listed: Vec<_> = store.list_queries().await.unwrap();
    assert_eq!(listed.len(), 1);
    rt.shutdown().await.unwrap();
}
