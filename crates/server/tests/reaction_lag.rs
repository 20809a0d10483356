//! Reaction progress over HTTP: each reaction's position and lag in the query status JSON and
//! as the `liveresults_reaction_lag` gauge in `/metrics`, while a reaction is held back and
//! after it caught up.

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::testing::Recorder;
use liveresults_runtime::{Reaction, Runtime, RuntimeConfig};
use liveresults_server::{serve, AppState};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

/// A drasi-lib line adding row `{"id": seq}` with signature `seq`.
fn add(query: &str, sequence: u64) -> String {
    format!(
        r#"{{"query_id":"{query}","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{sequence}}},"row_signature":{sequence}}}]}}"#
    )
}

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
    let runtime = Runtime::start(store, RuntimeConfig::new(), reactions)
        .await
        .unwrap();
    let handle = runtime.handle();
    let state = AppState::new(handle.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    let body: String = (1..=3).map(|s| add("q", s) + "\n").collect();
    let r = http
        .post(format!("{url}/queries/q/events"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The gate holds every delivery: it has handled nothing of the 3 committed sequences.
    let status: Value = http
        .get(format!("{url}/queries/q"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["sequence"], 3);
    assert_eq!(
        status["reactions"][0],
        json!({"reaction": "gate", "epoch": 0, "sequence": null, "lag": 3, "failure": null})
    );
    assert_eq!(status["reactions"][1]["reaction"], "quick");
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("# TYPE liveresults_reaction_lag gauge"),
        "{metrics}"
    );
    assert_eq!(lag_gauge(&metrics, "q", "gate"), Some(3), "{metrics}");
    assert!(lag_gauge(&metrics, "q", "quick").is_some(), "{metrics}");

    // Let it through, wait until every reaction has the commit: both lags are 0.
    permits.add_permits(16);
    tokio::time::timeout(Duration::from_secs(10), handle.reactions_caught_up("q"))
        .await
        .expect("caught up in time")
        .unwrap();
    let list: Value = http
        .get(format!("{url}/queries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list[0]["reactions"],
        json!([
            {"reaction": "gate", "epoch": 0, "sequence": 3, "lag": 0, "failure": null},
            {"reaction": "quick", "epoch": 0, "sequence": 3, "lag": 0, "failure": null},
        ])
    );
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(lag_gauge(&metrics, "q", "gate"), Some(0), "{metrics}");
    assert_eq!(lag_gauge(&metrics, "q", "quick"), Some(0), "{metrics}");
    assert_eq!(gate.changes().len(), 1, "one chunk, one commit");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    runtime.shutdown().await.unwrap();
}
