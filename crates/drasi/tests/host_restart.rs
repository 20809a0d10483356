//! The whole host process — an in-memory drasi-lib, `LiveResultsReaction`, the runtime with an
//! NDJSON audit log, a RocksDB store — is SIGKILLed at random points and started again. The
//! driver is the system of record (the application source keeps nothing): after each start it
//! pushes its current nodes again, then more random changes. At the end the store equals the
//! last Drasi's results, and replaying the audit log (every committed change, each exactly once,
//! in sequence order) rebuilds exactly the store's rows.
//!
//! The host is this test binary itself, running the ignored test `host_process` with
//! `LIVERESULTS_DRASI_HOST_DIR` set; it reads one command per stdin line and answers on stdout
//! with lines holding `@@ ` (the test harness prints its own output there too).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{our_rows, push, start_drasi, wait_converged, Op, Workload, QUERIES};
use liveresults_core::testing::env_number;
use liveresults_core::{ResultStore, StoreError};
use liveresults_drasi::LiveResultsReaction;
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
use liveresults_runtime::reactions::NdjsonLog;
use liveresults_runtime::{Runtime, RuntimeConfig};
use serde_json::Value as Json;

const HOST_DIR: &str = "LIVERESULTS_DRASI_HOST_DIR";

// ---------------------------------------------------------------- the host process

#[test]
#[ignore = "the host process of sigkilled_host_recovers, which starts it"]
fn host_process() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::var(HOST_DIR).map_err(|_| anyhow::anyhow!("{HOST_DIR} is not set"))?,
    );
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter("warn,liveresults_drasi=info")
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(host(&dir))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {line}");
    let _ = out.flush();
}

async fn host(dir: &Path) -> anyhow::Result<()> {
    let store = Arc::new(open_retrying(&dir.join("store")).await?);
    let log = Arc::new(NdjsonLog::open("audit", dir.join("audit.ndjson")).await?);
    let runtime = Runtime::start(
        store.clone() as Arc<dyn ResultStore>,
        RuntimeConfig::new(),
        vec![log],
    )
    .await?;
    let reaction = LiveResultsReaction::new("liveresults", QUERIES, runtime.handle());
    let (core, source) = start_drasi(reaction.clone()).await?;
    // stdin is read on its own thread: blocking reads have no place on the executor.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    say("ready");
    while let Some(line) = rx.recv().await {
        if line == "quit" {
            break;
        }
        if line == "check" {
            match check(&core, &store, &reaction, &dir.join("audit.ndjson")).await {
                Ok(summary) => say(&format!("converged {summary}")),
                Err(e) => say(&format!("diverged {e:#}")),
            }
            continue;
        }
        push(&source, &parse_op(&line)?).await?;
        say("ok");
    }
    core.shutdown().await?;
    runtime.shutdown().await?;
    RocksStore::clone(&store).close().await?;
    Ok(())
}

/// The store equals Drasi's results; then, once the audit log has caught up with every
/// commit, replaying it yields the store's rows.
async fn check(
    core: &drasi_lib::DrasiLib,
    store: &Arc<RocksStore>,
    reaction: &LiveResultsReaction,
    log: &Path,
) -> anyhow::Result<String> {
    let at = wait_converged(core, &**store, reaction, Duration::from_secs(60)).await?;
    let mut summary = format!("{at:?}");
    for query in QUERIES {
        let committed = store.query_info(query).await?.sequence;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let replayed = loop {
            let replayed = replay(log, query)?;
            if replayed.last == committed || std::time::Instant::now() > deadline {
                break replayed;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        anyhow::ensure!(
            replayed.last == committed,
            "{query}: audit log ends at {:?}, store committed {committed:?}",
            replayed.last
        );
        let (_, ours) = our_rows(&**store, query).await?;
        let ours: BTreeMap<u64, Json> = ours.into_iter().map(|(k, v)| (k, v.into_json())).collect();
        anyhow::ensure!(
            replayed.rows == ours,
            "{query}: replaying the audit log gives {} rows, the store holds {}",
            replayed.rows.len(),
            ours.len()
        );
        summary.push_str(&format!(" {query}: {} commits logged", replayed.changes));
    }
    Ok(summary)
}

struct Replayed {
    rows: BTreeMap<u64, Json>,
    last: Option<u64>,
    changes: u64,
}

/// Folds one query's audit log lines. Each change must start right after the previous one
/// (or after a snapshot's sequence): a repeated or missing commit fails here.
fn replay(path: &Path, query: &str) -> anyhow::Result<Replayed> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Replayed {
        rows: BTreeMap::new(),
        last: None,
        changes: 0,
    };
    for line in text.lines() {
        let value: Json = serde_json::from_str(line)?;
        if value["query_id"] != query {
            continue;
        }
        match value["type"].as_str() {
            Some("reset") => {
                out.rows.clear();
                out.last = None;
            }
            Some("snapshot") => {
                for row in value["rows"].as_array().into_iter().flatten() {
                    let signature = row["signature"]
                        .as_u64()
                        .ok_or_else(|| anyhow::anyhow!("snapshot row without signature"))?;
                    out.rows.insert(signature, row["row"].clone());
                }
            }
            Some("snapshot_done") => out.last = value["sequence"].as_u64(),
            Some("change") => {
                let first = value["first_sequence"].as_u64();
                if let (Some(last), Some(first)) = (out.last, first) {
                    anyhow::ensure!(
                        first == last + 1,
                        "{query}: change {first} after {last} in the audit log"
                    );
                }
                for event in value["events"].as_array().into_iter().flatten() {
                    for upsert in event["upserts"].as_array().into_iter().flatten() {
                        let signature = upsert["signature"]
                            .as_u64()
                            .ok_or_else(|| anyhow::anyhow!("upsert without signature"))?;
                        out.rows.insert(signature, upsert["row"].clone());
                    }
                    for delete in event["deletes"].as_array().into_iter().flatten() {
                        if let Some(signature) = delete.as_u64() {
                            out.rows.remove(&signature);
                        }
                    }
                }
                out.last = value["sequence"].as_u64();
                out.changes += 1;
            }
            _ => {}
        }
    }
    Ok(out)
}

async fn open_retrying(path: &Path) -> anyhow::Result<RocksStore> {
    let mut attempts = 0;
    loop {
        match RocksStore::open(path, RocksStoreOptions::new()).await {
            Ok(store) => return Ok(store),
            Err(StoreError::Locked { .. }) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn format_op(op: &Op) -> String {
    match op {
        Op::Insert {
            id,
            customer,
            total,
        } => format!("I {id} {customer} {total}"),
        Op::Update {
            id,
            customer,
            total,
        } => format!("U {id} {customer} {total}"),
        Op::Delete { id } => format!("D {id}"),
    }
}

fn parse_op(line: &str) -> anyhow::Result<Op> {
    let parts: Vec<&str> = line.split(' ').collect();
    let total = |s: &str| -> anyhow::Result<f64> { Ok(s.parse()?) };
    Ok(match parts.as_slice() {
        ["I", id, customer, t] => Op::Insert {
            id: (*id).to_owned(),
            customer: (*customer).to_owned(),
            total: total(t)?,
        },
        ["U", id, customer, t] => Op::Update {
            id: (*id).to_owned(),
            customer: (*customer).to_owned(),
            total: total(t)?,
        },
        ["D", id] => Op::Delete {
            id: (*id).to_owned(),
        },
        _ => anyhow::bail!("bad command {line:?}"),
    })
}

// ---------------------------------------------------------------- the driver

/// How long the driver waits for one answer before it calls the host hung: a hang must fail
/// the test with the host's log, never hold CI until its time runs out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

struct Host {
    child: Child,
    stdin: ChildStdin,
    /// The host's stdout lines, read on a thread so a wait for them can time out.
    lines: std::sync::mpsc::Receiver<std::io::Result<String>>,
    log: PathBuf,
}

impl Host {
    fn start(dir: &Path, run: usize) -> anyhow::Result<Host> {
        let log = dir.join(format!("host-{run}.log"));
        let stderr = std::fs::File::create(&log)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "host_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOST_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut host = Host {
            child,
            stdin,
            lines,
            log,
        };
        let ready = host.answer()?;
        anyhow::ensure!(ready == "ready", "host said {ready:?}");
        Ok(host)
    }

    /// The next answer, other output skipped. A host silent for `ANSWER_TIMEOUT` is killed
    /// and the error carries the end of its log.
    fn answer(&mut self) -> anyhow::Result<String> {
        loop {
            let line = match self.lines.recv_timeout(ANSWER_TIMEOUT) {
                Ok(line) => line?,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("host closed its stdout")
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    anyhow::bail!(
                        "host gave no answer in {ANSWER_TIMEOUT:?}; its log ends:\n{}",
                        self.log_tail()
                    )
                }
            };
            // The harness prints "test host_process ... " without a newline before the test
            // runs, so the first answer shares its line.
            if let Some(at) = line.find("@@ ") {
                return Ok(line[at + 3..].trim_end().to_owned());
            }
        }
    }

    fn send(&mut self, command: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.answer()
    }

    fn op(&mut self, op: &Op) -> anyhow::Result<()> {
        let answer = self.send(&format_op(op))?;
        anyhow::ensure!(answer == "ok", "host answered {answer:?}");
        Ok(())
    }

    /// Sends a change without waiting for the host to take it.
    fn op_unacknowledged(&mut self, op: &Op) -> anyhow::Result<()> {
        writeln!(self.stdin, "{}", format_op(op))?;
        Ok(())
    }

    fn push_all(&mut self, workload: &Workload) -> anyhow::Result<()> {
        for (id, (customer, total)) in &workload.live {
            self.op(&Op::Insert {
                id: id.clone(),
                customer: customer.clone(),
                total: *total,
            })?;
        }
        Ok(())
    }

    /// The last lines of the host's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Asks the host to shut down and waits for it to exit, for at most `ANSWER_TIMEOUT`: a
    /// host that hangs in its shutdown is killed and the error carries the end of its log.
    fn quit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                anyhow::bail!(
                    "host did not exit in {ANSWER_TIMEOUT:?} after quit; its log ends:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigkill(mut self) -> anyhow::Result<()> {
        self.child.kill()?; // SIGKILL on Unix
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Host {
    /// A driver that fails half-way (an answer it did not expect, a write to a dead pipe)
    /// must not leave its host running after the test.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn sigkilled_host_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rounds: usize = env_number("LIVERESULTS_CRASH_ROUNDS", 5);
    let mut workload = Workload::new(0x5EED_0003);
    for run in 0..rounds {
        let mut host = Host::start(dir.path(), run)?;
        host.push_all(&workload)?;
        // A different number of changes and a different kill moment each run.
        let changes = 150 + (run * 97) % 250;
        for _ in 0..changes {
            host.op(&workload.next_op())?;
        }
        if run % 2 == 1 {
            // Every other run dies in the middle of a burst: changes the driver has recorded
            // may never have reached Drasi; pushing its nodes again after the restart covers
            // them, as it would for a real application source.
            for _ in 0..100 {
                host.op_unacknowledged(&workload.next_op())?;
            }
            host.stdin.flush()?;
        } else {
            // Otherwise at a varying moment after the last acknowledged change, with results
            // possibly still in flight in drasi-lib and the runtime.
            std::thread::sleep(Duration::from_millis((run as u64 * 37) % 60));
        }
        host.sigkill()?;
    }
    let mut host = Host::start(dir.path(), rounds)?;
    host.push_all(&workload)?;
    for _ in 0..200 {
        host.op(&workload.next_op())?;
    }
    let answer = host.send("check")?;
    eprintln!("after {rounds} SIGKILLs: {answer}");
    assert!(answer.starts_with("converged"), "{answer}");
    let status = host.quit()?;
    assert!(status.success(), "host exited with {status}");
    Ok(())
}
