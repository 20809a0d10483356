//! Catch-up through the real binary: the outbox retention set on the command line decides
//! which offsets the change feed still serves, and the official `@durable-streams/client`
//! reading with `live: false` (one response, then it stops) gets a 10,000-commit history whole
//! from the change feed and from a query's State Protocol stream
//! (tests/durable_streams/catch_up.mjs says what it checks).

mod support;

use std::process::{Command, Stdio};

use support::serve::Serve;

fn serve(extra: &[&str]) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .args(["--chunk-lines", "1"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

/// A drasi-lib line adding row `id` at `sequence`.
fn add(sequence: u64) -> String {
    format!(
        r#"{{"query_id":"q","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{sequence}}},"row_signature":{sequence}}}]}}"#
    )
}

/// Commits `from..=to` (one commit each), then reads the change feed and the State Protocol
/// stream from the offsets taken after commit `from`: (feed status, feed messages, stream
/// control messages, stream change messages).
async fn history(url: &str, from: u64, to: u64) -> (u16, usize, Vec<String>, usize) {
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(format!("{url}/queries/q/events"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    assert!(post(add(from)).await.expect("ingest").status().is_success());
    let stats: serde_json::Value = (client.get(format!("{url}/queries/q")).send().await)
        .expect("stats")
        .json()
        .await
        .expect("JSON");
    let feed_offset = stats["offset"].as_str().expect("offset").to_owned();
    let head = (client
        .head(format!("{url}/v1/stream/queries/q"))
        .send()
        .await)
        .expect("HEAD");
    let stream_offset = head.headers()["stream-next-offset"]
        .to_str()
        .expect("offset")
        .to_owned();
    let lines: Vec<String> = (from + 1..=to).map(add).collect();
    assert!(post(lines.join("\n"))
        .await
        .expect("ingest")
        .status()
        .is_success());
    let feed = (client.get(format!("{url}/queries/q/changes?offset={feed_offset}")))
        .send()
        .await
        .expect("feed");
    let feed_status = feed.status().as_u16();
    let feed_messages = if feed_status == 200 {
        let messages: Vec<serde_json::Value> = feed.json().await.expect("JSON array");
        messages.len()
    } else {
        let problem: serde_json::Value = feed.json().await.expect("problem JSON");
        assert!(
            problem.to_string().contains("must-refetch"),
            "a 409 says must-refetch: {problem}"
        );
        0
    };
    let stream = (client.get(format!("{url}/v1/stream/queries/q?offset={stream_offset}")))
        .send()
        .await
        .expect("stream");
    let messages: Vec<serde_json::Value> = stream.json().await.expect("JSON array");
    let controls = (messages.iter())
        .filter_map(|m| m["headers"]["control"].as_str().map(str::to_owned))
        .collect();
    let changes = (messages.iter())
        .filter(|m| m["headers"]["operation"] == "upsert")
        .count();
    (feed_status, feed_messages, controls, changes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_retention_from_the_command_line() {
    // 10 commits kept: an offset 30 commits back is gone (409 must-refetch on the feed; the
    // query stream sends a reset and a fresh snapshot instead).
    let small = serve(&["--outbox-retention", "10"]);
    let (status, _, controls, changes) = history(&small.url, 1, 31).await;
    assert_eq!(status, 409);
    assert_eq!(controls, ["reset", "snapshot-start", "snapshot-end"]);
    assert_eq!(changes, 0);
    drop(small);
    // 2,000 kept (more than the default 1,024): 1,500 commits back is served.
    let large = serve(&["--outbox-retention", "2000"]);
    let (status, messages, controls, changes) = history(&large.url, 1, 1501).await;
    assert_eq!((status, messages), (200, 1500));
    assert!(controls.is_empty(), "{controls:?}");
    assert_eq!(changes, 1500);
    // The byte limit applies too: 1 KiB keeps only the last few commits.
    drop(large);
    let bytes = serve(&[
        "--outbox-retention",
        "2000",
        "--outbox-retention-bytes",
        "1024",
    ]);
    let (status, _, _, _) = history(&bytes.url, 1, 101).await;
    assert_eq!(status, 409);
}

#[test]
fn outbox_retention_out_of_bounds_is_refused_naming_the_range() {
    for (flag, value) in [
        ("--outbox-retention", "0"),
        ("--outbox-retention", "10000001"),
        ("--outbox-retention-bytes", "1023"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--memory", "--listen", "127.0.0.1:0", flag, value])
            .output()
            .expect("run liveresults");
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("out of range"),
            "{flag} {value}: {stderr}"
        );
    }
}

/// The official client, `live: false`, over 10,000 commits (each its own outbox entry).
#[test]
fn the_official_client_catches_up_on_ten_thousand_commits() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durable_streams");
    assert!(
        dir.join("node_modules/@durable-streams/client").exists(),
        "the npm packages are missing: run `LIVERESULTS_TEST_SERVICES=1 source scripts/setup.sh`"
    );
    let server = serve(&["--outbox-retention", "20000"]);
    let status = Command::new("node")
        .arg("catch_up.mjs")
        .current_dir(&dir)
        .env("LIVERESULTS_URL", &server.url)
        .env("COMMITS", "10000")
        .status()
        .expect("run node (install Node.js 20 or later)");
    assert!(status.success(), "catch_up.mjs failed ({status})");
}
