//! A full disk under a running server (RocksDB on a real 24 MiB tmpfs): the query whose commit
//! hit it stops with a 507 naming the cause, `/readyz` says why it is not ready, DELETE and
//! resume say precisely why they cannot work yet, and once space is freed (a filler file
//! deleted) the store resumes writes by itself, `POST /queries/{id}/resume` restarts the
//! query after its last committed sequence, and every acknowledged row is there.
//!
//! Needs root (`mount -t tmpfs`), as CI has: without it the test fails instead of skipping,
//! so a lane that cannot mount does not pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults::core::ResultStore;
use liveresults::runtime::{RetryPolicy, Runtime, RuntimeConfig};
use liveresults::server::{serve, AppState};
use liveresults::{RocksStore, RocksStoreOptions};
use serde_json::Value;
use tokio_util_shim::Stop;

/// Size of the tmpfs the store lives on.
const TMPFS_BYTES: u64 = 24 << 20;
/// Bytes each row carries, so the disk fills after a few hundred rows.
const ROW_PAYLOAD: usize = 4096;
/// Rows per ingest request.
const ROWS_PER_POST: u64 = 16;

/// A tmpfs mounted for the test's lifetime; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed ({status}): this test needs root (CI runs it as root)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a RocksDB thread holding a file): detach it, so the temp dir goes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A minimal stand-in for a cancellation token, so this test needs no extra dependency.
mod tokio_util_shim {
    use tokio::sync::watch;

    pub struct Stop(pub watch::Sender<bool>);

    impl Stop {
        pub fn new() -> (Stop, watch::Receiver<bool>) {
            let (tx, rx) = watch::channel(false);
            (Stop(tx), rx)
        }
        pub fn fire(&self) {
            let _ = self.0.send(true);
        }
    }
}

fn line(query: &str, sequence: u64) -> String {
    let pad = "x".repeat(ROW_PAYLOAD);
    format!(
        r#"{{"query_id":"{query}","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{sequence},"pad":"{pad}"}},"row_signature":{sequence}}}]}}"#
    )
}

fn body(query: &str, from: u64, to: u64) -> String {
    (from..=to).map(|s| line(query, s) + "\n").collect()
}

struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: String) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: String) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, String::new()).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, String::new())
            .await
    }
}

fn filler(dir: &Path) -> PathBuf {
    dir.join("filler")
}

/// Fills the filesystem but for `leave` bytes with a filler file.
fn fill(dir: &Path, leave: u64) {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    let avail: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df avail");
    let size = avail.saturating_sub(leave);
    let file = std::fs::File::create(filler(dir)).expect("filler");
    // tmpfs allocates on write, so write zeros (set_len would leave a hole).
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    let mut writer = std::io::BufWriter::new(file);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut writer, &chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = std::io::Write::flush(&mut writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_only_what_it_must_and_everything_recovers_once_space_returns() {
    let fs = Tmpfs::mount(TMPFS_BYTES);
    let db = fs.path().join("db");
    // One 1 MiB write buffer: RocksDB resumes writes once that much space is free again.
    let store = Arc::new(
        RocksStore::open(&db, RocksStoreOptions::new().write_buffer_bytes(1 << 20))
            .await
            .expect("open store"),
    );
    let dyn_store: Arc<dyn ResultStore> = store.clone();
    let config = RuntimeConfig::new().retry(RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    });
    let runtime = Runtime::start(dyn_store, config, Vec::new())
        .await
        .expect("runtime");
    let state = AppState::new(runtime.handle());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, mut stopped) = Stop::new();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let c = Client {
        url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };

    // Before: everything answers and is ready. `idle` writes nothing while the disk is full.
    assert_eq!(
        c.post("/queries/other/events", body("other", 1, 1)).await.0,
        200
    );
    assert_eq!(
        c.post("/queries/idle/events", body("idle", 1, 1)).await.0,
        200
    );
    assert_eq!(c.get("/readyz").await.0, 200);

    // Fill the disk, then ingest until a commit fails.
    fill(fs.path(), 512 << 10);
    let mut acknowledged = 0u64;
    let (status, refusal) = loop {
        let (from, to) = (acknowledged + 1, acknowledged + ROWS_PER_POST);
        let (status, answer) = c.post("/queries/q/events", body("q", from, to)).await;
        if status != 200 {
            break (status, answer);
        }
        acknowledged = to;
        assert!(acknowledged < 100_000, "the disk never filled");
    };
    eprintln!("refused after {acknowledged} acknowledged rows: {status} {refusal}");
    assert_eq!(status, 507, "{refusal}");
    assert_eq!(refusal["type"], "urn:liveresults:problem:disk-full");
    assert!(refusal["detail"].as_str().unwrap().contains("disk is full"));
    let committed = refusal["committed_sequence"].as_u64();
    assert_eq!(committed, (acknowledged > 0).then_some(acknowledged));

    // While full: not ready, and why; alive but degraded; other writes and DELETE say why not.
    let (ready, why) = c.get("/readyz").await;
    assert_eq!(ready, 503, "{why}");
    let reasons = why["reasons"].to_string();
    assert!(
        reasons.contains("the store refuses writes (the disk is full)"),
        "{reasons}"
    );
    assert!(
        reasons.contains("query \\\"q\\\" is stopped by a store fault"),
        "{reasons}"
    );
    let (live, health) = c.get("/healthz").await;
    assert_eq!(
        (live, health["status"].as_str()),
        (200, Some("degraded")),
        "{health}"
    );
    let (other, answer) = c.post("/queries/other/events", body("other", 2, 2)).await;
    assert_eq!(other, 507, "{answer}");
    let (cleared, answer) = c.delete("/queries/q").await;
    assert_eq!(cleared, 507, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("disk is full"),
        "{answer}"
    );
    let (resumed, answer) = c.post("/queries/q/resume", String::new()).await;
    assert_eq!(resumed, 507, "resume while full: {answer}");
    let (refused, answer) = c
        .post(
            "/queries/q/events",
            body("q", acknowledged + 1, acknowledged + 1),
        )
        .await;
    assert_eq!(refused, 409, "a stopped query refuses: {answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("POST /queries/{id}/resume"),
        "{answer}"
    );

    // Space returns: the store resumes writes by itself (RocksDB polls every 5 s).
    std::fs::remove_file(filler(fs.path())).expect("remove filler");
    let started = Instant::now();
    loop {
        let (_, why) = c.get("/readyz").await;
        if !why["reasons"].to_string().contains("refuses writes") {
            break;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            let log = std::fs::read_to_string(db.join("LOG")).unwrap_or_default();
            for l in log.lines().filter(|l| {
                l.contains("rror")
                    || l.contains("space")
                    || l.contains("ecover")
                    || l.contains("esume")
            }) {
                eprintln!("LOG: {l}");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the store did not resume writes: {why}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "store writable again {:?} after space returned",
        started.elapsed()
    );
    // Still not ready: q stays stopped until an operator resumes it.
    let (ready, why) = c.get("/readyz").await;
    assert_eq!(ready, 503, "{why}");
    // A query no write failed for works at once; `other` (stopped by its refused write) and
    // q resume where they stopped, with their rows.
    assert_eq!(
        c.post("/queries/idle/events", body("idle", 2, 2)).await.0,
        200
    );
    let (resumed, info) = c.post("/queries/other/resume", String::new()).await;
    assert_eq!(
        (resumed, info["sequence"].as_u64()),
        (200, Some(1)),
        "{info}"
    );
    assert_eq!(
        c.post("/queries/other/events", body("other", 2, 2)).await.0,
        200
    );
    let (resumed, info) = c.post("/queries/q/resume", String::new()).await;
    assert_eq!(resumed, 200, "{info}");
    assert_eq!(info["sequence"].as_u64(), committed, "{info}");
    assert_eq!(c.get("/readyz").await.0, 200);
    let (status, answer) = c
        .post(
            "/queries/q/events",
            body("q", acknowledged + 1, acknowledged + ROWS_PER_POST),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let info = store.query_info("q").await.unwrap();
    assert_eq!(info.sequence, Some(acknowledged + ROWS_PER_POST));
    assert_eq!(
        info.row_count,
        acknowledged + ROWS_PER_POST,
        "every acknowledged row is there"
    );
    let rows = store
        .snapshot("q", 4096)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap();
    let mut ids: Vec<u64> = rows.iter().map(|(signature, _)| *signature).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=acknowledged + ROWS_PER_POST).collect::<Vec<_>>());
    // And DELETE works again.
    assert_eq!(c.delete("/queries/other").await.0, 200);

    stop.fire();
    server.await.unwrap().unwrap();
    runtime.shutdown().await.unwrap();
    drop(c);
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().await.unwrap(),
        Err(_) => panic!("store still shared"),
    }
    drop(fs);
}
