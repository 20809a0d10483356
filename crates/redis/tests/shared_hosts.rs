//! What hosts sharing one Redis store rely on beyond the lease suite: commit notices between
//! store handles ("hosts"), notices after a server restart, the fence counter outliving clears
//! and removals, and `check_writable` following the server's state. Each test runs its own
//! `redis-server` child.

mod support;

use std::time::Duration;

use liveresults_core::lease::{CommitNotice, LeaseClaim, LeaseOutcome, Leases};
use liveresults_core::{Commit, ResultStore, RowMutation, SequenceSpan, StoreError};
use liveresults_redis::redis;
use liveresults_redis::{RedisStore, RedisStoreOptions};
use support::RedisServer;
use tokio::sync::broadcast::{self, error::RecvError};

const WAIT: Duration = Duration::from_secs(20);

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn commit(
    store: &RedisStore,
    query: &str,
    seq: u64,
    fence: Option<u64>,
) -> Result<(), StoreError> {
    let rows = [RowMutation::upsert(seq, b"r")];
    let mut commit = Commit::sequenced(&rows, SequenceSpan::single(seq), b"p");
    commit.fence = fence;
    store.commit(query, commit).await.map(|_| ())
}

fn claim(holder: &'static str) -> LeaseClaim<'static> {
    LeaseClaim {
        holder,
        address: "http://host:1",
        ttl: Duration::from_secs(60),
    }
}

async fn granted(store: &RedisStore, query: &str, holder: &'static str) -> u64 {
    match store.acquire(query, claim(holder)).await.unwrap() {
        LeaseOutcome::Granted { token } => token,
        held => panic!("expected a grant, got {held:?}"),
    }
}

/// The next notice, failing the test after [`WAIT`].
async fn next(rx: &mut broadcast::Receiver<CommitNotice>) -> CommitNotice {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notice in time")
        .expect("the channel stays open")
}

fn notice(query_id: &str, epoch: u64, sequence: Option<u64>) -> CommitNotice {
    CommitNotice {
        query_id: query_id.to_owned(),
        epoch,
        sequence,
    }
}

/// Two handles on one server stand for two hosts: each sees the other's commits and clears
/// (and its own), in the order they happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_see_each_others_commits() {
    let server = RedisServer::start();
    let a = server.connect(RedisStoreOptions::new()).await;
    let b = server.connect(RedisStoreOptions::new()).await;
    let mut at_a = a.commit_notices().expect("notices");
    let mut at_b = b.commit_notices().expect("notices");
    commit(&a, "qa", 1, None).await.unwrap();
    commit(&b, "qb", 5, None).await.unwrap();
    let cleared = b.clear_query("qa").await.unwrap();
    rows_only(&a, "qb").await;
    let expected = vec![
        notice("qa", 0, Some(1)),
        notice("qb", 0, Some(5)),
        notice("qa", cleared.epoch, None),
        notice("qb", 0, Some(5)),
    ];
    for rx in [&mut at_a, &mut at_b] {
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            seen.push(next(rx).await);
        }
        assert_eq!(seen, expected);
    }
    // Another namespace is another store: its writes are not announced here.
    let other = server
        .connect(RedisStoreOptions::new().namespace("other"))
        .await;
    commit(&other, "qa", 1, None).await.unwrap();
    commit(&a, "qa", 1, None).await.unwrap();
    assert_eq!(next(&mut at_b).await, notice("qa", cleared.epoch, Some(1)));
}

/// A rows-only write, for the notice of a commit that leaves the sequence as it was.
async fn rows_only(store: &RedisStore, query: &str) {
    let rows = [RowMutation::upsert(99, b"x")];
    store.commit(query, Commit::rows(&rows)).await.unwrap();
}

/// A refused commit (fenced, or a sequence regression) changed nothing and announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commits_are_not_announced() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    let mut rx = store.commit_notices().expect("notices");
    commit(&store, "q", 2, None).await.unwrap();
    assert!(commit(&store, "q", 1, None).await.is_err());
    assert!(matches!(
        commit(&store, "q", 3, Some(1)).await,
        Err(StoreError::Fenced { .. })
    ));
    commit(&store, "q", 4, None).await.unwrap();
    assert_eq!(next(&mut rx).await, notice("q", 0, Some(2)));
    assert_eq!(next(&mut rx).await, notice("q", 0, Some(4)));
    // Every byte of the sequence makes it through the script's hex encoding.
    let big = 0xfedc_ba98_7654_3210;
    commit(&store, "q", big, None).await.unwrap();
    assert_eq!(next(&mut rx).await, notice("q", 0, Some(big)));
}

/// A fenced commit names the live holder and token, and a holder that lost its lease is
/// fenced out while the new holder writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_commits_name_the_live_lease() {
    let server = RedisServer::start();
    let a = server.connect(RedisStoreOptions::new()).await;
    let b = server.connect(RedisStoreOptions::new()).await;
    let token = granted(&a, "q", "host-a").await;
    match commit(&b, "q", 1, None).await {
        Err(StoreError::Fenced {
            query_id,
            fence: None,
            live: Some((holder, live)),
        }) => assert_eq!(
            (query_id.as_str(), holder.as_str(), live),
            ("q", "host-a", token)
        ),
        other => panic!("expected Fenced, got {other:?}"),
    }
    commit(&a, "q", 1, Some(token)).await.unwrap();
    a.release("q", token).await.unwrap();
    match commit(&a, "q", 2, Some(token)).await {
        Err(StoreError::Fenced {
            fence: Some(t),
            live: None,
            ..
        }) => assert_eq!(t, token),
        other => panic!("expected Fenced without a live lease, got {other:?}"),
    }
    assert_eq!(b.query_info("q").await.unwrap().sequence, Some(1));
}

/// The plain clear and removal carry no token, so while a host holds the lease they are
/// refused by the scripts themselves (naming the holder), change nothing and announce
/// nothing; once the lease is released they go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clears_and_removals_are_fenced_while_a_lease_is_live() {
    let server = RedisServer::start();
    let owner = server.connect(RedisStoreOptions::new()).await;
    let tool = server.connect(RedisStoreOptions::new()).await;
    let mut rx = tool.commit_notices().expect("notices");
    let token = granted(&owner, "q", "host-a").await;
    commit(&owner, "q", 1, Some(token)).await.unwrap();
    let before = tool.query_info("q").await.unwrap();
    for result in [
        tool.clear_query("q").await.map(|_| ()),
        tool.remove_query("q").await,
    ] {
        match result {
            Err(StoreError::Fenced {
                fence: None,
                live: Some((holder, live)),
                ..
            }) => assert_eq!((holder.as_str(), live), ("host-a", token)),
            other => panic!("expected Fenced naming the holder, got {other:?}"),
        }
    }
    assert_eq!(tool.query_info("q").await.unwrap(), before);
    assert_eq!(tool.list_queries().await.unwrap(), [before]);
    owner.release("q", token).await.unwrap();
    let cleared = tool.clear_query("q").await.unwrap();
    assert_eq!(cleared.epoch, 1);
    // The notice after the commit's is the clear's: the refusals announced nothing.
    assert_eq!(next(&mut rx).await, notice("q", 0, Some(1)));
    assert_eq!(next(&mut rx).await, notice("q", 1, None));
    tool.remove_query("q").await.unwrap();
    assert_eq!(tool.list_queries().await.unwrap(), []);
}

/// The fence counter outlives clears and removals (neither touches it), so a query re-created
/// under the same id never hands out a token an old holder had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_counter_outlives_clear_and_remove() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    let first = granted(&store, "q", "a").await;
    commit(&store, "q", 1, Some(first)).await.unwrap();
    store.clear_query_fenced("q", Some(first)).await.unwrap();
    let second = granted(&store, "q", "a").await;
    commit(&store, "q", 1, Some(second)).await.unwrap();
    store.remove_query_fenced("q", Some(second)).await.unwrap();
    assert_eq!(store.list_queries().await.unwrap(), Vec::new());
    let counter: Option<u64> = redis::cmd("GET")
        .arg("lr:{q}:fence")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(
        counter,
        Some(second),
        "the fence counter survives a removal"
    );
    store.release("q", second).await.unwrap();
    let third = granted(&store, "q", "b").await;
    assert!(first < second && second < third, "{first} {second} {third}");
    assert!(matches!(
        commit(&store, "q", 1, Some(second)).await,
        Err(StoreError::Fenced { .. })
    ));
    commit(&store, "q", 1, Some(third)).await.unwrap();
}

/// Reads notices until one is `wanted`; the only other notice allowed is `tolerated`.
async fn skip_until(
    rx: &mut broadcast::Receiver<CommitNotice>,
    tolerated: &CommitNotice,
    wanted: impl Fn(&CommitNotice) -> bool,
) {
    loop {
        let n = next(rx).await;
        if wanted(&n) {
            return;
        }
        assert_eq!(&n, tolerated, "unexpected notice");
    }
}

/// After the server is killed and restarted (same port, same AOF), the subscription comes
/// back by itself; receivers are told that notices may have been lost (the empty-id marker)
/// and then see new commits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_resume_after_a_server_restart() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = server.connect(RedisStoreOptions::new()).await;
    let mut rx = store.commit_notices().expect("notices");
    commit(&store, "q", 1, None).await.unwrap();
    assert_eq!(next(&mut rx).await, notice("q", 0, Some(1)));
    server.restart();
    // Commits fail transiently until the connection manager has reconnected.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match commit(&store, "q", 2, None).await {
            Ok(()) => break,
            Err(err) => {
                assert!(err.is_transient(), "{err}");
                assert!(std::time::Instant::now() < deadline, "no reconnect: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The commit above is announced only if the subscription was back before it (before or
    // after the marker, then); the marker comes either way, and every commit after it is
    // announced.
    let restart_commit = notice("q", 0, Some(2));
    skip_until(&mut rx, &restart_commit, |n| n.query_id.is_empty()).await;
    commit(&store, "q", 3, None).await.unwrap();
    skip_until(&mut rx, &restart_commit, |n| *n == notice("q", 0, Some(3))).await;
    assert_eq!(store.query_info("q").await.unwrap().sequence, Some(3));
}

/// Closing a handle ends its receivers (after what was already queued for them) and later
/// ones. (Notices still on their way from the server when the handle closes are dropped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_the_notices() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    let mut rx = store.commit_notices().expect("notices");
    let mut queued = store.commit_notices().expect("notices");
    commit(&store, "q", 1, None).await.unwrap();
    assert_eq!(next(&mut rx).await, notice("q", 0, Some(1)));
    let clone = store.clone();
    store.close().await.unwrap();
    assert_eq!(next(&mut queued).await, notice("q", 0, Some(1)));
    let end = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time");
    assert!(matches!(end, Err(RecvError::Closed)), "{end:?}");
    let mut later = clone.commit_notices().expect("a receiver");
    assert!(matches!(later.recv().await, Err(RecvError::Closed)));
}

/// `check_writable` writes for real, so the server's refusals show: too few replicas for
/// `min-replicas-to-write` (NOREPLICAS) and a server turned into a replica (READONLY); it
/// reports writable again once the server accepts writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_writable_follows_the_server() {
    let server = RedisServer::start();
    let primary = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    let mut con = raw(&server).await;
    store.check_writable().await.unwrap();
    let config = |name: &str, value: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .to_owned()
    };
    let () = config("min-replicas-to-write", "1")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = store.check_writable().await.unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");
    let () = config("min-replicas-to-write", "0")
        .query_async(&mut con)
        .await
        .unwrap();
    store.check_writable().await.unwrap();

    let port = primary.url().rsplit(':').next().unwrap().to_owned();
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query_async(&mut con)
        .await
        .unwrap();
    let err = store.check_writable().await.unwrap_err();
    // The client names the server's READONLY code "ReadOnly" and keeps its message.
    assert!(err.to_string().contains("read only replica"), "{err}");
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut con)
        .await
        .unwrap();
    store.check_writable().await.unwrap();
}
