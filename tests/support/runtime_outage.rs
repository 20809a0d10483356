//! A store server taken down during ingest through the real runtime, and brought back: the
//! scenario both `redis_runtime_restart` and `postgres_runtime_restart` run, each with its own
//! way of crashing and restarting its server.
//!
//! The runtime ingests `EVENTS` events (`ROWS_PER_EVENT` rows each, one commit per event);
//! once `KILL_AFTER` are acknowledged the server goes down for `DOWN` and comes back on the
//! same address and data. The runtime must ride the outage out on its retries (no resume),
//! and afterwards the store must hold sequence `EVENTS` and exactly every event's rows: no
//! acknowledged commit lost, none torn, none twice.
//!
//! Included with `#[path]` rather than through `support/mod.rs`: these tests need neither the
//! `liveresults` binary nor the `serve` helpers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults_core::ResultStore;
use liveresults_runtime::testing::{add, lib, store_rows};
use liveresults_runtime::{Applied, RetryPolicy, Runtime, RuntimeConfig, StopReason, SubmitError};

/// Events ingested; the server goes down once `KILL_AFTER` of them are acknowledged.
pub const EVENTS: u64 = 400;
pub const KILL_AFTER: u64 = 150;
/// Rows each event adds: a torn commit would leave some of an event's rows without the others.
pub const ROWS_PER_EVENT: u64 = 3;
/// How long the server stays down.
pub const DOWN: Duration = Duration::from_millis(500);

fn signatures(sequence: u64) -> impl Iterator<Item = u64> {
    (0..ROWS_PER_EVENT).map(move |j| sequence * ROWS_PER_EVENT + j)
}

/// Runs the scenario on `store`. `outage` crashes the server, leaves it down for [`DOWN`] and
/// starts it again; it blocks, so it runs under `block_in_place` while the ingest goes on.
pub async fn ingest_through_an_outage(store: Arc<dyn ResultStore>, outage: impl FnOnce()) {
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
    let before_kill = acknowledged.load(Ordering::SeqCst);
    tokio::task::block_in_place(outage);

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
