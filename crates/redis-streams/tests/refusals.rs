//! Entries the runtime refuses: the refused entry's stream pauses while the others go on, and
//! an entry refused for good is dead-lettered with the reason once Redis counted
//! `max_deliveries` deliveries of it — restarts included.

mod support;

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::ResultStore;
use liveresults_redis::RedisStoreOptions;
use liveresults_redis_streams::testing::{
    connect, entries, pending_entries, platform, publish, wait_until, workload, xadd, RedisServer,
};
use liveresults_redis_streams::StreamSpec;
use liveresults_runtime::QueryState;
use serde_json::json;
use support::*;

fn event(query: &str, sequence: u64) -> String {
    platform(query, sequence, &[json!({"id": sequence})], &[], &[]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_entry_pauses_only_its_stream_and_is_dead_lettered_after_max_deliveries() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    // q1 jumps from 2 to 5: a gap, which stops the (Strict) query for good.
    for sequence in [1, 2] {
        xadd(&mut conn, "q1-results", "data", &event("q1", sequence)).await;
    }
    let gap = xadd(&mut conn, "q1-results", "data", &event("q1", 5)).await;
    let w = workload("q2", 300, 8);
    publish(&mut conn, "q2-results", &w.entries[..200]).await;
    let mut config = config(
        vec![StreamSpec::drasi_query("q1"), StreamSpec::drasi_query("q2")],
        "c",
    );
    config.max_deliveries = 3;
    config.refusal_pause = Duration::from_millis(50);
    let running = spawn(&server, config, &handle);
    wait_committed(&handle, &mut conn, "q2-results", "q2", 200).await;
    wait_until("the refused entry is dead-lettered", PATIENCE, || {
        let mut conn = conn.clone();
        async move { !entries(&mut conn, "q1-results-deadletter").await.is_empty() }
    })
    .await;
    let dead = entries(&mut conn, "q1-results-deadletter").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let fields = &dead[0].1;
    assert_eq!(fields["deadletter-id"], gap);
    assert_eq!(
        fields["data"],
        event("q1", 5),
        "the entry is kept as it was"
    );
    let reason = &fields["deadletter-reason"];
    assert!(reason.contains("after 3 deliveries"), "{reason}");
    assert!(reason.contains("sequence gap"), "{reason}");
    assert_eq!(pending_entries(&mut conn, "q1-results", GROUP).await, []);
    // The run goes on: q2's next events are consumed.
    publish(&mut conn, "q2-results", &w.entries[200..]).await;
    wait_committed(&handle, &mut conn, "q2-results", "q2", 300).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    assert!(report.refused >= 3, "{report:?}");
    let q1 = handle.status("q1").expect("q1 is known");
    assert_eq!(q1.sequence, Some(2));
    assert!(matches!(q1.state, QueryState::Stopped { .. }), "{q1:?}");
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_count_across_restarts() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (_store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    for sequence in [1, 2] {
        xadd(&mut conn, "q-results", "data", &event("q", sequence)).await;
    }
    let gap = xadd(&mut conn, "q-results", "data", &event("q", 4)).await;
    let mut config = config(vec![StreamSpec::drasi_query("q")], "c");
    config.max_deliveries = 3;
    // One delivery per run: the pause outlasts each run.
    config.refusal_pause = Duration::from_secs(3600);
    for run in 1..=3u64 {
        let running = spawn(&server, config.clone(), &handle);
        let source = Arc::clone(&running.source);
        wait_until(&format!("run {run} handled the entry"), PATIENCE, || {
            let report = source.report();
            async move { report.refused >= 1 || report.dead_lettered >= 1 }
        })
        .await;
        if run == 3 {
            wait_until("dead-lettered", PATIENCE, || {
                let report = source.report();
                async move { report.dead_lettered == 1 }
            })
            .await;
        }
        let report = running.stop().await.expect("a clean stop");
        let pending = pending_entries(&mut conn, "q-results", GROUP).await;
        if run < 3 {
            // Refused, still pending, delivered once per run.
            assert_eq!(report.dead_lettered, 0, "{report:?}");
            assert_eq!(pending, [(gap.clone(), "c".to_owned(), run)]);
        } else {
            assert_eq!(report.dead_lettered, 1, "{report:?}");
            assert_eq!(pending, []);
        }
    }
    let dead = entries(&mut conn, "q-results-deadletter").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["deadletter-id"], gap);

    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_pauses_and_retries_without_ever_dead_lettering() {
    // The results live on a second server that can refuse writes (min-replicas-to-write
    // with no replica: NOREPLICAS, which the runtime takes for a store failure).
    let streams = RedisServer::start();
    let results = RedisServer::start();
    let mut conn = connect(&streams).await;
    let results_conn = connect(&results).await;
    let store: Arc<dyn ResultStore> = Arc::new(results.connect(RedisStoreOptions::new()).await);
    let runtime = runtime(Arc::clone(&store)).await;
    let handle = runtime.handle();
    let mut config = config(vec![StreamSpec::drasi_query("q")], "c");
    config.max_deliveries = 2;
    config.refusal_pause = Duration::from_millis(20);
    let running = spawn(&streams, config, &handle);
    xadd(&mut conn, "q-results", "data", &event("q", 1)).await;
    wait_committed(&handle, &mut conn, "q-results", "q", 1).await;
    let set_min_replicas = |n: u32| {
        let mut results_conn = results_conn.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-to-write")
                .arg(n)
                .query_async(&mut results_conn)
                .await
                .unwrap();
        }
    };
    set_min_replicas(1).await;
    let second = xadd(&mut conn, "q-results", "data", &event("q", 2)).await;
    let second = &second;
    wait_until(
        "the entry was retried past max_deliveries",
        PATIENCE,
        || {
            let mut conn = conn.clone();
            async move {
                let pending = pending_entries(&mut conn, "q-results", GROUP).await;
                pending
                    .first()
                    .is_some_and(|(id, _, deliveries)| id == second && *deliveries >= 4)
            }
        },
    )
    .await;
    assert!(entries(&mut conn, "q-results-deadletter").await.is_empty());
    let status = handle.status("q").expect("q is known");
    assert!(
        matches!(status.state, QueryState::Stopped { .. }),
        "{status:?}"
    );
    // The store is back and an operator resumes the query: the entry is committed.
    set_min_replicas(0).await;
    handle.resume("q").await.expect("resume");
    wait_committed(&handle, &mut conn, "q-results", "q", 2).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert!(report.refused >= 3, "{report:?}");
    assert!(entries(&mut conn, "q-results-deadletter").await.is_empty());
    assert_eq!(pending_entries(&mut conn, "q-results", GROUP).await, []);
    runtime.shutdown().await.expect("runtime shutdown");
}
