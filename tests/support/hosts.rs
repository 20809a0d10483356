//! Clients, models and scenarios for tests of several `liveresults serve` hosts sharing one
//! store (`failover` on Redis, `postgres_hosts` on PostgreSQL): the same events, the same
//! following client, the same paused-owner scenario, whatever the backend.

// Every test binary that declares `mod support;` compiles this module; only the multi-host
// tests use it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::serve::Serve;

/// The lease the hosts of these tests are started with (renewed every third of it).
pub const LEASE_TTL: Duration = Duration::from_millis(1500);
/// Lines per POST of [`Client::ingest`].
pub const BATCH: u64 = 10;

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to a host.
pub fn signal(host: &Serve, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(host.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Event `sequence` of query `q`: adds row `sequence` tagged `tag`, and every third event also
/// deletes the row added two events before, so the result set is not just a growing list.
pub fn line(sequence: u64, tag: &str) -> String {
    let mut results = vec![json!({"type": "ADD", "data": {"id": sequence, "tag": tag},
                                  "row_signature": sequence})];
    if sequence % 3 == 0 {
        let gone = sequence - 2;
        results.push(json!({"type": "DELETE", "data": {"id": gone, "tag": tag},
                            "row_signature": gone}));
    }
    let event = json!({"query_id": "q", "sequence": sequence, "timestamp": 0, "results": results});
    format!("{event}\n")
}

/// The rows events `1..=last` leave, by id, with their tags (`tags` gives each event's tag).
pub fn model(last: u64, tag_of: impl Fn(u64) -> &'static str) -> BTreeMap<u64, String> {
    let mut rows = BTreeMap::new();
    for s in 1..=last {
        rows.insert(s, tag_of(s).to_owned());
        if s % 3 == 0 {
            rows.remove(&(s - 2));
        }
    }
    rows
}

/// A host's snapshot of `q`: its sequence and rows (id -> tag).
pub async fn snapshot(http: &reqwest::Client, url: &str) -> (Option<u64>, BTreeMap<u64, String>) {
    let r = http
        .get(format!("{url}/queries/q/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let rows: BTreeMap<u64, String> = lines
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            let id = row["row"]["id"].as_u64().unwrap();
            (id, row["row"]["tag"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(header["row_count"].as_u64().unwrap(), rows.len() as u64);
    (header["sequence"].as_u64(), rows)
}

/// A client of several hosts: it posts to the host it believes owns `q`, follows a 409
/// not-owner to the address it names, moves to another host when one does not answer, and
/// resumes after the committed sequence each answer reports.
pub struct Client {
    pub http: reqwest::Client,
    pub urls: Vec<String>,
    pub target: usize,
    /// Each acknowledged POST: when, and by which host.
    pub acks: Vec<(Instant, usize)>,
    /// SIGKILL this process a few milliseconds after this sequence is acknowledged, so the
    /// kill lands while the next POSTs are in flight.
    pub kill_after: Option<(u64, u32)>,
    /// When that kill was sent.
    pub killed_at: Arc<Mutex<Option<Instant>>>,
}

impl Client {
    pub fn new(urls: Vec<String>) -> Client {
        Client {
            // Short: a stopped host accepts connections but never answers, and the client
            // must move on to another host instead of waiting.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            urls,
            target: 0,
            acks: Vec::new(),
            kill_after: None,
            killed_at: Arc::default(),
        }
    }

    /// Ingests events `from..=to` tagged `tag`, all acknowledged within `within`.
    pub async fn ingest(&mut self, from: u64, to: u64, tag: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut acked = from - 1;
        while acked < to {
            assert!(
                Instant::now() < deadline,
                "events up to {to} not in after {within:?}"
            );
            let end = (acked + BATCH).min(to);
            let body: String = (acked + 1..=end).map(|s| line(s, tag)).collect();
            let sent = self
                .http
                .post(format!("{}/queries/q/events", self.urls[self.target]))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            let Ok(r) = sent else {
                // Not answering (killed, or stopped): try another host.
                self.target = (self.target + 1) % self.urls.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let status = r.status().as_u16();
            let answer: Value = r.json().await.unwrap_or(Value::Null);
            if let Some(committed) = answer["committed_sequence"].as_u64() {
                acked = acked.max(committed);
            }
            if let Some((sequence, pid)) = self.kill_after {
                if acked >= sequence {
                    self.kill_after = None;
                    let killed_at = Arc::clone(&self.killed_at);
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(5));
                        *killed_at.lock().unwrap() = Some(Instant::now());
                        let killed = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        assert!(killed.expect("run kill").success());
                    });
                }
            }
            match status {
                200 => self.acks.push((Instant::now(), self.target)),
                409 if answer["type"] == "urn:liveresults:problem:not-owner" => {
                    let owner = answer["owner_address"].as_str().unwrap();
                    self.target = (self.urls.iter().position(|u| u == owner))
                        .unwrap_or_else(|| panic!("unknown owner address {owner}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                503 => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => panic!("unexpected answer {status}: {answer}"),
            }
        }
    }
}

/// An owner paused with SIGSTOP (a long GC pause, a frozen VM) until its lease ran out and
/// another host took the query over, then sent a request for sequences the new owner has
/// committed, then continued: it must answer 503 lease-lost or 409 not-owner and commit
/// nothing (its writes carry its old fencing token), and every host must show the new
/// owner's rows. `start_host(name)` starts a host of the shared store with [`LEASE_TTL`].
pub async fn a_paused_old_owner_commits_nothing(start_host: impl Fn(&str) -> Serve) {
    let a = start_host("a");
    let b = start_host("b");
    let mut client = Client::new(vec![a.url.clone(), b.url.clone()]);
    client.ingest(1, 20, "x", Duration::from_secs(30)).await;

    // a stops (as a long GC pause or a frozen VM would); b takes the query once a's lease
    // runs out, and commits events 21..=30 tagged "b".
    signal(&a, "STOP");
    let resumed = ResumeOnDrop(&a);
    let stopped_at = Instant::now();
    client.target = 1;
    client.ingest(21, 30, "b", Duration::from_secs(30)).await;
    assert!(
        stopped_at.elapsed() >= LEASE_TTL / 2,
        "b wrote before a's lease could expire"
    );

    // A request to the stopped owner, for the same sequences with other rows: a still thinks
    // it owns q at sequence 20, so it would commit them — with its old fencing token.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stale: String = (21..=25).map(|s| line(s, "stale")).collect();
    let request = http
        .post(format!("{}/queries/q/events", a.url))
        .header("content-type", "application/x-ndjson")
        .body(stale)
        .send();
    let pending = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await; // in a's socket, unread
    drop(resumed); // SIGCONT
    let r = pending.await.unwrap().expect("a answers once continued");
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap();
    let kind = answer["type"].as_str().unwrap_or_default().to_owned();
    eprintln!("the continued owner answered {status} {kind}");
    assert!(
        (status, kind.as_str()) == (503, "urn:liveresults:problem:lease-lost")
            || (status, kind.as_str()) == (409, "urn:liveresults:problem:not-owner"),
        "the paused owner answered {status}: {answer}"
    );

    // More events through whoever owns q; then every host shows b's rows, none of a's.
    client.ingest(31, 40, "b", Duration::from_secs(30)).await;
    let expected = model(40, |s| if s <= 20 { "x" } else { "b" });
    for url in [&a.url, &b.url] {
        assert_eq!(snapshot(&http, url).await, (Some(40), expected.clone()));
    }
    let health: Value = http
        .get(format!("{}/healthz", a.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["host"]["owned_queries"], json!([]));
}

/// Continues a stopped host when dropped, so a failing test does not leave it frozen.
pub struct ResumeOnDrop<'a>(&'a Serve);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Runs the `liveresults` binary to completion: (success, stdout, stderr).
pub fn liveresults(args: &[&str]) -> (bool, String, String) {
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
