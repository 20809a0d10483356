//! Group commit, driven directly so each test decides exactly which commits share a group.

use super::*;
use crate::owned::OwnedCommit;
use liveresults_core::{Commit, OutboxRetention, RowMutation};

fn sequenced(mutations: &[RowMutation<'_>], sequence: u64) -> OwnedCommit {
    let span = SequenceSpan::single(sequence);
    OwnedCommit::new(&Commit::sequenced(mutations, span, b"payload"))
}

fn rows_only(mutations: &[RowMutation<'_>]) -> OwnedCommit {
    OwnedCommit::new(&Commit::rows(mutations))
}

/// The stored rows of `query_id`, by signature.
fn stored_rows(engine: &Engine, query_id: &str) -> Vec<(u64, Vec<u8>)> {
    let prefix = QueryPrefix::new(query_id).unwrap();
    let mut read = ReadOptions::default();
    read.set_iterate_upper_bound(prefix.successor());
    let mode = IteratorMode::From(prefix.as_bytes(), Direction::Forward);
    engine
        .db
        .iterator_cf_opt(engine.cf(CF_ROWS).unwrap(), read, mode)
        .map(|item| {
            let (key, value) = item.unwrap();
            let sig = keys::u64_suffix(keys::split_key(&key).unwrap().1).unwrap();
            (sig, value.to_vec())
        })
        .collect()
}

/// Both index paths: the in-memory signature index, and batched reads (no index budget).
fn engines() -> Vec<(tempfile::TempDir, Arc<Engine>)> {
    [
        RocksStoreOptions::new(),
        RocksStoreOptions::new().signature_index_bytes(0),
    ]
    .into_iter()
    .map(|options| {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), options).unwrap();
        (dir, engine)
    })
    .collect()
}

/// Two commits to one query in one group, the second invalid (its sequence does not follow
/// the first's): only the second fails, the first lands with its rows, outbox entry and
/// sequence, and the stored meta record holds the first commit's state.
#[test]
fn an_invalid_commit_fails_alone_and_the_one_before_it_lands() {
    for (_dir, engine) in engines() {
        let first = sequenced(
            &[RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")],
            5,
        );
        let second = sequenced(&[RowMutation::upsert(3, b"c")], 5);
        let results = engine.commit_group(&[("q", &first), ("q", &second)]);
        let receipt = results[0].as_ref().unwrap();
        assert_eq!((receipt.sequence, receipt.row_count), (Some(5), 2));
        let err = results[1].as_ref().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SequenceRegression {
                    committed: Some(5),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            stored_rows(&engine, "q"),
            vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
        );
        let info = engine.query_info("q").unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(5), 2));
        let outbox = engine.read_outbox("q", None, 10).unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].span, SequenceSpan::single(5));
        let prefix = QueryPrefix::new("q").unwrap();
        let meta = engine.read_meta("q", &prefix, None).unwrap().unwrap();
        assert_eq!((meta.sequence, meta.row_count), (Some(5), 2));
    }
}

/// A regression inside one group: the third commit repeats the second's sequence (valid
/// against the stored state, invalid after the second), and a later valid commit still lands.
#[test]
fn a_sequence_regression_inside_a_group_is_refused_and_later_commits_land() {
    for (_dir, engine) in engines() {
        let one = sequenced(&[RowMutation::upsert(1, b"1")], 1);
        let two = sequenced(&[RowMutation::upsert(2, b"2")], 2);
        let again = sequenced(&[RowMutation::upsert(9, b"9")], 2);
        let three = sequenced(&[RowMutation::delete(1)], 3);
        let results =
            engine.commit_group(&[("q", &one), ("q", &two), ("q", &again), ("q", &three)]);
        assert_eq!(results[0].as_ref().unwrap().row_count, 1);
        assert_eq!(results[1].as_ref().unwrap().row_count, 2);
        let err = results[2].as_ref().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SequenceRegression {
                    committed: Some(2),
                    ..
                }
            ),
            "{err}"
        );
        let last = results[3].as_ref().unwrap();
        assert_eq!(
            (last.sequence, last.row_count, last.deleted),
            (Some(3), 1, 1)
        );
        assert_eq!(stored_rows(&engine, "q"), vec![(2, b"2".to_vec())]);
        let spans: Vec<_> = engine
            .read_outbox("q", None, 10)
            .unwrap()
            .iter()
            .map(|e| e.span.last)
            .collect();
        assert_eq!(spans, vec![1, 2, 3]);
    }
}

/// Each commit's receipt counts against the rows the earlier commits of the group left:
/// re-upserting a row inserted earlier in the group inserts nothing, deleting it deletes one.
#[test]
fn counts_follow_the_earlier_commits_of_the_group() {
    for (_dir, engine) in engines() {
        let seed = rows_only(&[RowMutation::upsert(7, b"old")]);
        engine.commit("q", &seed).unwrap();
        let a = rows_only(&[RowMutation::upsert(1, b"a"), RowMutation::upsert(7, b"new")]);
        let b = rows_only(&[RowMutation::upsert(1, b"a2"), RowMutation::delete(7)]);
        let c = rows_only(&[RowMutation::delete(1), RowMutation::delete(7)]);
        let d = rows_only(&[RowMutation::upsert(7, b"back")]);
        let results = engine.commit_group(&[("q", &a), ("q", &b), ("q", &c), ("q", &d)]);
        let counts: Vec<_> = results
            .iter()
            .map(|r| {
                let r = r.as_ref().unwrap();
                (r.inserted, r.deleted, r.row_count)
            })
            .collect();
        assert_eq!(counts, vec![(1, 0, 2), (0, 1, 1), (0, 1, 0), (1, 0, 1)]);
        assert_eq!(stored_rows(&engine, "q"), vec![(7, b"back".to_vec())]);
        // The index (or the batched reads) agrees with the disk afterwards.
        let after = engine
            .commit(
                "q",
                &rows_only(&[RowMutation::delete(7), RowMutation::delete(1)]),
            )
            .unwrap();
        assert_eq!((after.deleted, after.row_count), (1, 0));
    }
}

/// Retention is applied commit by commit inside a group: with room for two entries, a group
/// of four sequenced commits leaves the last two and an eviction mark after the second.
#[test]
fn outbox_retention_is_applied_per_commit_within_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let retention = OutboxRetention {
        max_entries: 2,
        max_bytes: 1 << 20,
    };
    let engine = Engine::open(
        dir.path(),
        RocksStoreOptions::new().outbox_retention(retention),
    )
    .unwrap();
    engine
        .commit("q", &sequenced(&[RowMutation::upsert(1, b"x")], 1))
        .unwrap();
    let commits: Vec<_> = (2..=5)
        .map(|s| sequenced(&[RowMutation::upsert(s, b"x")], s))
        .collect();
    let group: Vec<_> = commits.iter().map(|c| ("q", c)).collect();
    assert!(engine.commit_group(&group).iter().all(Result::is_ok));
    let err = engine.read_outbox("q", Some(2), 10).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutboxGap {
                evicted_through: 3,
                ..
            }
        ),
        "{err}"
    );
    let kept: Vec<_> = engine
        .read_outbox("q", Some(3), 10)
        .unwrap()
        .iter()
        .map(|e| e.span.last)
        .collect();
    assert_eq!(kept, vec![4, 5]);
    // What is on disk agrees with the window: reopen and read again.
    drop(engine);
    let engine = Engine::open(
        dir.path(),
        RocksStoreOptions::new().outbox_retention(retention),
    )
    .unwrap();
    let kept: Vec<_> = engine
        .read_outbox("q", Some(3), 10)
        .unwrap()
        .iter()
        .map(|e| e.span.last)
        .collect();
    assert_eq!(kept, vec![4, 5]);
    assert_eq!(engine.query_info("q").unwrap().sequence, Some(5));
}

/// Commits of several queries share a group; one query's invalid commit leaves the others'
/// commits (before and after it) untouched.
#[test]
fn other_queries_land_when_one_commit_of_the_group_fails() {
    for (_dir, engine) in engines() {
        engine
            .commit("b", &sequenced(&[RowMutation::upsert(1, b"b")], 10))
            .unwrap();
        let a = sequenced(&[RowMutation::upsert(1, b"a")], 1);
        let b_stale = sequenced(&[RowMutation::upsert(2, b"b")], 3);
        let c = rows_only(&[RowMutation::upsert(1, b"c"), RowMutation::upsert(2, b"c")]);
        let results = engine.commit_group(&[("a", &a), ("b", &b_stale), ("c", &c), ("", &c)]);
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1],
            Err(StoreError::SequenceRegression { .. })
        ));
        assert_eq!(results[2].as_ref().unwrap().row_count, 2);
        assert!(matches!(results[3], Err(StoreError::InvalidQueryId { .. })));
        assert_eq!(engine.query_info("a").unwrap().row_count, 1);
        assert_eq!(engine.query_info("b").unwrap().sequence, Some(10));
        assert_eq!(engine.query_info("b").unwrap().row_count, 1);
        assert_eq!(stored_rows(&engine, "c").len(), 2);
    }
}

/// A removed query re-created by two commits of one group starts at the removed marker's
/// epoch, and the marker is gone afterwards.
#[test]
fn a_group_re_creates_a_removed_query_above_its_epochs() {
    for (_dir, engine) in engines() {
        engine
            .commit("q", &sequenced(&[RowMutation::upsert(1, b"a")], 4))
            .unwrap();
        engine.clear("q").unwrap();
        engine.remove("q").unwrap();
        let one = sequenced(&[RowMutation::upsert(2, b"b")], 1);
        let two = sequenced(&[RowMutation::upsert(3, b"c")], 2);
        let results = engine.commit_group(&[("q", &one), ("q", &two)]);
        assert_eq!(results[1].as_ref().unwrap().row_count, 2);
        let info = engine.query_info("q").unwrap();
        assert_eq!((info.epoch, info.sequence, info.row_count), (2, Some(2), 2));
        let prefix = QueryPrefix::new("q").unwrap();
        assert_eq!(engine.read_removed("q", &prefix).unwrap(), None);
    }
}
