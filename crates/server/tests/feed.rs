//! The change feed: catch-up, ETag/304, long-poll, SSE, must-refetch, shutdown.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{adds, Server};
use futures_util::StreamExt;
use liveresults_core::{MemoryStore, OutboxRetention};
use liveresults_runtime::RuntimeConfig;
use serde_json::Value;

fn next_offset(r: &reqwest::Response) -> String {
    r.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn tail(server: &Server, query: &str) -> String {
    let (_, stats) = server.get_json(&format!("/queries/{query}")).await;
    stats["offset"].as_str().unwrap().to_owned()
}

/// Reads SSE frames until `done` says stop or `limit` passes; returns the (event, data) pairs.
async fn sse_until(
    response: reqwest::Response,
    limit: Duration,
    mut done: impl FnMut(&[(String, String)]) -> bool,
) -> (Vec<(String, String)>, bool) {
    let mut stream = response.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return (events, false),
            Ok(None) => return (events, true),
            Ok(Some(chunk)) => {
                buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let mut event = String::new();
                    let mut data = String::new();
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if !event.is_empty() {
                        events.push((event, data));
                    }
                }
                if done(&events) {
                    return (events, false);
                }
            }
        }
    }
}

/// Catch-up responses are bounded by bytes, not by `changes_batch`: the official client
/// reading with `live: false` stops after one response, so a response cut at an entry count
/// would end its read short of the tail. Live reads keep the batch.
#[tokio::test]
async fn catch_up_is_not_cut_at_the_batch_size() {
    let server = Server::start(|s| s.changes_batch(2).chunk_lines(1)).await;
    assert_eq!(server.post("q", adds("q", 1, 10, 1)).await.status(), 200);
    let r = (server.http.get(server.at("/queries/q/changes?offset=-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["stream-up-to-date"], "true");
    let msgs: Vec<Value> = r.json().await.unwrap();
    assert_eq!(msgs.len(), 10);
    assert_eq!(msgs[9]["sequence"], 10);
    let r = (server.http)
        .get(server.at("/queries/q/changes?offset=-1&live=long-poll"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("stream-up-to-date").is_none());
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 2);
}

#[tokio::test]
async fn catch_up_etag_and_304() {
    // The byte budget that fits the first two messages exactly, measured on a server holding
    // the same commits (messages are deterministic).
    let sizes: Vec<usize> = {
        let probe = Server::start(|s| s.chunk_lines(1)).await;
        assert_eq!(probe.post("q", adds("q", 1, 3, 1)).await.status(), 200);
        let r = (probe.http.get(probe.at("/queries/q/changes?offset=-1")))
            .send()
            .await
            .unwrap();
        let msgs: Vec<Value> = r.json().await.unwrap();
        msgs.iter().map(|m| m.to_string().len() + 1).collect()
    };
    let budget = sizes[0] + sizes[1];
    let server = Server::start(|s| s.changes_max_bytes(budget).chunk_lines(1)).await;
    assert_eq!(server.post("q", adds("q", 1, 3, 1)).await.status(), 200);
    let url = server.at("/queries/q/changes?offset=-1");
    let r = server.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Two entries out of three fit the byte budget: not at the tail yet, cacheable history.
    assert!(r.headers().get("stream-up-to-date").is_none());
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let next = next_offset(&r);
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 2);

    let r = server
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(next_offset(&r), next);

    let r = server
        .http
        .get(server.at(&format!("/queries/q/changes?offset={next}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["stream-up-to-date"], "true");
    let tail_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let msgs: Vec<Value> = r.json().await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["sequence"], 3);

    // At the tail the ETag changes once something is committed.
    let at_tail = server.at(&format!("/queries/q/changes?offset={next}"));
    let r = server
        .http
        .get(&at_tail)
        .header("if-none-match", &tail_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(server.post("q", adds("q", 4, 4, 2)).await.status(), 200);
    let r = server
        .http
        .get(&at_tail)
        .header("if-none-match", &tail_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 2);

    // `now` is the tail, without an ETag.
    let r = server
        .http
        .get(server.at("/queries/q/changes?offset=now"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("etag").is_none());
    assert_eq!(next_offset(&r), tail(&server, "q").await);

    for (query, status) in [
        ("offset=garbage", 400),
        ("offset=0000000000000000_0000000000000000000x", 400),
        ("live=long-poll", 400),
        ("offset=-1&live=carrier-pigeon", 400),
        ("offset=0000000000000000_00000000000000000099", 409),
    ] {
        let r = server
            .http
            .get(server.at(&format!("/queries/q/changes?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{query}");
    }
    server.stop().await;
}

#[tokio::test]
async fn long_poll_times_out_with_204_then_wakes_on_commit() {
    let server = Server::start(|s| s.long_poll_timeout(Duration::from_millis(300))).await;
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let offset = tail(&server, "q").await;
    let url = server.at(&format!(
        "/queries/q/changes?offset={offset}&live=long-poll"
    ));
    let started = Instant::now();
    let r = server.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(next_offset(&r), offset);
    assert_eq!(r.headers()["stream-up-to-date"], "true");
    let cursor = r.headers()["stream-cursor"].to_str().unwrap().to_owned();
    // Echoing a current cursor gets a strictly greater one.
    let r = server
        .http
        .get(format!("{url}&cursor={cursor}"))
        .send()
        .await
        .unwrap();
    let echoed: u64 = r.headers()["stream-cursor"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(echoed > cursor.parse::<u64>().unwrap());
    server.stop().await;
}

#[tokio::test]
async fn two_hundred_long_polls_all_receive_the_next_commit() {
    const READERS: usize = 200;
    let server = Server::start(|s| s.long_poll_timeout(Duration::from_secs(20))).await;
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let offset = tail(&server, "q").await;
    let url = server.at(&format!(
        "/queries/q/changes?offset={offset}&live=long-poll"
    ));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(READERS)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (http, url) = (http.clone(), url.clone());
        readers.push(tokio::spawn(async move {
            let r = http.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Vec<Value>>().await.unwrap())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.state.metrics().long_polls_open() < READERS as u64 {
        assert!(Instant::now() < deadline, "readers did not all park");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.post("q", adds("q", 2, 2, 2)).await.status(), 200);
    for reader in readers {
        let (status, messages) = reader.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["sequence"], 2);
    }
    assert_eq!(server.state.metrics().long_polls_open(), 0);
    server.stop().await;
}

#[tokio::test]
async fn sse_sends_data_and_control_events() {
    let server = Server::start(|s| s.sse_keep_alive(Duration::from_millis(50))).await;
    assert_eq!(server.post("q", adds("q", 1, 2, 1)).await.status(), 200);
    let r = server
        .http
        .get(server.at("/queries/q/changes?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let poster = {
        let (http, url) = (server.http.clone(), server.at("/queries/q/events"));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            http.post(url)
                .header("content-type", "application/x-ndjson")
                .body(adds("q", 3, 3, 2))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let (events, _) = sse_until(r, Duration::from_secs(10), |events| {
        events.iter().filter(|(e, _)| e == "data").count() >= 2
            && events.last().is_some_and(|(e, _)| e == "control")
    })
    .await;
    assert_eq!(poster.await.unwrap(), 200);
    let data: Vec<Value> = events
        .iter()
        .filter(|(e, _)| e == "data")
        .flat_map(|(_, d)| serde_json::from_str::<Vec<Value>>(d).unwrap())
        .collect();
    assert_eq!(
        data.iter()
            .map(|m| m["sequence"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    let control: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(control["upToDate"], true);
    assert_eq!(
        control["streamNextOffset"],
        tail(&server, "q").await.as_str()
    );
    assert!(control["streamCursor"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn expired_offset_must_refetch_the_snapshot() {
    let store = Arc::new(MemoryStore::with_retention(OutboxRetention {
        max_entries: 2,
        max_bytes: 1 << 20,
    }));
    let server = Server::with_store(store, RuntimeConfig::new(), |s| s.chunk_lines(1)).await;
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let early = tail(&server, "q").await;
    assert_eq!(server.post("q", adds("q", 2, 5, 1)).await.status(), 200);
    for offset in ["-1".to_owned(), early] {
        for live in ["", "&live=long-poll", "&live=sse"] {
            let r = server
                .http
                .get(server.at(&format!("/queries/q/changes?offset={offset}{live}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 409, "{offset}{live}");
            let problem: Value = r.json().await.unwrap();
            assert!(problem["type"].as_str().unwrap().ends_with("must-refetch"));
            assert!(problem["detail"].as_str().unwrap().contains("snapshot"));
            assert_eq!(problem["offset"], tail(&server, "q").await.as_str());
        }
    }
    // The snapshot's offset is readable.
    let text = server.get_text("/queries/q/snapshot").await;
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let r = server
        .http
        .get(server.at(&format!(
            "/queries/q/changes?offset={}",
            header["offset"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_sse_streams_and_long_polls() {
    let server = Server::start(|s| s.long_poll_timeout(Duration::from_secs(60))).await;
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let offset = tail(&server, "q").await;
    let sse = server
        .http
        .get(server.at("/queries/q/changes?offset=now&live=sse"))
        .send()
        .await
        .unwrap();
    let poll = {
        let (http, url) = (
            server.http.clone(),
            server.at(&format!(
                "/queries/q/changes?offset={offset}&live=long-poll"
            )),
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state.metrics().long_polls_open() < 1 || server.state.metrics().sse_clients() < 1 {
        assert!(Instant::now() < deadline, "readers did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    server.trigger_shutdown();
    let (events, ended) = sse_until(sse, Duration::from_secs(10), |_| false).await;
    assert!(ended, "the SSE stream did not end on shutdown");
    assert_eq!(events[0].0, "control");
    let poll = poll.await.unwrap();
    assert_eq!(poll.status(), 204);
    assert_eq!(next_offset(&poll), offset);
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

/// A client that stops reading a streamed snapshot cannot hold the server past the grace
/// period (regression: shutdown waited for it forever).
#[tokio::test]
async fn a_stalled_snapshot_reader_does_not_block_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(|s| {
        s.shutdown_grace(Duration::from_millis(300))
            .chunk_lines(5000)
    })
    .await;
    let wide = "x".repeat(200);
    let body: String = (1..=20_000)
        .map(|i| {
            format!(
                r#"{{"query_id":"big","sequence":{i},"results":[{{"type":"ADD","data":{{"id":{i},"pad":"{wide}"}},"row_signature":{i}}}]}}"#
            ) + "\n"
        })
        .collect();
    assert_eq!(server.post("big", body).await.status(), 200);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"GET /queries/big/snapshot HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let n = stalled.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // Never read again: the ~4 MiB body fills the socket buffers and the server's writes stall.
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("shutdown finished despite the stalled reader");
    drop(stalled);
}
