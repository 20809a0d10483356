//! `remove_query` on disk: what a removal leaves (only the removed marker, with the documented
//! key and bytes), that the first commit of a re-created query deletes the marker in its
//! batch, and that `verify` accepts both states and flags a marker it should not find. Keys
//! and values are built here from `docs/FORMAT.md`, not from the crate's helpers.

use std::path::Path;

// Shared with the verify tests, which use the helpers this file does not.
#[allow(dead_code)]
#[path = "verify/support.rs"]
mod support;

use liveresults_core::codec::records;
use liveresults_core::ResultStore;
use liveresults_rocksdb::rocksdb::{IteratorMode, Options, DB};
use liveresults_rocksdb::{verify, Column, Problem, Record, RocksStore, RocksStoreOptions};
use support::*;

/// `prefix ++ 0x00`: the key of a removed query's marker in the `meta` column family.
fn marker_key(query: &str) -> Vec<u8> {
    let mut key = prefix(query);
    key.push(0);
    key
}

/// Every key of `cf` that starts with `query`'s prefix, with its value.
fn records_of(dir: &Path, cf: &str, query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = ["rows", "outbox", "meta", "checkpoints"];
    let db = DB::open_cf_for_read_only(&Options::default(), dir, names, false).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    let start = prefix(query);
    db.iterator_cf(handle, IteratorMode::Start)
        .map(|item| item.unwrap())
        .filter(|(key, _)| key.starts_with(&start))
        .map(|(key, value)| (key.to_vec(), value.to_vec()))
        .collect()
}

/// The bytes of the format-version record (`default` column family).
fn format_record(dir: &Path) -> Vec<u8> {
    let names = ["rows", "outbox", "meta", "checkpoints"];
    let db = DB::open_cf_for_read_only(&Options::default(), dir, names, false).unwrap();
    db.get(b"liveresults.format_version").unwrap().unwrap()
}

async fn open(dir: &Path) -> RocksStore {
    RocksStore::open(dir, RocksStoreOptions::new())
        .await
        .unwrap()
}

#[test]
fn a_removal_leaves_only_the_marker_and_a_recreation_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    assert_eq!(
        format_record(dir.path()),
        1u32.to_be_bytes(),
        "created at format 1"
    );
    block_on(async {
        let store = open(dir.path()).await;
        store.clear_query("orders").await.unwrap(); // epoch 1
        commit(&store, "orders", 1, 1, &[(7, true)]).await;
        store.remove_query("orders").await.unwrap();
        store.close().await.unwrap();
    });
    // Nothing of `orders` is left but its marker: the epoch after its last one (1), as
    // `[version 1][2: u64 BE]`. `users` keeps everything.
    assert_eq!(
        records_of(dir.path(), "meta", "orders"),
        [(marker_key("orders"), vec![1, 0, 0, 0, 0, 0, 0, 0, 2])]
    );
    for cf in ["rows", "outbox", "checkpoints"] {
        assert!(records_of(dir.path(), cf, "orders").is_empty(), "{cf}");
    }
    assert_eq!(records_of(dir.path(), "rows", "users").len(), 1);
    // The removal's batch also raised the format record to 2 (stores with markers), so a
    // build that knows only format 1 refuses the store instead of misreading the marker.
    assert_eq!(format_record(dir.path()), 2u32.to_be_bytes());
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.queries, 1);
    assert!(verify(dir.path(), Some("orders")).unwrap().is_clean());

    // Re-created (after a reopen, so the epoch comes from the marker on disk): epoch 2, and
    // the marker is gone in the same batch as the new meta record.
    let info = block_on(async {
        let store = open(dir.path()).await;
        assert_eq!(store.query_info("orders").await.unwrap().epoch, 0);
        commit(&store, "orders", 1, 1, &[(9, true)]).await;
        let info = store.query_info("orders").await.unwrap();
        store.close().await.unwrap();
        info
    });
    assert_eq!((info.epoch, info.sequence, info.row_count), (2, Some(1), 1));
    let meta = records_of(dir.path(), "meta", "orders");
    assert_eq!(meta.len(), 1, "{meta:?}");
    assert_eq!(meta[0].0, prefix("orders"));
    assert_eq!(records::decode_meta(&meta[0].1).unwrap().epoch, 2);
    assert!(verify(dir.path(), None).unwrap().is_clean());
}

#[test]
fn a_removed_query_stays_removed_for_a_handle_that_had_it_loaded() {
    // The engine keeps the removed query's handle: it must read as unknown, and a commit
    // through it must start the next incarnation, not bring the old state back.
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    block_on(async {
        let store = open(dir.path()).await;
        commit(&store, "orders", 4, 4, &[(5, true)]).await; // loads the handle and its index
        store.remove_query("orders").await.unwrap();
        let gone = store.query_info("orders").await.unwrap();
        assert_eq!((gone.epoch, gone.sequence, gone.row_count), (0, None, 0));
        assert!(store
            .read_outbox("orders", None, 10)
            .await
            .unwrap()
            .is_empty());
        commit(&store, "orders", 1, 1, &[(5, true)]).await;
        let back = store.query_info("orders").await.unwrap();
        assert_eq!((back.epoch, back.sequence, back.row_count), (1, Some(1), 1));
        store.close().await.unwrap();
    });
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn verify_flags_a_marker_next_to_a_meta_record_and_an_undecodable_one() {
    let (_dir, report) = damaged_store(|db| {
        put(
            db,
            "meta",
            &marker_key("users"),
            &records::encode_removed(4),
        );
        put(db, "meta", &marker_key("gone"), &[1, 0, 0]);
    });
    let expected = [
        // Meta keys sort by id length first: "gone" (4) before "users" (5).
        finding(
            "gone",
            Problem::Undecodable {
                record: Record::RemovedMarker,
                detail: records::decode_removed(&[1, 0, 0]).unwrap_err().to_string(),
            },
        ),
        finding(
            "users",
            Problem::UnexpectedRecord {
                column: Column::Meta,
                key: marker_key("users"),
            },
        ),
    ];
    assert_eq!(report.findings, expected, "{report}");
}
