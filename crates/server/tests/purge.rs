//! `DELETE /queries/{id}?purge=true`: the query is gone everywhere, its slot under
//! `--max-queries` is free, and a change-feed reader holding an offset from before the purge
//! is told to refetch exactly as after a clear — also once the id is written again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{adds, Server};
use futures_util::StreamExt;
use liveresults_core::MemoryStore;
use liveresults_runtime::testing::Recorder;
use liveresults_runtime::RuntimeConfig;
use serde_json::Value;
use tokio::sync::Semaphore;

async fn purge(server: &Server, query: &str) -> (u16, Value) {
    let r = server
        .http
        .delete(server.at(&format!("/queries/{query}?purge=true")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits at most 10 s: what never happens fails the test, not CI.
async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 10 s"))
}

/// Waits until `n` requests wait in the query's pipeline queue, in the order they were sent.
async fn queued(server: &Server, query: &str, n: usize) {
    let runtime = server.state.runtime();
    within("the requests to queue", async {
        while runtime.queued(query) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(runtime.queued(query), n, "more queued than sent");
}

/// The `Stream-Next-Offset` after reading the whole feed of `query` from the start.
async fn read_all(server: &Server, query: &str) -> String {
    let r = server
        .http
        .get(server.at(&format!("/queries/{query}/changes?offset=-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Status and problem document of a change-feed read at `offset` in `mode` (`""`, long-poll,
/// sse).
async fn read_at(server: &Server, query: &str, offset: &str, mode: &str) -> (u16, Value) {
    let live = if mode.is_empty() {
        String::new()
    } else {
        format!("&live={mode}")
    };
    let path = format!("/queries/{query}/changes?offset={offset}{live}");
    let r = server.http.get(server.at(&path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn purge_removes_the_query_and_frees_its_slot_under_max_queries() {
    let server = Server::start(|s| s.max_queries(1)).await;
    assert_eq!(server.post("a", adds("a", 1, 3, 1)).await.status(), 200);
    let refused = server.post("b", adds("b", 1, 1, 1)).await;
    assert_eq!(refused.status(), 403, "the cap of 1 holds before the purge");

    let (status, body) = purge(&server, "a").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["query_id"], "a");
    assert_eq!(body["purged"], true);
    assert_eq!(
        (&body["sequence"], &body["row_count"], &body["epoch"]),
        (&Value::from(3), &Value::from(3), &Value::from(0))
    );
    assert_eq!(body["offset"], "0000000000000000_00000000000000000004");

    // Gone everywhere: stats, snapshot, list, metrics labels.
    assert_eq!(server.get_json("/queries/a").await.0, 404);
    assert_eq!(server.get_json("/queries/a/snapshot").await.0, 404);
    assert_eq!(server.get_json("/queries").await.1, serde_json::json!([]));
    let metrics = server.get_text("/metrics").await;
    assert!(!metrics.contains("query=\"a\""), "{metrics}");

    // The slot is free: the second query is accepted now.
    assert_eq!(server.post("b", adds("b", 1, 1, 1)).await.status(), 200);
    let (_, list) = server.get_json("/queries").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["query_id"], "b");
    server.stop().await;
}

#[tokio::test]
async fn purging_an_unknown_or_purged_query_is_404() {
    let server = Server::start(|s| s).await;
    let (status, problem) = purge(&server, "never").await;
    assert_eq!(status, 404);
    assert_eq!(problem["type"], "urn:liveresults:problem:not-found");
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    assert_eq!(purge(&server, "q").await.0, 200);
    assert_eq!(
        purge(&server, "q").await.0,
        404,
        "a second purge finds nothing"
    );
    // Looking did not create anything.
    assert_eq!(server.get_json("/queries").await.1, serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn an_offset_from_before_a_purge_must_refetch_like_after_a_clear() {
    let server = Server::start(|s| s).await;
    // Cleared once, so the purged query's last epoch is 1.
    assert_eq!(server.post("q", adds("q", 1, 2, 1)).await.status(), 200);
    let cleared = server
        .http
        .delete(server.at("/queries/q"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(server.post("q", adds("q", 1, 3, 2)).await.status(), 200);
    let old = read_all(&server, "q").await;
    assert_eq!(old, "0000000000000001_00000000000000000004");
    assert_eq!(purge(&server, "q").await.0, 200);

    for mode in ["", "long-poll", "sse"] {
        let (status, problem) = read_at(&server, "q", &old, mode).await;
        assert_eq!(status, 409, "{mode}: {problem}");
        assert_eq!(problem["type"], "urn:liveresults:problem:must-refetch");
        assert!(
            problem["detail"].as_str().unwrap().contains("purged"),
            "{problem}"
        );
    }
    // The refetch the 409 asks for answers 404; `-1` names no position and is 404 too.
    assert_eq!(server.get_json("/queries/q/snapshot").await.0, 404);
    assert_eq!(read_at(&server, "q", "-1", "").await.0, 404);

    // Written again: the new query starts above the purged one's epochs, so the old offset
    // is an older epoch's, and the answer is the clear's must-refetch.
    assert_eq!(server.post("q", adds("q", 1, 5, 3)).await.status(), 200);
    let (_, stats) = server.get_json("/queries/q").await;
    assert_eq!(stats["epoch"], 2, "{stats}");
    assert_eq!(stats["sequence"], 5);
    for mode in ["", "long-poll", "sse"] {
        let (status, problem) = read_at(&server, "q", &old, mode).await;
        assert_eq!(status, 409, "{mode}: {problem}");
        assert_eq!(problem["type"], "urn:liveresults:problem:must-refetch");
        assert_eq!(problem["offset"], stats["offset"]);
    }
    // The new query's own history reads from the start.
    let r = server
        .http
        .get(server.at("/queries/q/changes?offset=-1"))
        .send()
        .await
        .unwrap();
    let messages: Vec<Value> = r.json().await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["epoch"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_parked_long_poll_and_an_sse_stream_learn_of_the_purge() {
    let server = Server::start(|s| s.long_poll_timeout(Duration::from_secs(20))).await;
    assert_eq!(server.post("q", adds("q", 1, 2, 1)).await.status(), 200);
    let tail = read_all(&server, "q").await;
    let poll = {
        let url = server.at(&format!("/queries/q/changes?offset={tail}&live=long-poll"));
        let http = server.http.clone();
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    let sse = server
        .http
        .get(server.at(&format!("/queries/q/changes?offset={tail}&live=sse")))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    // The long-poll parks at the tail.
    within("the long-poll to park", async {
        while server.state.metrics().long_polls_open() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!poll.is_finished());

    assert_eq!(purge(&server, "q").await.0, 200);
    // Answered at once (not after its 20 s timeout), with the must-refetch answer.
    let answer = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the parked long-poll was not answered after the purge")
        .unwrap();
    assert_eq!(answer.status(), 409);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["type"], "urn:liveresults:problem:must-refetch");
    // The SSE stream ends; its reconnect gets the 409.
    let mut body = sse.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream stayed open after the purge");
    assert_eq!(read_at(&server, "q", &tail, "sse").await.0, 409);
    server.stop().await;
}

#[tokio::test]
async fn an_ingest_queued_behind_a_purge_is_refused_not_left_waiting() {
    // A reaction that holds every delivery until the gate opens, with a queue of one: the
    // third commit's delivery blocks the query's pipeline, so the purge and the ingest after
    // it wait in the pipeline's queue, in that order.
    let gate = Arc::new(Semaphore::new(0));
    let rec = Arc::new(Recorder::new("rec").gated(gate.clone()));
    let config = RuntimeConfig::new().reaction_queue_capacity(1);
    let server =
        Server::with_reactions(Arc::new(MemoryStore::new()), config, vec![rec], |s| s).await;
    for s in 1..=3 {
        assert_eq!(server.post("q", adds("q", s, s, 1)).await.status(), 200);
    }
    let purging = {
        let (http, url) = (server.http.clone(), server.at("/queries/q?purge=true"));
        tokio::spawn(async move { http.delete(url).send().await.unwrap() })
    };
    queued(&server, "q", 1).await;
    let ingesting = {
        let (http, url) = (server.http.clone(), server.at("/queries/q/events"));
        tokio::spawn(async move {
            let request = http
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(adds("q", 4, 4, 1));
            request.send().await.unwrap()
        })
    };
    // The ingest's event waits behind the purge.
    queued(&server, "q", 2).await;
    assert!(!purging.is_finished() && !ingesting.is_finished());

    gate.add_permits(1_000);
    let purged = tokio::time::timeout(Duration::from_secs(10), purging)
        .await
        .expect("the purge was not answered")
        .unwrap();
    assert_eq!(purged.status(), 200);
    let refused = tokio::time::timeout(Duration::from_secs(10), ingesting)
        .await
        .expect("the ingest queued behind the purge was left waiting")
        .unwrap();
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:liveresults:problem:query-removed",
        "{problem}"
    );
    // Sent again, it creates the query anew, in an epoch above the purged one's.
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    assert_eq!(server.get_json("/queries/q").await.1["epoch"], 1);
    server.stop().await;
}
