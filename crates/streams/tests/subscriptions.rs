//! The subscription API over the engine, in memory and on RocksDB: pattern linking, pull-wake
//! events, claims and their fencing, acks, caps, webhooks (signed, retried with backoff after
//! a failure, auto-acked on `done`), and — on RocksDB — subscriptions, cursors, a claim in
//! progress and the signing key surviving a reopen.

use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
#[path = "common/scenario.rs"]
mod scenario;

use liveresults_streams::offset::format_offset;
use liveresults_streams::subscription::input::create_body;
use liveresults_streams::subscription::wire::WakeRequest;
use liveresults_streams::subscription::{Kind, SubscriptionError, SubscriptionLimits};
use liveresults_streams::{
    MemoryStreamStore, RocksStreamStore, StreamStore, Streams, StreamsConfig,
};
use scenario::{append, create, read_all};

const BASE: &str = "http://127.0.0.1:1";

fn pull_config(lease_ms: u64) -> liveresults_streams::subscription::Config {
    let body = format!(
        r#"{{"type":"pull-wake","pattern":"events/*","wake_stream":"wake/pool","lease_ttl_ms":{lease_ms}}}"#
    );
    create_body(body.as_bytes(), false).expect("config")
}

/// A pull-wake subscription over the streams `names` (JSON strings, comma-separated).
fn explicit(names: &str) -> liveresults_streams::subscription::Config {
    let body = format!(r#"{{"type":"pull-wake","streams":[{names}],"wake_stream":"w"}}"#);
    create_body(body.as_bytes(), false).expect("config")
}

/// Waits until the wake stream holds an event of generation `generation`.
async fn wait_for_wake(streams: &Streams, generation: u64) -> String {
    for _ in 0..200 {
        let (bytes, _) = read_all(streams, "wake/pool", 1 << 20).await;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.contains(&format!("\"generation\":{generation}")) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no wake event of generation {generation}");
}

fn wake(claim: &liveresults_streams::subscription::manager::Claimed) -> WakeRequest {
    WakeRequest {
        wake_id: claim.record.wake.as_ref().map(|w| w.id.clone()),
        generation: Some(claim.record.generation),
        ..WakeRequest::default()
    }
}

async fn pull_wake_round_trip(store: Arc<dyn StreamStore>) {
    let streams = Streams::open(store, StreamsConfig::default())
        .await
        .expect("open");
    let engine = streams.engine();
    let subs = streams.subscriptions();
    engine
        .create("wake/pool", create("application/json", "[]"))
        .await
        .expect("wake stream");
    engine
        .create("events/old", create("text/plain", "old"))
        .await
        .expect("old");
    let (created, record) = subs
        .create("s1", pull_config(60_000), BASE)
        .await
        .expect("create");
    assert!(created);
    // An existing match is linked at its tail: its old data is not pending.
    assert_eq!(record.links["events/old"].acked, Some(3));
    let (again, _) = subs
        .create("s1", pull_config(60_000), BASE)
        .await
        .expect("re-confirm");
    assert!(!again, "an equal configuration re-confirms");
    assert!(matches!(
        subs.create("s1", pull_config(5_000), BASE).await,
        Err(SubscriptionError::Exists(_))
    ));
    assert!(matches!(
        subs.claim("s1", "w").await,
        Err(SubscriptionError::NoPendingWork)
    ));

    // A new matching stream is linked from its beginning and wakes the subscription.
    engine
        .create("events/a", create("text/plain", "hello"))
        .await
        .expect("a");
    subs.touched("events/a");
    let events = wait_for_wake(&streams, 1).await;
    assert!(events.contains(r#""subscription_id":"s1""#), "{events}");
    assert!(events.contains(r#""stream":"events/a""#), "{events}");

    let claim = subs.claim("s1", "w1").await.expect("claim");
    assert_eq!(claim.record.generation, 1);
    match subs.claim("s1", "w2").await {
        Err(SubscriptionError::AlreadyClaimed { holder, generation }) => {
            assert_eq!((holder.as_str(), generation), ("w1", 1));
        }
        other => panic!("second claim: {other:?}"),
    }
    // Wrong token, wrong generation, an ack beyond the tail: refused, nothing moves.
    let mut request = wake(&claim);
    assert!(matches!(
        subs.ack("s1", Kind::PullWake, "1.AAAA", &request).await,
        Err(SubscriptionError::TokenInvalid)
    ));
    request.generation = Some(7);
    assert!(matches!(
        subs.ack("s1", Kind::PullWake, &claim.token, &request).await,
        Err(SubscriptionError::Fenced)
    ));
    let mut request = wake(&claim);
    request.acks = vec![("events/a".into(), format_offset(99))];
    assert!(matches!(
        subs.ack("s1", Kind::PullWake, &claim.token, &request).await,
        Err(SubscriptionError::InvalidOffset(_))
    ));
    assert_eq!(
        subs.get("s1").await.expect("get").links["events/a"].acked,
        None
    );
    // The right ack: done, nothing left.
    request.acks = vec![("events/a".into(), format_offset(5))];
    request.done = true;
    let next = subs
        .ack("s1", Kind::PullWake, &claim.token, &request)
        .await
        .expect("ack");
    assert!(!next);
    assert_eq!(
        subs.get("s1").await.expect("get").links["events/a"].acked,
        Some(5)
    );
    // A replay of the finished wake is fenced.
    assert!(matches!(
        subs.ack("s1", Kind::PullWake, &claim.token, &request).await,
        Err(SubscriptionError::Fenced)
    ));

    // More data: a new generation; release hands it back and announces it again.
    engine
        .append("events/a", append("text/plain", "!", None))
        .await
        .expect("append");
    subs.touched("events/a");
    wait_for_wake(&streams, 2).await;
    let claim = subs.claim("s1", "w1").await.expect("claim 2");
    assert_eq!(claim.record.generation, 2);
    subs.release("s1", &claim.token, &wake(&claim))
        .await
        .expect("release");
    wait_for_wake(&streams, 3).await;
    subs.delete("s1").await.expect("delete");
    assert!(matches!(
        subs.get("s1").await,
        Err(SubscriptionError::NotFound(_))
    ));
    streams.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_wake_subscriptions_in_memory_and_on_rocksdb() {
    pull_wake_round_trip(Arc::new(MemoryStreamStore::new())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStreamStore::open(dir.path(), false)
        .await
        .expect("open");
    pull_wake_round_trip(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_claims_survive_a_rocksdb_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || async {
        let store = RocksStreamStore::open(dir.path(), true)
            .await
            .expect("open");
        Streams::open(Arc::new(store), StreamsConfig::default())
            .await
            .expect("streams")
    };
    let (claim, kid) = {
        let streams = open().await;
        let subs = streams.subscriptions();
        let engine = streams.engine();
        engine
            .create("wake/pool", create("application/json", "[]"))
            .await
            .expect("wake");
        subs.create("s1", pull_config(600_000), BASE)
            .await
            .expect("create");
        engine
            .create("events/a", create("text/plain", "0123456789"))
            .await
            .expect("a");
        subs.touched("events/a");
        wait_for_wake(&streams, 1).await;
        let claim = subs.claim("s1", "w1").await.expect("claim");
        // A heartbeat ack of part of the data.
        let mut request = wake(&claim);
        request.acks = vec![("events/a".into(), format_offset(4))];
        subs.ack("s1", Kind::PullWake, &claim.token, &request)
            .await
            .expect("ack");
        let kid = subs.signer().kid().to_owned();
        streams.close().await.expect("close");
        (claim, kid)
    };
    let streams = open().await;
    let subs = streams.subscriptions();
    assert_eq!(subs.signer().kid(), kid, "the signing key is kept");
    let record = subs.get("s1").await.expect("kept");
    assert_eq!(record.links["events/a"].acked, Some(4));
    assert_eq!(record.generation, 1);
    // The claim is still held, and its token (signed before the restart) still acks.
    assert!(matches!(
        subs.claim("s1", "w2").await,
        Err(SubscriptionError::AlreadyClaimed { .. })
    ));
    let mut request = wake(&claim);
    request.acks = vec![("events/a".into(), format_offset(10))];
    request.done = true;
    assert!(!subs
        .ack("s1", Kind::PullWake, &claim.token, &request)
        .await
        .expect("ack"));
    assert_eq!(
        subs.get("s1").await.expect("get").links["events/a"].acked,
        Some(10)
    );
    streams.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_refuse_extra_subscriptions_and_links() {
    let config = StreamsConfig {
        subscriptions: SubscriptionLimits {
            max_subscriptions: 2,
            max_streams_per_subscription: 2,
            ..SubscriptionLimits::default()
        },
        ..StreamsConfig::default()
    };
    let streams = Streams::memory(config).await.expect("memory");
    let subs = streams.subscriptions();
    let refused = subs.create("big", explicit(r#""a","b","c""#), BASE).await;
    assert!(
        matches!(refused, Err(SubscriptionError::TooManyStreams(2))),
        "{refused:?}"
    );
    assert_eq!(refused.err().map(|e| e.status()), Some(403));
    subs.create("s1", explicit(r#""a""#), BASE)
        .await
        .expect("s1");
    subs.create("s2", explicit(r#""a""#), BASE)
        .await
        .expect("s2");
    let refused = subs.create("s3", explicit(r#""a""#), BASE).await;
    assert!(
        matches!(refused, Err(SubscriptionError::TooManySubscriptions(2))),
        "{refused:?}"
    );
    // Re-confirming an existing one is not a new subscription.
    subs.create("s1", explicit(r#""a""#), BASE)
        .await
        .expect("re-confirm");
    subs.add_streams("s1", &["b".into()])
        .await
        .expect("second link");
    assert!(matches!(
        subs.add_streams("s1", &["c".into()]).await,
        Err(SubscriptionError::TooManyStreams(2))
    ));
    subs.remove_stream("s1", "b").await.expect("unlink");
    subs.add_streams("s1", &["c".into()])
        .await
        .expect("room again");
    subs.delete("s2").await.expect("delete");
    subs.create("s3", explicit(r#""a""#), BASE)
        .await
        .expect("room again");
}

/// What a [`receiver`] was sent: each call's signature header and body.
type Calls = tokio::sync::mpsc::UnboundedReceiver<(String, String)>;

/// A webhook receiver on 127.0.0.1: answers 500 to the first request, then `{"done":true}`;
/// sends each request's signature header and body to the test.
async fn receiver() -> (String, Calls) {
    use axum::http::{HeaderMap, StatusCode};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook = move |headers: HeaderMap, body: String| {
        let (tx, calls) = (tx.clone(), Arc::clone(&calls));
        async move {
            let signature = headers
                .get("webhook-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = tx.send((signature, body));
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                (StatusCode::INTERNAL_SERVER_ERROR, String::new())
            } else {
                (StatusCode::OK, r#"{"done":true}"#.to_owned())
            }
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(hook));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next_call(calls: &mut Calls) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(5), calls.recv())
        .await
        .expect("a webhook call")
        .expect("open")
}

/// A service (loopback webhooks allowed or not, as `serve --allow-dev-webhooks`) holding
/// webhook subscription "hook" on `events/a` to a fresh [`receiver`] — stored as if loopback
/// webhooks were allowed — with data appended past its cursor, so a wake is due.
async fn webhook_due(allow_dev: bool) -> (Streams, Calls) {
    let mut config = StreamsConfig::default();
    config.subscriptions.allow_dev_webhooks = allow_dev;
    let streams = Streams::memory(config).await.expect("memory");
    let (engine, subs) = (streams.engine(), streams.subscriptions());
    let (url, calls) = receiver().await;
    engine
        .create("events/a", create("text/plain", "abc"))
        .await
        .expect("a");
    let body =
        format!(r#"{{"type":"webhook","streams":["events/a"],"webhook":{{"url":"{url}"}}}}"#);
    let config = create_body(body.as_bytes(), true).expect("config");
    subs.create("hook", config, BASE).await.expect("create");
    engine
        .append("events/a", append("text/plain", "de", None))
        .await
        .expect("append");
    subs.touched("events/a");
    (streams, calls)
}

/// Waits until "hook" records a failed delivery; asserts it is the first, and the status.
async fn first_failure(streams: &Streams) {
    let subs = streams.subscriptions();
    let mut record = subs.get("hook").await.expect("get");
    for _ in 0..200 {
        if record.failures > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        record = subs.get("hook").await.expect("get");
    }
    assert_eq!((record.failures, record.status()), (1, "failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_with_backoff_and_auto_acked() {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    use liveresults_streams::subscription::signing::base64url_decode;

    let (streams, mut calls) = webhook_due(true).await;
    let subs = streams.subscriptions();
    let failed_at = std::time::Instant::now();
    let _ = next_call(&mut calls).await;
    // The failure is recorded and the next attempt waits about a second (±20 %).
    first_failure(&streams).await;
    let (signature, body) = next_call(&mut calls).await;
    assert!(
        failed_at.elapsed() >= Duration::from_millis(750),
        "{:?}",
        failed_at.elapsed()
    );

    // The signature verifies with the published key, over `<t>.<body>`.
    let jwks = subs.signer().jwks();
    let x = base64url_decode(jwks["keys"][0]["x"].as_str().expect("x")).expect("x bytes");
    let key = VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("key");
    let parts: Vec<&str> = signature.split(',').collect();
    let t = parts[0].strip_prefix("t=").expect("t");
    assert_eq!(parts[1].strip_prefix("kid="), Some(subs.signer().kid()));
    let sig = base64url_decode(parts[2].strip_prefix("ed25519=").expect("sig")).expect("bytes");
    let sig = Signature::from_bytes(&sig.try_into().expect("64 bytes"));
    key.verify(format!("{t}.{body}").as_bytes(), &sig)
        .expect("the signature verifies");
    let wake: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        wake["callback_url"],
        format!("{BASE}/v1/stream/__ds/subscriptions/hook/callback")
    );
    assert_eq!(wake["streams"][0]["tail_offset"], format_offset(5));

    // `{"done":true}` acked the snapshot and cleared the failure.
    for _ in 0..100 {
        let record = subs.get("hook").await.expect("get");
        if record.links["events/a"].acked == Some(5) && record.wake.is_none() {
            assert_eq!(record.status(), "active");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the wake was not auto-acked");
}

/// A stored webhook URL today's rules refuse (here: loopback, stored while development
/// webhooks were allowed, delivered by a server where they are not) is never called: the
/// delivery fails and is retried later like any failed delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_webhook_url_the_rules_now_refuse_is_not_called() {
    let (streams, mut calls) = webhook_due(false).await;
    first_failure(&streams).await;
    let call = tokio::time::timeout(Duration::from_millis(300), calls.recv()).await;
    assert!(call.is_err(), "the refused URL was called: {call:?}");
}

/// Waits until subscription `id` links stream `name`.
async fn wait_for_link(streams: &Streams, id: &str, name: &str) {
    for _ in 0..200 {
        let record = streams.subscriptions().get(id).await.expect("get");
        if record.links.contains_key(name) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = streams.subscriptions().get(id).await.expect("get");
    let links: Vec<&String> = record.links.keys().collect();
    panic!("{name} was never linked; links: {links:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_links_to_deleted_streams_make_room_for_new_matches() {
    let config = StreamsConfig {
        subscriptions: SubscriptionLimits {
            max_subscriptions: 10,
            max_streams_per_subscription: 3,
            ..SubscriptionLimits::default()
        },
        ..StreamsConfig::default()
    };
    let streams = Streams::memory(config).await.expect("memory");
    let (engine, subs) = (streams.engine(), streams.subscriptions());
    engine
        .create("wake/pool", create("application/json", "[]"))
        .await
        .expect("wake stream");
    subs.create("s1", pull_config(60_000), BASE)
        .await
        .expect("create");
    // More matching streams come and go than the subscription may link at once.
    for i in 0..5 {
        let name = format!("events/{i}");
        engine
            .create(&name, create("text/plain", "x"))
            .await
            .expect("create");
        subs.touched(&name);
        wait_for_link(&streams, "s1", &name).await;
        engine.delete(&name).await.expect("delete");
        subs.touched(&name);
    }
    engine
        .create("events/new", create("text/plain", "new"))
        .await
        .expect("new");
    subs.touched("events/new");
    wait_for_link(&streams, "s1", "events/new").await;
    let claim = subs.claim("s1", "w1").await.expect("the new stream's data");
    let infos = subs.stream_infos(&claim.record, None);
    assert!(format!("{infos:?}").contains("events/new"), "{infos:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_routes_answer_401_alike_for_missing_wrong_kind_and_forged() {
    let streams = Streams::memory(StreamsConfig::default())
        .await
        .expect("memory");
    let subs = streams.subscriptions();
    subs.create("s1", pull_config(60_000), BASE)
        .await
        .expect("create");
    let request = WakeRequest {
        wake_id: Some("w".into()),
        generation: Some(1),
        ..WakeRequest::default()
    };
    for (id, kind) in [
        ("missing", Kind::PullWake),
        ("missing", Kind::Webhook),
        ("s1", Kind::Webhook),
        ("s1", Kind::PullWake),
    ] {
        for token in ["1.AAAA", "garbage", &subs.signer().token("s2", "n", 1)] {
            let refused = subs.ack(id, kind, token, &request).await;
            assert!(
                matches!(refused, Err(SubscriptionError::TokenInvalid)),
                "{id} {kind:?} {token}: {refused:?}"
            );
            assert_eq!(refused.err().map(|e| e.status()), Some(401));
        }
    }
    for id in ["missing", "s1"] {
        let refused = subs.release(id, "1.AAAA", &request).await;
        assert!(
            matches!(refused, Err(SubscriptionError::TokenInvalid)),
            "release {id}: {refused:?}"
        );
    }
}

#[test]
fn webhook_retry_delays_stay_within_a_minute_after_jitter() {
    use liveresults_streams::subscription::delivery::retry_delay_ms;
    let mut longest = 0;
    for failures in 1..=12 {
        for _ in 0..100 {
            let delay = retry_delay_ms(failures);
            assert!(delay >= 800, "{failures}: {delay}");
            longest = longest.max(delay);
        }
    }
    assert!(longest <= 60_000, "longest delay {longest} ms");
    assert!(longest > 50_000, "longest delay {longest} ms");
}

/// A pull-wake subscription following its own wake stream would wake itself forever (each
/// wake appends an event, which is new pending work): refused at create and at add, naming
/// the stream; a pattern that matches the wake stream never links it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_never_follows_its_own_wake_stream() {
    let own = create_body(
        br#"{"type":"pull-wake","streams":["a","wake/pool"],"wake_stream":"wake/pool"}"#,
        false,
    );
    match own {
        Err(SubscriptionError::Invalid(detail)) => {
            assert!(detail.contains("wake/pool"), "{detail}");
        }
        other => panic!("expected 400 naming the wake stream, got {other:?}"),
    }
    let streams = Streams::memory(StreamsConfig::default())
        .await
        .expect("memory");
    let (engine, subs) = (streams.engine(), streams.subscriptions());
    engine
        .create("wake/pool", create("application/json", "[]"))
        .await
        .expect("wake stream");
    let config = create_body(
        br#"{"type":"pull-wake","pattern":"**","wake_stream":"wake/pool"}"#,
        false,
    )
    .expect("config");
    let (_, record) = subs.create("s1", config, BASE).await.expect("create");
    assert!(
        !record.links.contains_key("wake/pool"),
        "linked via the pattern"
    );
    match subs.add_streams("s1", &["wake/pool".into()]).await {
        Err(SubscriptionError::Invalid(detail)) => {
            assert!(detail.contains("wake/pool"), "{detail}");
        }
        other => panic!("expected 400 naming the wake stream, got {other:?}"),
    }
    assert!(!subs
        .get("s1")
        .await
        .expect("get")
        .links
        .contains_key("wake/pool"));
}

/// The links of all subscriptions together are capped (the delivery task scans every link on
/// each pass): a create or add beyond answers 403, as does the per-subscription cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_of_all_subscriptions_are_capped_together() {
    let config = StreamsConfig {
        subscriptions: SubscriptionLimits {
            max_total_links: 3,
            ..SubscriptionLimits::default()
        },
        ..StreamsConfig::default()
    };
    let streams = Streams::memory(config).await.expect("memory");
    let subs = streams.subscriptions();
    subs.create("s1", explicit(r#""a","b""#), BASE)
        .await
        .expect("two links");
    let refused = subs.create("s2", explicit(r#""c","d""#), BASE).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.code()),
        Err("TOO_MANY_SUBSCRIPTION_STREAMS")
    );
    subs.create("s2", explicit(r#""c""#), BASE)
        .await
        .expect("the third link");
    let refused = subs.add_streams("s2", &["d".into()]).await;
    assert_eq!(refused.map_err(|e| e.status()), Err(403));
    // Re-linking an already linked stream adds nothing.
    subs.add_streams("s2", &["c".into()])
        .await
        .expect("already linked");
}
