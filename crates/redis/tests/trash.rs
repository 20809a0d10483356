//! Trash a crashed clear or removal left behind is swept: a process that died between the
//! script that renamed a query's keys away and its `UNLINK` leaves them listed in the query's
//! trash set, and a purged query may never see another clear to unlink them. The state such a
//! crash leaves is written here with raw commands (key names as `keys.rs` documents them).

mod support;

use std::time::{Duration, Instant};

use liveresults_core::{Commit, ResultStore, RowMutation, SequenceSpan};
use liveresults_redis::{RedisStore, RedisStoreOptions};
use redis::AsyncCommands;
use support::RedisServer;

async fn commit_one(store: &RedisStore, query: &str) {
    let rows = [RowMutation::upsert(1, b"row")];
    store
        .commit(
            query,
            Commit::sequenced(&rows, SequenceSpan::single(1), b"p"),
        )
        .await
        .unwrap();
}

/// Leaves a trash key listed in `query`'s trash set, as a caller that died before its unlink.
async fn leave_trash(
    con: &mut redis::aio::MultiplexedConnection,
    query: &str,
    token: &str,
) -> String {
    let item = format!("lr:{{{query}}}:trash:{token}:rows");
    let _: () = con.hset(&item, "k", "a removed row").await.unwrap();
    let _: () = con
        .sadd(format!("lr:{{{query}}}:trash"), &item)
        .await
        .unwrap();
    item
}

async fn exists(con: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    con.exists(key).await.unwrap()
}

#[tokio::test]
async fn trash_left_by_a_crash_is_swept_by_the_next_handle() {
    let server = RedisServer::start();
    let store = server.connect(RedisStoreOptions::new()).await;
    commit_one(&store, "purged").await;
    commit_one(&store, "live").await;
    store.remove_query("purged").await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();

    // Swept on demand: both the purged query's and a live query's leftovers, nothing else.
    let a = leave_trash(&mut con, "purged", "dead-1").await;
    let b = leave_trash(&mut con, "live", "dead-2").await;
    assert_eq!(store.sweep_trash().await.unwrap(), 2);
    assert!(!exists(&mut con, &a).await && !exists(&mut con, &b).await);
    let listed: u64 = con.scard("lr:{purged}:trash").await.unwrap();
    assert_eq!(listed, 0);
    assert_eq!(store.query_info("live").await.unwrap().row_count, 1);
    assert_eq!(store.sweep_trash().await.unwrap(), 0);

    // Swept in the background by every handle that connects.
    let c = leave_trash(&mut con, "purged", "dead-3").await;
    let _next = server.connect(RedisStoreOptions::new()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while exists(&mut con, &c).await {
        assert!(Instant::now() < deadline, "a new handle did not sweep {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
