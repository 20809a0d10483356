//! Sequence rules and group commit: redelivery is idempotent, queued events fold into fewer
//! commits, and an atomic batch is all-or-nothing.

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::testing::*;
use liveresults_runtime::{
    Applied, QueryConfig, RecoveryPolicy, RuntimeConfig, StopReason, SubmitError,
};

use super::start;

#[tokio::test]
async fn redelivery_of_a_committed_sequence_is_skipped_and_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let rec = Arc::new(Recorder::new("rec"));
    let rt = start(&store, RuntimeConfig::new(), vec![rec.clone()]).await;
    let h = rt.handle();
    assert_eq!(
        h.submit_and_wait(lib_add("q", 1, 1, 10)).await.unwrap(),
        Applied::Committed { sequence: 1 }
    );
    assert_eq!(
        h.submit_and_wait(lib_add("q", 2, 2, 20)).await.unwrap(),
        Applied::Committed { sequence: 2 }
    );
    let rows_before = store_rows(&*store, "q").await;
    let outbox_before = store.read_outbox("q", None, 100).await.unwrap();

    // The same sequence again, even with different content, is a redelivery.
    let again = h.submit_and_wait(lib_add("q", 2, 2, 999)).await.unwrap();
    assert_eq!(again, Applied::Skipped { committed: Some(2) });
    let older = h.submit_and_wait(lib_add("q", 1, 7, 7)).await.unwrap();
    assert_eq!(older, Applied::Skipped { committed: Some(2) });

    assert_eq!(store_rows(&*store, "q").await, rows_before);
    assert_eq!(
        store.read_outbox("q", None, 100).await.unwrap(),
        outbox_before
    );
    let status = h.status("q").unwrap();
    assert_eq!(status.skipped, 2);
    assert_eq!(status.commits, 2);
    assert_eq!(status.sequence, Some(2));
    rt.shutdown().await.unwrap();
    assert_eq!(rec.changes().len(), 2, "a skipped event is not delivered");
}

#[tokio::test]
async fn queued_events_fold_into_fewer_commits_spanning_their_sequences() {
    let store = Arc::new(MemoryStore::new());
    let view = Arc::new(liveresults_runtime::reactions::MaterializedView::new(
        "view",
    ));
    let config = RuntimeConfig::new()
        .queue_capacity(1000)
        .group_commit(64, Duration::from_millis(20));
    let rt = start(&store, config, vec![view.clone()]).await;
    let h = rt.handle();
    const N: u64 = 300;
    let mut last = None;
    for s in 1..=N {
        last = Some(
            h.submit_tracked(lib_add("q", s, s % 37, s as i64))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        last.unwrap().wait().await.unwrap(),
        Applied::Committed { sequence: N }
    );
    let m = h.metrics();
    assert_eq!(m.events, N);
    assert!(m.commits < N, "{} commits for {N} events", m.commits);
    assert!(m.commits >= N / 64, "at most 64 events per commit: {m:?}");
    // The outbox spans tile 1..=N without holes or overlaps.
    let outbox = store.read_outbox("q", None, 10_000).await.unwrap();
    assert_eq!(outbox.len() as u64, m.commits);
    let mut next = 1;
    for e in &outbox {
        assert_eq!(
            e.span.first,
            next,
            "spans {:?}",
            outbox.iter().map(|e| e.span).collect::<Vec<_>>()
        );
        assert!(e.span.last >= e.span.first && e.span.last - e.span.first < 64);
        next = e.span.last + 1;
    }
    assert_eq!(next, N + 1);
    rt.shutdown().await.unwrap();
    assert_eq!(view.query("q").rows, store_rows(&*store, "q").await);
}

#[tokio::test]
async fn each_tracked_event_is_answered_with_the_commit_that_holds_it() {
    // Regression: an event that filled the group used to register its ack after the group
    // was committed, so it was answered by a later commit (or as skipped).
    let store = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::new().group_commit(3, Duration::ZERO);
    let rt = start(&store, config, vec![]).await;
    let h = rt.handle();
    let mut pending = Vec::new();
    for s in 1..=10 {
        pending.push((s, h.submit_tracked(lib_add("q", s, s, 0)).await.unwrap()));
    }
    for (s, p) in pending {
        match p.wait().await.unwrap() {
            Applied::Committed { sequence } => assert!(
                sequence >= s && sequence < s + 3,
                "event {s} answered with commit {sequence}"
            ),
            other => panic!("event {s} answered {other:?}"),
        }
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn commit_batch_is_all_or_nothing_with_a_strict_gap_inside() {
    let store = Arc::new(MemoryStore::new());
    let rec = Arc::new(Recorder::new("rec"));
    let rt = start(&store, RuntimeConfig::new(), vec![rec.clone()]).await;
    let h = rt.handle();
    let ok = h
        .commit_batch("q", vec![lib_add("q", 1, 1, 1), lib_add("q", 2, 2, 2)])
        .await
        .unwrap();
    assert_eq!(ok, Applied::Committed { sequence: 2 });
    assert_eq!(
        store.read_outbox("q", None, 10).await.unwrap().len(),
        1,
        "one commit"
    );

    let rows_before = store_rows(&*store, "q").await;
    let err = h
        .commit_batch(
            "q",
            vec![
                lib_add("q", 3, 3, 3),
                lib_add("q", 4, 4, 4),
                lib_add("q", 6, 6, 6),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::QueryStopped {
                reason: StopReason::Gap {
                    committed: Some(4),
                    received: 6
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        stored_sequence(&*store, "q").await,
        Some(2),
        "nothing of the batch"
    );
    assert_eq!(store_rows(&*store, "q").await, rows_before);
    // Mixed queries are refused before anything happens.
    let wrong = h
        .commit_batch("q", vec![lib_add("other", 1, 1, 1)])
        .await
        .unwrap_err();
    assert!(matches!(wrong, SubmitError::WrongQuery { .. }), "{wrong}");
    rt.shutdown().await.unwrap();
    assert_eq!(rec.changes(), vec![("q".to_owned(), 0, 1, 2)]);
}

#[tokio::test]
async fn skip_gap_batch_and_default_config_are_per_query() {
    // A per-query policy overrides the default.
    let store = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::new().query(
        "skip",
        QueryConfig {
            policy: RecoveryPolicy::AutoSkipGap,
            ..QueryConfig::default()
        },
    );
    let rt = start(&store, config, vec![]).await;
    let h = rt.handle();
    let applied = h
        .commit_batch(
            "skip",
            vec![lib_add("skip", 1, 1, 1), lib_add("skip", 5, 5, 5)],
        )
        .await
        .unwrap();
    assert_eq!(applied, Applied::Committed { sequence: 5 });
    assert_eq!(h.status("skip").unwrap().gaps, 1);
    h.submit_and_wait(lib_add("strict", 1, 1, 1)).await.unwrap();
    assert!(h.submit_and_wait(lib_add("strict", 3, 1, 1)).await.is_err());
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn group_commit_delay_is_one_deadline_per_group_not_per_event() {
    // Regression: the delay restarted for every event, so a steady trickle faster than the
    // delay held one group open until it reached the event limit.
    let store = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::new().group_commit(1000, Duration::from_millis(60));
    let rt = start(&store, config, vec![]).await;
    let h = rt.handle();
    let mut last = None;
    for s in 1..=12u64 {
        last = Some(h.submit_tracked(lib_add("q", s, s, 0)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    last.unwrap().wait().await.unwrap();
    // 12 events over ~300 ms with a 60 ms window: several groups, never one.
    let commits = h.metrics().commits;
    assert!(commits >= 3, "{commits} commits");
    assert!(commits < 12, "{commits} commits: nothing was grouped");
    rt.shutdown().await.unwrap();
}
