//! The console over a real socket: its files (open even when tokens are required, with their
//! content types, ETags and Content-Security-Policy) and `GET /ui/api/queries` (read role,
//! paged and capped, with the commit clock). The browser test is the root package's
//! tests/console.rs.

mod common;

use common::{adds, Server};
use liveresults_server::console::assets::{ASSETS, CONTENT_SECURITY_POLICY};
use liveresults_server::{Security, Tokens};
use serde_json::Value;

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

async fn with_tokens() -> Server {
    let tokens = Tokens::new()
        .add(&format!("read:{READ}\nwrite:{WRITE}"), "test")
        .unwrap();
    Server::start(|s| s.security(Security::new().tokens(tokens))).await
}

async fn ingest(server: &Server, query: &str, from: u64, to: u64) {
    let r = server
        .http
        .post(server.at(&format!("/queries/{query}/events")))
        .bearer_auth(WRITE)
        .header("content-type", "application/x-ndjson")
        .body(adds(query, from, to, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn overview(server: &Server, query: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = server
        .http
        .get(server.at(&format!("/ui/api/queries{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn files_load_without_a_token_with_their_types_etags_and_policy() {
    let server = with_tokens().await;
    for (path, kind) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
    ] {
        let r = server.http.get(server.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let body = r.bytes().await.unwrap();
        assert!(!body.is_empty());
        // Revalidation: the same ETag is a 304 without a body.
        let again = server
            .http
            .get(server.at(path))
            .header("if-none-match", &etag);
        let again = again.send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let missing = server
        .http
        .get(server.at("/ui/secrets.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Every file the binary embeds is served under its name.
    for asset in &ASSETS {
        let r = server.http.get(server.at(&format!("/ui/{}", asset.name)));
        assert_eq!(r.send().await.unwrap().status(), 200, "{}", asset.name);
    }
    // The policy forbids inline scripts: the browser would refuse them.
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    server.stop().await;
}

#[tokio::test]
async fn overview_needs_the_read_role_and_pages_in_id_order() {
    let server = with_tokens().await;
    for (i, query) in ["e", "a", "d", "b", "c"].iter().enumerate() {
        ingest(&server, query, 1, u64::try_from(i).unwrap() + 1).await;
    }
    assert_eq!(overview(&server, "", None).await.0, 401);
    let (status, first) = overview(&server, "?limit=2", Some(READ)).await;
    assert_eq!(status, 200, "{first}");
    let ids = |page: &Value| -> Vec<String> {
        (page["queries"].as_array().unwrap().iter())
            .map(|q| q["query_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(first["total"], 5);
    assert_eq!(first["stopped"], 0);
    assert_eq!(first["next"], "b");
    let a = &first["queries"][0];
    assert_eq!(a["state"], "running");
    assert_eq!(a["sequence"], 2);
    assert_eq!(a["row_count"], 2);
    assert_eq!(a["epoch"], 0);
    assert!(a["reactions"].is_array(), "{a}");
    let (_, second) = overview(&server, "?limit=2&after=b", Some(READ)).await;
    assert_eq!(ids(&second), ["c", "d"]);
    let (_, last) = overview(&server, "?limit=2&after=d", Some(READ)).await;
    assert_eq!(ids(&last), ["e"]);
    assert_eq!(last["next"], Value::Null);
    // Without a limit: every query (fewer than the default page).
    let (_, all) = overview(&server, "", Some(READ)).await;
    assert_eq!(ids(&all), ["a", "b", "c", "d", "e"]);
    assert_eq!(overview(&server, "?limit=0", Some(READ)).await.0, 400);
    // A limit above the cap is served capped, not refused.
    assert_eq!(
        overview(&server, "?limit=999999999", Some(READ)).await.0,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn last_commit_time_is_when_this_host_committed() {
    let server = with_tokens().await;
    let (_, page) = overview(&server, "", Some(READ)).await;
    assert_eq!(page["total"], 0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ingest(&server, "q", 1, 3).await;
    let (_, page) = overview(&server, "", Some(READ)).await;
    let q = &page["queries"][0];
    assert_eq!(q["sequence"], 3);
    // The runtime's own commit time: known at the first answer, between the ingest's start
    // and the answer.
    let committed = q["last_commit_ms"]
        .as_u64()
        .expect("the time of the commit this host made");
    let now = page["now_ms"].as_u64().unwrap();
    assert!(
        before <= committed && committed <= now,
        "{before} <= {committed} <= {now}"
    );
    // A later answer with no commit in between reports the same time.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (_, again) = overview(&server, "", Some(READ)).await;
    assert_eq!(again["queries"][0]["last_commit_ms"], committed);
    assert!(again["now_ms"].as_u64().unwrap() > committed);
    // The console's clear button needs an admin token: a read token is refused.
    let r = server
        .http
        .delete(server.at("/queries/q"))
        .bearer_auth(READ);
    assert_eq!(
        r.send().await.unwrap().status(),
        403,
        "clearing needs admin"
    );
    server.stop().await;
}
