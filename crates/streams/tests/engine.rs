//! The engine over both stores: the same operations give the same answers in memory and on
//! RocksDB, and a RocksDB store reopened gives back every stream, offset, closure, fork and
//! producer state as they were.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use liveresults_streams::meta::ProducerTuple;
use liveresults_streams::{
    AppendRequest, AppendStatus, CreateRequest, Created, ForkRequest, MemoryStreamStore,
    RocksStreamStore, StreamError, StreamStore, Streams, StreamsConfig,
};

fn create(content_type: &str, body: &str) -> CreateRequest {
    CreateRequest {
        content_type: Some(content_type.into()),
        body: Bytes::copy_from_slice(body.as_bytes()),
        ..CreateRequest::default()
    }
}

fn append(content_type: &str, body: &str, producer: Option<(u64, u64)>) -> AppendRequest {
    AppendRequest {
        body: Bytes::copy_from_slice(body.as_bytes()),
        content_type: Some(content_type.into()),
        producer: producer.map(|(epoch, seq)| ProducerTuple {
            id: "writer".into(),
            epoch,
            seq,
        }),
        ..AppendRequest::default()
    }
}

/// Everything `name` holds, read in responses of at most `max` bytes.
async fn read_all(streams: &Streams, name: &str, max: usize) -> (Vec<u8>, usize) {
    let (_, meta) = streams.engine().lookup(name, false).await.expect("stream");
    let (mut out, mut position, mut responses) = (Vec::new(), 0, 0);
    loop {
        let chunk = (streams.engine())
            .read_chunk(&meta, position, max)
            .await
            .expect("read");
        responses += 1;
        for part in &chunk.parts {
            if meta.is_json() && !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(part);
        }
        assert!(chunk.next > position || chunk.up_to_date(), "no progress");
        position = chunk.next;
        if chunk.up_to_date() {
            return (out, responses);
        }
    }
}

/// One scenario: plain, JSON, producers, closure, forks; returns what it read.
async fn scenario(streams: &Streams) -> Vec<String> {
    let engine = streams.engine();
    let mut seen = Vec::new();
    assert!(matches!(
        engine.create("t", create("text/plain", "hello ")).await,
        Ok(Created::New(_))
    ));
    assert!(matches!(
        engine.create("t", create("TEXT/PLAIN", "")).await,
        Ok(Created::Existing(_))
    ));
    assert!(matches!(
        engine.create("t", create("application/json", "")).await,
        Err(StreamError::Conflict(_))
    ));
    let first = engine
        .append("t", append("text/plain", "world", Some((0, 0))))
        .await
        .expect("append");
    assert_eq!(first.status, AppendStatus::Appended);
    let retry = engine
        .append("t", append("text/plain", "world", Some((0, 0))))
        .await
        .expect("retry");
    assert_eq!(retry.status, AppendStatus::Duplicate);
    assert!(matches!(
        engine
            .append("t", append("text/plain", "x", Some((0, 2))))
            .await,
        Err(StreamError::SeqGap {
            expected: 1,
            received: 2
        })
    ));
    let (bytes, responses) = read_all(streams, "t", 4).await;
    assert_eq!(responses, 3, "11 bytes in responses of 4");
    seen.push(String::from_utf8_lossy(&bytes).into_owned());

    engine
        .create("j", create("application/json", r#"[{"a":1},{"b":2}]"#))
        .await
        .expect("json");
    engine
        .append("j", append("application/json", "[3, [4]]", None))
        .await
        .expect("json append");
    let closing = AppendRequest {
        close: true,
        ..append("application/json", r#""end""#, None)
    };
    assert!(
        engine
            .append("j", closing)
            .await
            .expect("close")
            .meta
            .closed
    );
    assert!(matches!(
        engine
            .append("j", append("application/json", "5", None))
            .await,
        Err(StreamError::Closed { .. })
    ));
    let (bytes, responses) = read_all(streams, "j", 1).await;
    assert_eq!(responses, 3, "JSON appends are never split");
    seen.push(String::from_utf8_lossy(&bytes).into_owned());

    let fork = CreateRequest {
        fork: Some(ForkRequest {
            source: "j".into(),
            offset: Some(0),
            sub_offset: 1,
        }),
        ..CreateRequest::default()
    };
    engine.create("f", fork).await.expect("fork");
    engine
        .append("f", append("application/json", r#"{"own":true}"#, None))
        .await
        .expect("fork append");
    let (bytes, _) = read_all(streams, "f", 1 << 20).await;
    seen.push(String::from_utf8_lossy(&bytes).into_owned());
    // The source is hidden, not gone, while the fork reads through it.
    engine.delete("j").await.expect("delete source");
    assert!(matches!(
        engine.lookup("j", false).await,
        Err(StreamError::Gone(_))
    ));
    let (bytes, _) = read_all(streams, "f", 1 << 20).await;
    seen.push(String::from_utf8_lossy(&bytes).into_owned());
    seen
}

const EXPECTED: [&str; 4] = [
    "hello world",
    r#"{"a":1},{"b":2},3,[4],"end""#,
    r#"{"a":1},{"own":true}"#,
    r#"{"a":1},{"own":true}"#,
];

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
