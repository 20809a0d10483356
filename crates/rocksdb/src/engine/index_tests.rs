//! The background index rebuild, paused and resumed by the test so that commits land at
//! known moments: while the scan waits to start, and after the index is installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use liveresults_core::codec::records;
use liveresults_core::{Commit, RowMutation, SequenceSpan};

use super::*;
use crate::engine::{CF_META, CF_ROWS};
use crate::keys::QueryPrefix;
use crate::options::RocksStoreOptions;
use crate::owned::OwnedCommit;

/// Rows loaded before the reopen: enough for a background rebuild.
const LOADED: u64 = 3 * INLINE_INDEX_ROWS;

/// Creates query `q` holding signatures `0..LOADED` and returns the reopened engine, whose
/// index of `q` is not built yet.
fn reopened_with_rows(dir: &Path) -> Arc<Engine> {
    let engine = Engine::open(dir, RocksStoreOptions::new()).unwrap();
    let value = [1u8; 20];
    for (n, start) in (0..LOADED).step_by(1000).enumerate() {
        let rows: Vec<_> = (start..(start + 1000).min(LOADED))
            .map(|s| RowMutation::upsert(s, &value))
            .collect();
        let span = SequenceSpan::single(n as u64 + 1);
        engine
            .commit("q", &OwnedCommit::new(&Commit::sequenced(&rows, span, b"")))
            .unwrap();
    }
    drop(engine);
    Engine::open(dir, RocksStoreOptions::new()).unwrap()
}

fn commit(engine: &Engine, mutations: &[RowMutation<'_>]) -> Result<u64, StoreError> {
    engine
        .commit("q", &OwnedCommit::new(&Commit::rows(mutations)))
        .map(|receipt| receipt.row_count)
}

/// Waits until `q`'s index is no longer being built.
fn wait_built(engine: &Engine) {
    let handle = engine.cached("q").unwrap();
    let start = Instant::now();
    while matches!(
        handle.state.lock().unwrap().index,
        SignatureIndex::Building { .. }
    ) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "rebuild never ended"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Applies `mutations` to the model as a commit would.
fn apply(model: &mut BTreeSet<u64>, mutations: &[RowMutation<'_>]) {
    for m in mutations {
        if m.data.is_some() {
            model.insert(m.row_signature);
        } else {
            model.remove(&m.row_signature);
        }
    }
}

/// Commits land at both critical moments: before the scan reads the keys (the scan sees
/// them) and after it has read them, before the install (only the delta has them).
#[test]
fn commits_during_a_background_rebuild_are_in_the_installed_index() {
    let dir = tempfile::tempdir().unwrap();
    let engine = reopened_with_rows(dir.path());
    let mut model: BTreeSet<u64> = (0..LOADED).collect();
    let gate = Arc::clone(&engine.indexer.gate);
    let held_install = gate.before_install.lock().unwrap();
    let held_scan = gate.busy.lock().unwrap();
    let value = [2u8; 20];
    let before_scan: Vec<Vec<RowMutation<'_>>> = vec![
        // Overwrite loaded rows, add new ones, delete loaded and absent ones.
        vec![
            RowMutation::upsert(0, &value),
            RowMutation::upsert(LOADED + 1, &value),
        ],
        vec![RowMutation::delete(1), RowMutation::delete(LOADED + 50)],
    ];
    for batch in &before_scan {
        apply(&mut model, batch);
        assert_eq!(commit(&engine, batch).unwrap(), model.len() as u64);
    }
    drop(held_scan);
    let start = Instant::now();
    while !gate.scanned.load(Ordering::Acquire) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "scan never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let after_scan: Vec<Vec<RowMutation<'_>>> = vec![
        // Touch the same signatures again: the delta keeps the latest state.
        vec![
            RowMutation::delete(LOADED + 1),
            RowMutation::upsert(1, &value),
        ],
        vec![
            RowMutation::delete(2),
            RowMutation::delete(3),
            RowMutation::upsert(LOADED + 2, &value),
        ],
        vec![
            RowMutation::upsert(LOADED + 3, &value),
            RowMutation::delete(LOADED + 3),
        ],
        vec![
            RowMutation::delete(4),
            RowMutation::upsert(4, &value),
            RowMutation::delete(5),
        ],
    ];
    for batch in &after_scan {
        apply(&mut model, batch);
        assert_eq!(commit(&engine, batch).unwrap(), model.len() as u64);
    }
    let handle = engine.cached("q").unwrap();
    assert!(matches!(
        handle.state.lock().unwrap().index,
        SignatureIndex::Building { .. }
    ));
    drop(held_install);
    wait_built(&engine);
    match &handle.state.lock().unwrap().index {
        SignatureIndex::Loaded(set) => {
            let indexed: BTreeSet<u64> = set.iter().copied().collect();
            assert_eq!(indexed, model, "the index holds exactly the stored rows");
        }
        other => panic!("index not installed: {other:?}"),
    }
    // Commits answered from the installed index count exactly.
    let after = [
        RowMutation::delete(0),
        RowMutation::delete(LOADED + 2),
        RowMutation::delete(2),
    ];
    apply(&mut model, &after);
    assert_eq!(commit(&engine, &after).unwrap(), model.len() as u64);
    assert_eq!(
        engine.query_info("q").unwrap().row_count,
        model.len() as u64
    );
}

#[test]
fn a_rebuild_that_finds_a_wrong_count_makes_commits_fail_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let engine = reopened_with_rows(dir.path());
    let prefix = QueryPrefix::new("q").unwrap();
    let mut meta = engine.read_meta("q", &prefix, None).unwrap().unwrap();
    meta.row_count += 1;
    let meta_cf = engine.cf(CF_META).unwrap();
    engine
        .db
        .put_cf(meta_cf, prefix.as_bytes(), records::encode_meta(&meta))
        .unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), RocksStoreOptions::new()).unwrap();
    // Answered at once, from batched reads, while the scan runs.
    assert_eq!(
        commit(&engine, &[RowMutation::upsert(0, b"x")]).unwrap(),
        LOADED + 1
    );
    wait_built(&engine);
    let err = commit(&engine, &[RowMutation::upsert(0, b"y")]).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let expected = format!("row count {} but {LOADED} rows stored", LOADED + 1);
    assert!(err.to_string().contains(&expected), "{err}");
    // A clear starts the query afresh.
    engine.clear("q").unwrap();
    assert_eq!(commit(&engine, &[RowMutation::upsert(0, b"z")]).unwrap(), 1);
}

#[test]
fn a_clear_during_a_rebuild_abandons_it_and_returns_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let engine = reopened_with_rows(dir.path());
    let pause = engine.indexer.gate.busy.lock().unwrap();
    assert_eq!(
        commit(&engine, &[RowMutation::upsert(0, b"x")]).unwrap(),
        LOADED
    );
    assert_eq!(
        engine.budget.used(),
        LOADED,
        "the rebuild reserved the stored count"
    );
    engine.clear("q").unwrap();
    drop(pause);
    let start = Instant::now();
    while engine.budget.used() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "reservation kept"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let rows = [RowMutation::upsert(5, b"a"), RowMutation::upsert(6, b"b")];
    assert_eq!(commit(&engine, &rows).unwrap(), 2);
    assert!(matches!(
        engine.cached("q").unwrap().state.lock().unwrap().index,
        SignatureIndex::Loaded(_)
    ));
    assert_eq!(engine.budget.used(), 2);
    let rows_cf = engine.cf(CF_ROWS).unwrap();
    let stored = engine
        .db
        .iterator_cf(rows_cf, rocksdb::IteratorMode::Start)
        .count();
    assert_eq!(stored, 2);
}

/// `stop` waits for a chunk in progress and then keeps the indexer off the database, so a
/// closing store can really close.
#[test]
fn stopping_the_indexer_releases_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let engine = reopened_with_rows(dir.path());
    assert_eq!(
        commit(&engine, &[RowMutation::upsert(0, b"x")]).unwrap(),
        LOADED
    );
    engine.stop_indexer();
    assert_eq!(Arc::strong_count(&engine), 1, "no thread holds the engine");
    drop(engine);
    let reopened = Engine::open(dir.path(), RocksStoreOptions::new()).unwrap();
    assert_eq!(reopened.query_info("q").unwrap().row_count, LOADED);
}
