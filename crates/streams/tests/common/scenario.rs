//! What every stream store must do, shared by the stores' tests (memory and RocksDB here,
//! Redis in crates/redis/tests, which includes this file by path): an engine scenario whose
//! answers must be the same on every store, and the storage contract checked on the store
//! directly.

use std::sync::Arc;

use bytes::Bytes;
use liveresults_streams::meta::{ProducerState, ProducerTuple, StreamMeta};
use liveresults_streams::store::{Record, WriteSet};
use liveresults_streams::{
    AppendRequest, AppendStatus, CreateRequest, Created, ForkRequest, StoreError, StreamError,
    StreamStore, Streams,
};

pub fn create(content_type: &str, body: &str) -> CreateRequest {
    CreateRequest {
        content_type: Some(content_type.into()),
        body: Bytes::copy_from_slice(body.as_bytes()),
        ..CreateRequest::default()
    }
}

pub fn append(content_type: &str, body: &str, producer: Option<(u64, u64)>) -> AppendRequest {
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
pub async fn read_all(streams: &Streams, name: &str, max: usize) -> (Vec<u8>, usize) {
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
pub async fn scenario(streams: &Streams) -> Vec<String> {
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

pub const EXPECTED: [&str; 4] = [
    "hello world",
    r#"{"a":1},{"b":2},3,[4],"end""#,
    r#"{"a":1},{"own":true}"#,
    r#"{"a":1},{"own":true}"#,
];

/// A plain stream's meta with `id` and `tail`.
pub fn meta(id: u64, tail: u64) -> StreamMeta {
    StreamMeta {
        id,
        content_type: "text/plain".into(),
        created_ms: 1,
        ttl_secs: None,
        expires_at_ms: None,
        last_access_ms: 1,
        base: 0,
        tail,
        closed: false,
        closed_by: None,
        last_seq: None,
        fork: None,
        forks: 0,
        soft_deleted: false,
    }
}

fn record(start: u64, bytes: &str) -> Record {
    Record {
        start,
        bytes: Bytes::copy_from_slice(bytes.as_bytes()),
    }
}

/// The records of `[from, to)` as (start, text).
async fn read(
    store: &dyn StreamStore,
    id: u64,
    from: u64,
    to: u64,
    max: usize,
) -> Vec<(u64, String)> {
    let records = store.read(id, from, to, max).await.expect("read");
    records
        .into_iter()
        .map(|r| (r.start, String::from_utf8_lossy(&r.bytes).into_owned()))
        .collect()
}

/// The storage contract on `store`, which must be empty: write sets, bounded reads, producer
/// states, drops, the next id — and, on a shared store, that a write set whose expectations
/// do not hold is refused whole.
pub async fn store_contract(store: Arc<dyn StreamStore>) {
    let store = &*store;
    let loaded = store.load().await.expect("load");
    assert!(
        loaded.streams.is_empty() && loaded.next_id == 0,
        "{loaded:?}"
    );
    let state = ProducerState {
        epoch: 2,
        last_seq: 7,
    };
    let set = WriteSet {
        metas: vec![("a/b".into(), Some(meta(0, 12)))],
        records: vec![
            (0, record(0, "hello")),
            (0, record(5, "worl")),
            (0, record(9, "d!!")),
        ],
        producers: vec![(0, "p".into(), state)],
        next_id: Some(1),
        expected: vec![("a/b".into(), None)],
        expected_next_id: Some(0),
        ..WriteSet::default()
    };
    store.write(set).await.expect("write");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.next_id, 1);
    assert_eq!(loaded.streams, vec![("a/b".to_owned(), meta(0, 12))]);
    assert_eq!(store.load_next_id().await.expect("next id"), 1);
    let names = ["a/b".to_owned(), "none".to_owned(), "a/b".to_owned()];
    assert_eq!(
        store.load_metas(&names).await.expect("metas"),
        vec![Some(meta(0, 12)), None, Some(meta(0, 12))]
    );
    assert_eq!(store.producer(0, "p").await.expect("producer"), Some(state));
    assert_eq!(store.producer(0, "q").await.expect("producer"), None);
    assert_eq!(store.producer(1, "p").await.expect("producer"), None);

    let all = vec![
        (0, "hello".to_owned()),
        (5, "worl".to_owned()),
        (9, "d!!".to_owned()),
    ];
    assert_eq!(read(store, 0, 0, 12, 1 << 20).await, all);
    // The record holding `from` comes first, even if it starts before it.
    assert_eq!(read(store, 0, 6, 12, 1 << 20).await, all[1..]);
    assert_eq!(read(store, 0, 4, 9, 1 << 20).await, all[..2]);
    assert_eq!(read(store, 0, 11, 12, 1 << 20).await, all[2..]);
    // The byte budget: stop after the record that reaches it, at least one record.
    assert_eq!(read(store, 0, 0, 12, 1).await, all[..1]);
    assert_eq!(read(store, 0, 0, 12, 5).await, all[..1]);
    assert_eq!(read(store, 0, 0, 12, 6).await, all[..2]);
    assert_eq!(read(store, 0, 6, 12, 4).await, all[1..2]);
    // Nothing: an empty range, past the tail, another stream.
    assert!(read(store, 0, 5, 5, 100).await.is_empty());
    assert!(read(store, 0, 12, 20, 100).await.is_empty());
    assert!(read(store, 1, 0, 12, 100).await.is_empty());
    // Positions past 2^53 stay exact.
    let far = (1u64 << 53) + 1;
    let set = WriteSet {
        records: vec![(7, record(far, "x")), (7, record(far + 1, "yz"))],
        ..WriteSet::default()
    };
    store.write(set).await.expect("far write");
    assert_eq!(
        read(store, 7, far + 1, far + 3, 100).await,
        vec![(far + 1, "yz".to_owned())]
    );
    assert_eq!(
        read(store, 7, far, far + 1, 100).await,
        vec![(far, "x".to_owned())]
    );

    if store.shared() {
        // A stale expectation refuses the whole set: no record, meta, producer or id lands.
        for (expected, expected_next_id) in [
            (vec![("a/b".to_owned(), Some(meta(0, 5)))], None),
            (vec![("a/b".to_owned(), None)], None),
            (vec![("new".to_owned(), Some(meta(3, 0)))], None),
            (vec![("a/b".to_owned(), Some(meta(0, 12)))], Some(0)),
        ] {
            let set = WriteSet {
                metas: vec![
                    ("a/b".into(), Some(meta(0, 13))),
                    ("new".into(), Some(meta(1, 0))),
                ],
                records: vec![(0, record(12, "?"))],
                producers: vec![(
                    0,
                    "p".into(),
                    ProducerState {
                        epoch: 2,
                        last_seq: 8,
                    },
                )],
                drop_streams: vec![7],
                next_id: Some(2),
                expected,
                expected_next_id,
            };
            let refused = store.write(set).await;
            assert!(
                matches!(refused, Err(StoreError::Conflict(_))),
                "{refused:?}"
            );
        }
        let loaded = store.load().await.expect("load");
        assert_eq!((loaded.next_id, loaded.streams.len()), (1, 1));
        assert_eq!(store.producer(0, "p").await.expect("producer"), Some(state));
        assert_eq!(read(store, 0, 0, 20, 1 << 20).await, all);
        assert_eq!(read(store, 7, far, far + 3, 100).await.len(), 2);
    }

    // Drop a stream: its meta, records and producers go together.
    let set = WriteSet {
        metas: vec![("a/b".into(), None)],
        drop_streams: vec![0, 7],
        expected: vec![("a/b".into(), Some(meta(0, 12)))],
        ..WriteSet::default()
    };
    store.write(set).await.expect("drop");
    let loaded = store.load().await.expect("load");
    assert!(loaded.streams.is_empty());
    assert_eq!(loaded.next_id, 1, "the next id stays");
    assert!(read(store, 0, 0, 12, 100).await.is_empty());
    assert!(read(store, 7, far, far + 3, 100).await.is_empty());
    assert_eq!(store.producer(0, "p").await.expect("producer"), None);
}
