//! Consumers that die with entries pending: a new consumer takes them over at start, in order,
//! and a running one claims them periodically.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults_core::ResultStore;
use liveresults_redis::RedisStoreOptions;
use liveresults_redis_streams::testing::{
    connect, pending_count, publish, wait_until, workload, RedisServer,
};
use liveresults_redis_streams::StreamSpec;
use support::*;

/// `consumer` reads up to `count` new entries of `stream` and never acknowledges them.
async fn read_and_die(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    consumer: &str,
    count: usize,
) {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg(&["CREATE", stream, GROUP, "0", "MKSTREAM"])
        .query_async(conn)
        .await;
    if let Err(e) = created {
        assert_eq!(e.code(), Some("BUSYGROUP"), "{e}");
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, consumer, "COUNT"])
        .arg(count)
        .arg(&["STREAMS", stream, ">"])
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entries_are_claimed_at_start_and_committed_in_order() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 60, 3);
    publish(&mut conn, "q-results", &w.entries[..30]).await;
    // Consumer A took events 1..=10 and disappeared; more events came after.
    read_and_die(&mut conn, "q-results", "A", 10).await;
    publish(&mut conn, "q-results", &w.entries[30..]).await;
    assert_eq!(pending_count(&mut conn, "q-results", GROUP).await, 10);
    let started = Instant::now();
    // B must wait for A's entries to become claimable and commit them before the newer ones:
    // reading 11.. first would be a gap, which stops the (Strict) query.
    let running = spawn(
        &server,
        config(vec![StreamSpec::drasi_query("q")], "B"),
        &handle,
    );
    wait_committed(&handle, &mut conn, "q-results", "q", 60).await;
    let report = running.stop().await.expect("a clean stop");
    assert!(report.claimed >= 10, "{report:?}");
    assert_eq!(report.committed, 60, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited for claim_idle"
    );
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_consumer_claims_entries_of_one_that_died_later() {
    // The results live on a second server whose writes can be paused, to hold the consumer's
    // one in-flight entry while another consumer takes the next ones and dies.
    let streams = RedisServer::start();
    let results = RedisServer::start();
    let mut conn = connect(&streams).await;
    let mut results_conn = connect(&results).await;
    let store: Arc<dyn ResultStore> = Arc::new(results.connect(RedisStoreOptions::new()).await);
    let runtime = runtime(Arc::clone(&store)).await;
    let handle = runtime.handle();
    let w = workload("q", 12, 5);
    let mut config = config(vec![StreamSpec::drasi_query("q")], "B");
    config.batch = 1;
    config.claim_idle = Duration::from_millis(400);
    config.claim_every = Some(Duration::from_millis(100));
    let running = spawn(&streams, config, &handle);
    wait_until("the group exists", PATIENCE, || {
        let mut conn = conn.clone();
        async move {
            let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg(&["GROUPS", "q-results"])
                .query_async(&mut conn)
                .await;
            groups.is_ok_and(|g| !g.is_empty())
        }
    })
    .await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .query_async(&mut results_conn)
        .await
        .unwrap();
    publish(&mut conn, "q-results", &w.entries[..1]).await;
    wait_until("B holds entry 1", PATIENCE, || {
        let mut conn = conn.clone();
        async move { pending_count(&mut conn, "q-results", GROUP).await == 1 }
    })
    .await;
    // B is full (batch 1) and waits for its commit; A takes 2..=12 and dies.
    publish(&mut conn, "q-results", &w.entries[1..]).await;
    read_and_die(&mut conn, "q-results", "A", 100).await;
    assert_eq!(pending_count(&mut conn, "q-results", GROUP).await, 12);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut results_conn)
        .await
        .unwrap();
    wait_committed(&handle, &mut conn, "q-results", "q", 12).await;
    let report = running.stop().await.expect("a clean stop");
    assert!(report.claimed >= 11, "{report:?}");
    assert_eq!(report.committed, 12, "{report:?}");
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}
