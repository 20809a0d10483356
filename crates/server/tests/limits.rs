//! Limits over a real socket: slow headers and stalled bodies are cut off, the connection cap
//! holds, query ids and query counts are capped before anything is stored, absurd durations
//! do not overflow.

mod common;

use std::time::{Duration, Instant};

use common::{adds, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(server: &Server) -> String {
    server.url.strip_prefix("http://").unwrap().to_owned()
}

/// Reads until the peer closes (or resets) the connection; what was read.
async fn read_until_closed(read: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = read.read(&mut buf).await {
        all.extend_from_slice(&buf[..n]);
    }
    all
}

#[tokio::test]
async fn slow_header_connections_are_closed_within_the_header_timeout() {
    const CONNECTIONS: usize = 500;
    let server = Server::start(|s| s.header_read_timeout(Duration::from_secs(1))).await;
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..CONNECTIONS {
        let stream = TcpStream::connect(addr(&server)).await.unwrap();
        clients.push(tokio::spawn(async move {
            let (mut read, mut write) = stream.into_split();
            // Every fifth client sends nothing at all; the others trickle a header forever.
            let trickle = async move {
                if i % 5 == 0 {
                    return std::future::pending::<()>().await;
                }
                for byte in b"GET /healthz HTTP/1.1\r\nx-slow: ".iter().cycle() {
                    if write.write_all(&[*byte]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                _ = read_until_closed(&mut read) => {}
                () = trickle => {}
            }
        }));
    }
    let within = Duration::from_secs(6);
    for client in clients {
        tokio::time::timeout(within.saturating_sub(started.elapsed()), client)
            .await
            .expect("a slow client's connection was still open after the header timeout")
            .unwrap();
    }
    // The server still answers.
    assert_eq!(server.get_json("/healthz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_by_the_body_timeout() {
    let server = Server::start(|s| s.body_read_timeout(Duration::from_millis(500))).await;
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    let line = adds("q", 1, 1, 1);
    let head = format!(
        "POST /queries/q/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\n\
         content-length: {}\r\n\r\n",
        line.len() + 1000
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(line.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut stream))
        .await
        .expect("the stalled body kept its connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(started.elapsed() >= Duration::from_millis(400), "{answer}");
    eprintln!("{answer}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("reading the request body after line 1"),
        "{answer}"
    );
    // The chunk in flight was not committed.
    assert_eq!(
        server.get_json("/queries/q").await.1["sequence"],
        Value::Null
    );
    server.stop().await;
}

#[tokio::test]
async fn the_connection_cap_holds_further_clients_until_one_closes() {
    let server = Server::start(|s| s.max_connections(2)).await;
    let first = TcpStream::connect(addr(&server)).await.unwrap();
    let second = TcpStream::connect(addr(&server)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr(&server)).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut third))
        .await
        .expect("the waiting client was not served after a connection closed");
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    drop(second);
    server.stop().await;
}

#[tokio::test]
async fn query_ids_longer_than_the_limit_get_400_and_store_nothing() {
    let server = Server::start(|s| s.max_query_id_bytes(8)).await;
    let long = "abcdefghi";
    let r = server.post(long, adds(long, 1, 1, 1)).await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    eprintln!("{problem}");
    assert_eq!(problem["type"], "urn:liveresults:problem:query-id-too-long");
    assert_eq!(
        problem["detail"],
        "the query id is 9 bytes; the limit is 8 (--max-query-id-bytes)"
    );
    // Percent-encoding counts as the bytes it decodes to: "€" is 3, so 3 of them are 9.
    let encoded = "%E2%82%AC".repeat(3);
    assert_eq!(server.post(&encoded, String::new()).await.status(), 400);
    assert_eq!(server.get_json(&format!("/queries/{long}")).await.0, 400);
    assert_eq!(server.get_json("/queries").await.1, serde_json::json!([]));
    assert_eq!(
        server
            .post("abcdefgh", adds("abcdefgh", 1, 1, 1))
            .await
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn the_query_cap_refuses_new_queries_only() {
    let server = Server::start(|s| s.max_queries(2)).await;
    assert_eq!(server.post("a", adds("a", 1, 1, 1)).await.status(), 200);
    assert_eq!(server.post("b", adds("b", 1, 1, 1)).await.status(), 200);
    let r = server.post("c", adds("c", 1, 1, 1)).await;
    assert_eq!(r.status(), 403);
    let problem: Value = r.json().await.unwrap();
    eprintln!("{problem}");
    assert_eq!(problem["type"], "urn:liveresults:problem:query-limit");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("holds 2 queries, its limit (--max-queries 2)"));
    assert_eq!(server.get_json("/queries/c").await.0, 404);
    assert_eq!(
        server
            .get_json("/queries")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Known queries keep accepting events.
    assert_eq!(server.post("a", adds("a", 2, 2, 1)).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn an_absurd_long_poll_timeout_neither_overflows_nor_panics() {
    let server = Server::start(|s| s.long_poll_timeout(Duration::from_secs(u64::MAX))).await;
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let (_, info) = server.get_json("/queries/q").await;
    let tail = info["offset"].as_str().unwrap().to_owned();
    let url = server.at(&format!("/queries/q/changes?offset={tail}&live=long-poll"));
    let poll = tokio::spawn(server.http.get(url).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.post("q", adds("q", 2, 2, 1)).await.status(), 200);
    let r = poll
        .await
        .unwrap()
        .expect("the long-poll's worker panicked");
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn the_header_timeout_does_not_cut_a_slow_answer() {
    let server = Server::start(|s| {
        s.header_read_timeout(Duration::from_millis(200))
            .long_poll_timeout(Duration::from_secs(1))
    })
    .await;
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    let (_, info) = server.get_json("/queries/q").await;
    let tail = info["offset"].as_str().unwrap().to_owned();
    let url = server.at(&format!("/queries/q/changes?offset={tail}&live=long-poll"));
    let started = Instant::now();
    let r = server.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.stop().await;
}
