//! Hosts sharing one redis-server, in the interleavings where this host's view is stale or
//! another host's write lands between two steps of this host's operation: a fork source
//! deleted and re-created elsewhere, a stream deleted between loading its meta and reading
//! its records, an expiry that loses to another host's renewal, and a change notice this host
//! failed to apply. A wrapper store makes each interleaving happen every time.

#[allow(dead_code)]
#[path = "../../streams/tests/common/scenario.rs"]
mod scenario;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use liveresults_redis::testing::RedisServer;
use liveresults_redis::{RedisStoreOptions, RedisStreamStore};
use liveresults_streams::meta::{ProducerState, StreamMeta};
use liveresults_streams::store::{Change, Loaded, Record, WriteSet};
use liveresults_streams::{
    CreateRequest, ForkRequest, StoreError, StreamError, StreamStore, Streams, StreamsConfig,
};
use scenario::{create, read_all};
use tokio::sync::broadcast;

/// A Redis stream store with faults on demand.
struct Hooked {
    inner: RedisStreamStore,
    /// `Some`: this host hears no other host's notice (only what it loads itself).
    deaf: Option<broadcast::Sender<Change>>,
    /// How many of the next `load_metas` calls fail.
    fail_metas: AtomicUsize,
    /// Before the next write, "another host" renews this stream's last access (so a TTL
    /// expiry decided on the older meta loses its conflict check).
    renew_before_write: Mutex<Option<String>>,
}

impl Hooked {
    async fn connect(server: &RedisServer, deaf: bool) -> Arc<Hooked> {
        let inner = RedisStreamStore::connect(&server.url(), &RedisStoreOptions::new())
            .await
            .expect("connect");
        Arc::new(Hooked {
            inner,
            deaf: deaf.then(|| broadcast::channel(1).0),
            fail_metas: AtomicUsize::new(0),
            renew_before_write: Mutex::new(None),
        })
    }
}

#[async_trait]
impl StreamStore for Hooked {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load().await
    }
    async fn producer(&self, id: u64, p: &str) -> Result<Option<ProducerState>, StoreError> {
        self.inner.producer(id, p).await
    }
    async fn write(&self, set: WriteSet) -> Result<(), StoreError> {
        let renew = self.renew_before_write.lock().expect("hook").take();
        if let Some(name) = renew {
            let names = [name.clone()];
            let stored = self.inner.load_metas(&names).await?.pop().flatten();
            let stored = stored.expect("the stream to renew");
            let mut renewed = stored.clone();
            renewed.last_access_ms = renewed.last_access_ms.saturating_add(60_000);
            self.inner
                .write(WriteSet {
                    metas: vec![(name.clone(), Some(renewed))],
                    expected: vec![(name, Some(stored))],
                    ..WriteSet::default()
                })
                .await?;
        }
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
        let failing = self
            .fail_metas
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Backend("injected failure".into()));
        }
        self.inner.load_metas(names).await
    }
    async fn load_next_id(&self) -> Result<u64, StoreError> {
        self.inner.load_next_id().await
    }
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        match &self.deaf {
            Some(silent) => Some(silent.subscribe()),
            None => self.inner.changes(),
        }
    }
}

/// No expiry sweep during the test (it would race the interleavings made here).
fn config() -> StreamsConfig {
    StreamsConfig::default().sweep_interval(Duration::from_secs(3600))
}

async fn host(server: &RedisServer) -> Streams {
    let store = RedisStreamStore::connect(&server.url(), &RedisStoreOptions::new())
        .await
        .expect("connect");
    Streams::open(Arc::new(store), config())
        .await
        .expect("streams")
}

async fn hooked_host(store: &Arc<Hooked>) -> Streams {
    Streams::open(Arc::clone(store) as Arc<dyn StreamStore>, config())
        .await
        .expect("streams")
}

fn fork_of(source: &str) -> CreateRequest {
    CreateRequest {
        fork: Some(ForkRequest {
            source: source.into(),
            offset: None,
            sub_offset: 0,
        }),
        ..CreateRequest::default()
    }
}

/// A holds an old stream "s"; B deletes it, creates "s" again and forks the new one. A, not
/// having heard any of it, reads the fork (the new source's bytes, not a 404) and deletes it:
/// the new source's fork count drops, so deleting it afterwards removes it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_of_a_source_recreated_elsewhere_reads_and_deletes_on_a_stale_host() {
    let server = RedisServer::start();
    let deaf = Hooked::connect(&server, true).await;
    let (a, b) = (hooked_host(&deaf).await, host(&server).await);
    let (ea, eb) = (a.engine(), b.engine());
    for (source, fork) in [("s", "f"), ("t", "g")] {
        eb.create(source, create("text/plain", "old"))
            .await
            .expect("create");
        let (_, old) = ea.lookup(source, false).await.expect("A knows it");
        eb.delete(source).await.expect("delete on B");
        eb.create(source, create("text/plain", "new"))
            .await
            .expect("re-create on B");
        eb.create(fork, fork_of(source)).await.expect("fork on B");
        let held = ea.slot(source).and_then(|s| s.meta()).expect("stale slot");
        assert_eq!(held.id, old.id, "A must still hold the old {source}");
    }

    ea.delete("f").await.expect("delete the fork on A");
    eb.delete("s").await.expect("delete the source on B");
    for engine in [ea, eb] {
        let after = engine.lookup("s", false).await;
        assert!(
            matches!(after, Err(StreamError::NotFound(_))),
            "the source must be gone, not hidden: {after:?}"
        );
    }
    eb.create("s", create("application/json", ""))
        .await
        .expect("the name is free again");

    assert_eq!(read_all(&a, "g", 64).await.0, b"new");
}

/// A stream deleted on A after B loaded its meta: B's read finds its records gone and
/// answers 404, not a corruption 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_elsewhere_mid_read_is_not_found() {
    let server = RedisServer::start();
    let deaf = Hooked::connect(&server, true).await;
    let (a, b) = (host(&server).await, hooked_host(&deaf).await);
    a.engine()
        .create("s", create("text/plain", "data"))
        .await
        .expect("create");
    let (_, meta) = b.engine().lookup("s", false).await.expect("B loads it");
    a.engine().delete("s").await.expect("delete on A");
    let read = b.engine().read_chunk(&meta, 0, 64).await;
    assert!(
        matches!(read, Err(StreamError::NotFound(ref n)) if n == "s"),
        "{read:?}"
    );
}

/// B decides a TTL stream has expired, but another host renews it before B's delete lands:
/// the delete loses its conflict check and B answers with the renewed stream, not a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_that_loses_to_a_renewal_answers_with_the_stream() {
    let server = RedisServer::start();
    let hooked = Hooked::connect(&server, true).await;
    let (a, b) = (host(&server).await, hooked_host(&hooked).await);
    let mut request = create("text/plain", "kept");
    request.ttl_secs = Some(1);
    a.engine().create("ttl", request).await.expect("create");
    b.engine().lookup("ttl", false).await.expect("B loads it");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    *hooked.renew_before_write.lock().expect("hook") = Some("ttl".into());
    let (_, meta) = b
        .engine()
        .lookup("ttl", true)
        .await
        .expect("renewed meanwhile: still there");
    assert_eq!(meta.tail, 4);
    assert!(hooked.renew_before_write.lock().expect("hook").is_none());
    assert_eq!(read_all(&b, "ttl", 64).await.0, b"kept");
}

/// B fails to apply A's delete (the store errs once); the next re-check applies it although
/// no reader waits on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_failed_to_apply_is_applied_by_the_next_recheck() {
    let server = RedisServer::start();
    let hooked = Hooked::connect(&server, false).await;
    let (a, b) = (host(&server).await, hooked_host(&hooked).await);
    a.engine()
        .create("s", create("text/plain", "x"))
        .await
        .expect("create");
    b.engine().lookup("s", false).await.expect("B loads it");
    hooked.fail_metas.store(1, Ordering::SeqCst);
    a.engine().delete("s").await.expect("delete on A");
    let started = Instant::now();
    while b.engine().slot("s").is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B still holds the stream A deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hooked.fail_metas.load(Ordering::SeqCst),
        0,
        "the failure was injected"
    );
}
