//! The cap on Durable Streams (`serve --max-streams`), through the real binary: a create
//! beyond it answers 403 with a problem document naming the limit and creates nothing; an
//! idempotent re-create of an existing stream still succeeds; a delete frees a place.

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
