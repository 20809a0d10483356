//! liveresults inside a real drasi-lib: the two Order queries fed by the application source,
//! `LiveResultsReaction` storing their results, compared with Drasi's own snapshots.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    drasi_rows, our_rows, push, push_all, start_drasi, wait_converged, Workload, BIG, QUERIES,
    SPENT,
};
use drasi_lib::ComponentStatus;
use liveresults_core::formats::{Diff, Event, ResultBatch};
use liveresults_core::row::Value;
use liveresults_core::testing::env_number;
use liveresults_core::{MemoryStore, ResultStore};
use liveresults_drasi::LiveResultsReaction;
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
use liveresults_runtime::{Runtime, RuntimeConfig};

const CONVERGE: Duration = Duration::from_secs(60);

/// The seeded random workload over both queries; at checkpoints and at the end our rows of
/// each query, keyed by signature, equal drasi-lib's `fetch_snapshot`, with equal row counts.
async fn random_workload_matches_drasi(store: Arc<dyn ResultStore>) -> anyhow::Result<()> {
    let ops: usize = env_number("LIVERESULTS_DRASI_OPS", 2_400);
    let runtime = Runtime::start(Arc::clone(&store), RuntimeConfig::new(), Vec::new()).await?;
    let reaction = LiveResultsReaction::new("liveresults", QUERIES, runtime.handle());
    let (core, source) = start_drasi(reaction.clone()).await?;
    let mut workload = Workload::new(0x5EED_0001);
    let mut checkpoints = 0;
    for i in 1..=ops {
        push(&source, &workload.next_op()).await?;
        if i % 600 == 0 {
            let at = wait_converged(&core, &*store, &reaction, CONVERGE).await?;
            assert!(at.rows.iter().all(|&r| r > 0), "{at:?}");
            checkpoints += 1;
        }
    }
    let at = wait_converged(&core, &*store, &reaction, CONVERGE).await?;
    let stats = reaction.stats();
    eprintln!("{ops} ops, {checkpoints} checkpoints, final {at:?}, {stats:?}");
    // Every Drasi result went through the runtime; nothing had to be rebuilt.
    assert_eq!(stats.rebuilds, 0, "{stats:?}");
    assert!(stats.results >= ops as u64 / 2, "{stats:?}");
    for (query, as_of) in QUERIES.iter().zip(&at.as_of) {
        let status = runtime
            .handle()
            .status(query)
            .ok_or_else(|| anyhow::anyhow!("no status for {query}"))?;
        // Without an upstream restart our sequence is Drasi's.
        assert_eq!(status.sequence, Some(*as_of), "{query}: {status:?}");
        assert_eq!(status.skipped, 0, "{query}: {status:?}");
        assert_eq!(status.gaps, 0, "{query}: {status:?}");
    }
    core.stop().await?;
    runtime.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workload_on_rocksdb_matches_drasi_snapshots() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(RocksStore::open(dir.path(), RocksStoreOptions::new()).await?);
    random_workload_matches_drasi(store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workload_on_memory_matches_drasi_snapshots() -> anyhow::Result<()> {
    random_workload_matches_drasi(Arc::new(MemoryStore::new())).await
}

/// An in-memory drasi-lib restarts and numbers its results from 1 again while our RocksDB store
/// still holds the sequences of the first run: its new results must all be applied, none
/// skipped as a redelivery, and the store must end equal to the new Drasi's results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_drasi_counting_from_one_is_not_skipped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut workload = Workload::new(0x5EED_0002);

    // First host run: 800 changes, so our sequences are far beyond what the second run reaches
    // before the check. The RocksDB store stays open across the two runs: drasi-lib's tasks
    // keep the first reaction (and through it the database) alive for the rest of the process,
    // so an in-process reopen would find it locked; the separate-process restart is what the
    // SIGKILL test exercises.
    let store = Arc::new(RocksStore::open(dir.path(), RocksStoreOptions::new()).await?);
    let first_sequences = {
        let runtime = Runtime::start(
            store.clone() as Arc<dyn ResultStore>,
            RuntimeConfig::new(),
            Vec::new(),
        )
        .await?;
        let reaction = LiveResultsReaction::new("liveresults", QUERIES, runtime.handle());
        let (core, source) = start_drasi(reaction.clone()).await?;
        for _ in 0..800 {
            push(&source, &workload.next_op()).await?;
        }
        wait_converged(&core, &*store, &reaction, CONVERGE).await?;
        core.shutdown().await?;
        let handle = runtime.handle();
        let sequences: Vec<u64> = QUERIES
            .iter()
            .map(|q| handle.status(q).and_then(|s| s.sequence).unwrap_or(0))
            .collect();
        runtime.shutdown().await?;
        sequences
    };
    assert!(
        first_sequences.iter().all(|&s| s > 100),
        "{first_sequences:?}"
    );

    // Second host run: a fresh in-memory drasi-lib (empty: the application source keeps
    // nothing) and a fresh runtime on the same store. The driver pushes a few changes first, then its
    // current nodes again, then more changes.
    let runtime = Runtime::start(
        store.clone() as Arc<dyn ResultStore>,
        RuntimeConfig::new(),
        Vec::new(),
    )
    .await?;
    let reaction = LiveResultsReaction::new("liveresults", QUERIES, runtime.handle());
    let (core, source) = start_drasi(reaction.clone()).await?;
    push_all(&source, &workload).await?;
    for _ in 0..60 {
        push(&source, &workload.next_op()).await?;
    }
    let at = wait_converged(&core, &*store, &reaction, CONVERGE).await?;
    let stats = reaction.stats();
    eprintln!("first run sequences {first_sequences:?}; second run {at:?}, {stats:?}");
    for (i, query) in QUERIES.iter().enumerate() {
        // Drasi counted from 1 and is still below where we were: without the mapping every one
        // of these results would have been skipped.
        assert!(
            at.as_of[i] < first_sequences[i],
            "{query}: {at:?} vs {first_sequences:?}"
        );
        let status = runtime
            .handle()
            .status(query)
            .ok_or_else(|| anyhow::anyhow!("no status for {query}"))?;
        assert_eq!(status.skipped, 0, "{query}: {status:?}");
        assert!(
            status.sequence > Some(first_sequences[i]),
            "{query}: {status:?} vs first run {first_sequences:?}"
        );
    }
    // The attach on start found Drasi empty and our rows stale: one rebuild per query, which
    // deleted what the first run had left.
    assert_eq!(stats.rebuilds, QUERIES.len() as u64, "{stats:?}");
    assert_eq!(stats.redeliveries, 0, "{stats:?}");
    // Spot check one row through both APIs, beyond the full comparison above.
    let (_, theirs) = drasi_rows(&core, SPENT).await?;
    let (count, ours) = our_rows(&*store, SPENT).await?;
    assert_eq!(count as usize, theirs.len());
    assert_eq!(ours, theirs);
    let (_, big) = drasi_rows(&core, BIG).await?;
    assert!(!big.is_empty());
    core.stop().await?;
    runtime.shutdown().await?;
    RocksStore::clone(&store).close().await?;
    Ok(())
}

/// A query stopped and started again inside drasi-lib (an upstream restart within the process):
/// after it, our rows still equal Drasi's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_stopped_and_started_in_drasi_stays_equal() -> anyhow::Result<()> {
    let Converged {
        store,
        runtime,
        reaction,
        core,
        source,
        mut workload,
    } = converged_after_300_changes(0x5EED_0005).await?;
    for query in QUERIES {
        core.stop_query(query).await?;
        wait_status(&core, query, ComponentStatus::Stopped).await?;
        core.start_query(query).await?;
        wait_status(&core, query, ComponentStatus::Running).await?;
    }
    for _ in 0..300 {
        push(&source, &workload.next_op()).await?;
    }
    let at = wait_converged(&core, &*store, &reaction, CONVERGE).await?;
    eprintln!("after stop/start: {at:?}, {:?}", reaction.stats());
    core.shutdown().await?;
    runtime.shutdown().await?;
    Ok(())
}

/// Other writers on the same runtime, as the HTTP API is when served next to the reaction: an
/// operator's clear of one query and a foreign ingest into the other, mid-workload. Our rows
/// must end equal to Drasi's anyway, with no result skipped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_and_a_foreign_ingest_mid_workload_converge() -> anyhow::Result<()> {
    let Converged {
        store,
        runtime,
        reaction,
        core,
        source,
        mut workload,
    } = converged_after_300_changes(0x5EED_0006).await?;
    let handle = runtime.handle();
    handle.clear_query(BIG).await?;
    // A foreign commit that takes SPENT's next sequence (our next result's), with a row Drasi
    // never had.
    let committed = handle.status(SPENT).and_then(|s| s.sequence).unwrap_or(0);
    let foreign = Event::Change(ResultBatch {
        query_id: SPENT.to_owned(),
        sequence: committed + 1,
        timestamp_ms: None,
        diffs: vec![Diff::Add {
            data: Value::from(serde_json::json!({"customer": "mallory", "spent": 1.0})),
            signature: Some(7),
        }],
        metadata: None,
    });
    handle.submit_and_wait(foreign).await?;
    for _ in 0..300 {
        push(&source, &workload.next_op()).await?;
    }
    let at = wait_converged(&core, &*store, &reaction, CONVERGE).await?;
    eprintln!(
        "after a clear and a foreign ingest: {at:?}, {:?}",
        reaction.stats()
    );
    core.shutdown().await?;
    runtime.shutdown().await?;
    Ok(())
}

/// A memory store, the runtime, the reaction and drasi-lib, after 300 random changes (from
/// `seed`) have converged.
struct Converged {
    store: Arc<dyn ResultStore>,
    runtime: Runtime,
    reaction: LiveResultsReaction,
    core: drasi_lib::DrasiLib,
    source: drasi_source_application::ApplicationSourceHandle,
    workload: Workload,
}

async fn converged_after_300_changes(seed: u64) -> anyhow::Result<Converged> {
    let store: Arc<dyn ResultStore> = Arc::new(MemoryStore::new());
    let runtime = Runtime::start(Arc::clone(&store), RuntimeConfig::new(), Vec::new()).await?;
    let reaction = LiveResultsReaction::new("liveresults", QUERIES, runtime.handle());
    let (core, source) = start_drasi(reaction.clone()).await?;
    let mut workload = Workload::new(seed);
    for _ in 0..300 {
        push(&source, &workload.next_op()).await?;
    }
    wait_converged(&core, &*store, &reaction, CONVERGE).await?;
    Ok(Converged {
        store,
        runtime,
        reaction,
        core,
        source,
        workload,
    })
}

async fn wait_status(
    core: &drasi_lib::DrasiLib,
    query: &str,
    want: ComponentStatus,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + CONVERGE;
    while core.get_query_status(query).await? != want {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{query} never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
