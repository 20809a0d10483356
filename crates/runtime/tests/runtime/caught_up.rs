//! Waiting for reactions: `reactions_caught_up` returns only once every reaction has handled
//! what was committed (or cleared) when it was called, reports a failed reaction instead of
//! waiting for it, and the status shows each reaction's position and lag.

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::MemoryStore;
use liveresults_runtime::testing::*;
use liveresults_runtime::{
    Position, ReactionLag, RetryPolicy, RuntimeConfig, RuntimeError, RuntimeHandle,
};
use tokio::sync::Semaphore;

use super::start;

/// Longest any wait here may take before the test counts it as hung.
const HUNG: Duration = Duration::from_secs(10);

fn one_commit_per_event() -> RuntimeConfig {
    RuntimeConfig::new().group_commit(1, Duration::ZERO)
}

/// The lag the status reports for reaction `id` on query `q`.
fn lag_of(h: &RuntimeHandle, q: &str, id: &str) -> ReactionLag {
    let status = h.status(q).expect("query status");
    match status.reactions.iter().find(|r| r.reaction == id) {
        Some(lag) => lag.clone(),
        None => panic!("no progress of {id} in {status:?}"),
    }
}

/// Waits (bounded by `HUNG`) until every reaction has processed `query`'s committed position.
async fn caught_up(h: &RuntimeHandle, query: &str) -> Position {
    tokio::time::timeout(HUNG, h.reactions_caught_up(query))
        .await
        .expect("caught up in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_it_returns_a_slow_reaction_has_seen_every_acknowledged_commit() {
    let store = Arc::new(MemoryStore::new());
    let slow = Arc::new(Recorder::new("slow").slow(Duration::from_millis(40)));
    let rt = start(&store, one_commit_per_event(), vec![slow.clone()]).await;
    let h = rt.handle();
    for s in 1..=5 {
        h.submit_and_wait(lib_add("q", s, s, 0)).await.unwrap();
    }
    let position = caught_up(&h, "q").await;
    assert_eq!(
        position,
        Position {
            epoch: 0,
            sequence: Some(5)
        }
    );
    // No waiting here: it is already true.
    assert_eq!(slow.changes().last(), Some(&("q".to_owned(), 0, 5, 5)));
    assert_eq!(slow.changes().len(), 5);
    assert_eq!(
        lag_of(&h, "q", "slow"),
        ReactionLag {
            reaction: "slow".into(),
            epoch: 0,
            sequence: Some(5),
            lag: 0,
            failure: None,
        }
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_it_returns_a_slow_reaction_has_seen_the_reset() {
    let store = Arc::new(MemoryStore::new());
    let slow = Arc::new(Recorder::new("slow").slow(Duration::from_millis(30)));
    let rt = start(&store, one_commit_per_event(), vec![slow.clone()]).await;
    let h = rt.handle();
    for s in 1..=3 {
        h.submit_and_wait(lib_add("q", s, s, 0)).await.unwrap();
    }
    h.clear_query("q").await.unwrap();
    let position = caught_up(&h, "q").await;
    assert_eq!(
        position,
        Position {
            epoch: 1,
            sequence: None
        }
    );
    assert_eq!(slow.seen().last(), Some(&Seen::Reset("q".into(), 1)));
    let lag = lag_of(&h, "q", "slow");
    assert_eq!((lag.epoch, lag.sequence, lag.lag), (1, None, 0));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_the_lag_of_a_held_reaction_and_the_wait_ends_when_it_catches_up() {
    let store = Arc::new(MemoryStore::new());
    let permits = Arc::new(Semaphore::new(0));
    let gate = Arc::new(Recorder::new("gate").gated(permits.clone()));
    let view = Arc::new(Recorder::new("quick"));
    let rt = start(
        &store,
        one_commit_per_event(),
        vec![gate.clone(), view.clone()],
    )
    .await;
    let h = rt.handle();
    for s in 1..=3 {
        h.submit_and_wait(lib_add("q", s, s, 0)).await.unwrap();
    }
    // The gate has handled nothing yet: it is in epoch 0 with no sequence, 3 behind.
    assert!(gate.seen().is_empty());
    assert_eq!(
        lag_of(&h, "q", "gate"),
        ReactionLag {
            reaction: "gate".into(),
            epoch: 0,
            sequence: None,
            lag: 3,
            failure: None,
        }
    );
    // The wait does not end while the gate is held...
    let waiting = tokio::time::timeout(Duration::from_millis(200), h.reactions_caught_up("q"));
    assert!(waiting.await.is_err(), "returned while a reaction lags");
    // ...while the quick reaction catches up meanwhile (bounded wait: the machine may be busy),
    // so its lag is 0 beside the gate's 3.
    let deadline = tokio::time::Instant::now() + HUNG;
    while lag_of(&h, "q", "quick").lag != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "quick never caught up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(view.changes().len(), 3);
    assert_eq!(lag_of(&h, "q", "gate").lag, 3);
    // A waiter that starts while the gate is held wakes once the gate has handled all three.
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { h.reactions_caught_up("q").await })
    };
    permits.add_permits(3);
    let position = tokio::time::timeout(HUNG, waiter)
        .await
        .expect("caught up in time")
        .unwrap()
        .unwrap();
    assert_eq!(position.sequence, Some(3));
    assert_eq!(lag_of(&h, "q", "gate").lag, 0);
    assert_eq!(lag_of(&h, "q", "gate").sequence, Some(3));
    assert_eq!(gate.changes().len(), 3);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reaction_is_named_instead_of_waited_for_until_a_reset_clears_it() {
    let store = Arc::new(MemoryStore::new());
    let bad = Arc::new(Recorder::new("bad").failing_changes());
    let good = Arc::new(Recorder::new("good"));
    let config = one_commit_per_event().retry(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    });
    let rt = start(&store, config, vec![bad.clone(), good.clone()]).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 0)).await.unwrap();
    let err = tokio::time::timeout(HUNG, h.reactions_caught_up("q"))
        .await
        .expect("a failed reaction must not make the wait hang")
        .unwrap_err();
    match &err {
        RuntimeError::ReactionFailed {
            reaction_id,
            query_id,
            message,
        } => {
            assert_eq!((reaction_id.as_str(), query_id.as_str()), ("bad", "q"));
            assert!(message.contains("refusing change"), "{message}");
        }
        other => panic!("expected ReactionFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("\"bad\""), "{err}");
    let lag = lag_of(&h, "q", "bad");
    assert_eq!((lag.sequence, lag.lag), (None, 1));
    assert!(lag.failure.is_some());
    assert_eq!(lag_of(&h, "q", "good").lag, 0);

    // A clear resets the failed reaction; waiting for the clear succeeds even though the
    // failure is still recorded when the wait begins (the reset is on its way to it).
    h.clear_query("q").await.unwrap();
    let position = caught_up(&h, "q").await;
    assert_eq!(position.epoch, 1);
    assert_eq!(bad.seen().last(), Some(&Seen::Reset("q".into(), 1)));
    assert_eq!(lag_of(&h, "q", "bad").failure, None);
    assert!(h.reaction_failures().is_empty());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_recovered_with_nothing_to_replay_is_caught_up_at_once() {
    let store = Arc::new(MemoryStore::new());
    let first = Arc::new(Recorder::new("d").durable(0));
    let rt = start(&store, RuntimeConfig::new(), vec![first]).await;
    for s in 1..=4 {
        rt.handle()
            .submit_and_wait(lib_add("q", s, s, 0))
            .await
            .unwrap();
    }
    rt.shutdown().await.unwrap();
    // Its checkpoint is the store's sequence, so recovery delivers nothing.
    let again = Arc::new(Recorder::new("d").durable(0));
    let rt = start(&store, RuntimeConfig::new(), vec![again.clone()]).await;
    let h = rt.handle();
    assert!(again.seen().is_empty());
    let position = tokio::time::timeout(HUNG, h.reactions_caught_up("q"))
        .await
        .expect("a recovered reaction is at the store's position")
        .unwrap();
    assert_eq!(position.sequence, Some(4));
    let lag = lag_of(&h, "q", "d");
    assert_eq!((lag.epoch, lag.sequence, lag.lag), (0, Some(4), 0));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_query_with_nothing_committed_needs_no_waiting() {
    let store = Arc::new(MemoryStore::new());
    let rec = Arc::new(Recorder::new("rec"));
    let rt = start(&store, RuntimeConfig::new(), vec![rec]).await;
    let position = tokio::time::timeout(HUNG, rt.handle().reactions_caught_up("never"))
        .await
        .expect("nothing to wait for")
        .unwrap();
    assert_eq!(position, Position::default());
    rt.shutdown().await.unwrap();
}
