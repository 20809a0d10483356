//! The caps on Durable Streams, through the real binary: `serve --max-streams` (a create
//! beyond it answers 403 with a problem document naming the limit and creates nothing; an
//! idempotent re-create of an existing stream still succeeds; a delete frees a place) and
//! `--max-stream-producers` (a new producer's first append beyond it is refused and appends
//! nothing; known producers go on), in memory, on RocksDB and on Redis.

mod support;

use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_beyond_max_streams_are_refused_and_create_nothing() {
    let server = support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .args(["--max-streams", "3"])
            .env("RUST_LOG", "error")
            .stderr(Stdio::inherit()),
    );
    let client = reqwest::Client::new();
    let url = |name: &str| format!("{}/v1/stream/{name}", server.url);
    let put = |name: &str| {
        client
            .put(url(name))
            .header("content-type", "text/plain")
            .send()
    };
    for name in ["a", "b", "c"] {
        assert_eq!(put(name).await.expect("PUT").status(), 201, "{name}");
    }
    let refused = put("d").await.expect("PUT d");
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.expect("problem JSON");
    assert_eq!(problem["type"], "urn:liveresults:problem:too-many-streams");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("--max-streams") && detail.contains('3'),
        "{detail}"
    );
    let head = client.head(url("d")).send().await.expect("HEAD d");
    assert_eq!(head.status(), 404, "nothing was created");
    // Re-creating an existing stream is not a new stream.
    assert_eq!(put("a").await.expect("PUT a").status(), 200);
    // A delete frees a place.
    let deleted = client.delete(url("b")).send().await.expect("DELETE b");
    assert_eq!(deleted.status(), 204);
    assert_eq!(put("d").await.expect("PUT d").status(), 201);
    assert_eq!(put("e").await.expect("PUT e").status(), 403);
}

/// `--max-stream-producers 2` over `store` (`--memory` or `--data DIR`).
async fn producer_cap(store: &[&str]) {
    let server = support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(store)
            .args(["--max-stream-producers", "2"])
            .env("RUST_LOG", "error")
            .stderr(Stdio::inherit()),
    );
    let client = reqwest::Client::new();
    let url = format!("{}/v1/stream/log", server.url);
    let created = (client.put(&url).header("content-type", "text/plain").send()).await;
    assert_eq!(created.expect("PUT").status(), 201);
    let append = |producer: &str, seq: u64| {
        client
            .post(&url)
            .header("content-type", "text/plain")
            .header("producer-id", producer)
            .header("producer-epoch", "0")
            .header("producer-seq", seq.to_string())
            .body(format!("{producer}-{seq};"))
            .send()
    };
    assert_eq!(append("p1", 0).await.expect("p1").status(), 200);
    assert_eq!(append("p2", 0).await.expect("p2").status(), 200);
    let refused = append("p3", 0).await.expect("p3");
    assert_eq!(refused.status(), 403);
    let problem: serde_json::Value = refused.json().await.expect("problem JSON");
    assert_eq!(
        problem["type"],
        "urn:liveresults:problem:too-many-producers"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("--max-stream-producers"), "{detail}");
    // Known producers go on; appends without a producer are not affected.
    assert_eq!(append("p1", 1).await.expect("p1").status(), 200);
    let plain = (client.post(&url).header("content-type", "text/plain"))
        .body("plain;")
        .send()
        .await
        .expect("plain append");
    assert_eq!(plain.status(), 204);
    let body = (client.get(format!("{url}?offset=-1")).send().await)
        .expect("read")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "p1-0;p2-0;p1-1;plain;", "p3 appended nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_producers_beyond_the_cap_are_refused_in_memory() {
    producer_cap(&["--memory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_producers_beyond_the_cap_are_refused_on_rocksdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("UTF-8 path");
    producer_cap(&["--data", path]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_producers_beyond_the_cap_are_refused_on_redis() {
    let redis = liveresults_redis::testing::RedisServer::start();
    let url = redis.url();
    producer_cap(&["--redis", &url, "--host-name", "a"]).await;
}
