//! Store benchmark: every number is printed next to baselines measured in the same run
//! (alternating rounds, medians), because absolute times drift on shared machines while
//! ratios hold: raw RocksDB with the store's options, and a re-creation of Drasi's RocksDB
//! live-results writer (see `store/small.rs`).
//!
//! Run with `cargo bench -p liveresults-rocksdb --bench store` (`BENCH_ROWS` scales the
//! 1M-row sections down for a quick look, `BENCH_DIR` picks the directory the databases go
//! to; it must be on a real disk for the fsync numbers to mean anything).

#[path = "store/small.rs"]
mod small;

use std::path::Path;
use std::time::{Duration, Instant};

use liveresults_core::{Commit, LiveResultsWriter, ResultStore, RowMutation, SequenceSpan};
use liveresults_rocksdb::rocksdb::{ColumnFamilyDescriptor, IteratorMode, WriteBatch, DB};
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};

const ROW_BYTES: usize = 100;
const QUERY: &str = "bench-query";

fn row_key(sig: u64) -> Vec<u8> {
    let mut key = (QUERY.len() as u16).to_be_bytes().to_vec();
    key.extend_from_slice(QUERY.as_bytes());
    key.extend_from_slice(&sig.to_be_bytes());
    key
}

/// Signatures spread like hashes, so neither side benefits from sequential keys.
fn signature(i: u64) -> u64 {
    xorshift(i.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn open_raw(path: &Path, opts: &RocksStoreOptions) -> DB {
    let cfs = ["rows", "outbox", "meta", "checkpoints"]
        .map(|name| ColumnFamilyDescriptor::new(name, opts.cf_options()));
    DB::open_cf_descriptors(&opts.db_options(), path, cfs).expect("open raw rocksdb")
}

fn rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.0}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// Whether `BENCH_ONLY` (a comma-separated list of `small`, `sync`, `large`) selects a
/// section; every section runs when it is unset.
fn section(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn current_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A fresh directory for one database, under `BENCH_DIR` when set.
fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

async fn load(store: &RocksStore, raw: &DB, rows: u64) {
    let value = vec![3u8; ROW_BYTES];
    let cf = raw.cf_handle("rows").unwrap();
    for (b, start) in (0..rows).step_by(1000).enumerate() {
        let end = (start + 1000).min(rows);
        let muts: Vec<_> = (start..end)
            .map(|i| RowMutation::upsert(signature(i), &value))
            .collect();
        store
            .commit(
                QUERY,
                Commit::sequenced(&muts, SequenceSpan::single(b as u64 + 1), b""),
            )
            .await
            .unwrap();
        let mut wb = WriteBatch::default();
        for i in start..end {
            wb.put_cf(cf, row_key(signature(i)), &value);
        }
        raw.write(wb).unwrap();
    }
}

fn naive_count(raw: &DB) -> u64 {
    let cf = raw.cf_handle("rows").unwrap();
    raw.iterator_cf(cf, IteratorMode::Start).count() as u64
}

fn naive_clear(raw: &DB) -> u64 {
    let cf = raw.cf_handle("rows").unwrap();
    let mut deleted = 0;
    let keys: Vec<_> = raw
        .iterator_cf(cf, IteratorMode::Start)
        .map(|kv| kv.unwrap().0)
        .collect();
    for chunk in keys.chunks(1000) {
        let mut wb = WriteBatch::default();
        for key in chunk {
            wb.delete_cf(cf, key);
            deleted += 1;
        }
        raw.write(wb).unwrap();
    }
    deleted
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let big: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "liveresults store benchmark ({} cores, {ROW_BYTES}-byte rows, WAL on, no fsync unless stated)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if section("small") {
        println!("Small commits (median of 7 rounds, contenders in rotating order; callers commit concurrently, each to its own query):\n");
        small::small_commits().await;
    }
    if section("sync") {
        small::synced_commits().await;
    }
    if !section("large") {
        return;
    }

    let dir = scratch_dir();
    let raw_dir = scratch_dir();
    let opts = RocksStoreOptions::new();
    let store = RocksStore::open(dir.path(), opts.clone()).await.unwrap();
    let raw = open_raw(raw_dir.path(), &opts);
    load(&store, &raw, big).await;

    println!("\n| at {big} rows | liveresults | naive on raw RocksDB | speed-up |");
    println!("|---|---|---|---|");
    let calls = 10_000u32;
    let t = Instant::now();
    for _ in 0..calls {
        assert_eq!(store.row_count(QUERY).await.unwrap() as u64, big);
    }
    let count_time = t.elapsed() / calls;
    let t = Instant::now();
    assert_eq!(naive_count(&raw), big);
    let naive_count_time = t.elapsed();
    println!(
        "| row_count | {count_time:.2?} | {naive_count_time:.2?} (scan) | {:.0}× |",
        naive_count_time.as_secs_f64() / count_time.as_secs_f64()
    );

    // Snapshot before clear, on the same data.
    store.flush().await.unwrap();
    let base_rss = current_rss_kib();
    reset_peak_rss();
    let t = Instant::now();
    let mut snap = store.snapshot(QUERY, 4096).await.unwrap();
    let mut rows = 0u64;
    while let Some(chunk) = snap.next_chunk().await.unwrap() {
        rows += chunk.len() as u64;
    }
    let snap_time = t.elapsed();
    assert_eq!(rows, big);
    let extra_mib = peak_rss_kib().saturating_sub(base_rss) as f64 / 1024.0;
    let t = Instant::now();
    let raw_rows = raw
        .iterator_cf(raw.cf_handle("rows").unwrap(), IteratorMode::Start)
        .count() as u64;
    let raw_scan = t.elapsed();
    assert_eq!(raw_rows, big);
    println!(
        "| chunked snapshot | {} rows/s, +{extra_mib:.1} MiB peak RSS | {} rows/s (raw iterator) | {:.2}× |",
        human(rate(rows, snap_time)), human(rate(raw_rows, raw_scan)), raw_scan.as_secs_f64() / snap_time.as_secs_f64()
    );

    // Reopen: row_count must not need a scan.
    store.close().await.unwrap();
    let t = Instant::now();
    let store = RocksStore::open(dir.path(), opts.clone()).await.unwrap();
    let n = store.row_count(QUERY).await.unwrap() as u64;
    let reopen_time = t.elapsed();
    assert_eq!(n, big);
    let value = vec![1u8; ROW_BYTES];
    let t = Instant::now();
    store
        .commit(
            QUERY,
            Commit::sequenced(
                &[RowMutation::upsert(signature(big + 1), &value)],
                SequenceSpan::single(1_000_000_000),
                b"",
            ),
        )
        .await
        .unwrap();
    let first_commit = t.elapsed();
    // The next commits run while the index is rebuilt in the background: none may stall,
    // and the count stays exact (each commit inserts 5 rows and deletes 5 loaded ones).
    let mut slowest = Duration::ZERO;
    let after = (big / 5).min(1000);
    for b in 0..after {
        let muts: Vec<_> = (0..5)
            .map(|i| RowMutation::upsert(signature(big + 2 + b * 5 + i), &value))
            .chain((0..5).map(|i| RowMutation::delete(signature(b * 5 + i))))
            .collect();
        let t = Instant::now();
        store
            .commit(
                QUERY,
                Commit::sequenced(&muts, SequenceSpan::single(1_000_000_001 + b), b""),
            )
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(store.row_count(QUERY).await.unwrap() as u64, big + 1);
    println!("| reopen + row_count | {reopen_time:.2?} | — | — |");
    println!(
        "| first commit after reopen (index rebuilt in the background) | {first_commit:.2?} | — | — |"
    );
    println!(
        "| slowest of the next {after} commits (10 rows each, count stays exact) | {slowest:.2?} | — | — |"
    );

    let t = Instant::now();
    store.clear(QUERY).await.unwrap();
    let clear_time = t.elapsed();
    assert_eq!(store.row_count(QUERY).await.unwrap(), 0);
    let t = Instant::now();
    assert_eq!(naive_clear(&raw), big);
    let naive_clear_time = t.elapsed();
    println!(
        "| clear | {clear_time:.2?} | {naive_clear_time:.2?} (iterate + delete) | {:.0}× |",
        naive_clear_time.as_secs_f64() / clear_time.as_secs_f64()
    );
    store.close().await.unwrap();
}
