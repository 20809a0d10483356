//! Backpressure: a slow reaction slows the source down instead of growing queues, and the
//! Reject policy refuses when a query's queue is full.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::MemoryStore;
use liveresults_runtime::testing::*;
use liveresults_runtime::{
    Backpressure, Delivery, Reaction, ReactionError, RuntimeConfig, SubmitError,
};
use tokio::sync::Semaphore;

use super::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reaction_bounds_what_is_queued_and_makes_submit_wait() {
    const QUEUE: usize = 4;
    const REACTION_QUEUE: usize = 2;
    const N: usize = 120;
    let store = Arc::new(MemoryStore::new());
    let slow = Arc::new(Recorder::new("slow").slow(Duration::from_millis(2)));
    let config = RuntimeConfig::new()
        .queue_capacity(QUEUE)
        .reaction_queue_capacity(REACTION_QUEUE)
        .group_commit(1, Duration::ZERO);
    let rt = start(&store, config, vec![slow.clone()]).await;
    let h = rt.handle();
    // Everything accepted but not yet delivered: the pipeline queue, the event being
    // committed, the reaction queue, and the delivery in progress (one event per commit).
    let bound = QUEUE + 1 + REACTION_QUEUE + 1 + 1;
    let submitted = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (submitted, done, slow) = (submitted.clone(), done.clone(), slow.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(Ordering::SeqCst) {
                let delivered = slow.events.load(Ordering::SeqCst);
                max = max.max(submitted.load(Ordering::SeqCst).saturating_sub(delivered));
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            max
        })
    };
    for s in 1..=N as u64 {
        h.submit(lib_add("q", s, s, 0)).await.unwrap();
        let n = submitted.fetch_add(1, Ordering::SeqCst) + 1;
        // `submit` returned, so the event sits in some bounded queue.
        let in_flight = n - slow.events.load(Ordering::SeqCst);
        assert!(
            in_flight <= bound,
            "{in_flight} events in flight > bound {bound}"
        );
    }
    // When the last submit returns, the source has been held to the reaction's pace.
    let delivered = slow.events.load(Ordering::SeqCst);
    assert!(
        delivered >= N - bound,
        "submit did not wait: only {delivered} of {N} delivered"
    );
    done.store(true, Ordering::SeqCst);
    let max = monitor.await.unwrap();
    assert!(max <= bound, "max in flight {max} > {bound}");
    rt.shutdown().await.unwrap();
    assert_eq!(slow.events.load(Ordering::SeqCst), N);
}

/// A reaction that blocks until the test opens the gate.
struct Gate {
    open: Semaphore,
    delivered: AtomicUsize,
}

#[async_trait]
impl Reaction for Gate {
    fn id(&self) -> &str {
        "gate"
    }

    async fn deliver(&self, _: &Delivery) -> Result<(), ReactionError> {
        let permit = self
            .open
            .acquire()
            .await
            .map_err(|e| ReactionError::new("gate", e))?;
        permit.forget();
        self.delivered.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn reject_policy_returns_overloaded_when_the_queue_is_full() {
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new(Gate {
        open: Semaphore::new(0),
        delivered: AtomicUsize::new(0),
    });
    let config = RuntimeConfig::new()
        .queue_capacity(2)
        .reaction_queue_capacity(1)
        .group_commit(1, Duration::ZERO)
        .backpressure(Backpressure::Reject);
    let rt = start(&store, config, vec![gate.clone()]).await;
    let h = rt.handle();
    let mut accepted = 0u64;
    let mut overloaded = false;
    for s in 1..=100u64 {
        match h.submit(lib_add("q", s, s, 0)).await {
            Ok(()) => accepted = s,
            Err(SubmitError::Overloaded { query_id }) => {
                assert_eq!(query_id, "q");
                overloaded = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        tokio::task::yield_now().await; // let the pipeline take what it can
    }
    assert!(overloaded, "the queue never filled ({accepted} accepted)");
    assert!(
        accepted <= 2 + 1 + 1 + 1 + 2,
        "{accepted} accepted with tiny queues"
    );
    // Another query has its own queue.
    h.submit(lib_add("other", 1, 1, 1)).await.unwrap();
    gate.open.add_permits(1000);
    rt.shutdown().await.unwrap();
    assert_eq!(
        stored_sequence(&*store, "q").await,
        Some(accepted),
        "every accepted event committed"
    );
    assert_eq!(gate.delivered.load(Ordering::SeqCst) as u64, accepted + 1);
}
