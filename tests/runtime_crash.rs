//! Crash safety at runtime level: a child process runs the runtime over an NDJSON file of a
//! few thousand Drasi events (both formats, two queries, with redeliveries) into a RocksDB
//! store, with an `NdjsonLog` reaction. The parent SIGKILLs it at random moments and reruns
//! it until it finishes, then checks that the store holds exactly the model's final rows, that
//! the log never wrote a change sequence twice per (query, epoch), and that replaying the log
//! reproduces the final rows.
//!
//! The child is this same test binary, re-run with `LIVERESULTS_RUNTIME_CRASH_CHILD` set,
//! filtered to the `runtime_crash_child_process` test. Kill rounds: 20, or
//! `LIVERESULTS_CRASH_ROUNDS`; `LIVERESULTS_CRASH_SEED` replays a schedule.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults::runtime::reactions::NdjsonLog;
use liveresults::runtime::{run_ndjson, Reaction, Runtime, RuntimeConfig, DEFAULT_MAX_LINE_BYTES};
use liveresults::{ResultStore, RocksStore, RocksStoreOptions};
use liveresults_core::testing::crash::{crash_rounds, crash_seed, XorShift};
use liveresults_runtime::testing::{
    apply_log_line, interleave, model_values, store_rows, stream, Op,
};
use serde_json::Value as Json;

const CHILD_ENV: &str = "LIVERESULTS_RUNTIME_CRASH_CHILD";
const EVENTS_PER_QUERY: usize = 2500;
/// The child reads its input in chunks of this size...
const PACE_CHUNK_BYTES: usize = 1024;
/// ...one per this delay (about 2 s for the whole input).
const PACE_DELAY: Duration = Duration::from_millis(4);

fn random_ops(rng: &mut XorShift, n: usize) -> Vec<Op> {
    (0..n)
        .map(|_| {
            let k = rng.below(40);
            let v = rng.below(9) as i64 - 4;
            let w = rng.below(9) as i64 - 4;
            match rng.below(20) {
                0..=4 => Op::LibAdd(k, v),
                5..=7 => Op::LibUpdate(k, v),
                8..=9 => Op::LibDelete(k),
                10 => Op::LibAggregation(k, v),
                11 => Op::LibNoop,
                12..=13 => Op::PlatAdd(k, v),
                14 => Op::PlatDelete(k, v),
                15 => Op::PlatGroupedUpdate(k, v, w),
                16 => Op::PlatUpdate(k, v, w),
                17 => Op::Running,
                _ => Op::Duplicate(rng.below(20) as usize),
            }
        })
        .collect()
}

/// The NDJSON input and the final rows each query must hold.
fn input(seed: u64) -> (String, BTreeMap<String, BTreeMap<u64, Json>>) {
    let mut rng = XorShift::new(seed);
    let (ea, ma) = stream("orders", &random_ops(&mut rng, EVENTS_PER_QUERY));
    let (eb, mb) = stream("rooms", &random_ops(&mut rng, EVENTS_PER_QUERY));
    let picks: Vec<usize> = (0..2 * EVENTS_PER_QUERY)
        .map(|_| rng.below(2) as usize)
        .collect();
    let events = interleave(vec![ea, eb], &picks);
    let mut text = String::new();
    for e in &events {
        text.push_str(&event_json(e).to_string());
        text.push('\n');
    }
    let model = BTreeMap::from([("orders".to_owned(), ma), ("rooms".to_owned(), mb)]);
    (text, model)
}

/// The events were built from JSON; rebuild that JSON for the file.
fn event_json(e: &liveresults::core::formats::Event) -> Json {
    use liveresults::core::formats::{Diff, Event};
    match e {
        Event::Control {
            query_id,
            sequence,
            signal,
            ..
        } => serde_json::json!({"kind": "control", "queryId": query_id, "sequence": sequence,
                                "controlSignal": {"kind": signal.as_str()}}),
        Event::Change(batch) => {
            let lib = batch.diffs.iter().any(|d| match d {
                Diff::Add { signature, .. }
                | Diff::Delete { signature, .. }
                | Diff::Update { signature, .. }
                | Diff::Aggregation { signature, .. } => signature.is_some(),
                Diff::Noop => true,
            });
            let mut added = Vec::new();
            let mut updated = Vec::new();
            let mut deleted = Vec::new();
            let mut results = Vec::new();
            for d in &batch.diffs {
                match d {
                    Diff::Add { data, signature } => {
                        results.push(serde_json::json!({"type": "ADD", "data": data.to_json(), "row_signature": signature}));
                        added.push(data.to_json());
                    }
                    Diff::Delete { data, signature } => {
                        results.push(serde_json::json!({"type": "DELETE", "data": data.to_json(), "row_signature": signature}));
                        deleted.push(data.to_json());
                    }
                    Diff::Update {
                        before,
                        after,
                        grouping_keys,
                        signature,
                    } => {
                        results.push(serde_json::json!({"type": "UPDATE", "data": after.to_json(), "before": before.to_json(), "after": after.to_json(), "row_signature": signature}));
                        let mut u = serde_json::json!({"before": before.to_json(), "after": after.to_json()});
                        if let Some(keys) = grouping_keys {
                            u["groupingKeys"] = serde_json::json!(keys);
                        }
                        updated.push(u);
                    }
                    Diff::Aggregation {
                        before,
                        after,
                        signature,
                        ..
                    } => {
                        results.push(serde_json::json!({"type": "aggregation", "before": before.as_ref().map(|b| b.to_json()), "after": after.to_json(), "row_signature": signature}));
                    }
                    Diff::Noop => results.push(serde_json::json!({"type": "noop"})),
                }
            }
            if lib {
                serde_json::json!({"query_id": batch.query_id, "sequence": batch.sequence,
                                   "timestamp": 1, "results": results})
            } else {
                serde_json::json!({"kind": "change", "queryId": batch.query_id,
                                   "sequence": batch.sequence, "addedResults": added,
                                   "updatedResults": updated, "deletedResults": deleted})
            }
        }
    }
}

fn config() -> RuntimeConfig {
    RuntimeConfig::new().group_commit(8, Duration::ZERO)
}

/// The child's body: run the runtime over the input file, printing progress, then `done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when spawned by the parent test
    };
    let dir = Path::new(&dir);
    let store: Arc<dyn ResultStore> = Arc::new(
        RocksStore::open(&dir.join("store"), RocksStoreOptions::new())
            .await
            .expect("child open"),
    );
    let log: Arc<dyn Reaction> = Arc::new(
        NdjsonLog::open("log", dir.join("log.ndjson"))
            .await
            .expect("child log"),
    );
    // From here on the parent may kill us: during recovery (catching up the log) too.
    let _ = writeln!(std::io::stdout(), "opened");
    let rt = Runtime::start(store, config(), vec![log])
        .await
        .expect("child runtime");
    // The input is fed through a pipe at a bounded pace, so a run lasts long enough for the
    // parent's kills to land at many different points of it.
    let input = tokio::fs::read(dir.join("input.ndjson"))
        .await
        .expect("input");
    let (mut writer, reader) = tokio::io::duplex(PACE_CHUNK_BYTES);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in input.chunks(PACE_CHUNK_BYTES) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(PACE_DELAY).await;
        }
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "started");
    let _ = out.flush();
    run_ndjson(
        tokio::io::BufReader::new(reader),
        &rt.handle(),
        DEFAULT_MAX_LINE_BYTES,
        |report| {
            if report.submitted % 200 == 0 {
                let _ = writeln!(std::io::stdout(), "progress {}", report.submitted);
            }
        },
    )
    .await
    .expect("child run");
    assert!(rt.handle().reaction_failures().is_empty());
    rt.shutdown().await.expect("child shutdown");
    let _ = writeln!(out, "done");
    let _ = out.flush();
}

/// Runs the child; kills it `kill_after` after it opened the store, unless it finishes first.
/// Returns whether it finished.
fn run_child(dir: &Path, kill_after: Option<Duration>) -> bool {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "runtime_crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The test harness prints its own text first, on the same line with one test thread.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child never opened the store");
        if line.ends_with("opened") {
            break;
        }
    }
    let deadline = kill_after.map(|d| Instant::now() + d);
    let mut done = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(line) if line.ends_with("done") => done = true,
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if done || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    if !done {
        if deadline.is_some() {
            child.kill().expect("SIGKILL child");
        }
        let status = child.wait().expect("reap child");
        // A child that was not killed must have finished.
        assert!(
            deadline.is_some() || status.success(),
            "child failed: {status}"
        );
        return kill_after.is_none() && status.success();
    }
    let status = child.wait().expect("reap child");
    assert!(status.success(), "child failed: {status}");
    true
}

#[test]
fn runtime_survives_sigkill_at_random_moments_without_duplicate_effects() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds = crash_rounds(20);
    let seed = crash_seed();
    println!("runtime crash test seed {seed} ({rounds} rounds)");
    let mut rng = XorShift::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (text, model) = input(seed);
    std::fs::write(tmp.path().join("input.ndjson"), text).unwrap();

    let mut kills = 0;
    let mut finished = false;
    for round in 0..rounds {
        // Short lives, so that most rounds end mid-run: the whole input takes about 2 s.
        let delay = Duration::from_millis(rng.below(200));
        finished = run_child(tmp.path(), Some(delay));
        if finished {
            println!("round {round}: finished before the kill at {delay:?}");
            break;
        }
        kills += 1;
        println!("round {round}: killed after {delay:?}");
    }
    if !finished {
        assert!(run_child(tmp.path(), None), "final run did not finish");
    }
    assert!(kills > 0, "the child was never killed mid-run");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = RocksStore::open(&tmp.path().join("store"), RocksStoreOptions::new())
            .await
            .unwrap();
        for (q, rows) in &model {
            assert_eq!(
                store_rows(&store, q).await,
                model_values(rows),
                "query {q}: store"
            );
            assert_eq!(
                store.query_info(q).await.unwrap().row_count,
                rows.len() as u64
            );
        }
        store.close().await.unwrap();
    });

    let log = std::fs::read_to_string(tmp.path().join("log.ndjson")).unwrap();
    let lines: Vec<Json> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line parses"))
        .collect();
    let mut logged: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    let mut replay: BTreeMap<String, BTreeMap<u64, Json>> = BTreeMap::new();
    for l in &lines {
        if l["type"] == "change" {
            let key = (
                l["query_id"].as_str().unwrap().to_owned(),
                l["epoch"].as_u64().unwrap(),
            );
            let seen = logged.entry(key.clone()).or_default();
            for s in l["first_sequence"].as_u64().unwrap()..=l["sequence"].as_u64().unwrap() {
                assert!(!seen.contains(&s), "{key:?}: sequence {s} logged twice");
                seen.push(s);
            }
        }
        apply_log_line(&mut replay, l);
    }
    for (q, rows) in &model {
        assert_eq!(
            model_values(replay.get(q).unwrap_or(&BTreeMap::new())),
            model_values(rows),
            "query {q}: replayed log"
        );
    }
    println!("{kills} kills, {} log lines", lines.len());
}
