//! The RocksDB subscription store's compare-and-swap stays one step when the future awaiting
//! it is dropped mid-way (a client that disconnects during a create or an ack).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use liveresults_streams::subscription::SubscriptionStore;
use liveresults_streams::RocksStreamStore;

/// Polls `future` once (so its blocking read-compare-write has started) and drops it.
fn start_and_drop(future: impl Future<Output = impl Sized>) {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    let _ = future.as_mut().poll(&mut cx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_swap_does_not_let_a_second_swap_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStreamStore::open(dir.path(), false)
        .await
        .expect("open");
    let mut violations = 0;
    for round in 0..300 {
        let id = format!("sub-{round}");
        // The first creator's client disconnects while its swap runs.
        start_and_drop(store.swap(&id, None, Some(b"first")));
        // A second creator expects no record: it may win only if the first never wrote.
        let second = store.swap(&id, None, Some(b"second")).await.expect("swap");
        // Wait until the dropped swap's blocking work is surely over.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let stored = store.load(&id).await.expect("load");
        if second && stored.as_deref() == Some(&b"first"[..]) {
            violations += 1;
        }
    }
    assert_eq!(
        violations, 0,
        "both swaps that expected no record succeeded (the second's write was overwritten)"
    );
}
