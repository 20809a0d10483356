//! Small commits side by side, in alternating rounds: this store, a re-creation of Drasi's
//! RocksDB live-results writer, and raw RocksDB `WriteBatch`es written synchronously.
//!
//! Drasi's writer (`drasi-index-rocksdb`, `live_results.rs`), re-created here rather than
//! depended on: an `OptimisticTransactionDB` with a `live_results` column family, keys
//! `{query_id}\0{signature: u64 BE}`; each `apply_mutations` copies the mutations into owned
//! `(key, Option<value>)` pairs, hops to `spawn_blocking`, fills one
//! `WriteBatchWithTransaction` and writes it with default write options. It keeps no count
//! (its `row_count` scans), no sequence and no outbox. It opens with this store's RocksDB
//! options, so only the write path differs.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use liveresults_core::{Commit, LiveResultsWriter, ResultStore, RowMutation, SequenceSpan};
use liveresults_rocksdb::rocksdb::{
    ColumnFamilyDescriptor, OptimisticTransactionDB, WriteBatch, WriteBatchWithTransaction,
    WriteOptions, DB,
};
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};

use super::{human, median, open_raw, scratch_dir, signature, ROW_BYTES};

/// Drasi's column family name.
const LIVE_RESULTS_CF: &str = "live_results";

/// The re-created Drasi writer.
#[derive(Clone)]
pub struct DrasiPattern {
    db: Arc<OptimisticTransactionDB>,
    sync: bool,
}

impl DrasiPattern {
    pub fn open(path: &std::path::Path, opts: &RocksStoreOptions, sync: bool) -> Self {
        let cf = ColumnFamilyDescriptor::new(LIVE_RESULTS_CF, opts.cf_options());
        let db = OptimisticTransactionDB::open_cf_descriptors(&opts.db_options(), path, [cf])
            .expect("open drasi-pattern db");
        DrasiPattern {
            db: Arc::new(db),
            sync,
        }
    }

    fn make_key(query_id: &str, row_signature: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(query_id.len() + 1 + 8);
        key.extend_from_slice(query_id.as_bytes());
        key.push(0x00);
        key.extend_from_slice(&row_signature.to_be_bytes());
        key
    }

    pub async fn apply_mutations(&self, query_id: &str, mutations: &[RowMutation<'_>]) {
        let db = Arc::clone(&self.db);
        let sync = self.sync;
        let owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = mutations
            .iter()
            .map(|m| {
                (
                    Self::make_key(query_id, m.row_signature),
                    m.data.map(<[u8]>::to_vec),
                )
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            let cf = db.cf_handle(LIVE_RESULTS_CF).expect("live_results cf");
            let mut batch = WriteBatchWithTransaction::<true>::default();
            for (key, data) in &owned {
                match data {
                    Some(value) => batch.put_cf(cf, key, value),
                    None => batch.delete_cf(cf, key),
                }
            }
            if sync {
                let mut write = WriteOptions::default();
                write.set_sync(true);
                db.write_opt(batch, &write)
            } else {
                db.write(batch)
            }
        })
        .await
        .expect("blocking task")
        .expect("drasi-pattern write");
    }
}

/// The mutations caller `c` sends as its commit number `b`: `batch` new rows.
fn rows<'v>(value: &'v [u8], c: usize, b: u64, batch: usize) -> Vec<RowMutation<'v>> {
    let base = ((c as u64) << 40) | (b * batch as u64);
    (0..batch as u64)
        .map(|i| RowMutation::upsert(signature(base + i), value))
        .collect()
}

/// How the store is driven: the seed trait's `apply_mutations` (rows only, as Drasi calls
/// it), or a sequenced commit with its outbox entry (as the runtime commits).
#[derive(Clone, Copy, PartialEq)]
pub enum StoreCall {
    Apply,
    Sequenced,
}

/// Seconds for `callers` concurrent callers (each its own query) to commit `commits`
/// batches of `batch` rows each.
pub async fn run_store(
    store: &RocksStore,
    call: StoreCall,
    batch: usize,
    callers: usize,
    commits: u64,
) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let value = vec![7u8; ROW_BYTES];
                let query = format!("q{c}");
                for b in 0..commits {
                    let muts = rows(&value, c, b, batch);
                    match call {
                        StoreCall::Apply => store.apply_mutations(&query, &muts).await.unwrap(),
                        StoreCall::Sequenced => {
                            let span = SequenceSpan::single(b + 1);
                            store
                                .commit(&query, Commit::sequenced(&muts, span, b""))
                                .await
                                .unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    for c in 0..callers {
        let count = store.row_count(&format!("q{c}")).await.unwrap() as u64;
        assert_eq!(count, commits * batch as u64, "exact count");
    }
    elapsed
}

async fn run_drasi(drasi: &DrasiPattern, batch: usize, callers: usize, commits: u64) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let drasi = drasi.clone();
            tokio::spawn(async move {
                let value = vec![7u8; ROW_BYTES];
                let query = format!("q{c}");
                for b in 0..commits {
                    drasi
                        .apply_mutations(&query, &rows(&value, c, b, batch))
                        .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// Raw synchronous writes on `callers` OS threads; with `serialise`, one at a time (each
/// commit then pays its own WAL write and, with `sync`, its own fsync).
fn run_raw(
    db: &DB,
    batch: usize,
    callers: usize,
    commits: u64,
    sync: bool,
    serialise: bool,
) -> f64 {
    let cf = db.cf_handle("rows").expect("rows cf");
    let mut write = WriteOptions::default();
    write.set_sync(sync);
    let one_at_a_time = Mutex::new(());
    let t = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..callers {
            let (write, one_at_a_time) = (&write, &one_at_a_time);
            scope.spawn(move || {
                let value = vec![7u8; ROW_BYTES];
                let query = format!("q{c}");
                let mut prefix = (query.len() as u16).to_be_bytes().to_vec();
                prefix.extend_from_slice(query.as_bytes());
                for b in 0..commits {
                    let mut wb = WriteBatch::default();
                    for m in rows(&value, c, b, batch) {
                        let mut key = prefix.clone();
                        key.extend_from_slice(&m.row_signature.to_be_bytes());
                        wb.put_cf(cf, key, m.data.unwrap_or_default());
                    }
                    let _turn = serialise.then(|| one_at_a_time.lock().unwrap());
                    db.write_opt(wb, write).unwrap();
                }
            });
        }
    });
    t.elapsed().as_secs_f64()
}

/// The contenders of the small-commit table, in column order.
#[derive(Clone, Copy)]
enum Contender {
    StoreApply,
    StoreSequenced,
    Drasi,
    Raw,
}

const CONTENDERS: [Contender; 4] = [
    Contender::StoreApply,
    Contender::StoreSequenced,
    Contender::Drasi,
    Contender::Raw,
];

/// Seconds one contender takes, each on a fresh database with the store's options.
async fn run_contender(contender: Contender, batch: usize, callers: usize, commits: u64) -> f64 {
    let opts = RocksStoreOptions::new();
    let dir = scratch_dir();
    match contender {
        Contender::StoreApply | Contender::StoreSequenced => {
            let call = match contender {
                Contender::StoreApply => StoreCall::Apply,
                _ => StoreCall::Sequenced,
            };
            let store = RocksStore::open(dir.path(), opts).await.unwrap();
            let seconds = run_store(&store, call, batch, callers, commits).await;
            store.close().await.unwrap();
            seconds
        }
        Contender::Drasi => {
            let drasi = DrasiPattern::open(dir.path(), &opts, false);
            run_drasi(&drasi, batch, callers, commits).await
        }
        Contender::Raw => {
            let db = open_raw(dir.path(), &opts);
            run_raw(&db, batch, callers, commits, false, false)
        }
    }
}

/// Whether the comma-separated list in environment variable `var` names `n` (unset: all).
fn picked(var: &str, n: usize) -> bool {
    std::env::var(var).map_or(true, |list| {
        list.split(',').any(|v| v.trim() == n.to_string())
    })
}

/// Alternating rounds per configuration.
const ROUNDS: usize = 7;

/// Prints the small-commit table: batch 1, 10, 100, 1000 with one caller and with 8.
pub async fn small_commits() {
    println!("| batch | callers | store apply rows/s | store commit+outbox rows/s | Drasi's pattern rows/s | raw WriteBatch rows/s | apply / Drasi | apply / raw |");
    println!("|---|---|---|---|---|---|---|---|");
    for callers in [1usize, 8]
        .into_iter()
        .filter(|&c| picked("BENCH_CALLERS", c))
    {
        for (batch, total) in [
            (1usize, 24_000u64),
            (10, 120_000),
            (100, 240_000),
            (1000, 480_000),
        ]
        .into_iter()
        .filter(|&(b, _)| picked("BENCH_BATCHES", b))
        {
            let commits = total / (batch * callers) as u64;
            let rows = (commits * (batch * callers) as u64) as f64;
            let (mut apply, mut seq, mut drasi, mut raw) = (vec![], vec![], vec![], vec![]);
            let (mut vs_drasi, mut vs_raw) = (vec![], vec![]);
            for round in 0..ROUNDS {
                // Each round runs the contenders in another order, so none always goes first
                // (onto a cold machine) or last.
                let mut order = CONTENDERS;
                order.rotate_left(round % CONTENDERS.len());
                let mut rates = [0.0; 4];
                for contender in order {
                    rates[contender as usize] =
                        rows / run_contender(contender, batch, callers, commits).await;
                }
                let [a, s, d, r] = rates;
                apply.push(a);
                seq.push(s);
                drasi.push(d);
                raw.push(r);
                vs_drasi.push(a / d);
                vs_raw.push(a / r);
            }
            println!(
                "| {batch} | {callers} | {} | {} | {} | {} | **{:.2}×** | **{:.2}×** |",
                human(median(apply)),
                human(median(seq)),
                human(median(drasi)),
                human(median(raw)),
                median(vs_drasi),
                median(vs_raw),
            );
        }
    }
}

/// `sync_commits(true)`: 8 callers committing one row at a time, store vs a writer that
/// pays one fsync per commit, plus Drasi's pattern with synced writes (RocksDB's own write
/// group may share an fsync between its concurrent writers).
pub async fn synced_commits() {
    const CALLERS: usize = 8;
    const COMMITS: u64 = 100;
    let rows = (CALLERS as u64 * COMMITS) as f64;
    const SYNC_ROUNDS: usize = 5;
    let (mut store_rates, mut drasi_rates, mut each_rates) = (vec![], vec![], vec![]);
    let (mut ratios, mut vs_drasi) = (vec![], vec![]);
    for round in 0..SYNC_ROUNDS {
        let mut order = [0usize, 1, 2];
        order.rotate_left(round % 3);
        let mut rates = [0.0; 3];
        for contender in order {
            let opts = RocksStoreOptions::new().sync_commits(true);
            let dir = scratch_dir();
            rates[contender] = rows
                / match contender {
                    0 => {
                        let store = RocksStore::open(dir.path(), opts).await.unwrap();
                        let seconds =
                            run_store(&store, StoreCall::Sequenced, 1, CALLERS, COMMITS).await;
                        store.close().await.unwrap();
                        seconds
                    }
                    1 => {
                        let drasi = DrasiPattern::open(dir.path(), &opts, true);
                        run_drasi(&drasi, 1, CALLERS, COMMITS).await
                    }
                    _ => run_raw(
                        &open_raw(dir.path(), &opts),
                        1,
                        CALLERS,
                        COMMITS,
                        true,
                        true,
                    ),
                };
        }
        let [s, d, e] = rates;
        store_rates.push(s);
        drasi_rates.push(d);
        each_rates.push(e);
        ratios.push(s / e);
        vs_drasi.push(s / d);
    }
    println!(
        "\n| sync_commits(true), batch 1, {CALLERS} concurrent callers (median of {SYNC_ROUNDS} rounds, rotating order) | commits/s |"
    );
    println!("|---|---|");
    println!(
        "| store (one fsync per group) | {} |",
        human(median(store_rates))
    );
    println!(
        "| Drasi's pattern, synced writes | {} |",
        human(median(drasi_rates))
    );
    println!(
        "| raw WriteBatch, one fsync per commit | {} |",
        human(median(each_rates))
    );
    println!(
        "| **store / one fsync per commit** | **{:.1}×** |",
        median(ratios)
    );
    println!("| store / Drasi's pattern | {:.1}× |", median(vs_drasi));
}
