//! The Durable Streams families of `/metrics`, through the real binary: requests by
//! operation and status class, the body bytes of successful appends, and the stream gauge.

mod support;

use std::process::{Command, Stdio};

/// The value of the sample `line` (`name{labels}`) in a Prometheus text scrape.
fn sample(scrape: &str, line: &str) -> Option<u64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_requests_appended_bytes_and_streams_are_counted() {
    let server = support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "error")
            .stderr(Stdio::inherit()),
    );
    let client = reqwest::Client::new();
    let url = |name: &str| format!("{}/v1/stream/{name}", server.url);
    for name in ["a", "b"] {
        let put = client.put(url(name)).header("content-type", "text/plain");
        assert_eq!(put.send().await.expect("PUT").status(), 201, "{name}");
    }
    for body in ["hello", "streams!"] {
        let post = client.post(url("a")).header("content-type", "text/plain");
        let status = post.body(body).send().await.expect("POST").status();
        assert!(status.is_success(), "{status}");
    }
    // A refused append counts as a 4xx and adds no bytes.
    let post = client
        .post(url("missing"))
        .header("content-type", "text/plain");
    assert_eq!(post.body("lost").send().await.expect("POST").status(), 404);
    let read = client.get(format!("{}?offset=-1", url("a"))).send().await;
    assert_eq!(read.expect("GET").status(), 200);
    // The subscription API's control requests count under "other".
    let jwks = client.get(url("__ds/jwks.json")).send().await;
    assert_eq!(jwks.expect("JWKS").status(), 200);
    let ack = client.post(url("__ds/subscriptions/s/ack")).body("{}");
    assert_eq!(ack.send().await.expect("ack").status(), 401);

    let scrape = client.get(format!("{}/metrics", server.url)).send().await;
    let scrape = scrape.expect("scrape").text().await.expect("text");
    let requests = |op: &str, class: &str| {
        sample(
            &scrape,
            &format!("liveresults_stream_requests_total{{operation=\"{op}\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(requests("create", "2xx"), Some(2), "{scrape}");
    assert_eq!(requests("append", "2xx"), Some(2));
    assert_eq!(requests("append", "4xx"), Some(1));
    assert_eq!(requests("read", "2xx"), Some(1));
    assert_eq!(requests("delete", "2xx"), Some(0));
    assert_eq!(requests("other", "2xx"), Some(1), "the JWK Set");
    assert_eq!(requests("other", "4xx"), Some(1), "an ack without a token");
    assert_eq!(
        sample(&scrape, "liveresults_stream_appended_bytes_total"),
        Some(13),
        "hello + streams!"
    );
    assert_eq!(sample(&scrape, "liveresults_streams"), Some(2));
}
