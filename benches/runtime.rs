//! Runtime benchmark: NDJSON result diffs → runtime → RocksDB, next to committing the same
//! (already parsed and encoded) mutations straight through the store, in the same run.
//!
//! Run with `cargo bench -p liveresults --bench runtime` (`BENCH_EVENTS` to scale).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults::core::codec::row::encode_row;
use liveresults::core::formats::{parse_event, Event, RowOp};
use liveresults::core::signature::KeyColumns;
use liveresults::runtime::{run_ndjson, Runtime, RuntimeConfig, DEFAULT_MAX_LINE_BYTES};
use liveresults::{Commit, ResultStore, RocksStore, RocksStoreOptions, RowMutation, SequenceSpan};
use serde_json::json;

/// Rows are allocated by the source task and freed by the pipeline on another thread; the
/// system allocator handles that poorly, so the benchmark (like the `liveresults` binary)
/// uses mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIFFS_PER_EVENT: u64 = 10;

/// One event's mutations: `(signature, Some(encoded row) | None)`.
type Encoded = Vec<(u64, Option<Vec<u8>>)>;
const SIGNATURES: u64 = 200_000;

/// drasi-lib results: mostly ADDs of fresh rows, some UPDATEs and DELETEs of earlier ones.
fn ndjson(events: u64) -> String {
    let mut out = String::with_capacity(events as usize * 1500);
    for seq in 1..=events {
        let results: Vec<_> = (0..DIFFS_PER_EVENT)
            .map(|k| {
                let id = (seq * DIFFS_PER_EVENT + k) % SIGNATURES;
                let row = json!({"id": id, "customer": format!("customer-{}", id % 977), "total": (id % 1000) as f64 / 4.0, "status": "open"});
                match k {
                    8 => json!({"type": "UPDATE", "data": row, "before": row, "after": row, "row_signature": id}),
                    9 => json!({"type": "DELETE", "data": row, "row_signature": (id + SIGNATURES / 2) % SIGNATURES}),
                    _ => json!({"type": "ADD", "data": row, "row_signature": id}),
                }
            })
            .collect();
        let event = json!({"query_id": "bench", "sequence": seq, "timestamp": 1_700_000_000_000u64 + seq, "results": results});
        out.push_str(&event.to_string());
        out.push('\n');
    }
    out
}

/// Parses one line and returns the mutations the runtime would commit for it.
fn encode_line(line: &str) -> Encoded {
    let Ok(Event::Change(batch)) = parse_event(line) else {
        panic!("bench input")
    };
    let mut ops = Vec::new();
    for diff in &batch.diffs {
        diff.mutations(&KeyColumns::WholeRow, &mut ops);
    }
    ops.iter()
        .map(|op| match op {
            RowOp::Upsert { signature, row } => (*signature, Some(encode_row(row))),
            RowOp::Delete { signature } => (*signature, None),
        })
        .collect()
}

/// Commits events in groups of `group`, each group one commit spanning its sequences;
/// `encode` turns one input item into its mutations (inside the timed loop).
async fn commit_groups<'a, T>(
    items: &'a [T],
    group: usize,
    encode: impl Fn(&'a T) -> Cow<'a, Encoded>,
) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    let t = Instant::now();
    for (i, chunk) in items.chunks(group).enumerate() {
        let encoded: Vec<Cow<'a, Encoded>> = chunk.iter().map(&encode).collect();
        let muts: Vec<_> = encoded
            .iter()
            .flat_map(|e| e.iter())
            .map(|(sig, data)| RowMutation {
                row_signature: *sig,
                data: data.as_deref(),
            })
            .collect();
        let first = (i * group) as u64 + 1;
        let span = SequenceSpan {
            first,
            last: first + chunk.len() as u64 - 1,
        };
        store
            .commit("bench", Commit::sequenced(&muts, span, b""))
            .await
            .unwrap();
    }
    let elapsed = t.elapsed();
    store.close().await.unwrap();
    elapsed
}

/// A runtime (no reactions) over a fresh RocksDB store; keep the directory alive while it runs.
async fn start_runtime() -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        RocksStore::open(dir.path(), RocksStoreOptions::new())
            .await
            .unwrap(),
    );
    let runtime = Runtime::start(store, RuntimeConfig::new(), Vec::new())
        .await
        .unwrap();
    (dir, runtime)
}

/// Pre-parsed events through the runtime: its own cost without JSON parsing.
async fn parsed_through_runtime(input: &str) -> Duration {
    let events: Vec<Event> = input.lines().map(|l| parse_event(l).unwrap()).collect();
    let (_dir, runtime) = start_runtime().await;
    let handle = runtime.handle();
    let t = Instant::now();
    let mut last = None;
    for event in events {
        last = Some(handle.submit_tracked(event).await.unwrap());
    }
    last.unwrap().wait().await.unwrap();
    let elapsed = t.elapsed();
    runtime.shutdown().await.unwrap();
    elapsed
}

async fn through_runtime(input: &str) -> (Duration, u64) {
    let (_dir, runtime) = start_runtime().await;
    let t = Instant::now();
    run_ndjson(
        input.as_bytes(),
        &runtime.handle(),
        DEFAULT_MAX_LINE_BYTES,
        |_| {},
    )
    .await
    .unwrap();
    let elapsed = t.elapsed();
    let commits = runtime.handle().metrics().commits;
    runtime.shutdown().await.unwrap();
    (elapsed, commits)
}

fn per_sec(n: u64, d: Duration) -> String {
    format!("{:.0}k", n as f64 / d.as_secs_f64() / 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let diffs = events * DIFFS_PER_EVENT;
    let input = ndjson(events);
    let t = Instant::now();
    let pre: Vec<Encoded> = input.lines().map(encode_line).collect();
    let parse = t.elapsed();
    println!("runtime benchmark: {events} drasi-lib events × {DIFFS_PER_EVENT} diffs, {} MiB of NDJSON, RocksDB, WAL on, no fsync\n", input.len() >> 20);
    let (runtime_time, commits) = through_runtime(&input).await;
    let group = (events / commits.max(1)).max(1) as usize;
    let lines: Vec<&str> = input.lines().collect();
    // The hand-written loop the runtime replaces: parse, sign, encode and commit inline.
    let direct_ndjson = commit_groups(&lines, group, |line| Cow::Owned(encode_line(line))).await;
    let parsed_runtime = parsed_through_runtime(&input).await;
    let direct_grouped = commit_groups(&pre, group, Cow::Borrowed).await;
    let ratio = |d: Duration| d.as_secs_f64() / runtime_time.as_secs_f64();
    println!("| path | diffs/s | NDJSON runtime / this |");
    println!("|---|---|---|");
    println!("| NDJSON → runtime → RocksDB ({commits} group commits, ~{group} events each) | **{}** | — |", per_sec(diffs, runtime_time));
    println!("| NDJSON → parse, sign, encode, commit inline (same grouping, no runtime) | {} | **{:.2}×** |", per_sec(diffs, direct_ndjson), ratio(direct_ndjson));
    println!(
        "| pre-parsed events → runtime → RocksDB | {} | {:.2}× |",
        per_sec(diffs, parsed_runtime),
        ratio(parsed_runtime)
    );
    println!(
        "| pre-encoded mutations → store commits (same grouping) | {} | {:.2}× |",
        per_sec(diffs, direct_grouped),
        ratio(direct_grouped)
    );
    println!(
        "| parse + sign + encode only (one thread, no store) | {} | — |",
        per_sec(diffs, parse)
    );
}
