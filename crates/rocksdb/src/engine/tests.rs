//! Engine tests that need its internals: cached handles, raw records under the store.

use super::*;
use crate::owned::OwnedCommit;
use liveresults_core::{Commit, RowMutation};

/// Regression: reads of unknown ids used to cache a handle each, so a client probing random
/// ids grew memory without bound.
#[test]
fn reading_unknown_queries_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), RocksStoreOptions::new()).unwrap();
    for i in 0..100 {
        let id = format!("probe-{i}");
        assert_eq!(engine.query_info(&id).unwrap(), QueryInfo::empty(&id));
        assert!(engine.read_outbox(&id, None, 10).unwrap().is_empty());
        assert_eq!(engine.clear(&id).unwrap(), QueryInfo::empty(&id));
    }
    assert_eq!(engine.queries.read().unwrap().len(), 0);
}

fn owned(mutations: &[RowMutation<'_>], sequence: u64) -> OwnedCommit {
    let span = SequenceSpan::single(sequence);
    OwnedCommit::new(&Commit::sequenced(mutations, span, b"payload"))
}

/// Opens a store holding query `q` with rows 1 and 2 committed at sequence 1, overwrites
/// its stored meta record with `edit` applied, and reopens so no cached state hides the
/// stored numbers. Returns the engine and the meta record as stored.
fn with_edited_meta(
    dir: &Path,
    options: &RocksStoreOptions,
    edit: impl FnOnce(&mut MetaRecord),
) -> (Arc<Engine>, MetaRecord) {
    let engine = Engine::open(dir, options.clone()).unwrap();
    let rows = [RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")];
    engine.commit("q", &owned(&rows, 1)).unwrap();
    let prefix = QueryPrefix::new("q").unwrap();
    let mut meta = engine.read_meta("q", &prefix, None).unwrap().unwrap();
    edit(&mut meta);
    let cf = engine.cf(CF_META).unwrap();
    engine
        .db
        .put_cf(cf, prefix.as_bytes(), records::encode_meta(&meta))
        .unwrap();
    drop(engine);
    (Engine::open(dir, options.clone()).unwrap(), meta)
}

/// The stored meta record, rows and outbox of `q` are exactly as `with_edited_meta` left
/// them.
fn assert_unchanged(engine: &Engine, stored: &MetaRecord) {
    let prefix = QueryPrefix::new("q").unwrap();
    assert_eq!(
        engine.read_meta("q", &prefix, None).unwrap().as_ref(),
        Some(stored)
    );
    let rows_cf = engine.cf(CF_ROWS).unwrap();
    for sig in [1, 2] {
        let row = engine.db.get_cf(rows_cf, prefix.with_u64(sig)).unwrap();
        assert!(row.is_some(), "row {sig} was removed");
    }
    let outbox = engine.read_outbox("q", None, 10).unwrap();
    assert_eq!(
        outbox.len(),
        1,
        "the failed operation wrote an outbox entry"
    );
}

/// `err` is the corrupt-meta error of query `q`, with `detail` in its message (so the
/// test knows which check refused the operation).
fn assert_corrupt_meta(err: &StoreError, detail: &str) {
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("meta record of query \"q\"") && message.contains(detail),
        "names the record, the query and {detail:?}: {err}"
    );
}

/// A stored row count of 1 next to two stored rows, seen through `multi_get` (the path that
/// trusts the count; no index is built to cross-check it): deleting both rows would wrap
/// the count, so the commit is refused.
#[test]
fn row_count_underflow_is_corrupt_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksStoreOptions::new().signature_index_bytes(0);
    let (engine, stored) = with_edited_meta(dir.path(), &options, |m| m.row_count = 1);
    let deletes = [RowMutation::delete(1), RowMutation::delete(2)];
    let err = engine.commit("q", &owned(&deletes, 2)).unwrap_err();
    assert_corrupt_meta(
        &err,
        "row count 1 cannot take 0 inserted and 2 deleted rows",
    );
    assert_unchanged(&engine, &stored);
    assert_eq!(engine.query_info("q").unwrap().sequence, Some(1));
}

/// A stored row count of `u64::MAX` cannot take one more row.
#[test]
fn row_count_overflow_is_corrupt_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksStoreOptions::new();
    let (engine, stored) = with_edited_meta(dir.path(), &options, |m| m.row_count = u64::MAX);
    let err = engine
        .commit("q", &owned(&[RowMutation::upsert(3, b"c")], 2))
        .unwrap_err();
    assert_corrupt_meta(&err, "cannot take 1 inserted and 0 deleted rows");
    assert_unchanged(&engine, &stored);
    let row3 = QueryPrefix::new("q").unwrap().with_u64(3);
    let rows_cf = engine.cf(CF_ROWS).unwrap();
    assert!(engine.db.get_cf(rows_cf, row3).unwrap().is_none());
}

/// A stored epoch of `u64::MAX` cannot be incremented: the clear is refused, and the rows,
/// outbox and meta record stay as they were.
#[test]
fn epoch_overflow_on_clear_is_corrupt_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksStoreOptions::new();
    let (engine, stored) = with_edited_meta(dir.path(), &options, |m| m.epoch = u64::MAX);
    let err = engine.clear("q").unwrap_err();
    assert_corrupt_meta(&err, "cannot be incremented");
    assert_unchanged(&engine, &stored);
    assert_eq!(engine.query_info("q").unwrap().epoch, u64::MAX);
}
