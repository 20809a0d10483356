//! Durable Streams through crashes: `liveresults serve --data DIR` is SIGKILLed (several times)
//! while an idempotent producer appends; after each restart the producer resends its first
//! unacknowledged request and carries on. The stream must end up holding every message once,
//! in order: an append and its producer state are committed together, so a resent request that
//! had been committed is recognised (204) and one that had not is accepted (200) — never
//! stored twice, never refused as a gap.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::serve::Serve;

const MESSAGES: u64 = 5_000;
const PRODUCER: &str = "crash-writer";

fn serve(dir: &std::path::Path) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir)
            .stderr(Stdio::null()),
    )
}

/// Sends message `seq`; `Ok(status)` when the server answered.
async fn send(client: &reqwest::Client, url: &str, seq: u64) -> Result<u16, reqwest::Error> {
    let response = client
        .post(url)
        .header("content-type", "text/plain")
        .header("producer-id", PRODUCER)
        .header("producer-epoch", "0")
        .header("producer-seq", seq.to_string())
        .body(format!("{seq}\n"))
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Appends from `from` until the server stops answering (or all are sent); returns the first
/// sequence not acknowledged and how many answers were duplicates.
async fn append_until_dead(client: reqwest::Client, url: String, from: u64) -> (u64, u64) {
    let (mut seq, mut duplicates) = (from, 0);
    while seq < MESSAGES {
        match send(&client, &url, seq).await {
            Ok(200) => seq += 1,
            Ok(204) => {
                duplicates += 1;
                seq += 1;
            }
            Ok(status) => panic!("message {seq}: unexpected status {status}"),
            Err(_) => break, // the server is gone
        }
    }
    (seq, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_resumes_after_sigkill_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let mut next = 0;
    let mut duplicates = 0;
    for round in 0..4u64 {
        let mut server = serve(dir.path());
        let url = format!("{}/v1/stream/crash", server.url);
        if round == 0 {
            let created = client
                .put(&url)
                .header("content-type", "text/plain")
                .send()
                .await
                .expect("create");
            assert_eq!(created.status().as_u16(), 201);
        }
        let writer = tokio::spawn(append_until_dead(client.clone(), url, next));
        tokio::time::sleep(Duration::from_millis(150 + 100 * round)).await;
        server.child.kill().expect("SIGKILL the server");
        let _ = server.child.wait();
        let (acked, dups) = writer.await.expect("writer");
        assert!(
            acked > next || acked == MESSAGES,
            "round {round}: no progress before the kill"
        );
        // Only a resent message (the first of a round) can be a duplicate.
        assert!(dups <= 1, "round {round}: {dups} duplicates");
        duplicates += dups;
        eprintln!("round {round}: messages {next}..{acked} acknowledged before the SIGKILL");
        next = acked;
    }
    let server = serve(dir.path());
    let url = format!("{}/v1/stream/crash", server.url);
    let (acked, dups) = append_until_dead(client.clone(), url.clone(), next).await;
    assert_eq!(acked, MESSAGES);
    assert!(dups <= 1);
    duplicates += dups;

    let mut text = String::new();
    let mut offset = "-1".to_owned();
    loop {
        let response = client
            .get(format!("{url}?offset={offset}"))
            .send()
            .await
            .expect("read");
        let headers = response.headers().clone();
        text.push_str(&response.text().await.expect("body"));
        offset = headers["stream-next-offset"]
            .to_str()
            .expect("offset")
            .to_owned();
        if headers.contains_key("stream-up-to-date") {
            break;
        }
    }
    let expected: String = (0..MESSAGES).map(|n| format!("{n}\n")).collect();
    assert!(
        text == expected,
        "the stream does not hold 0..{MESSAGES} once each, in order ({} bytes, {duplicates} \
         duplicate answers)",
        text.len()
    );
}
