//! Access control over a real socket: tokens and roles, Content-Type and Origin on writes, the
//! Host check, CORS, purge.

mod common;

use common::{adds, Server};
use liveresults_server::{Security, Tokens};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens() -> Tokens {
    let text = format!("read:{READ}\nwrite:{WRITE}\n# the operator\nadmin:{ADMIN}\n");
    Tokens::new().add(&text, "test").unwrap()
}

async fn with_tokens() -> Server {
    Server::start(|s| s.security(Security::new().tokens(tokens()))).await
}

/// Sends `request` with `token` (if any) and returns status, problem body and headers.
async fn send(
    request: reqwest::RequestBuilder,
    token: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    let r = request.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    eprintln!("{status} {text}");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

fn ingest(server: &Server, query: &str, body: String) -> reqwest::RequestBuilder {
    server
        .http
        .post(server.at(&format!("/queries/{query}/events")))
        .header("content-type", "application/x-ndjson")
        .body(body)
}

#[tokio::test]
async fn without_a_valid_token_everything_but_the_probes_is_401() {
    let server = with_tokens().await;
    for path in ["/queries", "/queries/q", "/metrics", "/queries/q/snapshot"] {
        let (status, problem, headers) = send(server.http.get(server.at(path)), None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(problem["type"], "urn:liveresults:problem:unauthorized");
        assert_eq!(problem["status"], 401);
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"liveresults\"");
    }
    let (status, problem, _) = send(ingest(&server, "q", adds("q", 1, 1, 1)), None).await;
    assert_eq!(status, 401);
    assert!(problem["detail"].as_str().unwrap().contains("bearer token"));
    // A wrong token, one a byte short, one a byte longer: all 401.
    for wrong in [
        "nope-nope-nope-nope",
        &ADMIN[..ADMIN.len() - 1],
        &format!("{ADMIN}x"),
    ] {
        let (status, problem, _) = send(server.http.get(server.at("/queries")), Some(wrong)).await;
        assert_eq!(status, 401);
        assert_eq!(problem["detail"], "the bearer token is not valid");
    }
    // Probes stay open; nothing was stored by the refused ingest.
    assert_eq!(server.get_json("/healthz").await.0, 200);
    let (status, list, _) = send(server.http.get(server.at("/queries")), Some(READ)).await;
    assert_eq!((status, list), (200, serde_json::json!([])));
    server.stop().await;
}

#[tokio::test]
async fn each_role_does_its_part_and_is_refused_the_next_with_403() {
    let server = with_tokens().await;
    // read cannot ingest; nothing is stored.
    let (status, problem, _) = send(ingest(&server, "q", adds("q", 1, 1, 1)), Some(READ)).await;
    assert_eq!(status, 403);
    assert_eq!(problem["type"], "urn:liveresults:problem:forbidden");
    assert_eq!(
        problem["detail"],
        "POST /queries/q/events needs the write role; the token has the read role"
    );
    let (status, _, _) = send(server.http.get(server.at("/queries/q")), Some(READ)).await;
    assert_eq!(status, 404);
    // write ingests, read reads.
    let (status, _, _) = send(ingest(&server, "q", adds("q", 1, 2, 1)), Some(WRITE)).await;
    assert_eq!(status, 200);
    let (status, info, _) = send(server.http.get(server.at("/queries/q")), Some(READ)).await;
    assert_eq!((status, info["sequence"].clone()), (200, Value::from(2)));
    // write cannot clear, delete or resume.
    for request in [
        server.http.delete(server.at("/queries/q")),
        server.http.post(server.at("/queries/q/resume")),
    ] {
        let (status, problem, _) = send(request, Some(WRITE)).await;
        assert_eq!(status, 403);
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("needs the admin role"));
    }
    let (_, info, _) = send(server.http.get(server.at("/queries/q")), Some(READ)).await;
    assert_eq!(info["sequence"], 2);
    // admin clears.
    let (status, info, _) = send(server.http.delete(server.at("/queries/q")), Some(ADMIN)).await;
    assert_eq!((status, info["epoch"].clone()), (200, Value::from(1)));
    server.stop().await;
}

#[tokio::test]
async fn writes_need_an_ndjson_or_json_content_type_and_no_foreign_origin() {
    let server = Server::start(|s| s).await;
    let post = |content_type: &str| {
        server
            .http
            .post(server.at("/queries/q/events"))
            .header("content-type", content_type)
            .body(adds("q", 1, 1, 1))
    };
    // The form a web page can send cross-site without a preflight.
    let (status, problem, headers) = send(post("text/plain"), None).await;
    assert_eq!(status, 415);
    assert_eq!(
        problem["type"],
        "urn:liveresults:problem:unsupported-media-type"
    );
    assert_eq!(
        headers["accept-post"],
        "application/x-ndjson, application/json"
    );
    let (status, _, _) = send(
        server.http.post(server.at("/queries/q/events")).body("{}"),
        None,
    )
    .await;
    assert_eq!(status, 415);
    let foreign = post("text/plain").header("origin", "https://evil.example");
    let (status, problem, _) = send(foreign, None).await;
    assert_eq!(status, 403);
    assert_eq!(problem["type"], "urn:liveresults:problem:cross-origin");
    let foreign = post("application/x-ndjson").header("origin", "https://evil.example");
    assert_eq!(send(foreign, None).await.0, 403);
    // Nothing of the refused requests was stored.
    assert_eq!(server.get_json("/queries/q").await.0, 404);
    assert_eq!(server.get_json("/queries").await.1, serde_json::json!([]));
    // The accepted types, with parameters, and a same-origin page.
    let host = server.url.strip_prefix("http://").unwrap().to_owned();
    assert_eq!(
        send(post("application/x-ndjson; charset=utf-8"), None)
            .await
            .0,
        200
    );
    let same = server
        .http
        .post(server.at("/queries/q/events"))
        .header("content-type", "Application/JSON")
        .header("origin", format!("http://{host}"))
        .body(adds("q", 2, 2, 1));
    assert_eq!(send(same, None).await.0, 200);
    assert_eq!(server.get_json("/queries/q").await.1["sequence"], 2);
    server.stop().await;
}

/// One raw HTTP/1.1 request (so the Host header is exactly ours); the whole answer.
async fn raw(url: &str, request: &str) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn hosts_outside_allowed_hosts_get_421() {
    let hosts = vec!["localhost".to_owned(), "api.example:8443".to_owned()];
    let server = Server::start(|s| s.security(Security::new().allowed_hosts(hosts))).await;
    let get =
        |host: &str| format!("GET /queries HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    for refused in ["rebind.evil.example", "127.0.0.1", "api.example:80"] {
        let answer = raw(&server.url, &get(refused)).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{refused}: {answer}");
        assert!(answer.contains("urn:liveresults:problem:host-not-allowed"));
        assert!(answer.contains("is not one of --allowed-hosts"));
    }
    for allowed in ["localhost:1234", "LOCALHOST", "api.example:8443"] {
        let answer = raw(&server.url, &get(allowed)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{allowed}: {answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_only_the_configured_origin() {
    let app = "https://app.example";
    let preflight = |server: &Server, origin: &str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.at("/queries/q/events"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
    };
    let closed = Server::start(|s| s).await;
    let (_, _, headers) = send(preflight(&closed, app), None).await;
    assert!(headers.get("access-control-allow-origin").is_none());
    closed.stop().await;

    let security = Security::new()
        .tokens(tokens())
        .cors_origins(vec![app.to_owned()]);
    let open = Server::start(|s| s.security(security)).await;
    let (status, _, headers) = send(preflight(&open, app), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], app);
    let (_, _, headers) = send(preflight(&open, "https://evil.example"), None).await;
    assert!(headers.get("access-control-allow-origin").is_none());
    // The allowed origin may write (with its token); its answer carries the CORS header.
    let write = ingest(&open, "q", adds("q", 1, 1, 1)).header("origin", app);
    let (status, _, headers) = send(write, Some(WRITE)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], app);
    open.stop().await;
}

#[tokio::test]
async fn purge_is_admin_only() {
    let server = with_tokens().await;
    assert_eq!(
        send(ingest(&server, "q", adds("q", 1, 1, 1)), Some(WRITE))
            .await
            .0,
        200
    );
    let purge = || server.http.delete(server.at("/queries/q?purge=true"));
    assert_eq!(send(purge(), Some(WRITE)).await.0, 403);
    // Refused: nothing changed, the query keeps its sequence and epoch.
    let (_, info, _) = send(server.http.get(server.at("/queries/q")), Some(READ)).await;
    assert_eq!(
        (info["sequence"].clone(), info["epoch"].clone()),
        (Value::from(1), Value::from(0))
    );
    let (status, body, _) = send(purge(), Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], true);
    let (status, _, _) = send(server.http.get(server.at("/queries/q")), Some(READ)).await;
    assert_eq!(status, 404);
    server.stop().await;
}
