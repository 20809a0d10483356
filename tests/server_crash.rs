//! SIGKILL `liveresults serve` during HTTP ingest, restart it on the same directory: every
//! acknowledged chunk is there and no chunk is partial. Then SIGTERM shuts it down cleanly.
//!
//! The server commits every 10 lines (`--chunk-lines 10`); each POST carries 50 lines, so a
//! kill can land between the server chunks of one request. Every line adds rows tagged with
//! its server chunk's number, so a chunk's rows are all present or all absent.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::serve::Serve;

const CHUNK_LINES: u64 = 10;
const POST_LINES: u64 = 50;
const ROWS_PER_LINE: u64 = 3;

/// Kill rounds: `LIVERESULTS_CRASH_ROUNDS` (as every crash test), default 4 (each round
/// restarts the server binary).
fn rounds() -> usize {
    liveresults_core::testing::crash::crash_rounds(4) as usize
}

fn start(data: &str) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--data", data, "--listen", "127.0.0.1:0"])
            .args(["--chunk-lines", &CHUNK_LINES.to_string()])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

/// Line `sequence` adds rows tagged with its server chunk number.
fn line(sequence: u64) -> String {
    let chunk = (sequence - 1) / CHUNK_LINES;
    let rows: Vec<String> = (0..ROWS_PER_LINE)
        .map(|k| {
            let id = sequence * ROWS_PER_LINE + k;
            format!(r#"{{"type":"ADD","data":{{"id":{id},"chunk":{chunk}}},"row_signature":{id}}}"#)
        })
        .collect();
    format!(
        r#"{{"query_id":"q","sequence":{sequence},"timestamp":0,"results":[{}]}}"#,
        rows.join(",")
    )
}

/// The committed sequence from the query's stats (None before the first commit): the round's
/// writer continues from it without reading the whole, ever larger, result set.
async fn committed(http: &reqwest::Client, url: &str) -> Option<u64> {
    let r = http.get(format!("{url}/queries/q")).send().await.unwrap();
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200);
    let stats: serde_json::Value = r.json().await.unwrap();
    stats["sequence"].as_u64()
}

/// One snapshot line; only the chunk tag is needed, so rows parse into a small struct
/// instead of a `Value` tree (the check reads tens of millions of rows by round 100).
#[derive(serde::Deserialize)]
struct SnapshotRow {
    row: ChunkTag,
}

#[derive(serde::Deserialize)]
struct ChunkTag {
    chunk: u64,
}

/// Rows per chunk number, and the snapshot's sequence.
async fn snapshot(http: &reqwest::Client, url: &str) -> (Option<u64>, BTreeMap<u64, u64>) {
    // The query grows every round (tens of millions of rows by round 80 of 100), so reading
    // it whole takes far longer than the client's 30 s budget for a POST.
    let r = http
        .get(format!("{url}/queries/q/snapshot"))
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return (None, BTreeMap::new());
    }
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let mut chunks = BTreeMap::new();
    for l in lines {
        let row: SnapshotRow = serde_json::from_str(l).unwrap();
        *chunks.entry(row.row.chunk).or_insert(0) += 1;
    }
    assert_eq!(
        header["row_count"].as_u64().unwrap(),
        chunks.values().sum::<u64>()
    );
    (header["sequence"].as_u64(), chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_keeps_every_acknowledged_chunk_and_no_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap().to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut acknowledged = 0u64; // highest sequence a 200 answer covered
    for round in 0..rounds() {
        let mut server = start(&data);
        let first = committed(&http, &server.url).await.map_or(1, |s| s + 1);
        // A writer POSTs back to back; the answer of each acknowledged request is recorded.
        let writer = {
            let (http, url) = (http.clone(), server.url.clone());
            tokio::spawn(async move {
                let (mut next, mut acked, mut posts) = (first, None, 0u32);
                loop {
                    let body: String = (next..next + POST_LINES).map(|s| line(s) + "\n").collect();
                    let sent = http
                        .post(format!("{url}/queries/q/events"))
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    let Ok(report) = response.json::<serde_json::Value>().await else {
                        break;
                    };
                    next += POST_LINES;
                    assert_eq!(
                        report["committed_sequence"].as_u64(),
                        Some(next - 1),
                        "{report}"
                    );
                    acked = Some(next - 1);
                    posts += 1;
                }
                (acked, posts)
            })
        };
        // Kill at a different moment each round, while POSTs are in flight.
        tokio::time::sleep(Duration::from_millis(150 + 130 * round as u64)).await;
        server.child.kill().unwrap(); // SIGKILL, mid-request
        server.child.wait().unwrap();
        let (acked, posts) = writer.await.unwrap();
        assert!(
            posts > 0,
            "round {round}: no request was acknowledged before the kill"
        );
        acknowledged = acked.unwrap_or(acknowledged);

        let mut server = start(&data);
        let (sequence, chunks) = snapshot(&http, &server.url).await;
        let sequence = sequence.expect("something was committed");
        assert!(
            sequence >= acknowledged,
            "round {round}: lost acknowledged data: {sequence} < {acknowledged}"
        );
        assert_eq!(
            sequence % CHUNK_LINES,
            0,
            "round {round}: a partial chunk committed"
        );
        eprintln!("round {round}: acknowledged through {acknowledged}, stored through {sequence}");
        let full = CHUNK_LINES * ROWS_PER_LINE;
        let last_chunk = sequence / CHUNK_LINES;
        for chunk in 0..last_chunk {
            assert_eq!(
                chunks.get(&chunk),
                Some(&full),
                "round {round}: chunk {chunk} incomplete"
            );
        }
        assert_eq!(
            chunks.len() as u64,
            last_chunk,
            "round {round}: rows beyond the sequence"
        );
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }

    // SIGTERM: graceful shutdown, exit 0, and the data is there on the next start.
    let mut server = start(&data);
    let (before, _) = snapshot(&http, &server.url).await;
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success(), "kill -TERM failed: {kill}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut server = start(&data);
    assert_eq!(snapshot(&http, &server.url).await.0, before);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
