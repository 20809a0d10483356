//! The runtime over a Redis store whose server is SIGKILLed during ingest and restarted (AOF
//! with `appendfsync always`): every acknowledged commit is there afterwards, no commit is
//! torn, and the runtime retries through the outage and carries on without a restart of its
//! own.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults_core::ResultStore;
use liveresults_redis::testing::RedisServer;
use liveresults_redis::RedisStoreOptions;
use liveresults_runtime::testing::{add, lib, store_rows};
use liveresults_runtime::{Applied, RetryPolicy, Runtime, RuntimeConfig, StopReason, SubmitError};

/// Events ingested; the server is killed once `KILL_AFTER` of them are acknowledged.
const EVENTS: u64 = 400;
const KILL_AFTER: u64 = 150;
/// Rows each event adds: a torn commit would leave some of an event's rows without the others.
const ROWS_PER_EVENT: u64 = 3;
/// How long the server stays down.
const DOWN: Duration = Duration::from_millis(500);

fn signatures(sequence: u64) -> impl Iterator<Item = u64> {
    (0..ROWS_PER_EVENT).map(move |j| sequence * ROWS_PER_EVENT + j)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_during_ingest_keeps_every_acknowledged_commit() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store: Arc<dyn ResultStore> = Arc::new(
        server
            .connect(RedisStoreOptions::new().response_timeout(Duration::from_secs(2)))
            .await,
    );
    // A retry budget (about 10 s of backoff) longer than the outage: the runtime rides it out.
    let retry = RetryPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(500),
    };
    let runtime = Runtime::start(
        Arc::clone(&store),
        RuntimeConfig::new().retry(retry),
        vec![],
    )
    .await
    .unwrap();
    let handle = runtime.handle();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let ingest = {
        let acknowledged = Arc::clone(&acknowledged);
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut resumes = 0;
            let mut seq = 1;
            while seq <= EVENTS {
                let diffs: Vec<_> = signatures(seq).map(|k| add(k, seq as i64)).collect();
                let started = Instant::now();
                match handle.submit_and_wait(lib("q", seq, &diffs)).await {
                    Ok(applied) => {
                        assert!(
                            matches!(applied, Applied::Committed { .. } | Applied::Skipped { .. }),
                            "{applied:?}"
                        );
                        slowest = slowest.max(started.elapsed());
                        acknowledged.store(seq, Ordering::SeqCst);
                        seq += 1;
                    }
                    // Only if an outage outlasted the retry budget: resume and send again.
                    Err(SubmitError::QueryStopped {
                        reason: StopReason::Store(_),
                        ..
                    }) => {
                        resumes += 1;
                        assert!(resumes < 20, "the query keeps stopping");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = handle.resume("q").await;
                    }
                    Err(e) => panic!("event {seq}: {e}"),
                }
            }
            (slowest, resumes)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(Instant::now() < deadline, "ingest too slow before the kill");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    let before_kill = acknowledged.load(Ordering::SeqCst);
    tokio::time::sleep(DOWN).await;
    server.restart();

    let (slowest, resumes) = tokio::time::timeout(Duration::from_secs(120), ingest)
        .await
        .expect("ingest finishes after the restart")
        .unwrap();
    eprintln!(
        "killed after {before_kill} acknowledged events; slowest event {slowest:?}; resumes {resumes}"
    );
    assert!(
        before_kill < EVENTS,
        "the kill landed after the ingest ended"
    );
    assert!(
        slowest >= DOWN / 2,
        "no event waited through the outage (slowest {slowest:?})"
    );
    assert_eq!(resumes, 0, "the retries did not ride the outage out");

    // Every event's rows, all of them: nothing acknowledged lost, nothing torn, nothing twice.
    let info = store.query_info("q").await.unwrap();
    assert_eq!(info.sequence, Some(EVENTS));
    let rows = store_rows(&*store, "q").await;
    let stored: BTreeSet<u64> = rows.keys().copied().collect();
    let expected: BTreeSet<u64> = (1..=EVENTS).flat_map(signatures).collect();
    assert_eq!(stored, expected);
    assert_eq!(info.row_count, expected.len() as u64);
    runtime.shutdown().await.unwrap();
}
