//! A runtime over a store, a source run in a task and stopped on demand, and the checks every
//! test ends with.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::{MemoryStore, ResultStore};
use liveresults_redis_streams::testing::{pending_count, wait_until, RedisServer, Workload};
use liveresults_redis_streams::{
    StreamReport, StreamSource, StreamSourceConfig, StreamSourceError, StreamSpec,
};
use liveresults_runtime::testing::{model_values, store_rows};
use liveresults_runtime::{QueryState, Runtime, RuntimeConfig, RuntimeHandle};
use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The group every test consumes with.
pub const GROUP: &str = "liveresults";

/// How long any one wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A runtime (no reactions, Strict queries: a gap would stop the query) over `store`.
pub async fn runtime(store: Arc<dyn ResultStore>) -> Runtime {
    Runtime::start(store, RuntimeConfig::new(), Vec::new())
        .await
        .expect("start the runtime")
}

/// A runtime over a fresh in-memory store.
pub async fn memory_runtime() -> (Arc<dyn ResultStore>, Runtime) {
    let store: Arc<dyn ResultStore> = Arc::new(MemoryStore::new());
    (Arc::clone(&store), runtime(store).await)
}

/// A test configuration: short blocks and claims so that tests run quickly.
pub fn config(streams: Vec<StreamSpec>, consumer: &str) -> StreamSourceConfig {
    let mut config = StreamSourceConfig::new(streams, GROUP, consumer);
    config.batch = 64;
    config.block = Duration::from_millis(100);
    config.claim_idle = Duration::from_millis(600);
    config
}

/// A source running in a task until stopped.
pub struct Running {
    pub source: Arc<StreamSource>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<StreamReport, StreamSourceError>>,
}

/// Starts `config` against `server` on `handle`.
pub fn spawn(server: &RedisServer, config: StreamSourceConfig, handle: &RuntimeHandle) -> Running {
    let source = Arc::new(StreamSource::new(&server.url(), config).expect("a valid source"));
    let (stop, stopped) = oneshot::channel::<()>();
    let (task_source, handle) = (Arc::clone(&source), handle.clone());
    let task = tokio::spawn(async move {
        task_source
            .run(&handle, async {
                let _ = stopped.await;
            })
            .await
    });
    Running { source, stop, task }
}

impl Running {
    /// Ends the run as a crash would: no settling, no acknowledgement, no lock release.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits for the run to end by itself.
    pub async fn wait(self) -> Result<StreamReport, StreamSourceError> {
        self.task.await.expect("the source task does not panic")
    }

    /// Signals shutdown and returns how the run ended.
    pub async fn stop(self) -> Result<StreamReport, StreamSourceError> {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the source stops within the patience")
            .expect("the source task does not panic")
    }
}

/// Waits until `query` has committed `sequence` and nothing of `stream` is pending.
pub async fn wait_committed(
    handle: &RuntimeHandle,
    conn: &mut MultiplexedConnection,
    stream: &str,
    query: &str,
    sequence: u64,
) {
    wait_until(
        &format!("{query} committed through {sequence}"),
        PATIENCE,
        || {
            let at = handle.status(query).and_then(|s| s.sequence);
            async move { at == Some(sequence) }
        },
    )
    .await;
    let what = format!("no entry of {stream} pending");
    wait_until(&what, PATIENCE, || {
        let mut conn = conn.clone();
        async move { pending_count(&mut conn, stream, GROUP).await == 0 }
    })
    .await;
}

/// The query holds exactly the workload's rows, runs, and never saw a gap.
pub async fn assert_matches_model(handle: &RuntimeHandle, store: &dyn ResultStore, w: &Workload) {
    let status = handle.status(&w.query).expect("the query is known");
    assert_eq!(status.state, QueryState::Running, "{status:?}");
    assert_eq!(status.gaps, 0, "events arrived out of order: {status:?}");
    assert_eq!(
        store_rows(store, &w.query).await,
        model_values(&w.model),
        "rows of {}",
        w.query
    );
}
