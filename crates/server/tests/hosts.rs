//! Two servers sharing one store, as two hosts share one Redis (the in-memory store has leases
//! and commit notices too): writes to the non-owner get 409 naming the owner, reads work on
//! both, a long-poll on one wakes for a commit on the other, a lease lost mid-stream is 503
//! with Retry-After, and status, health and metrics say who owns what.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{adds, Server};
use liveresults_core::{MemoryStore, ResultStore};
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
