//! A query's results as a State Protocol stream (`/v1/stream/queries/{id}`) through the real
//! binary over RocksDB: a reader from `-1` gets the snapshot; a reader resuming from an offset
//! gets exactly the changes after it, also after the server was SIGKILLed and restarted; an
//! offset the outbox no longer covers gets `reset` and a fresh snapshot; a long-poll at the
//! tail wakes on the next commit.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::serve::Serve;

fn serve(dir: &std::path::Path) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--listen", "127.0.0.1:0", "--chunk-lines", "1"])
            .args(["--long-poll-timeout-secs", "5", "--data"])
            .arg(dir)
            .stderr(Stdio::null()),
    )
}

/// A platform change event adding (or deleting) `{"id": id}`.
fn event(sequence: u64, id: u64, delete: bool) -> String {
    let row = serde_json::json!([{ "id": id }]);
    let (added, deleted) = if delete {
        (serde_json::json!([]), row)
    } else {
        (row, serde_json::json!([]))
    };
    serde_json::json!({
        "kind": "change", "queryId": "q", "sequence": sequence, "sourceTimeMs": 0,
        "addedResults": added, "updatedResults": [], "deletedResults": deleted,
    })
    .to_string()
}

async fn ingest(client: &reqwest::Client, url: &str, lines: &[String]) {
    let response = client
        .post(format!("{url}/queries/q/events"))
        .header("content-type", "application/x-ndjson")
        .body(lines.join("\n"))
        .send()
        .await
        .expect("ingest");
    assert!(
        response.status().is_success(),
        "ingest: {}",
        response.status()
    );
}

/// `GET /v1/stream/queries/q?offset=…[&live=long-poll]`: status, next offset, messages.
async fn read(client: &reqwest::Client, url: &str, query: &str) -> (u16, String, Vec<Value>) {
    let response = client
        .get(format!("{url}/v1/stream/queries/q?{query}"))
        .send()
        .await
        .expect("read");
    let status = response.status().as_u16();
    let next = response.headers()["stream-next-offset"]
        .to_str()
        .expect("offset")
        .to_owned();
    let text = response.text().await.expect("body");
    let messages = if text.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&text).expect("a JSON array")
    };
    (status, next, messages)
}

/// `control` or `operation:txid` of each message.
fn kinds(messages: &[Value]) -> Vec<String> {
    let kind = |m: &Value| {
        let h = &m["headers"];
        match (h["control"].as_str(), h["operation"].as_str()) {
            (Some(control), _) => control.to_owned(),
            (None, Some(op)) => format!("{op}:{}", h["txid"].as_str().unwrap_or("-")),
            _ => "?".to_owned(),
        }
    };
    messages.iter().map(kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_streams_resume_across_restarts_and_reset_past_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let mut server = serve(dir.path());
    let lines: Vec<String> = (1..=3).map(|s| event(s, s, false)).collect();
    ingest(&client, &server.url, &lines).await;
    let (_, after_snapshot, messages) = read(&client, &server.url, "offset=-1").await;
    assert_eq!(
        kinds(&messages),
        [
            "snapshot-start",
            "insert:-",
            "insert:-",
            "insert:-",
            "snapshot-end"
        ]
    );
    let mut ids: Vec<u64> = (messages[1..4].iter())
        .filter_map(|m| m["value"]["id"].as_u64())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);

    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let server = serve(dir.path());
    ingest(
        &client,
        &server.url,
        &[event(4, 4, false), event(5, 2, true)],
    )
    .await;
    let (status, tail, messages) =
        read(&client, &server.url, &format!("offset={after_snapshot}")).await;
    assert_eq!(status, 200);
    assert_eq!(kinds(&messages), ["upsert:4", "delete:5"]);

    // A long-poll at the tail wakes on the next commit.
    let poll = {
        let (client, url, tail) = (client.clone(), server.url.clone(), tail.clone());
        tokio::spawn(
            async move { read(&client, &url, &format!("offset={tail}&live=long-poll")).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest(&client, &server.url, &[event(6, 6, false)]).await;
    let (status, _, messages) = poll.await.expect("long-poll");
    assert_eq!(
        (status, kinds(&messages)),
        (200, vec!["upsert:6".to_owned()])
    );

    // 1,100 more commits push the early ones out of the outbox (1,024 kept): the old offset
    // gets a reset and a fresh snapshot of every row.
    let lines: Vec<String> = (7..1107).map(|s| event(s, s, false)).collect();
    ingest(&client, &server.url, &lines).await;
    let (status, next, messages) = read(&client, &server.url, &format!("offset={tail}")).await;
    assert_eq!(status, 200);
    let kinds = kinds(&messages);
    assert_eq!(kinds[..2], ["reset", "snapshot-start"]);
    assert_eq!(kinds.last().map(String::as_str), Some("snapshot-end"));
    assert_eq!(kinds.iter().filter(|k| *k == "insert:-").count(), 1104);
    let (_, at_tail, messages) = read(&client, &server.url, &format!("offset={next}")).await;
    assert!(messages.is_empty());
    assert_eq!(at_tail, next);

    // A catch-up over the 1,000 commits the outbox still holds is one response (many pages
    // of the outbox, within the byte budget), so a client reading with live: false, which
    // stops after one response, still gets to the tail.
    let lines: Vec<String> = (1107..2107).map(|s| event(s, s, false)).collect();
    ingest(&client, &server.url, &lines).await;
    let response = client
        .get(format!("{}/v1/stream/queries/q?offset={next}", server.url))
        .send()
        .await
        .expect("catch-up");
    assert!(response.headers().contains_key("stream-up-to-date"));
    let messages: Vec<Value> = response.json().await.expect("JSON array");
    assert_eq!(messages.len(), 1_000);
    assert_eq!(messages[999]["headers"]["txid"], "2106");
}
