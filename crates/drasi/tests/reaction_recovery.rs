//! The reaction's recovery decisions, driven deterministically: drasi-lib's snapshot comes from
//! a fake `SnapshotFetcher` whose rows and `as_of_sequence` the test sets, and results are
//! handed to the reaction the way drasi-lib's forwarder does (`enqueue_query_result`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use drasi_lib::channels::{QueryResult, ResultDiff};
use drasi_lib::context::ReactionRuntimeContext;
use drasi_lib::queries::output_state::{FetchError, SnapshotStream};
use drasi_lib::{Reaction, SnapshotFetcher};
use futures_util::StreamExt;
use liveresults_core::codec::changes::{decode_changes, ChangeItem, ChangeOp};
use liveresults_core::codec::row::decode_row;
use liveresults_core::formats::{Diff, Event, ResultBatch};
use liveresults_core::row::Value;
use liveresults_core::{MemoryStore, ResultStore, SequenceSpan};
use liveresults_drasi::LiveResultsReaction;
use liveresults_runtime::{QueryState, Runtime, RuntimeConfig, RuntimeHandle};
use serde_json::{json, Value as Json};

const Q: &str = "q";

/// A counter, and where its value is recorded as each snapshot row is read.
type Probe = (Arc<AtomicU64>, Arc<Mutex<Vec<u64>>>);

/// What drasi-lib's `fetch_snapshot` answers.
#[derive(Default)]
struct FakeDrasi {
    state: Mutex<(u64, Vec<(u64, Json)>)>,
    /// Fetches still to fail (`TimedOut`).
    failures: AtomicU32,
    /// When set, the value of this counter as each snapshot row is read.
    probe: Mutex<Option<Probe>>,
}

impl FakeDrasi {
    fn set(&self, as_of: u64, rows: Vec<(u64, Json)>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (as_of, rows);
    }
}

#[async_trait]
impl SnapshotFetcher for FakeDrasi {
    async fn fetch_snapshot(&self, _query_id: &str) -> Result<SnapshotStream, FetchError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(FetchError::TimedOut);
        }
        let (as_of, rows) = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let probe = self.probe.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let rows = futures_util::stream::iter(rows).map(move |row| {
            if let Some((counter, seen)) = &probe {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.push(counter.load(Ordering::SeqCst));
            }
            row
        });
        Ok(SnapshotStream::from_keyed_stream(rows, as_of, 7))
    }
}

struct Setup {
    store: Arc<MemoryStore>,
    runtime: Runtime,
    reaction: LiveResultsReaction,
    drasi: Arc<FakeDrasi>,
    _updates: tokio::sync::mpsc::Receiver<drasi_lib::component_graph::ComponentUpdate>,
}

async fn setup() -> anyhow::Result<Setup> {
    setup_with(RuntimeConfig::new()).await
}

async fn setup_with(config: RuntimeConfig) -> anyhow::Result<Setup> {
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::start(store.clone() as Arc<dyn ResultStore>, config, Vec::new()).await?;
    let reaction = LiveResultsReaction::new("lr", [Q], runtime.handle());
    let drasi = Arc::new(FakeDrasi::default());
    let (updates_tx, updates) = tokio::sync::mpsc::channel(256);
    let mut context = ReactionRuntimeContext::new("test", "lr", None, updates_tx, None);
    context.snapshot_fetcher = Some(drasi.clone());
    reaction.initialize(context).await;
    reaction.start().await?;
    Ok(Setup {
        store,
        runtime,
        reaction,
        drasi,
        _updates: updates,
    })
}

impl Setup {
    /// Hands one result to the reaction as drasi-lib's forwarder does, then waits until the
    /// runtime has taken it.
    async fn deliver(&self, sequence: u64, diffs: Vec<ResultDiff>) -> anyhow::Result<()> {
        self.reaction
            .enqueue_query_result(result(sequence, diffs))
            .await?;
        self.reaction.settle().await;
        Ok(())
    }

    /// Stops the query in our runtime with a sequence gap (Strict), as a fault would.
    async fn stop_query_with_a_gap(&self) {
        let stray = Event::Change(ResultBatch {
            query_id: Q.to_owned(),
            sequence: 9,
            timestamp_ms: None,
            diffs: vec![Diff::Noop],
            metadata: None,
        });
        assert!(self.runtime.handle().submit_and_wait(stray).await.is_err());
        assert!(matches!(
            self.runtime.handle().status(Q).map(|st| st.state),
            Some(QueryState::Stopped(_))
        ));
    }

    /// The `id` column of every stored row, in signature order.
    async fn ids(&self) -> anyhow::Result<Vec<String>> {
        let got = rows(&self.store).await?;
        Ok(got
            .values()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits (at most 10 s, with no result delivered) until our rows are `expected`.
    async fn converges_to(&self, expected: &[(u64, Json)]) -> anyhow::Result<()> {
        let expected: BTreeMap<u64, Json> = expected.iter().cloned().collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = rows(&self.store).await?;
            if got == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("rows stayed {got:?}, expected {expected:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A commit of another writer on our query, at `sequence`, adding the row `x`.
    fn foreign(sequence: u64) -> Event {
        Event::Change(ResultBatch {
            query_id: Q.to_owned(),
            sequence,
            timestamp_ms: None,
            diffs: vec![Diff::Add {
                data: Value::from(json!({"id": "x"})),
                signature: Some(99),
            }],
            metadata: None,
        })
    }

    /// The query's state and committed sequence in our runtime.
    fn state(&self) -> anyhow::Result<(QueryState, Option<u64>)> {
        let status = self
            .runtime
            .handle()
            .status(Q)
            .ok_or_else(|| anyhow::anyhow!("no status"))?;
        Ok((status.state, status.sequence))
    }
}

fn add(signature: u64, id: &str, total: f64) -> ResultDiff {
    ResultDiff::Add {
        data: json!({"id": id, "total": total}),
        row_signature: signature,
    }
}

fn result(sequence: u64, diffs: Vec<ResultDiff>) -> QueryResult {
    QueryResult::new(
        Q.to_owned(),
        sequence,
        chrono::Utc::now(),
        diffs,
        HashMap::new(),
    )
}

async fn rows(store: &MemoryStore) -> anyhow::Result<BTreeMap<u64, Json>> {
    let mut out = BTreeMap::new();
    for (signature, bytes) in store.snapshot(Q, 1024).await?.collect_rows().await? {
        out.insert(signature, decode_row(&bytes)?.into_json());
    }
    Ok(out)
}

fn committed(handle: &RuntimeHandle) -> Option<u64> {
    handle.status(Q).and_then(|s| s.sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upstream_restart_stale_rows_are_replaced_in_one_commit() -> anyhow::Result<()> {
    let s = setup().await?;
    for (seq, sig, id) in [(1, 1, "a"), (2, 2, "b"), (3, 3, "c")] {
        s.reaction
            .enqueue_query_result(result(seq, vec![add(sig, id, 150.0)]))
            .await?;
    }
    s.reaction.settle().await;
    assert_eq!(committed(&s.runtime.handle()), Some(3));

    // Drasi restarted: its state is now b (changed) and d, at sequence 1.
    s.drasi.set(
        1,
        vec![
            (2, json!({"id": "b", "total": 175.0})),
            (4, json!({"id": "d", "total": 400.0})),
        ],
    );
    s.reaction.start().await?;
    s.deliver(2, vec![add(5, "e", 500.0)]).await?;

    let expected: BTreeMap<u64, Json> = [
        (2, json!({"id": "b", "total": 175.0})),
        (4, json!({"id": "d", "total": 400.0})),
        (5, json!({"id": "e", "total": 500.0})),
    ]
    .into_iter()
    .collect();
    assert_eq!(rows(&s.store).await?, expected);
    // The rebuild is ONE commit right after ours (4), holding exactly the diff; Drasi's 2 is 5.
    let outbox = s.store.read_outbox(Q, Some(3), 10).await?;
    let spans: Vec<SequenceSpan> = outbox.iter().map(|e| e.span).collect();
    assert_eq!(
        spans,
        vec![SequenceSpan::single(4), SequenceSpan::single(5)]
    );
    let rebuild = decode_changes(&outbox[0].payload)?;
    let ops: Vec<(bool, u64)> = match rebuild.as_slice() {
        [ChangeItem::Rows { sequence: 4, ops }] => ops
            .iter()
            .map(|op| match op {
                ChangeOp::Upsert { signature, .. } => (true, *signature),
                ChangeOp::Delete { signature } => (false, *signature),
            })
            .collect(),
        other => anyhow::bail!("rebuild commit holds {other:?}"),
    };
    assert_eq!(ops, vec![(true, 2), (true, 4), (false, 1), (false, 3)]);
    let stats = s.reaction.stats();
    assert_eq!((stats.rebuilds, stats.redeliveries), (1, 0), "{stats:?}");
    assert_eq!(committed(&s.runtime.handle()), Some(5));
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_are_skipped_and_a_jump_reattaches() -> anyhow::Result<()> {
    let s = setup().await?;
    s.reaction
        .enqueue_query_result(result(1, vec![add(1, "a", 150.0)]))
        .await?;
    s.reaction
        .enqueue_query_result(result(2, vec![add(2, "b", 150.0)]))
        .await?;
    // drasi-lib replays its outbox after a reaction restart: already taken, skipped.
    s.reaction
        .enqueue_query_result(result(2, vec![add(2, "b", 150.0)]))
        .await?;
    assert_eq!(s.reaction.stats().redeliveries, 1);

    // 3..=5 never arrive (say a failed delivery); Drasi's snapshot at 5 has a and c.
    s.drasi.set(
        5,
        vec![
            (1, json!({"id": "a", "total": 150.0})),
            (3, json!({"id": "c", "total": 300.0})),
        ],
    );
    s.reaction
        .enqueue_query_result(result(5, vec![add(3, "c", 300.0)]))
        .await?;
    s.deliver(6, vec![add(6, "f", 600.0)]).await?;
    assert_eq!(s.ids().await?, ["a", "c", "f"]);
    let stats = s.reaction.stats();
    assert_eq!(stats.rebuilds, 1, "{stats:?}");
    // 2 (ours), the rebuild as 3, Drasi's 6 as 4: no gap in our numbering.
    assert_eq!(committed(&s.runtime.handle()), Some(4));
    assert_eq!(s.runtime.handle().status(Q).map(|st| st.gaps), Some(0));
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_query_is_cleared_and_rebuilt_from_drasi() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    // Someone else's event leaves a gap under Strict: the runtime stops the query.
    let stray = Event::Change(ResultBatch {
        query_id: Q.to_owned(),
        sequence: 9,
        timestamp_ms: None,
        diffs: vec![Diff::Add {
            data: Value::from(json!({"id": "x"})),
            signature: Some(99),
        }],
        metadata: None,
    });
    assert!(s.runtime.handle().submit_and_wait(stray).await.is_err());
    assert!(matches!(
        s.runtime.handle().status(Q).map(|st| st.state),
        Some(QueryState::Stopped(_))
    ));

    s.drasi
        .set(4, vec![(2, json!({"id": "b", "total": 200.0}))]);
    s.reaction.start().await?;
    s.deliver(5, vec![add(3, "c", 300.0)]).await?;
    assert_eq!(s.ids().await?, ["b", "c"]);
    // Cleared, so the rebuild is at Drasi's own as_of_sequence and 5 follows it.
    assert_eq!(s.state()?, (QueryState::Running, Some(5)));
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_query_whose_rows_equal_drasi_still_resumes() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    s.stop_query_with_a_gap().await;

    // Our rows are exactly Drasi's: nothing to rebuild, but the stopped query must not stay
    // stopped, or every later result would be refused.
    s.drasi
        .set(1, vec![(1, json!({"id": "a", "total": 150.0}))]);
    s.reaction.start().await?;
    s.deliver(2, vec![add(2, "b", 200.0)]).await?;
    assert_eq!(s.ids().await?, ["a", "b"]);
    assert_eq!(s.state()?, (QueryState::Running, Some(2)));
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_stopped_while_running_heals_at_the_next_result() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    s.stop_query_with_a_gap().await;

    // No restart: the next result is refused by the stopped query, which marks it for a
    // rebuild from Drasi, done in the background or by the result after it, whichever comes
    // first. Drasi's snapshot, fetched after both results were sent, holds them.
    s.drasi.set(
        3,
        vec![row(1, "a", 150.0), row(2, "b", 200.0), row(3, "c", 300.0)],
    );
    s.reaction
        .enqueue_query_result(result(2, vec![add(2, "b", 200.0)]))
        .await?;
    s.deliver(3, vec![add(3, "c", 300.0)]).await?;
    s.converges_to(&[row(1, "a", 150.0), row(2, "b", 200.0), row(3, "c", 300.0)])
        .await?;
    assert_eq!(s.state()?, (QueryState::Running, Some(3)));
    s.deliver(4, vec![add(4, "d", 400.0)]).await?;
    assert_eq!(s.ids().await?, ["a", "b", "c", "d"]);
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_signature_zero_is_unchanged_across_an_attach() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(0, "z", 150.0)]).await?;
    assert_eq!(
        rows(&s.store).await?.keys().copied().collect::<Vec<_>>(),
        [0],
        "stored under Drasi's own signature"
    );
    // Drasi keys its result set by the same number: re-attaching finds nothing to change.
    s.drasi
        .set(1, vec![(0, json!({"id": "z", "total": 150.0}))]);
    s.reaction.start().await?;
    s.deliver(2, vec![add(2, "b", 200.0)]).await?;
    // Both attaches (the first result's and the restart's) found nothing to change.
    let stats = s.reaction.stats();
    assert_eq!((stats.rebuilds, stats.continues), (0, 2), "{stats:?}");
    assert_eq!(s.ids().await?, ["z", "b"]);
    s.runtime.shutdown().await?;
    Ok(())
}

fn row(signature: u64, id: &str, total: f64) -> (u64, Json) {
    (signature, json!({"id": id, "total": total}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_between_results_is_rebuilt_from_drasi() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    s.deliver(2, vec![add(2, "b", 200.0)]).await?;
    let drasi = [row(1, "a", 150.0), row(2, "b", 200.0), row(3, "c", 300.0)];
    s.drasi.set(2, drasi[..2].to_vec());
    // An operator clears the query through the same runtime (`DELETE /queries/{id}`).
    s.runtime.handle().clear_query(Q).await?;
    s.drasi.set(3, drasi.to_vec());
    s.deliver(3, vec![add(3, "c", 300.0)]).await?;
    // a and b come back from Drasi's snapshot, not only the result after the clear.
    s.converges_to(&drasi).await?;
    s.deliver(4, vec![add(4, "d", 400.0)]).await?;
    assert_eq!(s.ids().await?, ["a", "b", "c", "d"]);
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_of_a_quiet_query_is_rebuilt_without_a_result() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    s.drasi.set(1, vec![row(1, "a", 150.0)]);
    s.runtime.handle().clear_query(Q).await?;
    s.converges_to(&[row(1, "a", 150.0)]).await?;
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_commit_past_ours_loses_no_later_result() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    // Another writer (an HTTP ingest) commits sequence 2, which our mapping uses next: without
    // a re-attach ours would be answered as a redelivery and skipped.
    s.runtime
        .handle()
        .submit_and_wait(Setup::foreign(2))
        .await?;
    s.drasi.set(2, vec![row(1, "a", 150.0), row(2, "b", 200.0)]);
    s.deliver(2, vec![add(2, "b", 200.0)]).await?;
    s.deliver(3, vec![add(3, "c", 300.0)]).await?;
    // Drasi's rows, with the foreign row gone and nothing of ours skipped.
    assert_eq!(s.ids().await?, ["a", "b", "c"]);
    let (state, committed) = s.state()?;
    assert_eq!(state, QueryState::Running);
    // The foreign 2, the rebuild as 3, Drasi's 3 as 4.
    assert_eq!(committed, Some(4));
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_answered_as_skipped_is_repaired_without_another_result() -> anyhow::Result<()> {
    // Commits wait 300 ms for company, so the foreign event below is still queued (and the
    // committed sequence unchanged) when our result arrives: only the runtime's "skipped"
    // answer tells the reaction that its result was not committed.
    let s = setup_with(RuntimeConfig::new().group_commit(1000, Duration::from_millis(300))).await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    s.runtime.handle().submit(Setup::foreign(2)).await?;
    s.drasi.set(2, vec![row(1, "a", 150.0), row(2, "b", 200.0)]);
    s.deliver(2, vec![add(2, "b", 200.0)]).await?;
    s.converges_to(&[row(1, "a", 150.0), row(2, "b", 200.0)])
        .await?;
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_fetch_is_retried_without_another_result() -> anyhow::Result<()> {
    let s = setup().await?;
    s.deliver(1, vec![add(1, "a", 150.0)]).await?;
    // 2 never arrives; 3 does, but Drasi's snapshot cannot be fetched the first time.
    s.drasi.set(
        3,
        vec![row(1, "a", 150.0), row(2, "b", 200.0), row(3, "c", 300.0)],
    );
    s.drasi.failures.store(1, Ordering::SeqCst);
    let refused = s
        .reaction
        .enqueue_query_result(result(3, vec![add(3, "c", 300.0)]))
        .await;
    assert!(refused.is_err(), "the fetch failed");
    // Drasi has dropped result 3 and sends nothing more: the reaction retries on its own.
    s.converges_to(&[row(1, "a", 150.0), row(2, "b", 200.0), row(3, "c", 300.0)])
        .await?;
    s.deliver(4, vec![add(4, "d", 400.0)]).await?;
    assert_eq!(s.ids().await?, ["a", "b", "c", "d"]);
    s.runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_attach_lets_other_tasks_run() -> anyhow::Result<()> {
    let s = setup().await?;
    let snapshot: Vec<(u64, Json)> = (1..=20_000)
        .map(|i| row(i, &format!("r{i}"), 150.0))
        .collect();
    s.drasi.set(5, snapshot);
    let ticks = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    *s.drasi.probe.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((Arc::clone(&ticks), Arc::clone(&seen)));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    // One executor thread: the ticker only moves while the attach gives the thread up.
    s.deliver(6, vec![add(20_001, "last", 150.0)]).await?;
    ticker.abort();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 20_000);
    assert!(
        seen.last() > seen.first(),
        "the executor thread was held through the whole snapshot: {:?}..{:?}",
        seen.first(),
        seen.last()
    );
    assert_eq!(rows(&s.store).await?.len(), 20_001);
    s.runtime.shutdown().await?;
    Ok(())
}
