//! Two consumers of the same streams and group: the lock lets one read, the other waits as a
//! stand-by and takes over when the first crashes, stops, or loses the lock — and the query
//! ends up exactly as the model says, with no gap.

mod support;

use std::time::{Duration, Instant};

use liveresults_redis_streams::testing::{
    connect, lock_holder, publish, wait_until, workload, RedisServer, Workload,
};
use liveresults_redis_streams::{lock_key, StreamSpec};
use redis::aio::MultiplexedConnection;
use support::*;

/// `consumer`'s test configuration with a short lock.
fn with_lock(consumer: &str, ttl_ms: u64) -> liveresults_redis_streams::StreamSourceConfig {
    let mut config = config(vec![StreamSpec::drasi_query("q")], consumer);
    config.batch = 8;
    config.lock_ttl = Duration::from_millis(ttl_ms);
    config
}

/// The lock's holder, if any.
async fn holder(conn: &mut MultiplexedConnection) -> Option<String> {
    lock_holder(conn, "q-results", GROUP).await
}

/// Publishes `w`'s entries from `from` on, ten at a time with short sleeps, in a task.
fn publish_slowly(
    conn: &MultiplexedConnection,
    w: &Workload,
    from: usize,
) -> tokio::task::JoinHandle<()> {
    let mut conn = conn.clone();
    let entries = w.entries[from..].to_vec();
    tokio::spawn(async move {
        for part in entries.chunks(10) {
            publish(&mut conn, "q-results", part).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn wait_past(handle: &liveresults_runtime::RuntimeHandle, sequence: u64) {
    wait_until(&format!("q past {sequence}"), PATIENCE, || {
        let at = handle.status("q").and_then(|s| s.sequence);
        async move { at.is_some_and(|s| s >= sequence) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_by_reads_nothing_until_the_holder_crashes_then_takes_over_without_gaps() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 800, 21);
    let a = spawn(&server, with_lock("a", 600), &handle);
    wait_until("a holds the lock", PATIENCE, || {
        let mut conn = conn.clone();
        async move { holder(&mut conn).await.is_some_and(|h| h.starts_with("a ")) }
    })
    .await;
    let b = spawn(&server, with_lock("b", 600), &handle);
    let publisher = publish_slowly(&conn, &w, 0);
    wait_past(&handle, 300).await;
    // Only the holder reads: a second consumer reading new entries would take part of the
    // query's events (a gap for both).
    assert_eq!(b.source.report().read, 0, "{:?}", b.source.report());
    assert!(a.source.report().read >= 300, "{:?}", a.source.report());
    // a crashes while it holds entries (nothing released, nothing settled).
    a.abort().await;
    let crashed = Instant::now();
    publisher.await.expect("publishing");
    wait_committed(&handle, &mut conn, "q-results", "q", 800).await;
    let took_over = crashed.elapsed();
    assert!(
        holder(&mut conn).await.is_some_and(|h| h.starts_with("b ")),
        "b holds the lock"
    );
    let report = b.stop().await.expect("a clean stop");
    assert!(report.read > 0, "{report:?}");
    // b waited for a's lock to expire (600 ms) before reading.
    assert!(took_over >= Duration::from_millis(500), "{took_over:?}");
    assert_matches_model(&handle, &*store, &w).await;
    assert_eq!(holder(&mut conn).await, None, "b released the lock");
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_releases_the_lock_and_the_stand_by_takes_over_at_once() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 600, 22);
    // A 20 s lock: without the release, the stand-by would wait that long.
    let a = spawn(&server, with_lock("a", 20_000), &handle);
    wait_until("a holds the lock", PATIENCE, || {
        let mut conn = conn.clone();
        async move { holder(&mut conn).await.is_some() }
    })
    .await;
    let b = spawn(&server, with_lock("b", 20_000), &handle);
    let publisher = publish_slowly(&conn, &w, 0);
    wait_past(&handle, 200).await;
    let stopped = Instant::now();
    let first = a.stop().await.expect("a clean stop");
    assert_eq!(b.source.report().read, 0, "{:?}", b.source.report());
    publisher.await.expect("publishing");
    wait_committed(&handle, &mut conn, "q-results", "q", 600).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "b took over in {:?}",
        stopped.elapsed()
    );
    let second = b.stop().await.expect("a clean stop");
    assert_eq!(first.read + second.read, 600, "{first:?} {second:?}");
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_loses_the_lock_stops_reading_and_stands_by() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 600, 23);
    let a = spawn(&server, with_lock("a", 600), &handle);
    wait_until("a holds the lock", PATIENCE, || {
        let mut conn = conn.clone();
        async move { holder(&mut conn).await.is_some() }
    })
    .await;
    let b = spawn(&server, with_lock("b", 600), &handle);
    publish(&mut conn, "q-results", &w.entries[..200]).await;
    wait_committed(&handle, &mut conn, "q-results", "q", 200).await;
    // Someone else takes the lock for 2 s: a's next renewal finds it taken.
    let _: () = redis::cmd("SET")
        .arg(lock_key("q-results", GROUP))
        .arg("intruder")
        .arg("PX")
        .arg(2000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let taken = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a_read, b_read) = (a.source.report().read, b.source.report().read);
    publish(&mut conn, "q-results", &w.entries[200..400]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(taken.elapsed() < Duration::from_millis(1900), "timing");
    // Nobody reads while the intruder holds the lock.
    assert_eq!(a.source.report().read, a_read, "a stopped reading");
    assert_eq!(b.source.report().read, b_read, "b stands by");
    assert_eq!(handle.status("q").and_then(|s| s.sequence), Some(200));
    publish(&mut conn, "q-results", &w.entries[400..]).await;
    // When it expires, one of them takes the lock and everything is committed in order.
    wait_committed(&handle, &mut conn, "q-results", "q", 600).await;
    let first = a.stop().await.expect("a clean stop");
    let second = b.stop().await.expect("a clean stop");
    assert_eq!(first.read + second.read, 600, "{first:?} {second:?}");
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_overlapping_stream_sets_exclude_each_other() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (_store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let specs = |queries: &[&str]| queries.iter().map(|q| StreamSpec::drasi_query(q)).collect();
    let a = spawn(&server, config(specs(&["q1", "q2"]), "a"), &handle);
    wait_until("a holds the lock", PATIENCE, || {
        let mut conn = conn.clone();
        async move { lock_holder(&mut conn, "q2-results", GROUP).await.is_some() }
    })
    .await;
    // b's streams share q2 with a's: b takes none of its locks, not even q3's.
    let b = spawn(&server, config(specs(&["q2", "q3"]), "b"), &handle);
    let w = workload("q3", 20, 24);
    publish(&mut conn, "q3-results", &w.entries).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.source.report().read, 0, "{:?}", b.source.report());
    assert_eq!(lock_holder(&mut conn, "q3-results", GROUP).await, None);
    // Once a stops, b takes all of its locks and reads.
    a.stop().await.expect("a clean stop");
    wait_committed(&handle, &mut conn, "q3-results", "q3", 20).await;
    let report = b.stop().await.expect("a clean stop");
    assert_eq!(report.committed, 20, "{report:?}");
    runtime.shutdown().await.expect("runtime shutdown");
}
