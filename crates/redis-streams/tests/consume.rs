//! Consuming: both formats, bare and enveloped, committed in order; redeliveries of committed
//! events acknowledged without being applied again; malformed entries dead-lettered while the
//! rest go on; a stop and a restart resuming where the first run left off.

mod support;

use std::time::Duration;

use liveresults_redis_streams::testing::{
    connect, entries, envelope, pending_entries, platform, publish, workload, xadd, RedisServer,
};
use liveresults_redis_streams::{decode_json, StreamSpec};
use liveresults_runtime::testing::whole_sig;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_and_enveloped_events_are_committed_in_order() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("orders", 300, 1);
    assert!(w.entries.iter().any(|e| e.contains("specversion")));
    assert!(w
        .entries
        .iter()
        .any(|e| e.contains(r#""kind""#) && !e.contains("specversion")));
    assert!(w.entries.iter().any(|e| e.contains(r#""query_id""#)));
    // Half before the consumer starts (read as a backlog), half while it blocks on reads.
    publish(&mut conn, "orders-results", &w.entries[..150]).await;
    let running = spawn(
        &server,
        config(vec![StreamSpec::drasi_query("orders")], "c1"),
        &handle,
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&mut conn, "orders-results", &w.entries[150..]).await;
    wait_committed(&handle, &mut conn, "orders-results", "orders", 300).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.read, 300, "{report:?}");
    assert_eq!(report.committed, 300, "{report:?}");
    assert_eq!(
        report.dead_lettered + report.already_committed,
        0,
        "{report:?}"
    );
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_committed_entries_are_acknowledged_without_being_applied_again() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 20, 4);
    publish(&mut conn, "q-results", &w.entries).await;
    // Consumer "c" read everything, committed the first 12 events and crashed before
    // acknowledging any of them.
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "q-results", GROUP, "0"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP",
            GROUP,
            "c",
            "COUNT",
            "100",
            "STREAMS",
            "q-results",
            ">",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    for text in &w.entries[..12] {
        handle
            .submit_and_wait(decode_json(text).unwrap())
            .await
            .unwrap();
    }
    // One committed entry was also deleted from the stream meanwhile (trimmed, say).
    let ids: Vec<String> = entries(&mut conn, "q-results")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let _: u64 = redis::cmd("XDEL")
        .arg("q-results")
        .arg(&ids[4])
        .query_async(&mut conn)
        .await
        .unwrap();
    let running = spawn(
        &server,
        config(vec![StreamSpec::drasi_query("q")], "c"),
        &handle,
    );
    wait_committed(&handle, &mut conn, "q-results", "q", 20).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.already_committed, 11, "{report:?}");
    assert_eq!(report.vanished, 1, "{report:?}");
    assert_eq!(report.committed, 8, "{report:?}");
    // The runtime never saw a redelivery: they were recognised before submitting.
    assert_eq!(handle.status("q").unwrap().skipped, 0);
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_go_to_the_dead_letter_stream_and_the_rest_go_on() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let row = |id: u64| json!({"id": id, "v": 1});
    let event = |seq: u64| platform("q", seq, &[row(seq)], &[], &[]).to_string();
    let stream = "q-results";
    let mut expect = Vec::new(); // (original id, reason fragment, original data)
    xadd(&mut conn, stream, "data", &event(1)).await;
    for (data, reason) in [
        ("not json".to_owned(), "invalid json"),
        (
            platform("q", 2, &[json!({"pad": "x".repeat(5000)})], &[], &[]).to_string(),
            "larger than the limit",
        ),
        (
            platform("other", 2, &[row(9)], &[], &[]).to_string(),
            "query \"other\"",
        ),
        (
            envelope(&event(2), stream).replace(r#""data":"#, r#""data_base64":"AA==","x":"#),
            "data_base64",
        ),
        (
            event(2).replace(r#""sequence":2"#, r#""sequence":2,"sequence":3"#),
            "duplicate",
        ),
    ] {
        let id = xadd(&mut conn, stream, "data", &data).await;
        expect.push((id, reason, Some(data)));
    }
    let id = xadd(&mut conn, stream, "payload", &event(2)).await;
    expect.push((id, "no field \"data\"", None));
    xadd(&mut conn, stream, "data", &envelope(&event(2), stream)).await;
    let id: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(&[0xffu8, 0xfe][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    expect.push((id, "not UTF-8", None));
    xadd(&mut conn, stream, "data", &event(3)).await;

    let mut config = config(vec![StreamSpec::drasi_query("q")], "c");
    config.max_entry_bytes = 4096;
    let running = spawn(&server, config, &handle);
    wait_committed(&handle, &mut conn, stream, "q", 3).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.dead_lettered, expect.len() as u64, "{report:?}");
    assert_eq!(report.committed, 3, "{report:?}");

    let dead = entries(&mut conn, "q-results-deadletter").await;
    assert_eq!(dead.len(), expect.len());
    for ((_, fields), (id, reason, data)) in dead.iter().zip(&expect) {
        assert_eq!(fields["deadletter-stream"], stream);
        assert_eq!(&fields["deadletter-id"], id);
        assert_eq!(fields["deadletter-group"], GROUP);
        assert_eq!(fields["deadletter-consumer"], "c");
        assert!(
            fields["deadletter-reason"].contains(reason),
            "{reason}: {fields:?}"
        );
        if let Some(data) = data {
            assert_eq!(&fields["data"], data, "the entry is kept as it was");
        }
    }
    let model = (1..=3)
        .map(|seq| (whole_sig(&row(seq)), row(seq)))
        .collect();
    let w = liveresults_redis_streams::testing::Workload {
        query: "q".into(),
        entries: Vec::new(),
        model,
    };
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consumer_resumes_where_it_left_off() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let w = workload("q", 400, 7);
    publish(&mut conn, "q-results", &w.entries[..200]).await;
    let mut first = config(vec![StreamSpec::drasi_query("q")], "c");
    first.batch = 8;
    let running = spawn(&server, first.clone(), &handle);
    wait_until_past(&handle, "q", 100).await;
    let report = running.stop().await.expect("a clean stop");
    // Everything read was committed and acknowledged before the stop returned.
    assert_eq!(report.read, report.committed, "{report:?}");
    let mut conn2 = conn.clone();
    let pending = liveresults_redis_streams::testing::pending_count(&mut conn2, "q-results", GROUP);
    assert_eq!(pending.await, 0);
    publish(&mut conn, "q-results", &w.entries[200..]).await;
    let running = spawn(&server, first, &handle);
    wait_committed(&handle, &mut conn, "q-results", "q", 400).await;
    let second = running.stop().await.expect("a clean stop");
    assert_eq!(second.already_committed, 0, "{second:?}");
    assert_matches_model(&handle, &*store, &w).await;
    runtime.shutdown().await.expect("runtime shutdown");
}

async fn wait_until_past(handle: &liveresults_runtime::RuntimeHandle, query: &str, sequence: u64) {
    liveresults_redis_streams::testing::wait_until("progress", PATIENCE, || {
        let at = handle.status(query).and_then(|s| s.sequence);
        async move { at.is_some_and(|s| s >= sequence) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_stored_stays_pending_and_is_reported() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (_store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let stream = "q-results";
    // The dead-letter key holds a string: every XADD to it fails with WRONGTYPE.
    let _: () = redis::cmd("SET")
        .arg(&["q-results-deadletter", "not a stream"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let event = |seq: u64| platform("q", seq, &[json!({"id": seq})], &[], &[]).to_string();
    xadd(&mut conn, stream, "data", &event(1)).await;
    let bad = xadd(&mut conn, stream, "data", "not json").await;
    xadd(&mut conn, stream, "data", &event(2)).await;
    let running = spawn(
        &server,
        config(vec![StreamSpec::drasi_query("q")], "c"),
        &handle,
    );
    let err = tokio::time::timeout(PATIENCE, running.wait())
        .await
        .expect("the run ends")
        .expect_err("a dead letter that cannot be stored ends the run");
    let text = err.to_string();
    assert!(text.contains("WRONGTYPE"), "{text}");
    assert!(text.contains("dead letter"), "{text}");
    let pending = pending_entries(&mut conn, stream, GROUP).await;
    assert!(
        pending.iter().any(|(id, _, _)| *id == bad),
        "the entry stays pending: {pending:?}"
    );
    assert_eq!(handle.status("q").and_then(|s| s.sequence), Some(1));
    runtime.shutdown().await.expect("runtime shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_with_thousands_of_fields_are_dead_lettered_whole() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let (_store, runtime) = memory_runtime().await;
    let handle = runtime.handle();
    let stream = "q-results";
    let event = platform("q", 1, &[json!({"id": 1})], &[], &[]).to_string();
    // No `data` field: 3000 fields go through the script, 3001 through XADD then XACK.
    let mut ids = Vec::new();
    for n in [3000usize, 3001] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for i in 0..n {
            cmd.arg(format!("f{i}")).arg(i);
        }
        ids.push(cmd.query_async::<String>(&mut conn).await.unwrap());
    }
    xadd(&mut conn, stream, "data", &event).await;
    let running = spawn(
        &server,
        config(vec![StreamSpec::drasi_query("q")], "c"),
        &handle,
    );
    wait_committed(&handle, &mut conn, stream, "q", 1).await;
    let report = running.stop().await.expect("a clean stop");
    assert_eq!(report.dead_lettered, 2, "{report:?}");
    let dead = entries(&mut conn, "q-results-deadletter").await;
    assert_eq!(dead.len(), 2);
    for ((_, fields), (id, n)) in dead.iter().zip(ids.iter().zip([3000usize, 3001])) {
        assert_eq!(&fields["deadletter-id"], id);
        assert_eq!(fields.len(), n + 5, "every field kept");
        assert_eq!(fields[&format!("f{}", n - 1)], (n - 1).to_string());
    }
    runtime.shutdown().await.expect("runtime shutdown");
}
