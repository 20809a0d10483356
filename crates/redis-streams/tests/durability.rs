//! Acknowledgement only after the durable commit, the in-flight bound, and a stream server
//! killed and restarted mid-consume.

mod support;

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::ResultStore;
use liveresults_redis::RedisStoreOptions;
use liveresults_redis_streams::testing::{
    connect, group_lag, pending_count, publish, wait_until, workload, RedisServer,
};
use liveresults_redis_streams::StreamSpec;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_stay_pending_until_their_commit_is_durable_and_in_flight_is_bounded() {
    // The results store is a Redis store on a second server whose writes are paused
    // (CLIENT PAUSE WRITE holds every script): commits hang until it is unpaused.
    let streams = RedisServer::start();
    let results = RedisServer::start();
    let mut conn = connect(&streams).await;
    let mut results_conn = connect(&results).await;
    let store: Arc<dyn ResultStore> = Arc::new(results.connect(RedisStoreOptions::new()).await);
    let runtime = runtime(Arc::clone(&store)).await;
    let handle = runtime.handle();
    let w = workload("q", 40, 2);
    publish(&mut conn, "q-results", &w.entries).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .query_async(&mut results_conn)
        .await
        .unwrap();
    let mut config = config(vec![StreamSpec::drasi_query("q")], "c");
    config.batch = 8;
    let running = spawn(&streams, config, &handle);
    wait_until("8 entries read", PATIENCE, || {
        let mut conn = conn.clone();
        async move { pending_count(&mut conn, "q-results", GROUP).await == 8 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Submitted, not committed: nothing acknowledged, nothing more read.
    assert_eq!(pending_count(&mut conn, "q-results", GROUP).await, 8);
    assert_eq!(group_lag(&mut conn, "q-results", GROUP).await, Some(32));
    // (The store itself cannot be asked: its connection waits behind the paused commit.)
    assert_eq!(handle.status("q").and_then(|s| s.sequence), None);
    assert_eq!(running.source.report().committed, 0);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut results_conn)
        .await
        .unwrap();
    wait_committed(&handle, &mut conn, "q-results", "q", 40).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.committed, 40, "{report:?}");
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_server_killed_and_restarted_mid_consume_loses_nothing() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 600, 9);
    publish(&mut conn, "q-results", &w.entries[..300]).await;
    let mut config = config(vec![StreamSpec::drasi_query("q")], "c");
    config.batch = 4;
    let running = spawn(&server, config, &handle);
    wait_until("some progress", PATIENCE, || {
        let at = handle.status("q").and_then(|s| s.sequence);
        async move { at.is_some_and(|s| s >= 50) }
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let mut conn = connect(&server).await;
    publish(&mut conn, "q-results", &w.entries[300..]).await;
    wait_committed(&handle, &mut conn, "q-results", "q", 600).await;
    let report = running.stop().await.expect("a clean stop");
    assert!(
        report.committed + report.already_committed >= 600,
        "{report:?}"
    );
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}
