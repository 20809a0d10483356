//! A real server on 127.0.0.1 (port 0) over a MemoryStore, and event-line builders.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::{Reaction, Runtime, RuntimeConfig};
use liveresults_server::{serve, AppState};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub url: String,
    pub http: reqwest::Client,
    pub state: AppState,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
    runtime: Option<Runtime>,
}

impl Server {
    pub async fn start(tune: impl FnOnce(AppState) -> AppState) -> Server {
        Server::with_store(Arc::new(MemoryStore::new()), RuntimeConfig::new(), tune).await
    }

    pub async fn with_store(
        store: Arc<dyn ResultStore>,
        config: RuntimeConfig,
        tune: impl FnOnce(AppState) -> AppState,
    ) -> Server {
        Server::with_reactions(store, config, Vec::new(), tune).await
    }

    pub async fn with_reactions(
        store: Arc<dyn ResultStore>,
        config: RuntimeConfig,
        reactions: Vec<Arc<dyn Reaction>>,
        tune: impl FnOnce(AppState) -> AppState,
    ) -> Server {
        let runtime = Runtime::start(store, config, reactions).await.unwrap();
        let state = tune(AppState::new(runtime.handle()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            signal.cancelled().await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Server {
            url,
            http,
            state,
            stop,
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn post(&self, query: &str, body: String) -> reqwest::Response {
        self.http
            .post(self.at(&format!("/queries/{query}/events")))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The body of a GET as text (snapshots, metrics).
    pub async fn get_text(&self, path: &str) -> String {
        let r = self.http.get(self.at(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(self.at(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Triggers graceful shutdown, waits for the server, then shuts the runtime down.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not shut down in time")
                .unwrap()
                .unwrap();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown().await.unwrap();
        }
    }

    pub fn trigger_shutdown(&self) {
        self.stop.cancel();
    }
}

/// A drasi-lib line adding row `{"id": id, "chunk": chunk}` with signature `id`.
pub fn add(query: &str, sequence: u64, id: u64, chunk: u64) -> String {
    format!(
        r#"{{"query_id":"{query}","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{id},"chunk":{chunk}}},"row_signature":{id}}}]}}"#
    )
}

/// A Drasi platform change event adding row `{"id": id}` (signature computed from the row).
pub fn platform_add(query: &str, sequence: u64, id: u64) -> String {
    format!(
        r#"{{"kind":"change","queryId":"{query}","sequence":{sequence},"sourceTimeMs":0,"addedResults":[{{"id":{id}}}],"updatedResults":[],"deletedResults":[]}}"#
    )
}

/// NDJSON of `add` lines for sequences `from..=to` (row id = sequence).
pub fn adds(query: &str, from: u64, to: u64, chunk: u64) -> String {
    let mut body = String::new();
    for seq in from..=to {
        body.push_str(&add(query, seq, seq, chunk));
        body.push('\n');
    }
    body
}
