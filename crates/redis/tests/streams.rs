//! The Redis stream store against a real redis-server: the storage contract and the engine
//! scenario every stream store passes (crates/streams/tests/common/scenario.rs, included by
//! path), a write set refused whole, and a server restart (AOF) that loses nothing — neither
//! for a new connection nor for the handle that was connected throughout.

#[allow(dead_code)]
#[path = "../../streams/tests/common/scenario.rs"]
mod scenario;

use std::sync::Arc;
use std::time::Duration;

use liveresults_redis::testing::RedisServer;
use liveresults_redis::{redis, RedisStoreOptions, RedisStreamStore};
use liveresults_streams::meta::ProducerState;
use liveresults_streams::store::{Record, WriteSet};
use liveresults_streams::{
    AppendStatus, StoreError, StreamError, StreamStore, Streams, StreamsConfig,
};
use scenario::{append, meta, read_all, scenario, store_contract, EXPECTED};

async fn store(server: &RedisServer) -> RedisStreamStore {
    RedisStreamStore::connect(&server.url(), &RedisStoreOptions::new())
        .await
        .expect("connect")
}

async fn streams(server: &RedisServer) -> Streams {
    Streams::open(Arc::new(store(server).await), StreamsConfig::default())
        .await
        .expect("streams")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_store_contract() {
    let server = RedisServer::start();
    store_contract(Arc::new(store(&server).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_answers_like_memory_and_rocksdb() {
    let server = RedisServer::start();
    let streams = streams(&server).await;
    assert_eq!(scenario(&streams).await, EXPECTED);
    streams.close().await.expect("close");
}

/// A key the set writes holds another type (nothing this store writes, but a foreign value
/// would fail a command halfway through the script): the set is refused before its first
/// write, so neither the records nor the meta nor the next id land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_set_is_applied_whole_or_not_at_all() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let first = WriteSet {
        metas: vec![("s".into(), Some(meta(0, 3)))],
        records: vec![(
            0,
            Record {
                start: 0,
                bytes: "abc".into(),
            },
        )],
        next_id: Some(1),
        ..WriteSet::default()
    };
    store.write(first).await.expect("first");
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("con");
    let _: () = redis::cmd("SET")
        .arg("lr:streams:{s}:producers:0")
        .arg("foreign")
        .query_async(&mut con)
        .await
        .expect("plant");
    let second = WriteSet {
        metas: vec![("s".into(), Some(meta(0, 6)))],
        records: vec![(
            0,
            Record {
                start: 3,
                bytes: "def".into(),
            },
        )],
        producers: vec![(
            0,
            "p".into(),
            ProducerState {
                epoch: 0,
                last_seq: 0,
            },
        )],
        next_id: Some(2),
        expected: vec![("s".into(), Some(meta(0, 3)))],
        ..WriteSet::default()
    };
    let refused = store.write(second).await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
    let loaded = store.load().await.expect("load");
    assert_eq!(
        (loaded.streams, loaded.next_id),
        (vec![("s".to_owned(), meta(0, 3))], 1)
    );
    let records = store.read(0, 0, 10, 100).await.expect("read");
    assert_eq!(records.len(), 1, "{records:?}");
    // Without the foreign key the same kind of set goes through, whole.
    let _: () = redis::cmd("DEL")
        .arg("lr:streams:{s}:producers:0")
        .query_async(&mut con)
        .await
        .expect("unplant");
    let third = WriteSet {
        metas: vec![("s".into(), Some(meta(0, 6)))],
        records: vec![(
            0,
            Record {
                start: 3,
                bytes: "def".into(),
            },
        )],
        producers: vec![(
            0,
            "p".into(),
            ProducerState {
                epoch: 0,
                last_seq: 0,
            },
        )],
        next_id: Some(2),
        expected: vec![("s".into(), Some(meta(0, 3)))],
        expected_next_id: Some(1),
        ..WriteSet::default()
    };
    store.write(third).await.expect("third");
    assert_eq!(store.read(0, 0, 10, 100).await.expect("read").len(), 2);
    assert!(store.producer(0, "p").await.expect("producer").is_some());
    assert_eq!(store.load_next_id().await.expect("next"), 2);
}

/// Appends `body` through `streams`, retrying while the server is coming back.
async fn append_retrying(
    streams: &Streams,
    name: &str,
    body: &str,
    producer: (u64, u64),
) -> AppendStatus {
    for _ in 0..100 {
        match streams
            .engine()
            .append(name, append("text/plain", body, Some(producer)))
            .await
        {
            Ok(done) => return done.status,
            Err(StreamError::Store(StoreError::Backend(e))) => {
                eprintln!("retrying after: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("append: {e}"),
        }
    }
    panic!("the store did not come back");
}

/// A restart of a server with `appendfsync always` keeps every stream, record and producer
/// state; the handle connected throughout reconnects by itself and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_keeps_everything() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let kept = streams(&server).await;
    assert_eq!(scenario(&kept).await, EXPECTED);
    let tail = kept.engine().lookup("t", false).await.expect("t").1.tail;
    server.restart();

    // The old handle: its connection comes back, its producer state is the stored one.
    assert_eq!(
        append_retrying(&kept, "t", "world", (0, 0)).await,
        AppendStatus::Duplicate
    );
    assert_eq!(
        append_retrying(&kept, "t", "!", (0, 1)).await,
        AppendStatus::Appended
    );

    // A new connection sees everything, including that append.
    let fresh = streams(&server).await;
    let engine = fresh.engine();
    let (_, t) = engine.lookup("t", false).await.expect("t");
    assert_eq!(t.tail, tail + 1);
    assert_eq!(read_all(&fresh, "t", 64).await.0, b"hello world!");
    assert_eq!(
        append_retrying(&fresh, "t", "!", (0, 1)).await,
        AppendStatus::Duplicate
    );
    assert!(matches!(
        engine.lookup("j", false).await,
        Err(StreamError::Gone(_))
    ));
    assert_eq!(
        read_all(&fresh, "f", 1 << 20).await.0,
        EXPECTED[3].as_bytes()
    );
    kept.close().await.expect("close");
    fresh.close().await.expect("close");
}
