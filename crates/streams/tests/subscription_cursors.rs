//! Subscription cursors across hosts whose views of a stream differ: a host still seeing a
//! deleted-and-re-created stream's old incarnation (an older stream id) must not reset the
//! cursor another host set for the new one (ids only grow, so an older id is a lagging view).

use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
#[path = "common/scenario.rs"]
mod scenario;

use liveresults_streams::subscription::{Config, Kind, Record};
use liveresults_streams::{RocksStreamStore, StreamStore, Streams, StreamsConfig};
use scenario::create;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_never_resets_for_an_older_stream_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        RocksStreamStore::open(dir.path(), false)
            .await
            .expect("open"),
    );
    let records = store.subscriptions().expect("RocksDB keeps subscriptions");
    let streams = Streams::open(store, StreamsConfig::default())
        .await
        .expect("streams");
    let (engine, subs) = (streams.engine(), streams.subscriptions());
    engine
        .create("wake/pool", create("application/json", "[]"))
        .await
        .expect("wake stream");
    engine
        .create("events/a", create("text/plain", "abc"))
        .await
        .expect("events/a");
    let config = Config {
        kind: Kind::PullWake,
        pattern: None,
        streams: vec!["events/a".into()],
        webhook_url: None,
        wake_stream: Some("wake/pool".into()),
        lease_ttl_ms: 60_000,
        description: None,
    };
    subs.create("s1", config, "http://127.0.0.1:1")
        .await
        .expect("create");
    // Another host saw events/a deleted and created again (a newer id) and moved the cursor.
    let bytes = records.load("s1").await.expect("load").expect("stored");
    let mut record = Record::decode(&bytes).expect("decode");
    let link = record.links.get_mut("events/a").expect("linked");
    let newer = (link.stream_id)
        .and_then(|id| id.checked_add(1))
        .expect("an id");
    (link.stream_id, link.acked) = (Some(newer), Some(2));
    assert!(records
        .swap("s1", Some(&bytes), Some(&record.encode()))
        .await
        .expect("swap"));
    subs.get("s1").await.expect("cached");
    // The delivery task's passes (every 250 ms, and after a touch) leave that cursor alone.
    subs.touched("events/a");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let link = subs.get("s1").await.expect("get").links["events/a"].clone();
    assert_eq!((link.stream_id, link.acked), (Some(newer), Some(2)));
    streams.close().await.expect("close");
}
