//! Two (or three) engines over one redis-server, as `serve --redis` runs on several hosts:
//! what one host writes the other reads at once, readers parked on one host wake when the
//! other appends (through the notice, and through the re-check when a notice is lost),
//! idempotent producers writing through both hosts at once neither duplicate nor skip, and
//! creates and deletes on one host are what the other sees and answers.

#[allow(dead_code)]
#[path = "../../streams/tests/common/scenario.rs"]
mod scenario;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use liveresults_redis::testing::RedisServer;
use liveresults_redis::{RedisStoreOptions, RedisStreamStore};
use liveresults_streams::meta::{ProducerState, ProducerTuple, StreamMeta};
use liveresults_streams::read::{wait_past, Waited};
use liveresults_streams::store::{Change, Loaded, Record, WriteSet};
use liveresults_streams::{
    AppendRequest, AppendStatus, CreateRequest, Created, ForkRequest, StoreError, StreamError,
    StreamStore, Streams, StreamsConfig,
};
use scenario::{append, create, read_all};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

async fn host(server: &RedisServer) -> Streams {
    let store = RedisStreamStore::connect(&server.url(), &RedisStoreOptions::new())
        .await
        .expect("connect");
    Streams::open(Arc::new(store), StreamsConfig::default())
        .await
        .expect("streams")
}

/// A Redis stream store that never hears another host's notice (as if every one were lost):
/// only the engine's re-check keeps it current.
struct Deaf {
    inner: RedisStreamStore,
    silent: broadcast::Sender<Change>,
}

#[async_trait]
impl StreamStore for Deaf {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load().await
    }
    async fn producer(&self, id: u64, p: &str) -> Result<Option<ProducerState>, StoreError> {
        self.inner.producer(id, p).await
    }
    async fn write(&self, set: WriteSet) -> Result<(), StoreError> {
        self.inner.write(set).await
    }
    async fn read(
        &self,
        id: u64,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.read(id, from, to, max).await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
    fn shared(&self) -> bool {
        true
    }
    async fn load_metas(&self, names: &[String]) -> Result<Vec<Option<StreamMeta>>, StoreError> {
        self.inner.load_metas(names).await
    }
    async fn load_next_id(&self) -> Result<u64, StoreError> {
        self.inner.load_next_id().await
    }
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.silent.subscribe())
    }
}

/// Parks a long-poll reader of `name` on `streams` past its current tail (10 s timeout) and
/// returns how it ended and how long it waited.
async fn park(streams: &Streams, name: &str) -> tokio::task::JoinHandle<(Waited, Duration)> {
    let engine = Arc::clone(streams.engine());
    let name = name.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let (slot, meta) = engine.lookup(&name, false).await.expect("lookup");
        let mut rx = slot.subscribe();
        let _ = ready_tx.send(());
        let started = Instant::now();
        let waited = wait_past(
            &mut rx,
            meta.tail,
            Duration::from_secs(10),
            &CancellationToken::new(),
        )
        .await;
        (waited, started.elapsed())
    });
    tokio::time::timeout(Duration::from_secs(5), ready_rx)
        .await
        .expect("reader parked in time")
        .expect("reader parked");
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_host_appends_the_other_reads_and_its_readers_wake() {
    let server = RedisServer::start();
    let (a, b) = (host(&server).await, host(&server).await);
    a.engine()
        .create("chat", create("text/plain", "hi"))
        .await
        .expect("create");
    // Read at once on B (loaded on the miss), without waiting for any notice.
    assert_eq!(read_all(&b, "chat", 64).await.0, b"hi");
    a.engine()
        .append("chat", append("text/plain", " there", None))
        .await
        .expect("append");
    assert_eq!(read_all(&b, "chat", 64).await.0, b"hi there");

    let reader = park(&b, "chat").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.engine()
        .append("chat", append("text/plain", "!", None))
        .await
        .expect("append");
    let (waited, took) = reader.await.expect("reader");
    let Waited::Ready(meta) = waited else {
        panic!("the reader on B did not wake for A's append");
    };
    assert_eq!(meta.tail, 9);
    // Well under the 1 s fallback re-check: the notice woke it (the deaf host's test covers
    // the fallback).
    assert!(took < Duration::from_millis(500), "woke after {took:?}");
    assert_eq!(read_all(&b, "chat", 64).await.0, b"hi there!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notice_is_made_up_by_the_recheck() {
    let server = RedisServer::start();
    let a = host(&server).await;
    let inner = RedisStreamStore::connect(&server.url(), &RedisStoreOptions::new())
        .await
        .expect("connect");
    let (silent, _) = broadcast::channel(1);
    let deaf = Streams::open(Arc::new(Deaf { inner, silent }), StreamsConfig::default())
        .await
        .expect("deaf host");
    a.engine()
        .create("quiet", create("text/plain", "a"))
        .await
        .expect("create");
    let reader = park(&deaf, "quiet").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.engine()
        .append("quiet", append("text/plain", "b", None))
        .await
        .expect("append");
    let (waited, took) = reader.await.expect("reader");
    assert!(
        matches!(waited, Waited::Ready(ref m) if m.tail == 2),
        "the re-check did not wake it"
    );
    assert!(
        took < Duration::from_secs(3),
        "woke after {took:?} (re-check every second)"
    );
}

fn producer_append(producer: &str, seq: u64) -> AppendRequest {
    AppendRequest {
        body: Bytes::from(format!("{producer}:{seq};")),
        content_type: Some("text/plain".into()),
        producer: Some(ProducerTuple {
            id: producer.into(),
            epoch: 0,
            seq,
        }),
        ..AppendRequest::default()
    }
}

/// Three producers append at once, each sending every message through both hosts at the same
/// time (a retry through the other host racing the original): each message is appended
/// exactly once — one host says appended, the other duplicate — and the stream holds every
/// producer's messages once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_writing_through_both_hosts_neither_duplicate_nor_skip() {
    const MESSAGES: u64 = 60;
    let server = RedisServer::start();
    let (a, b) = (host(&server).await, host(&server).await);
    a.engine()
        .create("log", create("text/plain", ""))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for producer in ["p1", "p2", "p3"] {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0..MESSAGES {
                let (x, y) = tokio::join!(
                    a.engine().append("log", producer_append(producer, seq)),
                    b.engine().append("log", producer_append(producer, seq)),
                );
                let (x, y) = (x.expect("via A"), y.expect("via B"));
                // A duplicate's answer is never from before the message it matched.
                let (appended, duplicate) = if x.status == AppendStatus::Appended {
                    (&x, &y)
                } else {
                    (&y, &x)
                };
                assert!(
                    duplicate.meta.tail >= appended.meta.tail,
                    "{producer} #{seq}: duplicate at {}, appended up to {}",
                    duplicate.meta.tail,
                    appended.meta.tail
                );
                let mut statuses = [x.status, y.status];
                statuses.sort_by_key(|s| format!("{s:?}"));
                assert_eq!(
                    statuses,
                    [AppendStatus::Appended, AppendStatus::Duplicate],
                    "{producer} #{seq}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    let (bytes, _) = read_all(&b, "log", 1 << 20).await;
    let text = String::from_utf8(bytes).expect("utf-8");
    let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for message in text.split(';').filter(|m| !m.is_empty()) {
        let (producer, seq) = message.split_once(':').expect("message");
        seen.entry(producer)
            .or_default()
            .push(seq.parse().expect("seq"));
    }
    let all: Vec<u64> = (0..MESSAGES).collect();
    for producer in ["p1", "p2", "p3"] {
        assert_eq!(seen.get(producer), Some(&all), "{producer}");
    }
    // The next sequence follows on through either host; a gap is refused through either.
    let next = a
        .engine()
        .append("log", producer_append("p1", MESSAGES))
        .await
        .expect("next");
    assert_eq!(next.status, AppendStatus::Appended);
    let gap = b
        .engine()
        .append("log", producer_append("p1", MESSAGES + 2))
        .await;
    assert!(matches!(gap, Err(StreamError::SeqGap { .. })), "{gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_and_deletes_on_one_host_are_what_the_other_answers() {
    let server = RedisServer::start();
    let (a, b) = (host(&server).await, host(&server).await);
    let (ea, eb) = (a.engine(), b.engine());
    // The same create on both at once: one creates, the other finds it.
    let (x, y) = tokio::join!(
        ea.create("x", create("text/plain", "")),
        eb.create("x", create("text/plain", ""))
    );
    let created = [x.expect("A"), y.expect("B")];
    let new = created
        .iter()
        .filter(|c| matches!(c, Created::New(_)))
        .count();
    assert_eq!(new, 1, "{created:?}");
    // Different configurations at once: one creates, the other conflicts.
    let (x, y) = tokio::join!(
        ea.create("y", create("text/plain", "")),
        eb.create("y", create("application/json", ""))
    );
    let outcomes = [x.map(|_| ()), y.map(|_| ())];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, Err(StreamError::Conflict(_)))));
    // Ids handed out by both hosts at once never collide.
    let mut creates = Vec::new();
    for i in 0..20 {
        let engine = if i % 2 == 0 { ea.clone() } else { eb.clone() };
        creates.push(tokio::spawn(async move {
            match engine
                .create(&format!("n{i}"), create("text/plain", ""))
                .await
            {
                Ok(Created::New(meta)) => meta.id,
                other => panic!("create n{i}: {other:?}"),
            }
        }));
    }
    let mut ids = Vec::new();
    for task in creates {
        ids.push(task.await.expect("create"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "{ids:?}");

    // A fork made on B of A's stream counts on the source; deleting the source on A hides it
    // on B (410) while the fork reads through it.
    ea.append("x", append("text/plain", "src", None))
        .await
        .expect("append");
    let fork = CreateRequest {
        fork: Some(ForkRequest {
            source: "x".into(),
            offset: None,
            sub_offset: 0,
        }),
        ..CreateRequest::default()
    };
    eb.create("xf", fork).await.expect("fork on B");
    let reader = park(&b, "x").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ea.delete("x").await.expect("delete on A");
    let (waited, took) = reader.await.expect("reader");
    assert!(
        matches!(waited, Waited::Removed { gone: true }),
        "took {took:?}"
    );
    assert!(matches!(
        eb.lookup("x", false).await,
        Err(StreamError::Gone(_))
    ));
    assert_eq!(read_all(&a, "xf", 64).await.0, b"src");
    // Deleting the fork on B takes the hidden source with it, on A too.
    eb.delete("xf").await.expect("delete fork on B");
    assert!(matches!(
        ea.lookup("x", false).await,
        Err(StreamError::NotFound(_))
    ));

    // A plain delete on A: B's reader learns of it, B answers 404 and can create it anew.
    let (_, old) = eb.lookup("n0", false).await.expect("n0 on B");
    let reader = park(&b, "n0").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ea.delete("n0").await.expect("delete");
    let (waited, took) = reader.await.expect("reader");
    assert!(
        matches!(waited, Waited::Removed { gone: false }),
        "took {took:?}"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(matches!(
        eb.lookup("n0", false).await,
        Err(StreamError::NotFound(_))
    ));
    let Created::New(again) = eb
        .create("n0", create("text/plain", ""))
        .await
        .expect("recreate")
    else {
        panic!("not new");
    };
    assert!(again.id > old.id);
    assert_eq!(
        ea.lookup("n0", false).await.expect("n0 on A").1.id,
        again.id
    );
}
