//! The store's group-commit path seen from outside: many callers committing at once, clears
//! and removals ordered with the commits queued around them, and commits made right after a
//! reopen while the signature index is rebuilt in the background.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use liveresults_core::{
    Commit, LiveResultsWriter, ResultStore, RowMutation, SequenceSpan, StoreError,
};
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};

/// A deterministic pseudo-random sequence, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Rows of a query as the model holds them.
type Model = BTreeMap<u64, Vec<u8>>;

fn apply(model: &mut Model, mutations: &[RowMutation<'_>]) {
    for m in mutations {
        match m.data {
            Some(data) => model.insert(m.row_signature, data.to_vec()),
            None => model.remove(&m.row_signature),
        };
    }
}

async fn assert_matches(store: &RocksStore, query_id: &str, model: &Model) {
    let info = store.query_info(query_id).await.unwrap();
    assert_eq!(
        info.row_count,
        model.len() as u64,
        "row count of {query_id}"
    );
    let mut rows = store
        .snapshot(query_id, 1000)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap();
    rows.sort();
    let expected: Vec<_> = model.iter().map(|(s, d)| (*s, d.clone())).collect();
    assert_eq!(rows, expected, "rows of {query_id}");
}

/// Random upserts and deletes over `keys` signatures starting at `base`, with duplicates.
fn random_batch(
    rng: &mut XorShift,
    base: u64,
    keys: u64,
    len: usize,
) -> Vec<(u64, Option<Vec<u8>>)> {
    (0..len)
        .map(|_| {
            let sig = base + rng.next() % keys;
            let data = (rng.next() % 3 != 0).then(|| rng.next().to_be_bytes().to_vec());
            (sig, data)
        })
        .collect()
}

fn mutations(ops: &[(u64, Option<Vec<u8>>)]) -> Vec<RowMutation<'_>> {
    ops.iter()
        .map(|(sig, data)| match data {
            Some(d) => RowMutation::upsert(*sig, d),
            None => RowMutation::delete(*sig),
        })
        .collect()
}

/// 24 callers at once: 16 queries with one sequenced caller each, plus 4 queries shared by
/// two rows-only callers writing disjoint signatures. Every receipt's count, every query's
/// rows, count, sequence and outbox must match the model, before and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_many_queries_match_the_model() {
    for options in [
        RocksStoreOptions::new(),
        RocksStoreOptions::new().signature_index_bytes(0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), options.clone()).await.unwrap();
        let mut tasks = Vec::new();
        for q in 0..16u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let (id, mut model, mut rng) = (format!("seq-{q}"), Model::new(), XorShift(q + 1));
                for s in 1..=60u64 {
                    let ops = random_batch(&mut rng, 0, 40, 1 + (s % 7) as usize);
                    let muts = mutations(&ops);
                    let span = SequenceSpan::single(s * 2);
                    let payload = s.to_be_bytes();
                    let receipt = store
                        .commit(&id, Commit::sequenced(&muts, span, &payload))
                        .await
                        .unwrap();
                    apply(&mut model, &muts);
                    assert_eq!(receipt.row_count, model.len() as u64);
                    assert_eq!(receipt.sequence, Some(s * 2));
                }
                (id, model)
            }));
        }
        for q in 0..4u64 {
            for half in 0..2u64 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let id = format!("shared-{q}");
                    let (mut model, mut rng) = (Model::new(), XorShift(100 + q * 2 + half));
                    for _ in 0..60 {
                        let ops = random_batch(&mut rng, half * 1000, 30, 5);
                        let muts = mutations(&ops);
                        store.apply_mutations(&id, &muts).await.unwrap();
                        apply(&mut model, &muts);
                    }
                    (id, model)
                }));
            }
        }
        let mut models: BTreeMap<String, Model> = BTreeMap::new();
        for task in tasks {
            let (id, model) = task.await.unwrap();
            models.entry(id).or_default().extend(model);
        }
        let mut store = store;
        for reopen in [false, true] {
            if reopen {
                store.close().await.unwrap();
                store = RocksStore::open(dir.path(), options.clone()).await.unwrap();
            }
            for (id, model) in &models {
                assert_matches(&store, id, model).await;
            }
            for q in 0..16 {
                let id = format!("seq-{q}");
                let info = store.query_info(&id).await.unwrap();
                assert_eq!(info.sequence, Some(120));
                let outbox = store.read_outbox(&id, None, 100).await.unwrap();
                let lasts: Vec<_> = outbox.iter().map(|e| e.span.last).collect();
                assert_eq!(lasts, (1..=60).map(|s| s * 2).collect::<Vec<_>>());
                let payloads_in_order = outbox
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.payload == (i as u64 + 1).to_be_bytes());
                assert!(payloads_in_order, "outbox payloads of {id}");
            }
        }
        store.close().await.unwrap();
    }
}

/// A clear or removal queued between commits applies between them: the commit queued after
/// it starts the query's next life at sequence 1, which only works if it comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clears_and_removals_apply_in_queue_order_with_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    let rows = [RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")];
    let one = [RowMutation::upsert(3, b"c")];
    for round in 0..20u64 {
        let before = Commit::sequenced(&rows, SequenceSpan::single(100 + round), b"");
        let after = Commit::sequenced(&one, SequenceSpan::single(1), b"");
        // `join!` polls in order, and each call queues its job on its first poll.
        let (a, cleared, b) = tokio::join!(
            store.commit("q", before),
            store.clear_query("q"),
            store.commit("q", after)
        );
        // Row 3 of the previous round is still there.
        assert_eq!(a.unwrap().row_count, if round == 0 { 2 } else { 3 });
        assert_eq!(cleared.unwrap().row_count, 0);
        let b = b.unwrap();
        assert_eq!((b.sequence, b.row_count), (Some(1), 1));

        let before = Commit::sequenced(&rows, SequenceSpan::single(50), b"");
        let after = Commit::sequenced(&one, SequenceSpan::single(1), b"");
        let (a, removed, b) = tokio::join!(
            store.commit("q", before),
            store.remove_query("q"),
            store.commit("q", after)
        );
        assert_eq!(a.unwrap().row_count, 3);
        removed.unwrap();
        assert_eq!(b.unwrap().row_count, 1);
        let info = store.query_info("q").await.unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(1), 1));
        assert_eq!(
            info.epoch,
            2 * round + 2,
            "round {round}: each clear and removal moves the epoch"
        );
    }
    store.close().await.unwrap();
}

/// Loads `rows` rows into query `big` and closes the store.
async fn load_big(path: &Path, rows: u64) -> Model {
    let store = RocksStore::open(path, RocksStoreOptions::new())
        .await
        .unwrap();
    let mut model = Model::new();
    let value = vec![5u8; 32];
    for start in (0..rows).step_by(5000) {
        let muts: Vec<_> = (start..(start + 5000).min(rows))
            .map(|s| RowMutation::upsert(s, &value))
            .collect();
        store.apply_mutations("big", &muts).await.unwrap();
        apply(&mut model, &muts);
    }
    store.close().await.unwrap();
    model
}

/// Reopens a store holding 300,000 rows and commits upserts and deletes (of loaded and new
/// rows, some touched twice) at once and for a while after: the first commit does not wait
/// for the index, and every count, while the index is rebuilt and after it is installed,
/// matches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_during_a_background_index_rebuild_keep_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 300_000;
    let mut model = load_big(dir.path(), rows).await;
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    let mut rng = XorShift(7);
    let started = Instant::now();
    let mut first = None;
    let mut commits = 0u64;
    // Long enough for the scan (~0.1 s here) to end in the middle of the commits.
    while started.elapsed() < Duration::from_millis(1500) || commits < 200 {
        let ops = random_batch(&mut rng, rows - 2000, 4000, 8);
        let muts = mutations(&ops);
        let t = Instant::now();
        let count = store.apply_mutations("big", &muts).await;
        first.get_or_insert(t.elapsed());
        count.unwrap();
        apply(&mut model, &muts);
        assert_eq!(
            store.row_count("big").await.unwrap() as u64,
            model.len() as u64,
            "after commit {commits}"
        );
        commits += 1;
    }
    let first = first.unwrap_or_default();
    // Generous for a loaded test machine; the rebuild alone takes far longer than this.
    assert!(
        first < Duration::from_millis(50),
        "first commit took {first:?}"
    );
    assert_matches(&store, "big", &model).await;
    store.close().await.unwrap();
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    assert_matches(&store, "big", &model).await;
    store.close().await.unwrap();
}

/// Closing a store while its index is being rebuilt waits for the scan to let go: the
/// directory can be reopened at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_a_rebuild_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_big(dir.path(), 200_000).await;
    for _ in 0..3 {
        let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
            .await
            .unwrap();
        store
            .apply_mutations("big", &[RowMutation::upsert(0, &[5u8; 32])])
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .unwrap();
    assert_matches(&store, "big", &model).await;
    let clone = store.clone();
    store.close().await.unwrap();
    let err = clone
        .apply_mutations("big", &[RowMutation::delete(0)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err}");
}

/// With `sync_commits(true)`, concurrent callers' commits share fsyncs and still count and
/// order exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_concurrent_commits_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksStoreOptions::new().sync_commits(true);
    let store = RocksStore::open(dir.path(), options.clone()).await.unwrap();
    let tasks: Vec<_> = (0..8u64)
        .map(|q| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("q{q}");
                for s in 1..=25u64 {
                    let muts = [RowMutation::upsert(s, b"row"), RowMutation::delete(s - 1)];
                    let receipt = store
                        .commit(&id, Commit::sequenced(&muts, SequenceSpan::single(s), b""))
                        .await
                        .unwrap();
                    assert_eq!(receipt.row_count, 1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    drop(store);
    let store = RocksStore::open(dir.path(), options).await.unwrap();
    for q in 0..8 {
        let info = store.query_info(&format!("q{q}")).await.unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(25), 1));
    }
    store.close().await.unwrap();
}
