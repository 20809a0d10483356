//! Writing the standard store, damaging it with raw RocksDB writes, and the keys to do it
//! with, built from the documented layout rather than the crate's own helpers.

use std::future::Future;
use std::path::Path;

use liveresults_core::codec::changes::ChangeEncoder;
use liveresults_core::codec::records::{self, MetaRecord};
use liveresults_core::codec::row::encode_row;
use liveresults_core::row::Value;
use liveresults_core::{Checkpoint, Commit, ResultStore, RowMutation, SequenceSpan};
use liveresults_rocksdb::rocksdb::{Options, DB};
use liveresults_rocksdb::{verify, Finding, Problem, RocksStore, RocksStoreOptions, VerifyReport};

pub const FORMAT_KEY: &[u8] = b"liveresults.format_version";

pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// `[len: u16 BE][query id]`, the prefix of every key of a query.
pub fn prefix(query: &str) -> Vec<u8> {
    let mut key = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
    key.extend_from_slice(query.as_bytes());
    key
}

/// A row or outbox key: prefix ++ u64 BE.
pub fn key_n(query: &str, n: u64) -> Vec<u8> {
    let mut key = prefix(query);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// A checkpoint key: prefix ++ reaction id.
pub fn key_cp(query: &str, reaction: &str) -> Vec<u8> {
    let mut key = prefix(query);
    key.extend_from_slice(reaction.as_bytes());
    key
}

pub fn row(id: u64) -> Vec<u8> {
    let value: Value = format!(r#"{{"id":{id},"name":"row {id}"}}"#)
        .parse()
        .expect("row json");
    encode_row(&value)
}

/// Commits `ops` (signature, upsert?) as span `first..=last`, with a change payload as the
/// runtime writes it.
pub async fn commit(store: &RocksStore, query: &str, first: u64, last: u64, ops: &[(u64, bool)]) {
    let rows: Vec<(u64, Option<Vec<u8>>)> = ops
        .iter()
        .map(|&(sig, upsert)| (sig, upsert.then(|| row(sig))))
        .collect();
    let mutations: Vec<RowMutation<'_>> = rows
        .iter()
        .map(|(sig, data)| RowMutation {
            row_signature: *sig,
            data: data.as_deref(),
        })
        .collect();
    let mut payload = ChangeEncoder::new();
    payload.push_rows(first, rows.iter().map(|(s, d)| (*s, d.as_deref())));
    let span = SequenceSpan { first, last };
    store
        .commit(
            query,
            Commit::sequenced(&mutations, span, &payload.finish()),
        )
        .await
        .expect("commit");
}

pub async fn checkpoint(store: &RocksStore, reaction: &str, query: &str, sequence: Option<u64>) {
    let cp = Checkpoint {
        sequence,
        config_hash: 7,
    };
    store
        .save_checkpoint(reaction, query, cp)
        .await
        .expect("checkpoint");
}

/// The standard store. `orders`: entries 1, 2, 3; rows 2, 3, 4; checkpoints `audit` at 1 and
/// `fresh` (no sequence). `users`: one entry spanning 10..=11, row 100.
pub fn write_store(dir: &Path) {
    block_on(async {
        let store = RocksStore::open(dir, RocksStoreOptions::new())
            .await
            .expect("open");
        commit(&store, "orders", 1, 1, &[(1, true), (2, true), (3, true)]).await;
        commit(&store, "orders", 2, 2, &[(1, false), (4, true)]).await;
        commit(&store, "orders", 3, 3, &[(2, true)]).await;
        commit(&store, "users", 10, 11, &[(100, true)]).await;
        checkpoint(&store, "audit", "orders", Some(1)).await;
        checkpoint(&store, "fresh", "orders", None).await;
        store.close().await.expect("close");
    });
}

/// Opens the store's RocksDB directly and lets `damage` write to it.
pub fn damage(dir: &Path, damage: impl FnOnce(&DB)) {
    let names = ["rows", "outbox", "meta", "checkpoints"];
    let db = DB::open_cf(&Options::default(), dir, names).expect("raw open");
    damage(&db);
    db.flush_wal(true).expect("raw flush");
}

pub fn put(db: &DB, cf: &str, key: &[u8], value: &[u8]) {
    let cf = db.cf_handle(cf).expect("column family");
    db.put_cf(cf, key, value).expect("raw put");
}

pub fn delete(db: &DB, cf: &str, key: &[u8]) {
    let cf = db.cf_handle(cf).expect("column family");
    db.delete_cf(cf, key).expect("raw delete");
}

pub fn edit_meta(db: &DB, query: &str, edit: impl FnOnce(&mut MetaRecord)) {
    let cf = db.cf_handle("meta").expect("meta");
    let raw = db.get_cf(cf, prefix(query)).expect("read").expect("meta");
    let mut meta = records::decode_meta(&raw).expect("decode meta");
    edit(&mut meta);
    db.put_cf(cf, prefix(query), records::encode_meta(&meta))
        .expect("raw put");
}

pub fn damaged_store(damage_it: impl FnOnce(&DB)) -> (tempfile::TempDir, VerifyReport) {
    let dir = tempfile::tempdir().expect("temp dir");
    write_store(dir.path());
    damage(dir.path(), damage_it);
    let report = verify(dir.path(), None).expect("verify");
    (dir, report)
}

pub fn finding(query: &str, problem: Problem) -> Finding {
    Finding {
        query: Some(query.to_owned()),
        problem,
    }
}
