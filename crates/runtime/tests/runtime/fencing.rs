//! Sharing a store with hosts that stall: an owner paused inside a clear or a removal until its
//! lease moved on is fenced by the store (it changes nothing of the new owner's query), and
//! lease renewals keep up with many owned queries on a store that answers each renewal
//! slowly. The store is a `MemoryStore` behind a wrapper that can hold the next clear or
//! removal (a pause at the worst moment: after every check the runtime itself can make) and
//! delays every renewal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use liveresults_core::lease::{CommitNotice, LeaseClaim, LeaseHolder, LeaseOutcome, Leases};
use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, MemoryStore, OutboxEntry, QueryInfo, ResultStore, Snapshot,
    StoreError,
};
use liveresults_runtime::testing::*;
use liveresults_runtime::{HostIdentity, Runtime, RuntimeConfig, StopReason, SubmitError};
use tokio::sync::{broadcast, Notify, Semaphore};

use super::hosts::submit_until_owner;

const LONG: Duration = Duration::from_secs(60);

/// A `MemoryStore` that can hold the next clear or removal, and delays every renewal.
struct Stalling {
    inner: MemoryStore,
    /// Set: the next clear or removal waits for [`Stalling::resume`] before it reaches the
    /// store.
    hold_next_write: AtomicBool,
    /// Told when a held clear or removal is waiting.
    held: Notify,
    resume: Semaphore,
    renew_delay: Duration,
    renewals_in_flight: AtomicUsize,
    most_renewals_in_flight: AtomicUsize,
}

impl Stalling {
    fn new(renew_delay: Duration) -> Self {
        Stalling {
            inner: MemoryStore::new(),
            hold_next_write: AtomicBool::new(false),
            held: Notify::new(),
            resume: Semaphore::new(0),
            renew_delay,
            renewals_in_flight: AtomicUsize::new(0),
            most_renewals_in_flight: AtomicUsize::new(0),
        }
    }

    /// Waits here if this is the clear or removal to hold (the paused host).
    async fn maybe_hold(&self) {
        if self.hold_next_write.swap(false, Ordering::SeqCst) {
            self.held.notify_one();
            let permit = self.resume.acquire().await.expect("never closed");
            permit.forget();
        }
    }
}

#[async_trait]
impl ResultStore for Stalling {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        self.inner.commit(query_id, commit).await
    }
    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.inner.query_info(query_id).await
    }
    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.maybe_hold().await;
        self.inner.clear_query(query_id).await
    }
    async fn clear_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        self.maybe_hold().await;
        self.inner.clear_query_fenced(query_id, fence).await
    }
    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        self.maybe_hold().await;
        self.inner.remove_query(query_id).await
    }
    async fn remove_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        self.maybe_hold().await;
        self.inner.remove_query_fenced(query_id, fence).await
    }
    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        self.inner.snapshot(query_id, chunk_rows).await
    }
    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.read_outbox(query_id, after, max).await
    }
    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.checkpoint(reaction_id, query_id).await
    }
    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        (self.inner)
            .save_checkpoint(reaction_id, query_id, checkpoint)
            .await
    }
    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError> {
        self.inner.delete_checkpoint(reaction_id, query_id).await
    }
    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        self.inner.list_queries().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }
    fn commit_notices(&self) -> Option<broadcast::Receiver<CommitNotice>> {
        self.inner.commit_notices()
    }
}

#[async_trait]
impl Leases for Stalling {
    async fn acquire(
        &self,
        query_id: &str,
        claim: LeaseClaim<'_>,
    ) -> Result<LeaseOutcome, StoreError> {
        self.inner.acquire(query_id, claim).await
    }
    async fn renew(&self, query_id: &str, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.renewals_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_renewals_in_flight
            .fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.renew_delay).await;
        let renewed = self.inner.renew(query_id, token, ttl).await;
        self.renewals_in_flight.fetch_sub(1, Ordering::SeqCst);
        renewed
    }
    async fn release(&self, query_id: &str, token: u64) -> Result<(), StoreError> {
        self.inner.release(query_id, token).await
    }
    async fn holder(&self, query_id: &str) -> Result<Option<LeaseHolder>, StoreError> {
        self.inner.holder(query_id).await
    }
}

async fn host(store: &Arc<Stalling>, name: &str, ttl: Duration) -> Runtime {
    let identity = HostIdentity::new(name, format!("http://{name}"));
    let store: Arc<dyn ResultStore> = Arc::clone(store) as Arc<dyn ResultStore>;
    Runtime::start(store, RuntimeConfig::new().host(identity, ttl), Vec::new())
        .await
        .expect("runtime starts")
}

fn lease_lost<T: std::fmt::Debug>(result: Result<T, SubmitError>) {
    match result {
        Err(SubmitError::QueryStopped {
            reason: StopReason::LeaseLost,
            ..
        }) => {}
        other => panic!("expected a LeaseLost stop, got {other:?}"),
    }
}

/// Which write host `a` is paused in.
#[derive(Clone, Copy)]
enum Write {
    Clear,
    Remove,
}

/// Host `a` owns `q` (sequences 1–2) and is paused inside the store's clear or removal, past
/// its lease; host `b` takes `q` over and commits 3; then `a` resumes. Its write must be
/// fenced (the query stops here with `LeaseLost`) and `b`'s query stay exactly as it was.
async fn paused_write_is_fenced(write: Write) {
    let store = Arc::new(Stalling::new(Duration::ZERO));
    let a = host(&store, "a", Duration::from_millis(300)).await;
    let b = host(&store, "b", LONG).await;
    for s in 1..=2 {
        a.handle()
            .submit_and_wait(lib_add("q", s, s, 1))
            .await
            .unwrap();
    }
    a.handle().stop_lease_renewals();
    store.hold_next_write.store(true, Ordering::SeqCst);
    let writing = {
        let h = a.handle();
        tokio::spawn(async move {
            match write {
                Write::Clear => h.clear_query("q").await,
                Write::Remove => h.remove_query("q").await,
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(10), store.held.notified())
        .await
        .expect("a's write reached the store");
    // a is paused inside the store call; its lease runs out and b takes the query.
    submit_until_owner(&b, "q", 3, Duration::from_secs(10)).await;
    let before = store.inner.query_info("q").await.unwrap();
    let rows_before = store_rows(&store.inner, "q").await;
    assert_eq!(before.sequence, Some(3));

    store.resume.add_permits(1);
    let result = tokio::time::timeout(Duration::from_secs(10), writing)
        .await
        .expect("a's write was answered")
        .unwrap();
    lease_lost(result);
    assert_eq!(store.inner.query_info("q").await.unwrap(), before);
    assert_eq!(store_rows(&store.inner, "q").await, rows_before);
    assert_eq!(b.handle().owned_queries(), ["q"]);
    // b goes on writing its query.
    b.handle()
        .submit_and_wait(lib_add("q", 4, 4, 1))
        .await
        .unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_paused_past_the_lease_is_fenced_and_changes_nothing() {
    paused_write_is_fenced(Write::Clear).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_paused_past_the_lease_is_fenced_and_changes_nothing() {
    paused_write_is_fenced(Write::Remove).await;
}

/// 200 owned queries on a store that takes 25 ms per renewal: one after the other, a round
/// would take 5 s, far past the 900 ms lease, and the leases would run out; renewed
/// concurrently every one is kept, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_owned_queries_keep_their_leases_when_each_renewal_is_slow() {
    const QUERIES: usize = 200;
    let ttl = Duration::from_millis(900);
    let store = Arc::new(Stalling::new(Duration::from_millis(25)));
    let a = host(&store, "a", ttl).await;
    let queries: Vec<String> = (0..QUERIES).map(|i| format!("q{i:03}")).collect();
    for query in &queries {
        a.handle()
            .submit_and_wait(lib_add(query, 1, 1, 1))
            .await
            .unwrap();
    }
    let owned_since = Instant::now();
    // Three lease lengths: every lease had to be renewed several times to be still live.
    while owned_since.elapsed() < ttl * 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            a.handle().owned_queries().len(),
            QUERIES,
            "leases lost after {:?}",
            owned_since.elapsed()
        );
    }
    for query in &queries {
        let holder = store.inner.holder(query).await.unwrap();
        assert_eq!(holder.map(|h| h.holder).as_deref(), Some("a"), "{query}");
    }
    let most = store.most_renewals_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=64).contains(&most),
        "renewals in flight at once: {most}"
    );
    // And the host still writes every query.
    for query in &queries {
        a.handle()
            .submit_and_wait(lib_add(query, 2, 2, 1))
            .await
            .unwrap();
    }
    a.shutdown().await.unwrap();
}
