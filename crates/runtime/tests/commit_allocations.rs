//! Heap allocations per committed diff on the runtime's commit path, counted by a global
//! allocator: a guard against per-commit bookkeeping creeping back (a row cloned for the
//! reactions, a query id copied per status update, buffers regrown from empty per commit).
//!
//! Counts, not timings, so the bounds hold on a loaded machine. Everything runs on one
//! current-thread runtime over the in-memory store; the events are built before counting
//! starts, so JSON parsing (core's, not the runtime's) is not counted. The allocations of the
//! store itself are counted: they are the same before and after any runtime change. This file
//! holds one test so that no other test allocates while it counts.

// Counting allocations means implementing `GlobalAlloc`, which is unsafe by definition; the
// implementation only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use liveresults_core::codec::row::encode_row;
use liveresults_core::formats::{Event, RowOp};
use liveresults_core::signature::KeyColumns;
use liveresults_core::{Commit, MemoryStore, ResultStore, RowMutation, SequenceSpan};
use liveresults_runtime::testing::{add, delete, lib, update};
use liveresults_runtime::{Delivery, Reaction, ReactionError, Runtime, RuntimeConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DIFFS_PER_EVENT: u64 = 10;
/// Events per ingest-sized atomic batch, and batches (or single events) measured.
const BATCH_EVENTS: u64 = 100;
const ROUNDS: u64 = 20;

/// A reaction that does nothing: the deliveries themselves are what is counted.
struct Quiet;

#[async_trait]
impl Reaction for Quiet {
    fn id(&self) -> &str {
        "quiet"
    }
    async fn deliver(&self, _delivery: &Delivery) -> Result<(), ReactionError> {
        Ok(())
    }
}

/// Event `sequence` of query `q`: mostly ADDs, an UPDATE and a DELETE, as drasi-lib sends.
fn event(q: &str, sequence: u64) -> Event {
    let diffs: Vec<_> = (0..DIFFS_PER_EVENT)
        .map(|k| {
            let key = sequence * DIFFS_PER_EVENT + k;
            match k {
                8 => update(key - 8, 0, key as i64),
                9 => delete(key - 9),
                _ => add(key, key as i64),
            }
        })
        .collect();
    lib(q, sequence, &diffs)
}

fn events(q: &str, sequences: std::ops::Range<u64>) -> Vec<Event> {
    sequences.map(|s| event(q, s)).collect()
}

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Commits one batch's encoded mutations (`BATCH_EVENTS` sequences from `first`) to `store`.
async fn commit_encoded(store: &MemoryStore, muts: &[(u64, Option<Vec<u8>>)], first: u64) {
    let muts: Vec<RowMutation<'_>> = muts
        .iter()
        .map(|(sig, data)| RowMutation {
            row_signature: *sig,
            data: data.as_deref(),
        })
        .collect();
    let span = SequenceSpan {
        first,
        last: first + BATCH_EVENTS - 1,
    };
    // Any payload costs the store one copy, whatever its size.
    store
        .commit("alloc", Commit::sequenced(&muts, span, &[0u8; 64]))
        .await
        .expect("store commit");
}

/// The store's own allocations per diff: the same events' mutations (encoded beforehand)
/// committed straight to a fresh in-memory store, one commit per batch.
async fn store_only() -> f64 {
    let store = MemoryStore::new();
    let q = "alloc";
    let encode = |range: std::ops::Range<u64>| -> Vec<(u64, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for e in events(q, range) {
            let Event::Change(batch) = e else {
                unreachable!("change events")
            };
            let mut ops = Vec::new();
            for diff in &batch.diffs {
                diff.mutations(&KeyColumns::WholeRow, &mut ops);
            }
            out.extend(ops.iter().map(|op| match op {
                RowOp::Upsert { signature, row } => (*signature, Some(encode_row(row))),
                RowOp::Delete { signature } => (*signature, None),
            }));
        }
        out
    };
    commit_encoded(&store, &encode(1..BATCH_EVENTS + 1), 1).await;
    let batches: Vec<_> = (1..=ROUNDS)
        .map(|r| encode(r * BATCH_EVENTS + 1..(r + 1) * BATCH_EVENTS + 1))
        .collect();
    let before = allocations();
    for (r, muts) in (1..).zip(&batches) {
        commit_encoded(&store, muts, r * BATCH_EVENTS + 1).await;
    }
    // The mutation list built per commit above is the runtime's too (`GroupCommit::mutations`).
    (allocations() - before) as f64 / (ROUNDS * BATCH_EVENTS * DIFFS_PER_EVENT) as f64
}

/// Allocations per committed diff: atomic batches (`commit_batch`, what HTTP ingest does),
/// then single events (`submit_tracked`, what the NDJSON source does), on a warmed-up query.
async fn per_diff(reactions: Vec<Arc<dyn Reaction>>) -> (f64, f64) {
    let store: Arc<dyn ResultStore> = Arc::new(MemoryStore::new());
    let runtime = Runtime::start(store, RuntimeConfig::new(), reactions)
        .await
        .expect("runtime starts");
    let handle = runtime.handle();
    let q = "alloc";
    // Warm up: the pipeline, its status entry and the store's maps exist before counting.
    handle
        .commit_batch(q, events(q, 1..BATCH_EVENTS + 1))
        .await
        .expect("warm-up commit");
    let mut next = BATCH_EVENTS + 1;

    let batches: Vec<Vec<Event>> = (0..ROUNDS)
        .map(|r| events(q, next + r * BATCH_EVENTS..next + (r + 1) * BATCH_EVENTS))
        .collect();
    next += ROUNDS * BATCH_EVENTS;
    let before = allocations();
    for batch in batches {
        handle.commit_batch(q, batch).await.expect("batch commits");
    }
    let batched = allocations() - before;

    let singles = events(q, next..next + ROUNDS * BATCH_EVENTS);
    let before = allocations();
    let mut last = None;
    for event in singles {
        last = Some(handle.submit_tracked(event).await.expect("submitted"));
    }
    last.expect("events").wait().await.expect("committed");
    let single = allocations() - before;

    runtime.shutdown().await.expect("shutdown");
    let diffs = (ROUNDS * BATCH_EVENTS * DIFFS_PER_EVENT) as f64;
    (batched as f64 / diffs, single as f64 / diffs)
}

#[test]
fn commit_path_allocations_per_diff_stay_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = rt.block_on(store_only());
    let (batched, single) = rt.block_on(per_diff(Vec::new()));
    let (batched_r, single_r) = rt.block_on(per_diff(vec![Arc::new(Quiet)]));
    let own = |total: f64| total - store;
    println!(
        "allocations per committed diff ({DIFFS_PER_EVENT} diffs per event): the store alone \
         {store:.3}; the runtime's own on top: batches of {BATCH_EVENTS} events {:.3} \
         ({:.1} per commit), single events {:.3}; with a reaction: batches {:.3}, single \
         events {:.3}",
        own(batched),
        own(batched) * (BATCH_EVENTS * DIFFS_PER_EVENT) as f64,
        own(single),
        own(batched_r),
        own(single_r),
    );
    // Measured: before the bookkeeping was trimmed 0.131 / 0.423 / 2.941 / 3.231; after,
    // 0.010 / 0.206 / 0.119 / 0.313. The bounds sit between, with room for a dependency's
    // allocator use to move a little.
    assert!(own(batched) < 0.05, "batches: {:.3} per diff", own(batched));
    assert!(
        own(single) < 0.3,
        "single events: {:.3} per diff",
        own(single)
    );
    assert!(
        own(batched_r) < 0.5,
        "batches, reaction: {:.3}",
        own(batched_r)
    );
    assert!(
        own(single_r) < 0.6,
        "single events, reaction: {:.3}",
        own(single_r)
    );
}
