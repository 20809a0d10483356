//! Two `liveresults serve --postgres` hosts on one real PostgreSQL server this test starts:
//! the owner of a query ingests, the other answers 409 naming it and serves the same reads;
//! after a SIGKILL of the owner the other host takes the query over within the lease and the
//! result set is exact; the offline commands (`stats`, `dump`, `clear`) work on the shared
//! store and leave a query some host owns to its owner; an owner paused with SIGSTOP past its
//! lease commits nothing after SIGCONT (the scenario `failover` runs on Redis).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use liveresults_postgres::testing::PgServer;
use serde_json::{json, Value};
use support::hosts::{self, line, liveresults, model, signal, snapshot, LEASE_TTL};
use support::serve::Serve;

fn start_host(url: &str, name: &str) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--postgres", url, "--host-name", name])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--lease-ttl-ms", &LEASE_TTL.as_millis().to_string()])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

/// Events `from..=to` (`hosts::line`, all tagged "x").
fn events(from: u64, to: u64) -> String {
    (from..=to).map(|s| line(s, "x")).collect()
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let r = http
        .post(format!("{url}/queries/q/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_share_a_postgres_store_and_fail_over() {
    let server = PgServer::start();
    let url = server.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let a = start_host(&url, "a");
    let b = start_host(&url, "b");
    let (status, answer) = post(&http, &a.url, events(1, 20)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&http, &b.url, events(21, 30)).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["owner_address"], a.url.as_str());
    assert_eq!(
        snapshot(&http, &b.url).await,
        (Some(20), model(20, |_| "x"))
    );

    // The owner dies; b takes q over once the lease has run out, and nothing is lost.
    let killed = Instant::now();
    drop(a);
    loop {
        let (status, answer) = post(&http, &b.url, events(21, 30)).await;
        match status {
            200 => break,
            409 => assert!(
                killed.elapsed() < LEASE_TTL + Duration::from_secs(5),
                "b did not take over: {answer}"
            ),
            _ => panic!("unexpected answer {status}: {answer}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        snapshot(&http, &b.url).await,
        (Some(30), model(30, |_| "x"))
    );

    // Offline tools on the shared store: reads work, a clear under a live owner is refused.
    let (ok, stdout, stderr) = liveresults(&["stats", "--postgres", &url, "--json"]);
    assert!(ok, "{stderr}");
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (stats[0]["query_id"].clone(), stats[0]["sequence"].clone()),
        (json!("q"), json!(30))
    );
    let (ok, stdout, stderr) = liveresults(&["dump", "q", "--postgres", &url]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1 + model(30, |_| "x").len());
    let (ok, _, stderr) = liveresults(&["clear", "q", "--postgres", &url]);
    assert!(!ok);
    assert!(stderr.contains("owned by host \"b\""), "{stderr}");
    signal(&b, "TERM");
    let mut b = b;
    assert!(b.child.wait().unwrap().success());
    let (ok, stdout, stderr) = liveresults(&["clear", "q", "--postgres", &url]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("epoch 0 -> 1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_commits_nothing_after_its_lease_moved() {
    let server = PgServer::start();
    let url = server.url();
    hosts::a_paused_old_owner_commits_nothing(|name| start_host(&url, name)).await;
}
