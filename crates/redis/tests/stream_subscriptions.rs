//! Durable Streams subscriptions on Redis, as `serve --redis` runs on two hosts: a
//! subscription created through one host is the other's too, a claim taken on one is busy on
//! the other, a token minted by one is good on the other (one signing key, stored once), an
//! ack on one moves the cursor both see, and a reconnected host finds all of it again. The
//! store's compare-and-swap refuses a write based on a stale record.

#[allow(dead_code)]
#[path = "../../streams/tests/common/scenario.rs"]
mod scenario;

use std::sync::Arc;
use std::time::Duration;

use liveresults_redis::testing::RedisServer;
use liveresults_redis::{RedisStoreOptions, RedisStreamStore};
use liveresults_streams::offset::format_offset;
use liveresults_streams::subscription::input::create_body;
use liveresults_streams::subscription::wire::WakeRequest;
use liveresults_streams::subscription::{Kind, SubscriptionError, SubscriptionStore};
use liveresults_streams::{Streams, StreamsConfig};
use scenario::{append, create, read_all};

async fn store(server: &RedisServer) -> RedisStreamStore {
    RedisStreamStore::connect(&server.url(), &RedisStoreOptions::new())
        .await
        .expect("connect")
}

async fn host(server: &RedisServer) -> Streams {
    Streams::open(Arc::new(store(server).await), StreamsConfig::default())
        .await
        .expect("streams")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_subscriptions_claims_and_keys() {
    let server = RedisServer::start();
    let (a, b) = (host(&server).await, host(&server).await);
    assert_eq!(
        a.subscriptions().signer().kid(),
        b.subscriptions().signer().kid()
    );
    a.engine()
        .create("wake/pool", create("application/json", "[]"))
        .await
        .expect("wake stream");
    let config = create_body(
        br#"{"type":"pull-wake","streams":["events/a"],"wake_stream":"wake/pool","lease_ttl_ms":60000}"#,
        false,
    )
    .expect("config");
    let (created, _) = (a.subscriptions())
        .create("s1", config.clone(), "http://a")
        .await
        .expect("create on a");
    assert!(created);
    let (created, _) = (b.subscriptions())
        .create("s1", config, "http://b")
        .await
        .expect("re-confirm on b");
    assert!(!created, "b sees a's subscription");

    b.engine()
        .create("events/a", create("text/plain", "hello"))
        .await
        .expect("events/a");
    b.subscriptions().touched("events/a");
    let mut announced = false;
    for _ in 0..200 {
        let (events, _) = read_all(&a, "wake/pool", 1 << 20).await;
        if String::from_utf8_lossy(&events).contains(r#""subscription_id":"s1""#) {
            announced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(announced, "a wake event for b's append");

    let claim = a
        .subscriptions()
        .claim("s1", "w1")
        .await
        .expect("claim on a");
    match b.subscriptions().claim("s1", "w2").await {
        Err(SubscriptionError::AlreadyClaimed { holder, .. }) => assert_eq!(holder, "w1"),
        other => panic!("claim on b: {other:?}"),
    }
    let request = WakeRequest {
        wake_id: claim.record.wake.as_ref().map(|w| w.id.clone()),
        generation: Some(claim.record.generation),
        acks: vec![("events/a".into(), format_offset(5))],
        done: true,
    };
    let next = (b.subscriptions())
        .ack("s1", Kind::PullWake, &claim.token, &request)
        .await
        .expect("a's token acks on b");
    assert!(!next);
    a.close().await.expect("close a");
    b.close().await.expect("close b");

    // A host connecting afresh finds the subscription and its cursor.
    let c = host(&server).await;
    let record = c.subscriptions().get("s1").await.expect("kept");
    assert_eq!(record.links["events/a"].acked, Some(5));
    c.close().await.expect("close c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_refuses_stale_records() {
    let server = RedisServer::start();
    let store = store(&server).await;
    assert!(store.swap("x", None, Some(b"one")).await.expect("create"));
    assert!(!store.swap("x", None, Some(b"two")).await.expect("exists"));
    assert!(!store
        .swap("x", Some(b"zero"), Some(b"two"))
        .await
        .expect("stale"));
    assert!(store
        .swap("x", Some(b"one"), Some(b"two"))
        .await
        .expect("swap"));
    assert_eq!(
        store.load("x").await.expect("load").as_deref(),
        Some(&b"two"[..])
    );
    assert!(!store
        .swap("x", Some(b"one"), None)
        .await
        .expect("stale delete"));
    assert!(store.swap("x", Some(b"two"), None).await.expect("delete"));
    assert_eq!(store.load("x").await.expect("load"), None);
    let seed = store.signing_seed([1; 32]).await.expect("seed");
    assert_eq!(seed, [1; 32]);
    assert_eq!(store.signing_seed([2; 32]).await.expect("kept"), [1; 32]);
}

/// A worker learns a tail from one host and acks it through another, which may not have
/// processed the first host's change notice yet: the ack is valid and is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_of_a_tail_seen_on_another_host_is_accepted() {
    let server = RedisServer::start();
    let (a, b) = (host(&server).await, host(&server).await);
    a.engine()
        .create("wake/pool", create("application/json", "[]"))
        .await
        .expect("wake stream");
    a.engine()
        .create("events/a", create("text/plain", "0"))
        .await
        .expect("events/a");
    let config = create_body(
        br#"{"type":"pull-wake","streams":["events/a"],"wake_stream":"wake/pool","lease_ttl_ms":60000}"#,
        false,
    )
    .expect("config");
    (a.subscriptions())
        .create("s1", config, "http://a")
        .await
        .expect("create");
    b.engine()
        .append("events/a", append("text/plain", "1", None))
        .await
        .expect("append on b");
    b.subscriptions().touched("events/a");
    let mut claim = None;
    for _ in 0..200 {
        match b.subscriptions().claim("s1", "w1").await {
            Ok(c) => {
                claim = Some(c);
                break;
            }
            Err(SubscriptionError::NoPendingWork) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("claim: {e}"),
        }
    }
    let claim = claim.expect("a claim");
    let tail_on_b = || {
        (b.engine().slot("events/a"))
            .and_then(|s| s.meta())
            .map(|m| m.tail)
            .expect("events/a on b")
    };
    for round in 0..30 {
        b.engine()
            .append("events/a", append("text/plain", "x", None))
            .await
            .expect("append on b");
        let request = WakeRequest {
            wake_id: claim.record.wake.as_ref().map(|w| w.id.clone()),
            generation: Some(claim.record.generation),
            acks: vec![("events/a".into(), format_offset(tail_on_b()))],
            done: false,
        };
        (a.subscriptions())
            .ack("s1", Kind::PullWake, &claim.token, &request)
            .await
            .unwrap_or_else(|e| panic!("round {round}: an ack of b's tail through a: {e}"));
    }
    let record = a.subscriptions().get("s1").await.expect("get");
    assert_eq!(record.links["events/a"].acked, Some(tail_on_b()));
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}
