//! Reaction progress over HTTP: each reaction's position and lag in the query status JSON and
//! as the `liveresults_reaction_lag` gauge in `/metrics`, while a reaction is held back and
//! after it caught up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::testing::Recorder;
use liveresults_runtime::{Reaction, RuntimeConfig};
use serde_json::json;
use tokio::sync::Semaphore;

use common::{add, Server};

/// The `liveresults_reaction_lag` sample for `query` and `reaction`, if any.
fn lag_gauge(metrics: &str, query: &str, reaction: &str) -> Option<u64> {
    let prefix = format!("liveresults_reaction_lag{{query=\"{query}\",reaction=\"{reaction}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().expect("a whole number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaction_lag_is_in_the_query_status_and_in_metrics() {
    let store: Arc<dyn ResultStore> = Arc::new(MemoryStore::new());
    let permits = Arc::new(Semaphore::new(0));
    let gate = Arc::new(Recorder::new("gate").gated(permits.clone()));
    let reactions: Vec<Arc<dyn Reaction>> = vec![gate.clone(), Arc::new(Recorder::new("quick"))];
    let server = Server::with_reactions(store, RuntimeConfig::new(), reactions, |s| s).await;

    let body: String = (1..=3).map(|s| add("q", s, s, 0) + "\n").collect();
    assert_eq!(server.post("q", body).await.status(), 200);

    // The gate holds every delivery: it has handled nothing of the 3 committed sequences.
    let (code, status) = server.get_json("/queries/q").await;
    assert_eq!(code, 200);
    assert_eq!(status["sequence"], 3);
    assert_eq!(
        status["reactions"][0],
        json!({"reaction": "gate", "epoch": 0, "sequence": null, "lag": 3, "failure": null})
    );
    assert_eq!(status["reactions"][1]["reaction"], "quick");
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("# TYPE liveresults_reaction_lag gauge"),
        "{metrics}"
    );
    assert_eq!(lag_gauge(&metrics, "q", "gate"), Some(3), "{metrics}");
    assert!(lag_gauge(&metrics, "q", "quick").is_some(), "{metrics}");

    // Let it through, wait until every reaction has the commit: both lags are 0.
    permits.add_permits(16);
    let handle = server.state.runtime().clone();
    tokio::time::timeout(Duration::from_secs(10), handle.reactions_caught_up("q"))
        .await
        .expect("caught up in time")
        .unwrap();
    let (_, list) = server.get_json("/queries").await;
    assert_eq!(
        list[0]["reactions"],
        json!([
            {"reaction": "gate", "epoch": 0, "sequence": 3, "lag": 0, "failure": null},
            {"reaction": "quick", "epoch": 0, "sequence": 3, "lag": 0, "failure": null},
        ])
    );
    let metrics = server.get_text("/metrics").await;
    assert_eq!(lag_gauge(&metrics, "q", "gate"), Some(0), "{metrics}");
    assert_eq!(lag_gauge(&metrics, "q", "quick"), Some(0), "{metrics}");
    assert_eq!(gate.changes().len(), 1, "one chunk, one commit");

    server.stop().await;
}
