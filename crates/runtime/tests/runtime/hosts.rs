//! Several hosts sharing one store: two runtimes on one `MemoryStore` behave like two hosts on
//! one Redis (the store implements leases and commit notices). Ownership through leases,
//! `NotOwner` naming the holder, takeover after expiry or release (with the reactions
//! recovered from the store), a fenced old owner, and readers waking for another host's
//! commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults_core::lease::{LeaseClaim, LeaseOutcome};
use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::reactions::MaterializedView;
use liveresults_runtime::testing::*;
use liveresults_runtime::{
    Applied, HostIdentity, Position, QueryState, Reaction, Runtime, RuntimeConfig, RuntimeError,
    StopReason, SubmitError,
};

use super::start;

/// A runtime on `store` as host `name` (address `http://<name>`) with leases of `ttl`.
async fn host(
    store: &Arc<MemoryStore>,
    name: &str,
    ttl: Duration,
    reactions: Vec<Arc<dyn Reaction>>,
) -> Runtime {
    let identity = HostIdentity::new(name, format!("http://{name}"));
    start(store, RuntimeConfig::new().host(identity, ttl), reactions).await
}

const LONG: Duration = Duration::from_secs(60);

fn not_owner(result: Result<Applied, SubmitError>) -> (String, String) {
    match result {
        Err(SubmitError::NotOwner {
            holder, address, ..
        }) => (holder, address),
        other => panic!("expected NotOwner, got {other:?}"),
    }
}

fn lease_lost(result: Result<Applied, SubmitError>) {
    match result {
        Err(SubmitError::QueryStopped {
            reason: StopReason::LeaseLost,
            ..
        }) => {}
        other => panic!("expected a LeaseLost stop, got {other:?}"),
    }
}

/// Submits until the event is taken (the lease moved), failing after `within`.
pub(super) async fn submit_until_owner(
    rt: &Runtime,
    query: &str,
    seq: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        match rt
            .handle()
            .submit_and_wait(lib_add(query, seq, seq, 1))
            .await
        {
            Ok(applied) => {
                assert_eq!(applied, Applied::Committed { sequence: seq });
                return started.elapsed();
            }
            Err(SubmitError::NotOwner { .. }) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("submit {seq} failed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_non_owner_is_told_who_owns_the_query_and_keeps_nothing_of_it() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG, Vec::new()).await;
    let b = host(&store, "b", LONG, Vec::new()).await;
    a.handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap();
    assert_eq!(a.handle().owned_queries(), ["q"]);

    let (holder, address) = not_owner(b.handle().submit_and_wait(lib_add("q", 2, 2, 2)).await);
    assert_eq!((holder.as_str(), address.as_str()), ("a", "http://a"));
    // Clears and resumes go through the owner too; fire-and-forget submits fail the same way.
    assert!(matches!(
        b.handle().clear_query("q").await,
        Err(SubmitError::NotOwner { .. })
    ));
    assert!(matches!(
        b.handle().resume("q").await,
        Err(SubmitError::NotOwner { .. })
    ));
    assert!(matches!(
        b.handle().submit(lib_add("q", 2, 2, 2)).await,
        Err(SubmitError::NotOwner { .. })
    ));
    assert!(b.handle().owned_queries().is_empty());
    assert!(b.handle().status("q").is_none(), "no state of q on b");
    assert!(!b.handle().owns("q"));
    assert_eq!(b.handle().host().map(|h| h.name.as_str()), Some("b"));
    assert_eq!(stored_sequence(&*store, "q").await, Some(1));
    assert!(matches!(
        b.handle().reactions_caught_up("q").await,
        Err(RuntimeError::NotOwned { .. })
    ));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_the_leases_so_another_host_takes_over_at_once() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG, Vec::new()).await;
    let b = host(&store, "b", LONG, Vec::new()).await;
    a.handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap();
    not_owner(b.handle().submit_and_wait(lib_add("q", 2, 2, 2)).await);
    a.shutdown().await.unwrap();
    // A 60 s lease, given back: no waiting.
    assert_eq!(
        b.handle()
            .submit_and_wait(lib_add("q", 2, 2, 2))
            .await
            .unwrap(),
        Applied::Committed { sequence: 2 }
    );
    assert_eq!(b.handle().owned_queries(), ["q"]);
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn another_host_takes_over_after_the_owner_dies_and_recovers_its_reactions() {
    let store = Arc::new(MemoryStore::new());
    let ttl = Duration::from_millis(300);
    let view_b = Arc::new(MaterializedView::new("view"));
    let a = host(
        &store,
        "a",
        ttl,
        vec![Arc::new(MaterializedView::new("view"))],
    )
    .await;
    let b = host(&store, "b", ttl, vec![view_b.clone()]).await;
    for s in 1..=5 {
        a.handle()
            .submit_and_wait(lib_add("q", s, s, s as i64))
            .await
            .unwrap();
    }
    not_owner(b.handle().submit_and_wait(lib_add("q", 6, 6, 6)).await);
    // Host a dies: nothing is released, its lease runs out.
    drop(a);
    let waited = submit_until_owner(&b, "q", 6, Duration::from_secs(5)).await;
    assert!(waited <= ttl * 3, "took over after {waited:?}");
    // b's view never saw a's commits as they happened: it was rebuilt from the store when b
    // took the lease, then followed b's own commit.
    b.handle().reactions_caught_up("q").await.unwrap();
    // Events 1..=5 add {s, s}; submit_until_owner's event 6 adds {6, 1}.
    let mut model: BTreeMap<u64, serde_json::Value> =
        (1..=5u64).map(|s| (s, row(s, s as i64))).collect();
    model.insert(6, row(6, 1));
    let expected = model_values(&model);
    assert_eq!(view_b.query("q").rows, expected);
    assert_eq!(store_rows(&*store, "q").await, expected);
    assert_eq!(view_b.query("q").sequence, Some(6));
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_paused_old_owner_is_fenced_stops_with_lease_lost_and_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let ttl = Duration::from_millis(200);
    let a = host(&store, "a", ttl, Vec::new()).await;
    let b = host(&store, "b", ttl, Vec::new()).await;
    a.handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap();
    // a stops renewing (as if paused); its pipeline, and its token, live on.
    a.handle().stop_lease_renewals();
    submit_until_owner(&b, "q", 2, Duration::from_secs(5)).await;
    let before = store.query_info("q").await.unwrap();
    let rows_before = store_rows(&*store, "q").await;

    // a wakes up and writes with its old token: the store refuses, a stops the query.
    lease_lost(a.handle().submit_and_wait(lib_add("q", 2, 9, 9)).await);
    assert_eq!(store.query_info("q").await.unwrap(), before);
    assert_eq!(store_rows(&*store, "q").await, rows_before);
    assert_eq!(
        a.handle().status("q").unwrap().state,
        QueryState::Stopped(StopReason::LeaseLost)
    );
    assert!(a.handle().owned_queries().is_empty());
    // Forgotten locally: the next submit asks for the lease again and learns who has it.
    let (holder, _) = not_owner(a.handle().submit_and_wait(lib_add("q", 3, 3, 3)).await);
    assert_eq!(holder, "b");
    assert_eq!(store.query_info("q").await.unwrap(), before);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lost_renewal_stops_the_query_without_waiting_for_a_commit() {
    let store = Arc::new(MemoryStore::new());
    let ttl = Duration::from_millis(300);
    let a = host(&store, "a", ttl, Vec::new()).await;
    a.handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap();
    // The same host name restarted elsewhere takes the lease with a new token.
    let leases = store.leases().expect("memory store has leases");
    let claim = LeaseClaim {
        holder: "a",
        address: "http://a-restarted",
        ttl: LONG,
    };
    let outcome = leases.acquire("q", claim).await.unwrap();
    assert!(matches!(outcome, LeaseOutcome::Granted { .. }));
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.handle().status("q").unwrap().state != QueryState::Stopped(StopReason::LeaseLost) {
        assert!(Instant::now() < deadline, "a never noticed the lost lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.handle().owned_queries().is_empty());
    assert_eq!(stored_sequence(&*store, "q").await, Some(1));
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reader_on_another_host_wakes_for_a_commit_there() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG, Vec::new()).await;
    let b = host(&store, "b", LONG, Vec::new()).await;
    // b has never seen q: watching creates its entry.
    let mut watch = b.handle().watch("q");
    assert_eq!(*watch.borrow_and_update(), Position::default());
    a.handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("b's watcher woke")
        .unwrap();
    assert_eq!(
        *watch.borrow(),
        Position {
            epoch: 0,
            sequence: Some(1)
        }
    );
    // A clear on the owner moves the epoch on b too.
    a.handle().clear_query("q").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("b's watcher woke for the clear")
        .unwrap();
    assert_eq!(watch.borrow().epoch, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Lost notices (a subscriber too slow for the store's notice buffer) wake every watcher,
/// since any query may have changed unseen. One thread, and commits that never yield, make
/// the follower fall behind for sure.
#[tokio::test(flavor = "current_thread")]
async fn lost_notices_wake_every_watcher() {
    let store = Arc::new(MemoryStore::new());
    let b = host(&store, "b", LONG, Vec::new()).await;
    let mut quiet = b.handle().watch("quiet");
    quiet.borrow_and_update();
    let rows = [liveresults_core::RowMutation::upsert(1, b"x")];
    for s in 1..=5000u64 {
        let span = liveresults_core::SequenceSpan::single(s);
        store
            .commit(
                "busy",
                liveresults_core::Commit::sequenced(&rows, span, b"p"),
            )
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(2), quiet.changed())
        .await
        .expect("the quiet query's watcher woke")
        .unwrap();
    assert_eq!(*quiet.borrow(), Position::default(), "woken, not moved");
    b.shutdown().await.unwrap();
}

/// A query removed on its owner is forgotten by the other hosts too: they registered it at
/// start (and a reader's watch did), and without following the removal they would go on
/// reporting it. The reader parked on another host is woken. A notice that only looks like a
/// removal (an unsequenced first commit at epoch 0) forgets nothing.
#[tokio::test]
async fn a_removal_on_the_owner_is_forgotten_by_the_other_hosts() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG, Vec::new()).await;
    for s in 1..=2 {
        a.handle()
            .submit_and_wait(lib_add("q", s, s, 1))
            .await
            .unwrap();
    }
    let b = host(&store, "b", LONG, Vec::new()).await;
    assert!(b.handle().status("q").is_some(), "registered at start");
    let mut watch = b.handle().watch("q");
    watch.borrow_and_update();
    // Looks like a removal notice (epoch 0, no sequence), but the query is there.
    let mut rows_only = b.handle().watch("rows-only");
    rows_only.borrow_and_update();
    let rows = [liveresults_core::RowMutation::upsert(1, b"x")];
    store
        .commit("rows-only", liveresults_core::Commit::rows(&rows))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), rows_only.changed())
        .await
        .expect("b's watcher of rows-only woke")
        .unwrap();

    a.handle().remove_query("q").await.unwrap();
    // Woken (or its watch closed, the entry forgotten): either way it looks again.
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("b's watcher of q woke for the removal")
        .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.handle().status("q").is_some() {
        assert!(
            Instant::now() < deadline,
            "b still reports the removed query"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let on_b: Vec<String> = (b.handle().statuses().into_iter())
        .map(|s| s.query_id)
        .collect();
    assert_eq!(on_b, ["rows-only"], "only the removed query is forgotten");
    assert!(a.handle().status("q").is_none());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
