//! Gaps under each recovery policy, and the lifecycle control signals.

use std::sync::Arc;

use liveresults_core::formats::ControlSignal;
use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::reactions::MaterializedView;
use liveresults_runtime::testing::*;
use liveresults_runtime::{
    Applied, QueryConfig, QueryState, RecoveryPolicy, RuntimeConfig, StopReason, SubmitError,
};

use super::start;

fn policy(policy: RecoveryPolicy) -> QueryConfig {
    QueryConfig {
        policy,
        ..QueryConfig::default()
    }
}

#[tokio::test]
async fn strict_gap_stops_only_that_query_with_a_clear_status() {
    let store = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::new().default_query(policy(RecoveryPolicy::Strict));
    let rt = start(&store, config, vec![]).await;
    let h = rt.handle();
    for s in 1..=3 {
        h.submit_and_wait(lib_add("a", s, s, 1)).await.unwrap();
        h.submit_and_wait(lib_add("b", s, s, 1)).await.unwrap();
    }
    let err = h.submit_and_wait(lib_add("a", 5, 5, 5)).await.unwrap_err();
    let gap = StopReason::Gap {
        committed: Some(3),
        received: 5,
    };
    match &err {
        SubmitError::QueryStopped {
            query_id,
            reason,
            committed,
        } => {
            assert_eq!(query_id, "a");
            assert_eq!(reason, &gap);
            assert_eq!(*committed, Some(3));
        }
        other => panic!("expected QueryStopped, got {other}"),
    }
    let status = h.status("a").unwrap();
    assert_eq!(status.state, QueryState::Stopped(gap.clone()));
    assert_eq!(status.sequence, Some(3));
    assert_eq!(status.gaps, 1);
    // The stopped query refuses even the right next sequence...
    let refused = h.submit_and_wait(lib_add("a", 4, 4, 4)).await.unwrap_err();
    assert!(
        matches!(refused, SubmitError::QueryStopped { .. }),
        "{refused}"
    );
    assert_eq!(stored_sequence(&*store, "a").await, Some(3));
    // ...while the other query keeps committing.
    for s in 4..=20 {
        assert_eq!(
            h.submit_and_wait(lib_add("b", s, s, 1)).await.unwrap(),
            Applied::Committed { sequence: s }
        );
    }
    assert_eq!(h.status("b").unwrap().state, QueryState::Running);
    assert_eq!(stored_sequence(&*store, "b").await, Some(20));
    // An operator's clear lets the stopped query start over.
    let info = h.clear_query("a").await.unwrap();
    assert_eq!((info.sequence, info.epoch), (None, 1));
    assert_eq!(h.status("a").unwrap().state, QueryState::Running);
    h.submit_and_wait(lib_add("a", 9, 9, 9)).await.unwrap();
    assert_eq!(stored_sequence(&*store, "a").await, Some(9));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn auto_skip_gap_commits_and_counts_the_gap() {
    let store = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::new().default_query(policy(RecoveryPolicy::AutoSkipGap));
    let rt = start(&store, config, vec![]).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    assert_eq!(
        h.submit_and_wait(lib_add("q", 4, 4, 4)).await.unwrap(),
        Applied::Committed { sequence: 4 }
    );
    assert_eq!(
        h.submit_and_wait(lib_add("q", 10, 10, 10)).await.unwrap(),
        Applied::Committed { sequence: 10 }
    );
    let status = h.status("q").unwrap();
    assert_eq!(status.gaps, 2);
    assert_eq!(status.state, QueryState::Running);
    assert_eq!(status.epoch, 0, "nothing was cleared");
    assert_eq!(store_rows(&*store, "q").await.len(), 3);
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn auto_reset_clears_resets_reactions_requests_bootstrap_and_rebuilds() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(MaterializedView::new("view"));
    let rec = Arc::new(Recorder::new("rec"));
    let config = RuntimeConfig::new().default_query(policy(RecoveryPolicy::AutoReset));
    let rt = start(&store, config, vec![view.clone(), rec.clone()]).await;
    let h = rt.handle();
    let mut requests = h.bootstrap_requests();
    for s in 1..=3 {
        h.submit_and_wait(lib_add("q", s, s, 1)).await.unwrap();
    }
    h.submit_and_wait(lib_add("other", 1, 1, 1)).await.unwrap();
    // A gap: 4 and 5 went missing.
    assert_eq!(
        h.submit_and_wait(lib_add("q", 6, 60, 6)).await.unwrap(),
        Applied::Committed { sequence: 6 }
    );
    assert_eq!(requests.recv().await.unwrap(), "q");
    let info = store.query_info("q").await.unwrap();
    assert_eq!(info.epoch, 1);
    assert_eq!(info.sequence, Some(6));
    let status = h.status("q").unwrap();
    assert!(status.awaiting_bootstrap);
    assert_eq!(status.gaps, 1);
    // The next events rebuild the state from nothing.
    h.submit_and_wait(lib_add("q", 7, 70, 7)).await.unwrap();
    let rows = store_rows(&*store, "q").await;
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), vec![60, 70]);
    // A bootstrap start ends the wait (and, under AutoReset, clears again first).
    h.submit_and_wait(control("q", 8, "bootstrapStarted"))
        .await
        .unwrap();
    assert!(!h.status("q").unwrap().awaiting_bootstrap);
    h.submit_and_wait(lib_add("q", 9, 90, 9)).await.unwrap();
    rt.shutdown().await.unwrap();

    let seen = rec.seen();
    let resets: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Reset(..)))
        .cloned()
        .collect();
    assert_eq!(
        resets,
        vec![Seen::Reset("q".into(), 1), Seen::Reset("q".into(), 2)]
    );
    // The first reset comes after the old epoch's changes and before the new epoch's.
    let first_reset = seen
        .iter()
        .position(|s| matches!(s, Seen::Reset(..)))
        .unwrap();
    assert!(seen[..first_reset]
        .iter()
        .all(|s| !matches!(s, Seen::Change(q, e, ..) if q == "q" && *e != 0)));
    assert!(seen[first_reset..]
        .iter()
        .all(|s| !matches!(s, Seen::Change(q, 0, ..) if q == "q")));
    assert_eq!(view.query("q").rows, store_rows(&*store, "q").await);
    assert_eq!(
        view.query("q").rows.keys().copied().collect::<Vec<_>>(),
        vec![90]
    );
    assert_eq!(view.query("other").rows.len(), 1, "other query untouched");
    assert_eq!(store.query_info("other").await.unwrap().epoch, 0);
}

#[tokio::test]
async fn bootstrap_started_under_auto_reset_clears_before_the_new_snapshot() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(MaterializedView::new("view"));
    let config = RuntimeConfig::new().default_query(policy(RecoveryPolicy::AutoReset));
    let rt = start(&store, config, vec![view.clone()]).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap();
    let mut requests = h.bootstrap_requests();
    h.submit_and_wait(control("q", 3, "bootstrapStarted"))
        .await
        .unwrap();
    let info = store.query_info("q").await.unwrap();
    assert_eq!((info.sequence, info.row_count, info.epoch), (Some(3), 0, 1));
    assert_eq!(
        h.status("q").unwrap().upstream,
        Some(ControlSignal::BootstrapStarted)
    );
    // The new snapshot arrives.
    h.submit_and_wait(lib_add("q", 4, 2, 22)).await.unwrap();
    h.submit_and_wait(control("q", 5, "bootstrapCompleted"))
        .await
        .unwrap();
    // A bootstrap start that itself skips sequences clears once, without a bootstrap request.
    h.submit_and_wait(control("q", 9, "bootstrapStarted"))
        .await
        .unwrap();
    assert_eq!(store.query_info("q").await.unwrap().epoch, 2);
    assert!(
        requests.try_recv().is_err(),
        "no request: upstream is already bootstrapping"
    );
    h.submit_and_wait(lib_add("q", 10, 3, 3)).await.unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(view.query("q").rows, store_rows(&*store, "q").await);
    assert_eq!(
        view.query("q").rows.keys().copied().collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(view.query("q").epoch, 2);
}

#[tokio::test]
async fn bootstrap_started_under_strict_does_not_clear() {
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    h.submit_and_wait(control("q", 2, "bootstrapStarted"))
        .await
        .unwrap();
    let info = store.query_info("q").await.unwrap();
    assert_eq!((info.sequence, info.row_count, info.epoch), (Some(2), 1, 0));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleted_clears_and_deprovisions_the_query() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(MaterializedView::new("view"));
    let rec = Arc::new(Recorder::new("rec"));
    let rt = start(
        &store,
        RuntimeConfig::new(),
        vec![view.clone(), rec.clone()],
    )
    .await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    h.submit_and_wait(lib_add("keep", 1, 1, 1)).await.unwrap();
    assert_eq!(
        h.submit_and_wait(control("q", 2, "deleted")).await.unwrap(),
        Applied::Deprovisioned
    );
    // Cleared, and the deletion itself is the new epoch's first commit.
    let info = store.query_info("q").await.unwrap();
    assert_eq!((info.sequence, info.row_count, info.epoch), (Some(2), 0, 1));
    let status = h.status("q").unwrap();
    assert_eq!(status.state, QueryState::Stopped(StopReason::Deleted));
    assert_eq!(status.upstream, Some(ControlSignal::Deleted));
    let refused = h.submit_and_wait(lib_add("q", 3, 3, 3)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            SubmitError::QueryStopped {
                reason: StopReason::Deleted,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(store.query_info("q").await.unwrap().row_count, 0);
    h.submit_and_wait(lib_add("keep", 2, 2, 2)).await.unwrap();
    rt.shutdown().await.unwrap();
    assert!(view.query("q").rows.is_empty());
    assert_eq!(view.query("keep").rows.len(), 2);
    assert!(rec.seen().contains(&Seen::Reset("q".into(), 1)));
}

/// A deprovisioned query stays deprovisioned across a restart, until an operator clears it.
#[tokio::test]
async fn deleted_query_stays_deprovisioned_across_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), Vec::new()).await;
    rt.handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap();
    rt.handle()
        .submit_and_wait(control("q", 2, "deleted"))
        .await
        .unwrap();
    rt.shutdown().await.unwrap();

    let rt = start(&store, RuntimeConfig::new(), Vec::new()).await;
    let h = rt.handle();
    let refused = h.submit_and_wait(lib_add("q", 3, 3, 3)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            SubmitError::QueryStopped {
                reason: StopReason::Deleted,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(
        h.status("q").unwrap().upstream,
        Some(ControlSignal::Deleted)
    );
    assert_eq!(store.query_info("q").await.unwrap().row_count, 0);
    // An operator's clear brings it back.
    h.clear_query("q").await.unwrap();
    h.submit_and_wait(lib_add("q", 3, 3, 3)).await.unwrap();
    assert_eq!(store.query_info("q").await.unwrap().row_count, 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn running_and_stopped_are_recorded_in_the_status() {
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    let h = rt.handle();
    h.submit_and_wait(control("q", 1, "running")).await.unwrap();
    assert_eq!(
        h.status("q").unwrap().upstream,
        Some(ControlSignal::Running)
    );
    h.submit_and_wait(lib_add("q", 2, 1, 1)).await.unwrap();
    assert_eq!(
        h.status("q").unwrap().upstream,
        Some(ControlSignal::Running)
    );
    h.submit_and_wait(control("q", 3, "stopped")).await.unwrap();
    let status = h.status("q").unwrap();
    assert_eq!(status.upstream, Some(ControlSignal::Stopped));
    assert_eq!(
        status.state,
        QueryState::Running,
        "upstream stopping is not an error"
    );
    assert_eq!(
        stored_sequence(&*store, "q").await,
        Some(3),
        "signals are committed"
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleted_after_a_gap_still_deprovisions_under_strict() {
    // Regression: a `deleted` signal arriving after missing sequences stopped the query as
    // gapped and left its rows in the store.
    let store = Arc::new(MemoryStore::new());
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    assert_eq!(
        h.submit_and_wait(control("q", 5, "deleted")).await.unwrap(),
        Applied::Deprovisioned
    );
    assert_eq!(store.query_info("q").await.unwrap().row_count, 0);
    assert_eq!(
        h.status("q").unwrap().state,
        QueryState::Stopped(StopReason::Deleted)
    );
    rt.shutdown().await.unwrap();
}
