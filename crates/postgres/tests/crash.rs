//! Crash safety on a real server, two ways:
//!
//! - the **writer** dies: a child process (this test binary, re-run with
//!   `LIVERESULTS_PG_CRASH_CHILD` set, filtered to `crash_child_process`) commits
//!   deterministic batches and reports each acknowledged sequence; the parent SIGKILLs it at
//!   random moments and checks that the store holds exactly the state after its sequence,
//!   which is at least the last acknowledged one;
//! - the **server** dies: `pg_ctl stop -m immediate` (every server process quits without a
//!   checkpoint) while a writer commits; the server restarts from its WAL, the same store
//!   handle's pool reconnects, the writer retries what failed and carries on, and the final
//!   state is exact: no acknowledged commit lost, none applied twice, nothing torn.
//!
//! Rounds of the SIGKILL test: 8, or `LIVERESULTS_CRASH_ROUNDS`; the seed is printed and
//! `LIVERESULTS_CRASH_SEED` replays it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use liveresults_core::testing::crash::{crash_rounds, crash_seed, XorShift};
use liveresults_core::{
    Commit, OutboxRetention, ResultStore, RowMutation, SequenceSpan, StoreError,
};
use liveresults_postgres::testing::{unique_schema, PgServer};
use liveresults_postgres::{PgStore, PgStoreOptions};

const CHILD_ENV: &str = "LIVERESULTS_PG_CRASH_CHILD";
const QUERY: &str = "crash-q";
const SIGNATURES: u64 = 400;

fn options(schema: &str) -> PgStoreOptions {
    PgStoreOptions::new()
        .schema(schema)
        .outbox_retention(OutboxRetention {
            max_entries: 100_000,
            max_bytes: u64::MAX,
        })
        .connect_timeout(Duration::from_secs(2))
        .wait_timeout(Duration::from_secs(2))
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

async fn commit(store: &PgStore, n: u64) -> Result<(), StoreError> {
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
        .map(|_| ())
}

/// The store holds exactly the state after its sequence, at least `acked`, and its outbox
/// holds every commit once, in order. Returns the sequence.
async fn check_exact(store: &PgStore, acked: u64) -> u64 {
    let info = store.query_info(QUERY).await.unwrap();
    let seq = info.sequence.unwrap_or(0);
    assert!(seq >= acked, "acknowledged {acked}, stored {seq}");
    let rows: BTreeMap<_, _> = store
        .snapshot(QUERY, 97)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let model = model_at(seq);
    assert_eq!(rows, model, "rows at sequence {seq}");
    assert_eq!(info.row_count, model.len() as u64);
    let outbox = store.read_outbox(QUERY, None, 1_000_000).await.unwrap();
    let sequences: Vec<u64> = outbox.iter().map(|e| e.span.last).collect();
    assert_eq!(sequences, (1..=seq).collect::<Vec<_>>(), "outbox");
    assert!(outbox
        .iter()
        .all(|e| e.payload == e.span.last.to_be_bytes()));
    seq
}

/// The child's body: commit forever, printing `ack N` after each acknowledged commit.
#[tokio::test]
async fn crash_child_process() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when spawned by the parent test
    };
    let (url, schema) = target.split_once('|').expect("url|schema");
    let store = PgStore::connect(url, options(schema))
        .await
        .expect("child connect");
    let start = store
        .query_info(QUERY)
        .await
        .expect("info")
        .sequence
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for n in start + 1.. {
        commit(&store, n).await.expect("child commit");
        writeln!(out, "ack {n}").expect("stdout");
        out.flush().expect("flush");
    }
}

fn spawn_child(url: &str, schema: &str) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{url}|{schema}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit()) // a child that fails says why (else the parent only sees it stall)
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
async fn sigkill_of_the_writer_loses_no_acknowledged_commit() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds = crash_rounds(8);
    let seed = crash_seed();
    println!("crash test seed {seed} ({rounds} rounds)");
    let mut rng = XorShift::new(seed);
    let server = PgServer::start();
    let schema = unique_schema();
    let mut acked = 0;
    for round in 0..rounds {
        let mut child = spawn_child(&server.url(), &schema);
        let acks = watch_acks(&mut child);
        let want = 5 + rng.below(60);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < want {
            match acks.recv_timeout(Duration::from_millis(100)) {
                Ok(n) => {
                    acked = n;
                    seen += 1;
                }
                Err(_) => assert!(Instant::now() < deadline, "round {round}: child stalled"),
            }
        }
        // Kill mid-commit: a few more commits are in flight by now.
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        // Acks printed before the kill that the parent had not read yet still count.
        while let Ok(n) = acks.try_recv() {
            acked = n;
        }
        let store = server.connect(options(&schema)).await;
        let seq = check_exact(&store, acked).await;
        println!("round {round}: acknowledged {acked}, stored {seq}");
        store.close().await.unwrap();
    }
    assert!(acked >= u64::from(rounds) * 5);
}

/// Retries `n` until it is known to be committed: a transient failure may or may not have
/// committed (the answer was lost), and a regression naming `n` or later says it had.
async fn commit_retrying(store: &PgStore, n: u64, failures: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match commit(store, n).await {
            Ok(()) => return,
            Err(StoreError::SequenceRegression {
                committed: Some(c), ..
            }) if c >= n => return,
            Err(err) => {
                assert!(err.is_transient(), "commit {n}: {err}");
                assert!(Instant::now() < deadline, "commit {n} kept failing: {err}");
                failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_server_stop_during_commits_then_restart() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    const TOTAL: u64 = 400;
    let mut server = PgServer::start();
    let schema = unique_schema();
    let store = server.connect(options(&schema)).await;
    let acked = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, acked, failures) = (store.clone(), Arc::clone(&acked), Arc::clone(&failures));
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                commit_retrying(&store, n, &failures).await;
                acked.store(n, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_stop = tokio::task::block_in_place(|| {
        server.stop_immediate();
        acked.load(Ordering::SeqCst)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = acked.load(Ordering::SeqCst);
    assert!(
        during <= at_stop + 1,
        "commits acknowledged while the server was down"
    );
    tokio::task::block_in_place(|| server.restart());
    tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("the writer finishes after the restart")
        .expect("writer");
    assert!(
        failures.load(Ordering::Relaxed) > 0,
        "the stop was not noticed"
    );
    assert_eq!(check_exact(&store, TOTAL).await, TOTAL);
    // The notice listener is back too: commits announce themselves again (commits made
    // before it reconnected are covered by its lost-notices marker, so keep committing).
    let mut notices = store.commit_notices().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = TOTAL;
    'heard: loop {
        n += 1;
        commit(&store, n).await.unwrap();
        let wait = Instant::now() + Duration::from_millis(300);
        while let Ok(Ok(notice)) = tokio::time::timeout_at(wait.into(), notices.recv()).await {
            if notice.query_id == QUERY && notice.sequence == Some(n) {
                break 'heard;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no commit notice after the restart"
        );
    }
    assert_eq!(check_exact(&store, n).await, n);
    store.close().await.unwrap();
}
