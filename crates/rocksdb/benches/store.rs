//! Store benchmark: every number is printed next to raw RocksDB measured in the same run,
//! because absolute times drift on shared machines while ratios hold.
//!
//! Run with `cargo bench -p liveresults-rocksdb --bench store` (`BENCH_ROWS` scales the
//! 1M-row sections down for a quick look).

use std::path::Path;
use std::time::{Duration, Instant};

use liveresults_core::{
    Commit, LiveResultsWriter, MemoryStore, ResultStore, RowMutation, SequenceSpan,
};
use liveresults_rocksdb::rocksdb::{
    ColumnFamilyDescriptor, IteratorMode, WriteBatch, WriteOptions, DB,
};
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
    } else {
        format!("{:.0}k", rate / 1e3)
    }
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

/// Rounds per apply configuration; the median of each column is reported. The store and the
/// raw baselines run alternately within every round, so machine noise hits both alike.
const APPLY_ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn bench_apply(batch: usize, total: u64) -> ApplyResult {
    let mut rounds = Vec::with_capacity(APPLY_ROUNDS);
    for _ in 0..APPLY_ROUNDS {
        rounds.push(apply_round(batch, total).await);
    }
    let column = |f: fn(&ApplyResult) -> f64| median(rounds.iter().map(f).collect());
    ApplyResult {
        memory: column(|r| r.memory),
        store: column(|r| r.store),
        raw: column(|r| r.raw),
        raw_multi_get: column(|r| r.raw_multi_get),
        ratio: column(|r| r.store / r.raw),
    }
}

struct ApplyResult {
    /// Median of the per-round store / raw ratios.
    ratio: f64,
    memory: f64,
    store: f64,
    raw: f64,
    raw_multi_get: f64,
}

async fn apply_round(batch: usize, total: u64) -> ApplyResult {
    let opts = RocksStoreOptions::new();
    let value = vec![7u8; ROW_BYTES];
    let batches = total / batch as u64;

    let memory = MemoryStore::new();
    let t = Instant::now();
    for b in 0..batches {
        let muts: Vec<_> = (0..batch as u64)
            .map(|i| RowMutation::upsert(signature(b * batch as u64 + i), &value))
            .collect();
        memory
            .commit(
                QUERY,
                Commit::sequenced(&muts, SequenceSpan::single(b + 1), b""),
            )
            .await
            .unwrap();
    }
    let memory_rate = rate(total, t.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), opts.clone()).await.unwrap();
    let t = Instant::now();
    for b in 0..batches {
        let muts: Vec<_> = (0..batch as u64)
            .map(|i| RowMutation::upsert(signature(b * batch as u64 + i), &value))
            .collect();
        store
            .commit(
                QUERY,
                Commit::sequenced(&muts, SequenceSpan::single(b + 1), b""),
            )
            .await
            .unwrap();
    }
    let store_rate = rate(total, t.elapsed());
    assert_eq!(store.row_count(QUERY).await.unwrap() as u64, total);
    store.close().await.unwrap();

    let raw_dir = tempfile::tempdir().unwrap();
    let raw = open_raw(raw_dir.path(), &opts);
    let cf = raw.cf_handle("rows").unwrap();
    let write = WriteOptions::default();
    let t = Instant::now();
    for b in 0..batches {
        let mut wb = WriteBatch::default();
        for i in 0..batch as u64 {
            wb.put_cf(cf, row_key(signature(b * batch as u64 + i)), &value);
        }
        raw.write_opt(wb, &write).unwrap();
    }
    let raw_rate = rate(total, t.elapsed());
    drop(raw);

    // The naive exact-count approach: one batched existence read per commit.
    let mg_dir = tempfile::tempdir().unwrap();
    let raw = open_raw(mg_dir.path(), &opts);
    let cf = raw.cf_handle("rows").unwrap();
    let t = Instant::now();
    let mut count = 0u64;
    for b in 0..batches {
        let keys: Vec<_> = (0..batch as u64)
            .map(|i| row_key(signature(b * batch as u64 + i)))
            .collect();
        let existing = raw.batched_multi_get_cf(cf, &keys, false);
        let mut wb = WriteBatch::default();
        for (key, found) in keys.iter().zip(existing) {
            count += u64::from(found.unwrap().is_none());
            wb.put_cf(cf, key, &value);
        }
        raw.write_opt(wb, &write).unwrap();
    }
    assert_eq!(count, total);
    let raw_mg_rate = rate(total, t.elapsed());

    ApplyResult {
        memory: memory_rate,
        store: store_rate,
        raw: raw_rate,
        raw_multi_get: raw_mg_rate,
        ratio: store_rate / raw_rate,
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
        "liveresults store benchmark ({} cores, {ROW_BYTES}-byte rows, WAL on, no fsync)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| apply, batch size (median of 5 alternating rounds) | memory rows/s | rocksdb store rows/s | raw WriteBatch rows/s | raw + multi_get rows/s | store / raw |");
    println!("|---|---|---|---|---|---|");
    for (batch, total) in [(1usize, 20_000u64), (100, 200_000), (1000, 500_000)] {
        let r = bench_apply(batch, total).await;
        println!(
            "| {batch} | {} | {} | {} | {} | **{:.2}×** |",
            human(r.memory),
            human(r.store),
            human(r.raw),
            human(r.raw_multi_get),
            r.ratio
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let raw_dir = tempfile::tempdir().unwrap();
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
    println!("| reopen + row_count | {reopen_time:.2?} | — | — |");
    println!(
        "| first commit after reopen (index rebuild, key-only scan) | {first_commit:.2?} | — | — |"
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
