//! Webhook targets through the real binary: loopback webhooks only with
//! `serve --allow-dev-webhooks`; local and reserved IPv4 literals never.

mod support;

use std::process::{Command, Stdio};

use serde_json::{json, Value};

const WRITE: &str = "write-token-for-webhook-target-tests";

fn serve(extra: &[&str]) -> support::serve::Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("LIVERESULTS_TOKENS", format!("write:{WRITE}"))
            .env("RUST_LOG", "error")
            .stderr(Stdio::inherit()),
    )
}

/// Creates webhook subscription `id` with `url`; the status and the error code.
async fn put_webhook(client: &reqwest::Client, base: &str, id: &str, url: &str) -> (u16, Value) {
    let body = json!({"type": "webhook", "streams": ["events/a"], "webhook": {"url": url}});
    let response = client
        .put(format!("{base}/v1/stream/__ds/subscriptions/{id}"))
        .bearer_auth(WRITE)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body["error"]["code"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_webhooks_need_the_dev_flag() {
    let client = reqwest::Client::new();
    let strict = serve(&[]);
    for (i, url) in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/admin",
        "https://127.0.0.1/hook",
        "https://192.0.0.8/hook",
        "https://198.18.0.1/hook",
        "https://240.0.0.1/hook",
        "https://169.254.169.254/latest",
    ]
    .iter()
    .enumerate()
    {
        let (status, _) = put_webhook(&client, &strict.url, &format!("s{i}"), url).await;
        assert_eq!(status, 400, "{url} without --allow-dev-webhooks");
    }
    drop(strict);
    let dev = serve(&["--allow-dev-webhooks"]);
    let (status, _) = put_webhook(&client, &dev.url, "dev", "http://127.0.0.1:9/hook").await;
    assert_eq!(status, 201, "loopback with --allow-dev-webhooks");
    let (status, _) = put_webhook(&client, &dev.url, "meta", "https://169.254.169.254/x").await;
    assert_eq!(status, 400, "link-local even with --allow-dev-webhooks");
}
