//! The engine over both stores: the same operations give the same answers in memory and on
//! RocksDB, and a RocksDB store reopened gives back every stream, offset, closure, fork and
//! producer state as they were.

use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
#[path = "common/scenario.rs"]
mod scenario;

use liveresults_streams::{
    AppendStatus, CreateRequest, Created, MemoryStreamStore, RocksStreamStore, StreamError,
    StreamStore, Streams, StreamsConfig,
};
use scenario::{append, create, read_all, scenario, store_contract, EXPECTED};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_rocksdb_keep_the_store_contract() {
    store_contract(Arc::new(MemoryStreamStore::new())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStreamStore::open(dir.path(), false)
        .await
        .expect("open");
    store_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_rocksdb_answer_alike() {
    let memory = Streams::memory(StreamsConfig::default())
        .await
        .expect("memory");
    assert_eq!(scenario(&memory).await, EXPECTED);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStreamStore::open(dir.path(), false)
        .await
        .expect("open");
    let rocks = Streams::open(Arc::new(store), StreamsConfig::default())
        .await
        .expect("rocks");
    assert_eq!(scenario(&rocks).await, EXPECTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_streams_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tail_before;
    {
        let store = RocksStreamStore::open(dir.path(), true)
            .await
            .expect("open");
        let streams = Streams::open(Arc::new(store), StreamsConfig::default())
            .await
            .expect("streams");
        assert_eq!(scenario(&streams).await, EXPECTED);
        tail_before = streams.engine().lookup("t", false).await.expect("t").1.tail;
        streams.close().await.expect("close");
    }
    let store = RocksStreamStore::open(dir.path(), true)
        .await
        .expect("reopen");
    let streams = Streams::open(Arc::new(store), StreamsConfig::default())
        .await
        .expect("streams");
    let engine = streams.engine();
    let (_, t) = engine.lookup("t", false).await.expect("t");
    assert_eq!(
        (t.tail, t.content_type.as_str()),
        (tail_before, "text/plain")
    );
    assert_eq!(read_all(&streams, "t", 64).await.0, b"hello world");
    // The producer's state came back with the bytes: a retry is still a duplicate, and the
    // next sequence follows on.
    let retry = engine
        .append("t", append("text/plain", "world", Some((0, 0))))
        .await
        .expect("retry");
    assert_eq!(retry.status, AppendStatus::Duplicate);
    let next = engine
        .append("t", append("text/plain", "!", Some((0, 1))))
        .await
        .expect("next");
    assert_eq!(next.status, AppendStatus::Appended);
    assert!(matches!(
        engine.lookup("j", false).await,
        Err(StreamError::Gone(_))
    ));
    assert_eq!(
        read_all(&streams, "f", 1 << 20).await.0,
        EXPECTED[3].as_bytes()
    );
    // Deleting the last fork removes the hidden source too.
    engine.delete("f").await.expect("delete fork");
    assert!(matches!(
        engine.lookup("j", false).await,
        Err(StreamError::NotFound(_))
    ));
    // Ids are never reused: a new stream at a deleted name gets a fresh one (so old ETags
    // cannot match its bytes).
    let Created::New(again) = engine
        .create("f", create("text/plain", ""))
        .await
        .expect("recreate")
    else {
        panic!("not new");
    };
    assert!(again.id > t.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_expire_after_their_ttl_unless_read() {
    let config = StreamsConfig::default().sweep_interval(Duration::from_millis(50));
    let store: Arc<dyn StreamStore> = Arc::new(MemoryStreamStore::new());
    let streams = Streams::open(store, config).await.expect("streams");
    let engine = streams.engine();
    for name in ["idle", "read"] {
        let request = CreateRequest {
            ttl_secs: Some(1),
            ..create("text/plain", "x")
        };
        engine.create(name, request).await.expect("create");
    }
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        engine
            .lookup("read", true)
            .await
            .expect("kept alive by reads");
    }
    assert!(matches!(
        engine.lookup("idle", false).await,
        Err(StreamError::NotFound(_))
    ));
    assert!(engine.slot("idle").is_none(), "the sweeper removed it");
}
