//! Two servers sharing one store, as two hosts share one Redis (the in-memory store has leases
//! and commit notices too): writes to the non-owner get 409 naming the owner, reads work on
//! both, a long-poll on one wakes for a commit on the other, a lease lost mid-stream is 503
//! with Retry-After, and status, health and metrics say who owns what.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{adds, Server};
use liveresults_core::lease::{LeaseClaim, LeaseHolder, LeaseOutcome, Leases};
use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, MemoryStore, OutboxEntry, QueryInfo, ResultStore, Snapshot,
    StoreError,
};
use liveresults_runtime::{HostIdentity, RuntimeConfig};
use serde_json::Value;

async fn host(store: &Arc<MemoryStore>, name: &str, ttl: Duration) -> Server {
    let identity = HostIdentity::new(name, format!("http://{name}.test:8080"));
    let store: Arc<dyn ResultStore> = store.clone();
    Server::with_store(store, RuntimeConfig::new().host(identity, ttl), |s| {
        s.long_poll_timeout(Duration::from_secs(20))
    })
    .await
}

const LONG: Duration = Duration::from_secs(60);

async fn problem(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    (status, headers, r.json().await.unwrap())
}

#[tokio::test]
async fn a_non_owner_answers_409_naming_the_owner_and_serves_every_read() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG).await;
    let b = host(&store, "b", LONG).await;
    assert_eq!(a.post("q", adds("q", 1, 3, 1)).await.status(), 200);

    let (status, headers, body) = problem(b.post("q", adds("q", 4, 4, 1)).await).await;
    assert_eq!(status, 409);
    assert_eq!(body["type"], "urn:liveresults:problem:not-owner");
    assert_eq!(body["owner"], "a");
    assert_eq!(body["owner_address"], "http://a.test:8080");
    assert_eq!(body["committed_sequence"], 3);
    assert_eq!(headers["liveresults-owner"], "a");
    assert_eq!(headers["liveresults-owner-address"], "http://a.test:8080");
    // Clears and resumes are writes too.
    let clear = b.http.delete(b.at("/queries/q")).send().await.unwrap();
    assert_eq!(problem(clear).await.2["owner"], "a");
    let resume = b.http.post(b.at("/queries/q/resume")).send().await.unwrap();
    assert_eq!(problem(resume).await.0, 409);

    // Reads: snapshot, change feed, status, on the host that never wrote the query.
    let snapshot = b.get_text("/queries/q/snapshot").await;
    assert_eq!(snapshot.lines().count(), 4, "{snapshot}");
    let (status, changes) = b.get_json("/queries/q/changes?offset=-1").await;
    assert_eq!(status, 200);
    assert_eq!(changes.as_array().map(Vec::len), Some(1), "{changes}");
    let (status, on_b) = b.get_json("/queries/q").await;
    assert_eq!(status, 200);
    assert_eq!(on_b["sequence"], 3);
    assert_eq!(on_b["owner"], "a");
    assert_eq!(on_b["owner_address"], "http://a.test:8080");
    assert_eq!(on_b["owned_here"], false);
    assert_eq!(a.get_json("/queries/q").await.1["owned_here"], true);
    let (_, list) = b.get_json("/queries").await;
    assert_eq!(list[0]["query_id"], "q");
    assert_eq!(list[0]["owned_here"], false);

    // Health and metrics say who this host is and what it writes.
    let (_, health) = a.get_json("/healthz").await;
    assert_eq!(health["host"]["name"], "a");
    assert_eq!(health["host"]["owned_queries"], serde_json::json!(["q"]));
    let (_, health) = b.get_json("/healthz").await;
    assert_eq!(health["host"]["owned_queries"], serde_json::json!([]));
    let metrics_a = a.get_text("/metrics").await;
    let metrics_b = b.get_text("/metrics").await;
    assert!(
        metrics_a.contains("\nliveresults_leases_held 1\n"),
        "{metrics_a}"
    );
    assert!(metrics_a.contains("liveresults_query_rows{query=\"q\"} 3"));
    assert!(metrics_b.contains("\nliveresults_leases_held 0\n"));
    assert!(!metrics_b.contains("{query=\"q\"}"), "{metrics_b}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_long_poll_on_one_host_wakes_for_a_commit_on_the_other() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG).await;
    let b = host(&store, "b", LONG).await;
    assert_eq!(a.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let (_, on_b) = b.get_json("/queries/q").await;
    let offset = on_b["offset"].as_str().unwrap().to_owned();
    let url = b.at(&format!(
        "/queries/q/changes?offset={offset}&live=long-poll"
    ));
    let http = b.http.clone();
    let poll = tokio::spawn(async move {
        let r = http.get(&url).send().await.unwrap();
        (r.status().as_u16(), r.json::<Vec<Value>>().await.unwrap())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.state.metrics().long_polls_open() < 1 {
        assert!(Instant::now() < deadline, "the long-poll did not park");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let committed = Instant::now();
    assert_eq!(a.post("q", adds("q", 2, 2, 1)).await.status(), 200);
    let (status, messages) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(messages[0]["sequence"], 2);
    // Woken by the notice, not by the 20 s timeout.
    assert!(committed.elapsed() < Duration::from_secs(5));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_lease_lost_under_a_paused_owner_is_503_then_409_naming_the_new_owner() {
    let store = Arc::new(MemoryStore::new());
    let ttl = Duration::from_millis(200);
    let a = host(&store, "a", ttl).await;
    let b = host(&store, "b", ttl).await;
    assert_eq!(a.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    a.state.runtime().stop_lease_renewals();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = b.post("q", adds("q", 2, 2, 2)).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 409);
        assert!(Instant::now() < deadline, "b never took the lease over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, headers, body) = problem(a.post("q", adds("q", 2, 3, 9)).await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:liveresults:problem:lease-lost");
    assert_eq!(headers["retry-after"], "1");
    let (status, _, body) = problem(a.post("q", adds("q", 3, 3, 9)).await).await;
    assert_eq!(status, 409);
    assert_eq!(body["owner"], "b");
    // Nothing of a's stale writes landed.
    let info = store.query_info("q").await.unwrap();
    assert_eq!(info.sequence, Some(2));
    let snapshot = a.get_text("/queries/q/snapshot").await;
    assert!(snapshot.contains("\"chunk\":2"), "{snapshot}");
    assert!(!snapshot.contains("\"chunk\":9"), "{snapshot}");
    a.stop().await;
    b.stop().await;
}

/// A purge on the owner removes the query for every host: both answer 404 on every route
/// (the other host registered the query at start, and must not trust that), neither lists
/// it, a purge there finds nothing to purge, and a long-poll parked on the other host is
/// told to refetch.
#[tokio::test]
async fn a_purge_on_the_owner_is_seen_by_every_host() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG).await;
    assert_eq!(a.post("q", adds("q", 1, 3, 1)).await.status(), 200);
    let b = host(&store, "b", LONG).await;
    let (status, on_b) = b.get_json("/queries/q").await;
    assert_eq!(status, 200);
    let offset = on_b["offset"].as_str().unwrap().to_owned();
    let url = b.at(&format!(
        "/queries/q/changes?offset={offset}&live=long-poll"
    ));
    let http = b.http.clone();
    let poll = tokio::spawn(async move { http.get(&url).send().await.unwrap().status() });
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.state.metrics().long_polls_open() < 1 {
        assert!(Instant::now() < deadline, "the long-poll did not park");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let purged = a.http.delete(a.at("/queries/q?purge=true")).send().await;
    assert_eq!(purged.unwrap().status(), 200);
    let polled = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long-poll on b was answered after the purge")
        .unwrap();
    assert_eq!(polled, 409);
    for server in [&a, &b] {
        for path in ["/queries/q", "/queries/q/snapshot"] {
            let r = server.http.get(server.at(path)).send().await.unwrap();
            assert_eq!(
                r.status(),
                404,
                "{path} on {}",
                server.state.runtime().host().unwrap().name
            );
        }
        let (_, list) = server.get_json("/queries").await;
        assert_eq!(list, serde_json::json!([]));
        let again = server
            .http
            .delete(server.at("/queries/q?purge=true"))
            .send()
            .await;
        assert_eq!(again.unwrap().status(), 404);
    }
    a.stop().await;
    b.stop().await;
}

/// The shared store as seen by a host that hears no commit notices (its notice connection
/// is down, say): everything else is the `MemoryStore`'s.
struct Deaf(Arc<MemoryStore>);

#[async_trait]
impl ResultStore for Deaf {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        self.0.commit(query_id, commit).await
    }
    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.0.query_info(query_id).await
    }
    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.0.clear_query(query_id).await
    }
    async fn clear_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        self.0.clear_query_fenced(query_id, fence).await
    }
    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        self.0.remove_query(query_id).await
    }
    async fn remove_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        self.0.remove_query_fenced(query_id, fence).await
    }
    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        self.0.snapshot(query_id, chunk_rows).await
    }
    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.0.read_outbox(query_id, after, max).await
    }
    async fn checkpoint(
        &self,
        reaction: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.0.checkpoint(reaction, query_id).await
    }
    async fn save_checkpoint(
        &self,
        reaction: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        self.0.save_checkpoint(reaction, query_id, checkpoint).await
    }
    async fn delete_checkpoint(&self, reaction: &str, query_id: &str) -> Result<(), StoreError> {
        self.0.delete_checkpoint(reaction, query_id).await
    }
    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        self.0.list_queries().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush().await
    }
    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }
}

#[async_trait]
impl Leases for Deaf {
    async fn acquire(
        &self,
        query_id: &str,
        claim: LeaseClaim<'_>,
    ) -> Result<LeaseOutcome, StoreError> {
        self.0.acquire(query_id, claim).await
    }
    async fn renew(&self, query_id: &str, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        self.0.renew(query_id, token, ttl).await
    }
    async fn release(&self, query_id: &str, token: u64) -> Result<(), StoreError> {
        self.0.release(query_id, token).await
    }
    async fn holder(&self, query_id: &str) -> Result<Option<LeaseHolder>, StoreError> {
        self.0.holder(query_id).await
    }
}

/// A host that missed the removal notice still has the purged query registered (every host
/// registers every stored query at start); it must not trust that for a query it does not
/// own: 404 on every route, not listed, nothing to purge.
#[tokio::test]
async fn a_host_that_missed_the_purge_notice_asks_the_store() {
    let store = Arc::new(MemoryStore::new());
    let a = host(&store, "a", LONG).await;
    assert_eq!(a.post("q", adds("q", 1, 3, 1)).await.status(), 200);
    let identity = HostIdentity::new("b", "http://b.test:8080");
    let deaf: Arc<dyn ResultStore> = Arc::new(Deaf(Arc::clone(&store)));
    let b = Server::with_store(deaf, RuntimeConfig::new().host(identity, LONG), |s| s).await;
    assert!(
        b.state.runtime().status("q").is_some(),
        "registered at start"
    );

    let purged = a.http.delete(a.at("/queries/q?purge=true")).send().await;
    assert_eq!(purged.unwrap().status(), 200);
    assert!(
        b.state.runtime().status("q").is_some(),
        "b never heard of the purge"
    );
    for path in ["/queries/q", "/queries/q/snapshot"] {
        let r = b.http.get(b.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    assert_eq!(b.get_json("/queries").await.1, serde_json::json!([]));
    let again = b.http.delete(b.at("/queries/q?purge=true")).send().await;
    assert_eq!(again.unwrap().status(), 404);
    a.stop().await;
    b.stop().await;
}
