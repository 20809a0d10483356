//! The shared conformance suite and model test against the Redis store — each test on its own
//! `redis-server` child process — plus the failure modes only a networked store has.

mod support;

use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::testing::{env_number, run_model_test, Harness, ModelConfig};
use liveresults_core::{LiveResultsWriter, OutboxRetention, ResultStore, RowMutation, StoreError};
use liveresults_redis::redis;
use liveresults_redis::{RedisStore, RedisStoreOptions};
use support::RedisServer;

/// One server per harness; `reopen` drops the connection and connects again (the data lives
/// in the server, as it would across a host restart).
struct RedisHarness {
    server: RedisServer,
    options: RedisStoreOptions,
}

impl RedisHarness {
    /// Starts the server synchronously (a few milliseconds): the conformance macro builds
    /// harnesses inside async tests, the model test outside any runtime.
    fn new() -> Self {
        RedisHarness {
            server: RedisServer::start(),
            options: RedisStoreOptions::new(),
        }
    }
}

#[async_trait]
impl Harness for RedisHarness {
    type Store = RedisStore;

    async fn open(&mut self, retention: OutboxRetention) -> RedisStore {
        self.options = self.options.clone().outbox_retention(retention);
        self.server.connect(self.options.clone()).await
    }

    async fn reopen(&mut self, store: RedisStore) -> RedisStore {
        store.close().await.expect("close");
        self.server.connect(self.options.clone()).await
    }

    fn durable(&self) -> bool {
        true
    }
}

liveresults_core::conformance_suite!(RedisHarness::new());
liveresults_core::lease_suite!(RedisHarness::new());

#[test]
fn redis_store_matches_the_model() {
    let config = ModelConfig {
        cases: env_number("PROPTEST_CASES", 32),
        ..ModelConfig::default()
    };
    run_model_test(RedisHarness::new, config);
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A lost server is a transient error (the runtime retries), never a panic or a permanent
/// failure; a server that comes back on the same port is used again without a new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connection_is_transient() {
    let mut server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    store
        .apply_mutations("q", &[RowMutation::upsert(1, b"a")])
        .await
        .unwrap();
    server.kill();
    let t = std::time::Instant::now();
    let err = store
        .apply_mutations("q", &[RowMutation::upsert(2, b"b")])
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = store.query_info("q").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = RedisStore::connect(&server.url(), RedisStoreOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    // Calls during an outage fail within the few reconnect attempts, not after minutes.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn unknown_format_version_is_refused() {
    let server = RedisServer::start();
    server.connect(RedisStoreOptions::new()).await;
    let _: () = redis::cmd("SET")
        .arg("lr:format")
        .arg(99)
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let err = RedisStore::connect(&server.url(), RedisStoreOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedFormat {
                found: 99,
                supported: 1
            }
        ),
        "{err}"
    );
    // Another namespace in the same database is another store.
    let other = RedisStoreOptions::new().namespace("other");
    server.connect(other).await;
}

#[tokio::test]
async fn corrupt_meta_record_is_a_typed_error() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    store
        .apply_mutations("q", &[RowMutation::upsert(1, b"a")])
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("lr:{q}:meta")
        .arg("rows")
        .arg("garbage")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let err = store.query_info("q").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("\"q\""), "names the query: {err}");
    assert!(matches!(
        store.list_queries().await,
        Err(StoreError::Corrupt { .. })
    ));
    let err = store
        .apply_mutations("q", &[RowMutation::upsert(2, b"b")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    // A plausible but wrong count is caught against HLEN before the commit writes anything.
    let _: () = redis::cmd("HSET")
        .arg("lr:{q}:meta")
        .arg("rows")
        .arg(7)
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let err = store
        .apply_mutations("q", &[RowMutation::delete(1)])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("row count 7 but 1 rows stored"),
        "{err}"
    );
    let held: i64 = redis::cmd("HLEN")
        .arg("lr:{q}:rows")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(held, 1, "the refused commit deleted a row");
}

/// Ids with braces and percent signs get distinct keys in one hash slot each, and a clear
/// leaves no trash behind.
#[tokio::test]
async fn hostile_ids_are_isolated_and_clear_leaves_no_keys() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    let ids = ["a}b", "a%7Db", "{", "}{", "%"];
    for (i, id) in ids.iter().enumerate() {
        let muts: Vec<_> = (0..=i as u64)
            .map(|sig| RowMutation::upsert(sig, id.as_bytes()))
            .collect();
        store.apply_mutations(id, &muts).await.unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let rows = store.read_snapshot(id).await.unwrap();
        assert_eq!(rows.len(), i + 1, "{id}");
        assert!(rows.iter().all(|(_, d)| d == id.as_bytes()), "{id}");
    }
    for id in ids {
        store.clear(id).await.unwrap();
    }
    let mut con = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    let mut leftover = Vec::new();
    for key in keys {
        // Snapshot readers signed off, so no reader registry is left either.
        if !key.ends_with(":meta") && key != "lr:format" && key != "lr:queries" {
            leftover.push(key);
        }
    }
    leftover.sort();
    assert!(leftover.is_empty(), "keys left after clear: {leftover:?}");
}

/// Callers may ask for "everything" with `usize::MAX`; the server's signed count must not
/// turn that into an error.
#[tokio::test]
async fn outbox_read_without_a_limit() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    for seq in 1..=3 {
        liveresults_core::testing::commit_at(&store, "q", seq, &[RowMutation::upsert(seq, b"r")])
            .await;
    }
    let all = store.read_outbox("q", None, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(store
        .read_outbox("q", Some(3), usize::MAX)
        .await
        .unwrap()
        .is_empty());
}

/// A server that forgot the scripts (restart, failover, `SCRIPT FLUSH`) answers EVALSHA with
/// NOSCRIPT; the store loads the script again and the commit goes through exactly once.
#[tokio::test]
async fn commits_survive_a_script_flush() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    liveresults_core::testing::commit_at(&store, "q", 1, &[RowMutation::upsert(1, b"a")]).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    liveresults_core::testing::commit_at(&store, "q", 2, &[RowMutation::upsert(2, b"b")]).await;
    let info = store.query_info("q").await.unwrap();
    assert_eq!((info.sequence, info.row_count), (Some(2), 2));
    assert_eq!(store.read_outbox("q", None, 10).await.unwrap().len(), 2);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(store.clear_query("q").await.unwrap().epoch, 1);
}

/// Commits log their mutations only while a snapshot is being read: once the reader signed
/// off, the next commit drops the log and nothing of the reader is left.
#[tokio::test]
async fn the_change_log_lives_only_while_snapshots_are_read() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    let mut con = raw(&server).await;
    let exists = |key: &'static str| redis::cmd("EXISTS").arg(key).to_owned();
    liveresults_core::testing::commit_at(&store, "q", 1, &[RowMutation::upsert(1, b"a")]).await;
    // Register a reader by hand, as a snapshot does, and commit while it is live.
    let _: () = redis::cmd("ZADD")
        .arg("lr:{q}:snapshots")
        .arg(i64::MAX)
        .arg("by-hand")
        .query_async(&mut con)
        .await
        .unwrap();
    liveresults_core::testing::commit_at(&store, "q", 2, &[RowMutation::upsert(2, b"b")]).await;
    let logged: i64 = exists("lr:{q}:log").query_async(&mut con).await.unwrap();
    assert_eq!(logged, 1, "a commit during a snapshot must log");
    let _: () = redis::cmd("ZREM")
        .arg("lr:{q}:snapshots")
        .arg("by-hand")
        .query_async(&mut con)
        .await
        .unwrap();
    // A real snapshot signs on and off by itself.
    assert_eq!(store.read_snapshot("q").await.unwrap().len(), 2);
    liveresults_core::testing::commit_at(&store, "q", 3, &[RowMutation::upsert(3, b"c")]).await;
    for key in ["lr:{q}:log", "lr:{q}:snapshots"] {
        let left: i64 = exists(key).query_async(&mut con).await.unwrap();
        assert_eq!(left, 0, "{key} outlived its readers");
    }
}

/// `flush` waits for what its mode asks and fails transiently when that cannot happen.
#[tokio::test]
async fn flush_modes() {
    use liveresults_redis::FlushMode;
    use std::time::Duration;
    let server = RedisServer::start();
    let plain = server.connect(RedisStoreOptions::new()).await;
    plain
        .apply_mutations("q", &[RowMutation::upsert(1, b"a")])
        .await
        .unwrap();
    plain.flush().await.unwrap();
    let none = FlushMode::WaitReplicas {
        replicas: 0,
        timeout: Duration::from_millis(50),
    };
    let store = server
        .connect(RedisStoreOptions::new().flush_mode(none))
        .await;
    store.flush().await.unwrap();
    let one = FlushMode::WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(50),
    };
    let store = server
        .connect(RedisStoreOptions::new().flush_mode(one))
        .await;
    let err = store.flush().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
    // A closed handle refuses everything, its clones included.
    let clone = plain.clone();
    plain.close().await.unwrap();
    assert!(matches!(
        clone.query_info("q").await,
        Err(StoreError::Closed)
    ));
}
