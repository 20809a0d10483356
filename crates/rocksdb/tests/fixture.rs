//! Compatibility fixture: a store written by format version 1, kept under
//! `tests/fixtures/format-v1`, must keep opening with the same contents. A change to any key,
//! record or row layout that would misread old stores fails here.
//!
//! Regenerate (only when deliberately creating a new fixture version):
//! `LIVERESULTS_WRITE_FIXTURE=1 cargo test --release -p liveresults-rocksdb --test fixture`.

use std::path::{Path, PathBuf};

use liveresults_core::codec::changes::{decode_changes, ChangeEncoder, ChangeItem, ChangeOp};
use liveresults_core::codec::row::{decode_row, encode_row};
use liveresults_core::row::Value;
use liveresults_core::{Checkpoint, Commit, ResultStore, RowMutation, SequenceSpan};
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1")
}

fn row(id: i64, status: &str) -> Value {
    format!(r#"{{"id":{id},"status":"{status}","tags":["a",1.5,null]}}"#)
        .parse()
        .expect("fixture row")
}

async fn write_fixture(dir: &Path) {
    let store = RocksStore::open(dir, RocksStoreOptions::new())
        .await
        .unwrap();
    let rows: Vec<_> = (1..=3).map(|i| encode_row(&row(i, "open"))).collect();
    let muts: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| RowMutation::upsert(100 + i as u64, r))
        .collect();
    let mut enc = ChangeEncoder::new();
    enc.push_rows(1, muts.iter().map(|m| (m.row_signature, m.data)));
    store
        .commit(
            "orders",
            Commit::sequenced(&muts, SequenceSpan::single(1), &enc.finish()),
        )
        .await
        .unwrap();
    let closed = encode_row(&row(2, "closed"));
    let muts = [RowMutation::delete(100), RowMutation::upsert(101, &closed)];
    let mut enc = ChangeEncoder::new();
    enc.push_rows(2, muts.iter().map(|m| (m.row_signature, m.data)));
    store
        .commit(
            "orders",
            Commit::sequenced(&muts, SequenceSpan::single(2), &enc.finish()),
        )
        .await
        .unwrap();
    store
        .save_checkpoint(
            "audit",
            "orders",
            Checkpoint {
                sequence: Some(1),
                config_hash: 7,
            },
        )
        .await
        .unwrap();
    store
        .commit(
            "other",
            Commit::sequenced(&[], SequenceSpan::single(5), b""),
        )
        .await
        .unwrap();
    store.clear_query("other").await.unwrap();
    store.close().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn format_v1_fixture_still_reads_the_same() {
    if std::env::var("LIVERESULTS_WRITE_FIXTURE").is_ok() {
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_fixture(&dir).await;
        for junk in ["LOCK", "LOG"] {
            let _ = std::fs::remove_file(dir.join(junk));
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.starts_with("LOG.old") {
                std::fs::remove_file(dir.join(name)).unwrap();
            }
        }
    }
    // Work on a copy: opening writes a LOCK, a LOG and possibly new manifest files.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), tmp.path());
    let store = RocksStore::open(tmp.path(), RocksStoreOptions::new())
        .await
        .unwrap();

    let info = store.query_info("orders").await.unwrap();
    assert_eq!((info.sequence, info.row_count, info.epoch), (Some(2), 2, 0));
    let rows = store
        .snapshot("orders", 10)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap();
    let decoded: Vec<_> = rows
        .iter()
        .map(|(s, d)| (*s, decode_row(d).unwrap()))
        .collect();
    assert_eq!(
        decoded,
        vec![(101, row(2, "closed")), (102, row(3, "open"))]
    );

    let outbox = store.read_outbox("orders", Some(1), 10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    let items = decode_changes(&outbox[0].payload).unwrap();
    let ChangeItem::Rows { sequence: 2, ops } = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(ops[0], ChangeOp::Delete { signature: 100 });
    assert_eq!(
        store.checkpoint("audit", "orders").await.unwrap(),
        Some(Checkpoint {
            sequence: Some(1),
            config_hash: 7
        })
    );

    let listed: Vec<_> = store
        .list_queries()
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.query_id, q.sequence, q.epoch))
        .collect();
    assert_eq!(
        listed,
        [
            ("orders".to_owned(), Some(2), 0),
            ("other".to_owned(), None, 1)
        ]
    );
    store.close().await.unwrap();
}
