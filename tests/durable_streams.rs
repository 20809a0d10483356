//! The official Durable Streams server conformance suite
//! (`@durable-streams/server-conformance-tests`, pinned in tests/durable_streams/package.json)
//! against the real `liveresults serve` binary, with bearer tokens required (the suite sends a
//! write-role token with every request): once over a RocksDB data directory, once with
//! `--redis` (streams in a redis-server the test starts). The two runs take turns: both at once
//! would share two cores between two suites that time long-polls. A last test runs two
//! `serve --redis` hosts on one Redis and checks over HTTP that they serve the same streams.
//!
//! `scripts/setup.sh` (with `LIVERESULTS_TEST_SERVICES=1`, as `scripts/test.sh` and CI run it)
//! installs the npm packages once per lockfile and links them in as
//! tests/durable_streams/node_modules; without them this test fails saying so, never skips.
//!
//! The suite's failures are compared with tests/durable_streams/known_failures.txt (one test
//! name per line, each with the reason above it): a failure not listed fails this test, and so
//! does a listed test that now passes, so the list always says exactly what does not conform.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Held by the suite run in progress.
static ONE_SUITE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The long-poll timeout the server gets, in seconds: the suite waits for a few long-polls to
/// time out inside vitest's per-test timeout.
const LONG_POLL_SECS: &str = "1";

/// The tokens the server requires: the suite sends the write one (which also reads); the read
/// one shows that stream writes need the write role.
const WRITE_TOKEN: &str = "write-token-for-the-conformance-suite";
const READ_TOKEN: &str = "read-token-for-the-conformance-suite";

/// The status of `method url` with an optional bearer token.
fn status(method: reqwest::Method, url: &str, token: Option<&str>) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .request(method, url)
            .header("content-type", "text/plain");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request").status().as_u16()
    })
}

/// One test's outcome, as the vitest JSON reporter writes it.
struct Outcome {
    name: String,
    status: String,
    first_failure: String,
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durable_streams")
}

/// The known failures: non-empty lines that are not `#` comments.
fn known_failures(dir: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir.join("known_failures.txt")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Every test of the JSON report, named `Describe > Nested > test title`.
fn outcomes(report: &serde_json::Value) -> Vec<Outcome> {
    let files = report["testResults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tests = files.iter().flat_map(|file| {
        file["assertionResults"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    });
    tests
        .map(|test| {
            let mut parts: Vec<String> = test["ancestorTitles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            parts.push(test["title"].as_str().unwrap_or_default().to_owned());
            let first_failure = test["failureMessages"][0]
                .as_str()
                .and_then(|m| m.lines().next())
                .unwrap_or_default()
                .to_owned();
            Outcome {
                name: parts.join(" > "),
                status: test["status"].as_str().unwrap_or_default().to_owned(),
                first_failure,
            }
        })
        .collect()
}

#[test]
fn official_conformance_suite() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_liveresults"));
    serve.args(["serve", "--data"]).arg(data.path());
    run_suite(serve);
}

/// The same suite with the streams on Redis (`serve --redis`), where every write is a script
/// checked against what the host expected and reads reload the stream's meta.
#[test]
fn official_conformance_suite_on_redis() {
    let redis = liveresults_redis::testing::RedisServer::start();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_liveresults"));
    serve.args([
        "serve",
        "--redis",
        &redis.url(),
        "--host-name",
        "conformance",
    ]);
    run_suite(serve);
}

/// Runs the suite against `serve` (a `liveresults serve` command naming its store).
fn run_suite(mut serve: Command) {
    let _turn = ONE_SUITE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = suite_dir();
    let vitest = dir.join("node_modules/vitest/vitest.mjs");
    assert!(
        vitest.exists(),
        "{} is missing: run `LIVERESULTS_TEST_SERVICES=1 source scripts/setup.sh` (scripts/test.sh \
         does) to install the conformance suite's npm packages",
        vitest.display()
    );
    let reports = tempfile::tempdir().expect("tempdir");
    let server = support::serve::spawn(
        serve
            .args(["--listen", "127.0.0.1:0"])
            .args(["--long-poll-timeout-secs", LONG_POLL_SECS])
            // The suite's webhook tests use receivers on loopback.
            .arg("--allow-dev-webhooks")
            .env(
                "LIVERESULTS_TOKENS",
                format!("write:{WRITE_TOKEN},read:{READ_TOKEN}"),
            )
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    // Streams use the server's access control: no token 401, the read role may not write.
    let url = format!("{}/v1/stream/access-check", server.url);
    assert_eq!(status(reqwest::Method::PUT, &url, None), 401);
    assert_eq!(status(reqwest::Method::PUT, &url, Some(READ_TOKEN)), 403);
    assert_eq!(status(reqwest::Method::GET, &url, Some(READ_TOKEN)), 404);
    let report_path = reports.path().join("vitest-report.json");
    let status = Command::new("node")
        .arg(&vitest)
        .args(["run", "--reporter=json", "--outputFile"])
        .arg(&report_path)
        .current_dir(&dir)
        .env("LIVERESULTS_DS_URL", &server.url)
        .env("LIVERESULTS_DS_TOKEN", WRITE_TOKEN)
        .env("LIVERESULTS_DS_LONG_POLL_MS", "1000")
        .stdout(Stdio::null())
        .status()
        .expect("run node (install Node.js 20 or later)");
    drop(server);
    let report = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|e| panic!("vitest wrote no report ({status}): {e}"));
    let report: serde_json::Value = serde_json::from_str(&report).expect("vitest JSON report");
    let outcomes = outcomes(&report);
    assert!(!outcomes.is_empty(), "the suite ran no tests ({status})");

    let known = known_failures(&dir);
    let failed: BTreeSet<&str> = (outcomes.iter())
        .filter(|o| o.status == "failed")
        .map(|o| o.name.as_str())
        .collect();
    let passed = outcomes.iter().filter(|o| o.status == "passed").count();
    let skipped = outcomes.len() - passed - failed.len();
    eprintln!(
        "Durable Streams conformance: {passed} passed, {} failed ({} known), {skipped} skipped, \
         {} total",
        failed.len(),
        known.len(),
        outcomes.len()
    );
    let unexpected: Vec<&Outcome> = (outcomes.iter())
        .filter(|o| o.status == "failed" && !known.contains(&o.name))
        .collect();
    for o in &unexpected {
        eprintln!("FAILED: {}\n    {}", o.name, o.first_failure);
    }
    let fixed: Vec<&String> = known
        .iter()
        .filter(|k| !failed.contains(k.as_str()))
        .collect();
    for name in &fixed {
        eprintln!("listed in known_failures.txt but did not fail: {name}");
    }
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "{} unexpected failures, {} known failures that no longer fail (update \
         tests/durable_streams/known_failures.txt)",
        unexpected.len(),
        fixed.len()
    );
}

/// A query's results read as a State Protocol stream (`/v1/stream/queries/{id}`) by
/// `@durable-streams/client` and materialized with `@durable-streams/state` while events are
/// ingested (inserts, updates, deletes, a clear): the materialized rows must equal the server's
/// snapshot (tests/durable_streams/state_check.mjs says what it checks).
#[test]
fn state_protocol_stream_materializes_a_query() {
    const ADMIN_TOKEN: &str = "admin-token-for-the-state-protocol-check";
    let dir = suite_dir();
    assert!(
        dir.join("node_modules/@durable-streams/state").exists(),
        "the npm packages are missing: run `LIVERESULTS_TEST_SERVICES=1 source scripts/setup.sh`"
    );
    let data = tempfile::tempdir().expect("tempdir");
    let server = support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .env("LIVERESULTS_TOKENS", format!("admin:{ADMIN_TOKEN}"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    let status = Command::new("node")
        .arg("state_check.mjs")
        .current_dir(&dir)
        .env("LIVERESULTS_URL", &server.url)
        .env("LIVERESULTS_TOKEN", ADMIN_TOKEN)
        .status()
        .expect("run node (install Node.js 20 or later)");
    assert!(status.success(), "state_check.mjs failed ({status})");
}

/// Two `serve --redis` processes on one redis-server, spoken to over HTTP as clients would:
/// a stream created on one host exists on the other, what one host appends the other returns
/// (a catch-up at once, a long-poll parked there wakes), a producer's retry through the other
/// host is a duplicate, and a delete on one host is a 404 on the other.
#[test]
fn two_serve_hosts_on_one_redis_serve_the_same_streams() {
    let redis = liveresults_redis::testing::RedisServer::start();
    let host = |name: &str| {
        support::serve::spawn(
            Command::new(env!("CARGO_BIN_EXE_liveresults"))
                .args(["serve", "--redis", &redis.url(), "--host-name", name])
                .args(["--listen", "127.0.0.1:0", "--long-poll-timeout-secs", "10"])
                .env("RUST_LOG", "warn")
                .stderr(Stdio::inherit()),
        )
    };
    let (a, b) = (host("a"), host("b"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let (on_a, on_b) = (
            format!("{}/v1/stream/room", a.url),
            format!("{}/v1/stream/room", b.url),
        );
        let send = |method: reqwest::Method, url: &str, body: &str, producer: Option<u64>| {
            let mut request = client
                .request(method, url)
                .header("content-type", "text/plain")
                .body(body.to_owned());
            if let Some(seq) = producer {
                request = request
                    .header("producer-id", "writer")
                    .header("producer-epoch", "0")
                    .header("producer-seq", seq.to_string());
            }
            request.send()
        };
        let status = |r: reqwest::Response| r.status().as_u16();
        let put = reqwest::Method::PUT;
        let post = reqwest::Method::POST;
        assert_eq!(
            status(send(put.clone(), &on_a, "", None).await.expect("PUT A")),
            201
        );
        assert_eq!(
            status(send(put, &on_b, "", None).await.expect("PUT B")),
            200
        );
        let appended = send(post.clone(), &on_a, "hello", Some(0))
            .await
            .expect("POST A");
        assert_eq!(status(appended), 200);
        // The producer's retry through B is a duplicate (204), not a second copy.
        let retried = send(post.clone(), &on_b, "hello", Some(0))
            .await
            .expect("POST B");
        assert_eq!(status(retried), 204);

        let read = client
            .get(format!("{on_b}?offset=-1"))
            .send()
            .await
            .expect("GET B");
        assert_eq!(read.status().as_u16(), 200);
        let next = read.headers()["stream-next-offset"]
            .to_str()
            .expect("offset")
            .to_owned();
        assert_eq!(read.text().await.expect("body"), "hello");

        let poll = tokio::spawn(
            client
                .get(format!("{on_b}?offset={next}&live=long-poll"))
                .send(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let appended = send(post, &on_a, " world", Some(1)).await.expect("POST A");
        assert_eq!(status(appended), 200);
        let woken = poll.await.expect("join").expect("long-poll on B");
        assert_eq!(woken.status().as_u16(), 200);
        assert_eq!(woken.text().await.expect("body"), " world");
        // Well under the 1 s fallback re-check: A's notice woke it.
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "B's long-poll woke after {:?}",
            started.elapsed()
        );

        let deleted = client.delete(&on_b).send().await.expect("DELETE B");
        assert_eq!(deleted.status().as_u16(), 204);
        let gone = client
            .get(format!("{on_a}?offset=-1"))
            .send()
            .await
            .expect("GET A");
        assert_eq!(gone.status().as_u16(), 404);
    });
}
