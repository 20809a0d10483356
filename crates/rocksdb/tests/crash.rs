//! Crash safety: a real child process commits deterministic batches and reports each
//! acknowledged sequence; the parent SIGKILLs it at random moments, reopens the store and
//! checks that it holds exactly the state after the stored sequence, which is at least the
//! last acknowledged one.
//!
//! The child is this same test binary, re-run with `LIVERESULTS_CRASH_CHILD` set, filtered to
//! the `crash_child_process` test. Rounds: 20, or `LIVERESULTS_CRASH_ROUNDS`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use liveresults_core::testing::crash::{crash_rounds, crash_seed, XorShift};
use liveresults_core::{
    Commit, OutboxRetention, ResultStore, RowMutation, SequenceSpan, StoreError,
};
use liveresults_rocksdb::{verify_with, RocksStore, RocksStoreOptions, VerifyOptions};

const CHILD_ENV: &str = "LIVERESULTS_CRASH_CHILD";
const QUERY: &str = "crash-q";
const SIGNATURES: u64 = 400;

const OUTBOX: OutboxRetention = OutboxRetention {
    max_entries: 50,
    max_bytes: 1 << 20,
};

fn options() -> RocksStoreOptions {
    RocksStoreOptions::new().outbox_retention(OUTBOX)
}

/// The batch committed as sequence `n`: 16 upserts carrying `n`, 6 deletes.
fn batch(n: u64) -> Vec<(u64, Option<Vec<u8>>)> {
    let mut ops: Vec<_> = (0..16)
        .map(|k| {
            (
                (n * 7 + k * 31) % SIGNATURES,
                Some(format!("{n}:{k}").into_bytes()),
            )
        })
        .collect();
    ops.extend((0..6).map(|k| ((n * 13 + k * 17) % SIGNATURES, None)));
    ops
}

fn model_at(sequence: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut rows = BTreeMap::new();
    for n in 1..=sequence {
        for (sig, data) in batch(n) {
            match data {
                Some(d) => rows.insert(sig, d),
                None => rows.remove(&sig),
            };
        }
    }
    rows
}

/// The child's body: commit forever, printing `ack N` after each acknowledged commit.
#[tokio::test]
async fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when spawned by the parent test
    };
    let store = RocksStore::open(Path::new(&dir), options())
        .await
        .expect("child open");
    let start = store
        .query_info(QUERY)
        .await
        .expect("info")
        .sequence
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for n in start + 1.. {
        let ops = batch(n);
        let muts: Vec<_> = ops
            .iter()
            .map(|(sig, d)| RowMutation {
                row_signature: *sig,
                data: d.as_deref(),
            })
            .collect();
        let payload = n.to_be_bytes();
        store
            .commit(
                QUERY,
                Commit::sequenced(&muts, SequenceSpan::single(n), &payload),
            )
            .await
            .expect("child commit");
        writeln!(out, "ack {n}").expect("stdout");
        out.flush().expect("flush");
    }
}

fn spawn_child(dir: &Path) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Forwards the child's acknowledged sequences to a channel.
fn watch_acks(child: &mut Child) -> mpsc::Receiver<u64> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                if tx.send(n).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_commit() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds = crash_rounds(20);
    let seed = crash_seed();
    println!("crash test seed {seed} ({rounds} rounds)");
    let mut rng = XorShift::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut last_ack = 0u64;
    let mut locked_checked = false;
    for round in 0..rounds {
        let mut child = spawn_child(dir.path());
        let acks = watch_acks(&mut child);
        // Wait for the child to be committing, then let it run a random while.
        let first = acks
            .recv_timeout(Duration::from_secs(60))
            .expect("child never acknowledged a commit");
        last_ack = last_ack.max(first);
        if !locked_checked {
            let err = RocksStore::open(dir.path(), options()).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Locked { .. }),
                "second process open: {err}"
            );
            locked_checked = true;
        }
        let deadline = Instant::now() + Duration::from_millis(rng.below(300));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        while let Ok(n) = acks.recv_timeout(Duration::from_millis(200)) {
            last_ack = last_ack.max(n);
        }

        // The offline check sees the state the kill left (its WAL not yet flushed) as whole,
        // and changes nothing that the reopen below then reads.
        let check = VerifyOptions::new()
            .outbox_retention(OUTBOX)
            .opaque_payloads(true)
            .opaque_rows(true);
        let report = verify_with(dir.path(), Some(QUERY), &check).expect("verify after kill");
        assert!(report.is_clean(), "round {round}: {report}");

        let store = RocksStore::open(dir.path(), options())
            .await
            .expect("reopen after kill");
        let info = store.query_info(QUERY).await.unwrap();
        let stored = info.sequence.expect("a sequence was committed");
        assert!(
            stored >= last_ack,
            "round {round}: stored sequence {stored} < acknowledged {last_ack}"
        );
        let rows: BTreeMap<_, _> = store
            .snapshot(QUERY, 128)
            .await
            .unwrap()
            .collect_rows()
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            rows,
            model_at(stored),
            "round {round}: rows differ from the state at {stored}"
        );
        assert_eq!(
            info.row_count,
            rows.len() as u64,
            "round {round}: row_count"
        );
        let outbox = store
            .read_outbox(QUERY, Some(stored - 1), 10)
            .await
            .unwrap();
        assert_eq!(
            outbox.last().map(|e| e.span.last),
            Some(stored),
            "round {round}: outbox end"
        );
        assert_eq!(
            outbox.last().map(|e| e.payload.clone()),
            Some(stored.to_be_bytes().to_vec())
        );
        println!(
            "round {round}: killed after ack {last_ack}, reopened at {stored} with {} rows",
            rows.len()
        );
        last_ack = stored;
        store.close().await.unwrap();
    }
}
