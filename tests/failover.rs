//! Several `liveresults serve --redis` hosts on one real `redis-server` child: a client that
//! follows the hosts' answers (409 not-owner names the owner's address) keeps ingesting
//! through a SIGKILL of the owner, and an owner paused with SIGSTOP past its lease commits
//! nothing after SIGCONT. The final result set, read from every host, equals the model.
//!
//! Leases last 1.5 s (renewed every 0.5 s), so a dead owner's query is written again within
//! about that long.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liveresults_redis::testing::RedisServer;
use serde_json::{json, Value};
use support::serve::Serve;

const LEASE_TTL: Duration = Duration::from_millis(1500);
/// Lines per POST; each host commits every `CHUNK_LINES` of them.
const BATCH: u64 = 10;
const CHUNK_LINES: u64 = 5;

fn start_host(redis: &RedisServer, name: &str) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--redis", &redis.url(), "--host-name", name])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--lease-ttl-ms", &LEASE_TTL.as_millis().to_string()])
            .args(["--chunk-lines", &CHUNK_LINES.to_string()])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to a host.
fn signal(host: &Serve, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(host.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Event `sequence` of query `q`: adds row `sequence` tagged `tag`, and every third event also
/// deletes the row added two events before, so the result set is not just a growing list.
fn line(sequence: u64, tag: &str) -> String {
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
fn model(last: u64, tag_of: impl Fn(u64) -> &'static str) -> BTreeMap<u64, String> {
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
async fn snapshot(http: &reqwest::Client, url: &str) -> (Option<u64>, BTreeMap<u64, String>) {
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
struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    target: usize,
    /// Each acknowledged POST: when, and by which host.
    acks: Vec<(Instant, usize)>,
    /// SIGKILL this process a few milliseconds after this sequence is acknowledged, so the
    /// kill lands while the next POSTs are in flight.
    kill_after: Option<(u64, u32)>,
    /// When that kill was sent.
    killed_at: Arc<Mutex<Option<Instant>>>,
}

impl Client {
    fn new(urls: Vec<String>) -> Client {
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
    async fn ingest(&mut self, from: u64, to: u64, tag: &str, within: Duration) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_owner_mid_stream_fails_over_within_the_lease_and_loses_nothing() {
    let redis = RedisServer::start();
    let a = start_host(&redis, "a");
    let b = start_host(&redis, "b");
    let mut client = Client::new(vec![a.url.clone(), b.url.clone()]);
    // Kill the owner mid-stream, once event 200 is acknowledged; the client keeps posting.
    client.kill_after = Some((200, a.child.id()));
    client.ingest(1, 600, "x", Duration::from_secs(60)).await;
    let killed_at = client.killed_at.lock().unwrap().expect("a was killed");
    let acks = &client.acks;
    let first_on_b = acks
        .iter()
        .find(|(at, host)| *host == 1 && *at > killed_at)
        .expect("b acknowledged events after the kill")
        .0;
    let takeover = first_on_b - killed_at;
    eprintln!("b took over {takeover:?} after a was killed (lease {LEASE_TTL:?})");
    assert!(
        takeover <= LEASE_TTL + Duration::from_secs(1),
        "b took over {takeover:?} after the kill (lease {LEASE_TTL:?})"
    );
    // b wrote nothing while a lived (a answers POSTs still in flight when the kill is sent).
    assert!(
        acks.iter().all(|(at, host)| *host == 0 || *at > killed_at),
        "b acknowledged events before a was killed"
    );

    // The result set, read from b and from a restarted a (which does not take q back by
    // reading it), is the model's.
    let expected = model(600, |_| "x");
    let http = reqwest::Client::new();
    assert_eq!(snapshot(&http, &b.url).await, (Some(600), expected.clone()));
    drop(a);
    let a = start_host(&redis, "a");
    assert_eq!(snapshot(&http, &a.url).await, (Some(600), expected));
    let health: Value = http
        .get(format!("{}/healthz", b.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["host"]["owned_queries"], json!(["q"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_commits_nothing_after_its_lease_moved() {
    let redis = RedisServer::start();
    let a = start_host(&redis, "a");
    let b = start_host(&redis, "b");
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
struct ResumeOnDrop<'a>(&'a Serve);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Runs the `liveresults` binary to completion: (success, stdout, stderr).
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
async fn offline_commands_work_on_the_shared_store_and_leave_owned_queries_to_their_owner() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A host without a name cannot share the store.
    let (ok, _, stderr) = liveresults(&["serve", "--redis", &url, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(stderr.contains("--host-name"), "{stderr}");

    let mut a = start_host(&redis, "a");
    let mut client = Client::new(vec![a.url.clone()]);
    client.ingest(1, 30, "x", Duration::from_secs(30)).await;

    let (ok, stdout, stderr) = liveresults(&["stats", "--redis", &url, "--json"]);
    assert!(ok, "{stderr}");
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats[0]["query_id"], "q");
    assert_eq!(stats[0]["sequence"], 30);
    let (ok, stdout, stderr) = liveresults(&["dump", "q", "--redis", &url]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1 + model(30, |_| "x").len());
    // a owns q: an offline clear would change it under a's feet.
    let (ok, _, stderr) = liveresults(&["clear", "q", "--redis", &url]);
    assert!(!ok);
    assert!(stderr.contains("owned by host \"a\""), "{stderr}");
    // So would an offline replay: the store fences its unfenced commits.
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), line(31, "replay")).unwrap();
    let replay_input = input.path().to_str().unwrap();
    let (ok, _, stderr) = liveresults(&["replay", replay_input, "--redis", &url]);
    assert!(!ok, "a replay committed under a live owner");
    assert!(stderr.contains("fenced"), "{stderr}");

    // Stopped cleanly, a gives its lease back: the offline tools may write again.
    signal(&a, "TERM");
    assert!(a.child.wait().unwrap().success());
    let (ok, stdout, stderr) = liveresults(&["replay", replay_input, "--redis", &url]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 events committed"), "{stdout}");
    let (ok, stdout, stderr) = liveresults(&["clear", "q", "--redis", &url]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("epoch 0 -> 1"), "{stdout}");
}
