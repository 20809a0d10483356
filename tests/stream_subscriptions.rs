//! Durable Streams subscriptions through the real binary: access control (the server's roles
//! for managing and claiming, the wake's own token for acks, a public JWK Set), the
//! `--max-subscriptions` cap, and a `serve --data` restart (SIGKILL) that keeps the
//! subscription, its cursor, the claim in progress and the signing key — the claim's token,
//! signed before the kill, still acks after it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const WRITE: &str = "write-token-for-subscription-tests";
const READ: &str = "read-token-for-subscription-tests";

fn serve(dir: &std::path::Path) -> support::serve::Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir)
            .args(["--max-subscriptions", "1"])
            .env("LIVERESULTS_TOKENS", format!("write:{WRITE},read:{READ}"))
            .env("RUST_LOG", "error")
            .stderr(Stdio::inherit()),
    )
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_keep_their_roles_cap_and_state_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let server = serve(dir.path());
    let url = |base: &str, path: &str| format!("{base}/v1/stream/{path}");
    let sub = json!({"type": "pull-wake", "streams": ["events/a"], "wake_stream": "wake/pool",
                     "lease_ttl_ms": 600_000});

    // Roles: no token 401, read may not create, write may; read may read.
    let put_sub = |token: Option<&str>, id: &str| {
        let request = client.put(url(&server.url, &format!("__ds/subscriptions/{id}")));
        let request = request
            .header("content-type", "application/json")
            .json(&sub);
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    assert_eq!(send(put_sub(None, "s1")).await.0, 401);
    assert_eq!(send(put_sub(Some(READ), "s1")).await.0, 403);
    for (path, body) in [("wake/pool", "[]"), ("events/a", "")] {
        let create = client.put(url(&server.url, path)).bearer_auth(WRITE);
        let create = create.header("content-type", "application/json").body(body);
        assert_eq!(send(create).await.0, 201, "{path}");
    }
    assert_eq!(send(put_sub(Some(WRITE), "s1")).await.0, 201);
    let (status, refused) = send(put_sub(Some(WRITE), "s2")).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("TOO_MANY_SUBSCRIPTIONS"))
    );
    let get = client
        .get(url(&server.url, "__ds/subscriptions/s1"))
        .bearer_auth(READ);
    assert_eq!(send(get).await.0, 200);
    // The JWK Set needs no token; acks without a valid wake token get the API's own 401.
    let jwks = send(client.get(url(&server.url, "__ds/jwks.json"))).await;
    assert_eq!(jwks.0, 200);
    let kid = jwks.1["keys"][0]["kid"].clone();
    let forged = client
        .post(url(&server.url, "__ds/subscriptions/s1/ack"))
        .bearer_auth("1.AAAA");
    let (status, body) = send(forged.json(&json!({"wake_id": "w", "generation": 1}))).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("TOKEN_INVALID"))
    );

    // Data, a wake, a claim and a partial ack.
    let append = client.post(url(&server.url, "events/a")).bearer_auth(WRITE);
    let append = append
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#);
    assert_eq!(send(append).await.0, 204);
    let mut claim = Value::Null;
    for _ in 0..100 {
        let request = client
            .post(url(&server.url, "__ds/subscriptions/s1/claim"))
            .bearer_auth(WRITE);
        let (status, body) = send(request.json(&json!({"worker": "w1"}))).await;
        if status == 200 {
            claim = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = claim["token"].as_str().expect("claimed").to_owned();
    let tail = claim["streams"][0]["tail_offset"]
        .as_str()
        .expect("tail")
        .to_owned();
    let ack = |base: &str, done: bool| {
        client
            .post(url(base, "__ds/subscriptions/s1/ack"))
            .bearer_auth(&token)
            .json(
                &json!({"wake_id": claim["wake_id"], "generation": claim["generation"],
                          "acks": [{"stream": "events/a", "offset": tail}], "done": done}),
            )
    };
    assert_eq!(
        send(ack(&server.url, false)).await,
        (200, json!({"ok": true, "next_wake": false}))
    );
    drop(server); // SIGKILL

    let server = serve(dir.path());
    let get = client
        .get(url(&server.url, "__ds/subscriptions/s1"))
        .bearer_auth(READ);
    let (status, kept) = send(get).await;
    assert_eq!(status, 200);
    assert_eq!(kept["streams"][0]["acked_offset"], json!(tail));
    let jwks = send(client.get(url(&server.url, "__ds/jwks.json"))).await;
    assert_eq!(
        jwks.1["keys"][0]["kid"], kid,
        "the signing key survives the restart"
    );
    let busy = client
        .post(url(&server.url, "__ds/subscriptions/s1/claim"))
        .bearer_auth(WRITE);
    let (status, body) = send(busy.json(&json!({"worker": "w2"}))).await;
    assert_eq!(
        (status, &body["error"]["current_holder"]),
        (409, &json!("w1"))
    );
    assert_eq!(
        send(ack(&server.url, true)).await,
        (200, json!({"ok": true, "next_wake": false}))
    );
    assert_eq!(
        send(ack(&server.url, true)).await.1["error"]["code"],
        json!("FENCED")
    );
}
