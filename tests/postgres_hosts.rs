//! Two `liveresults serve --postgres` hosts on one real PostgreSQL server this test starts:
//! the owner of a query ingests, the other answers 409 naming it and serves the same reads;
//! after a SIGKILL of the owner the other host takes the query over within the lease and the
//! result set is exact; the offline commands (`stats`, `dump`, `clear`) work on the shared
//! store and leave a query some host owns to its owner.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use liveresults_postgres::testing::PgServer;
use serde_json::{json, Value};
use support::serve::Serve;

const LEASE_TTL: Duration = Duration::from_millis(1500);

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

/// Events `from..=to`: event `s` adds row `s`; every third also deletes row `s - 2`.
fn events(from: u64, to: u64) -> String {
    (from..=to)
        .map(|s| {
            let mut results = vec![json!({"type": "ADD", "data": {"id": s}, "row_signature": s})];
            if s % 3 == 0 {
                results
                    .push(json!({"type": "DELETE", "data": {"id": s - 2}, "row_signature": s - 2}));
            }
            let event = json!({"query_id": "q", "sequence": s, "timestamp": 0, "results": results});
            format!("{event}\n")
        })
        .collect()
}

fn model(last: u64) -> Vec<u64> {
    let mut rows = BTreeMap::new();
    for s in 1..=last {
        rows.insert(s, ());
        if s % 3 == 0 {
            rows.remove(&(s - 2));
        }
    }
    rows.into_keys().collect()
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

/// A host's snapshot of `q`: its sequence and row ids, sorted.
async fn snapshot(http: &reqwest::Client, url: &str) -> (Option<u64>, Vec<u64>) {
    let text = http
        .get(format!("{url}/queries/q/snapshot"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let mut ids: Vec<u64> = lines
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["row"]["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ids.sort_unstable();
    (header["sequence"].as_u64(), ids)
}

fn liveresults(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liveresults"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run liveresults");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert_eq!(snapshot(&http, &b.url).await, (Some(20), model(20)));

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
    assert_eq!(snapshot(&http, &b.url).await, (Some(30), model(30)));

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
    assert_eq!(stdout.lines().count(), 1 + model(30).len());
    let (ok, _, stderr) = liveresults(&["clear", "q", "--postgres", &url]);
    assert!(!ok);
    assert!(stderr.contains("owned by host \"b\""), "{stderr}");
    let status = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut b = b;
    assert!(b.child.wait().unwrap().success());
    let (ok, stdout, stderr) = liveresults(&["clear", "q", "--postgres", &url]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("epoch 0 -> 1"), "{stdout}");
}
