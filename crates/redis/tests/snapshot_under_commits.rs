//! Snapshots read while commits land: every snapshot must equal the model at the (epoch,
//! sequence) it reports, and the counters must show that commits really landed during scans
//! (so the change-log replay, not luck, made them exact).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use liveresults_core::testing::crash::XorShift;
use liveresults_core::{
    Commit, OutboxRetention, QueryInfo, ResultStore, RowMutation, SequenceSpan,
};
use liveresults_redis::{RedisStore, RedisStoreOptions};
use support::RedisServer;

const Q: &str = "live";
/// Signatures drawn from 0..SIGS, so upserts hit existing rows as often as new ones.
const SIGS: u64 = 3000;

type Rows = BTreeMap<u64, Vec<u8>>;
/// The model after every commit, by (epoch, sequence).
type History = BTreeMap<(u64, u64), Rows>;

/// Commits `commits` random batches (upserts and deletes), clearing once half-way, and
/// returns the model after each.
async fn write(store: RedisStore, commits: u64, seed: u64) -> History {
    let mut rng = XorShift::new(seed);
    let mut rows = Rows::new();
    let mut history = History::new();
    let mut epoch = 0;
    let initial: Vec<_> = (0..2000u64)
        .map(|s| (s, format!("init-{s}").into_bytes()))
        .collect();
    let muts: Vec<_> = initial
        .iter()
        .map(|(s, d)| RowMutation::upsert(*s, d))
        .collect();
    commit(&store, 1, &muts).await;
    rows.extend(initial);
    history.insert((epoch, 1), rows.clone());
    for seq in 2..=commits {
        if seq == commits / 2 {
            epoch = store.clear_query(Q).await.unwrap().epoch;
            rows.clear();
        }
        let batch: Vec<(u64, Option<Vec<u8>>)> = (0..1 + rng.below(60))
            .map(|_| {
                let sig = rng.below(SIGS);
                let data = (rng.below(4) != 0).then(|| format!("{seq}-{sig}").into_bytes());
                (sig, data)
            })
            .collect();
        let muts: Vec<_> = batch
            .iter()
            .map(|(s, d)| RowMutation {
                row_signature: *s,
                data: d.as_deref(),
            })
            .collect();
        commit(&store, seq, &muts).await;
        for (sig, data) in batch {
            match data {
                Some(d) => rows.insert(sig, d),
                None => rows.remove(&sig),
            };
        }
        history.insert((epoch, seq), rows.clone());
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    history
}

async fn commit(store: &RedisStore, seq: u64, muts: &[RowMutation<'_>]) {
    let payload = seq.to_be_bytes();
    store
        .commit(
            Q,
            Commit::sequenced(muts, SequenceSpan::single(seq), &payload),
        )
        .await
        .unwrap();
}

/// Reads snapshots until `done` and returns each with the state it reports.
async fn read_until_done(
    store: RedisStore,
    done: Arc<tokio::sync::Notify>,
) -> Vec<(QueryInfo, Rows)> {
    let mut seen = Vec::new();
    let finished = done.notified();
    tokio::pin!(finished);
    loop {
        let snapshot = tokio::select! {
            _ = &mut finished => return seen,
            s = store.snapshot(Q, 100) => s,
        };
        let snapshot = snapshot.unwrap();
        let info = snapshot.info().clone();
        let pairs = snapshot.collect_rows().await.unwrap();
        let len = pairs.len();
        let rows: Rows = pairs.into_iter().collect();
        assert_eq!(rows.len(), len, "a signature came twice");
        seen.push((info, rows));
    }
}

async fn run(
    options: RedisStoreOptions,
    commits: u64,
) -> (Vec<(QueryInfo, Rows)>, History, RedisStore) {
    let server = RedisServer::start();
    let writer_store = server.connect(RedisStoreOptions::new()).await;
    let reader_store = server.connect(options).await;
    let seed = liveresults_core::testing::crash::crash_seed();
    eprintln!("seed {seed} (replay with LIVERESULTS_CRASH_SEED={seed})");
    let done = Arc::new(tokio::sync::Notify::new());
    let readers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(read_until_done(reader_store.clone(), Arc::clone(&done))))
        .collect();
    let history = tokio::spawn(write(writer_store, commits, seed))
        .await
        .unwrap();
    done.notify_waiters();
    let mut snapshots = Vec::new();
    for reader in readers {
        snapshots.extend(reader.await.unwrap());
    }
    drop(server);
    (snapshots, history, reader_store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_under_commits_equal_the_model_at_their_sequence() {
    // Small scan batches make each scan take many round trips, so commits land inside it.
    let options = RedisStoreOptions::new().scan_batch(16);
    let (snapshots, history, store) = run(options, 600).await;
    let mut checked = 0;
    for (info, rows) in &snapshots {
        let Some(seq) = info.sequence else {
            // Before the first commit, or right after the clear: nothing.
            assert!(rows.is_empty(), "a snapshot without a sequence has rows");
            continue;
        };
        let expected = history.get(&(info.epoch, seq)).unwrap_or_else(|| {
            panic!(
                "snapshot at epoch {} sequence {seq} not in the model",
                info.epoch
            )
        });
        assert_eq!(
            rows, expected,
            "snapshot at epoch {} sequence {seq}",
            info.epoch
        );
        assert_eq!(info.row_count, rows.len() as u64);
        checked += 1;
    }
    let stats = store.snapshot_stats();
    eprintln!("{checked} snapshots checked; {stats:?}");
    assert!(
        checked >= 5,
        "only {checked} snapshots were read during the commits"
    );
    assert!(
        stats.replayed_commits > 0,
        "no commit landed during a scan: the test proved nothing ({stats:?})"
    );
}

/// The rows after sequence `seq` of the writer below: 3,000 rows of `x`, then commit `s`
/// (from 2 on) sets row `s % 3000` to `s`.
fn model_of_one_row_writer(seq: u64) -> Rows {
    let mut rows: Rows = (0..3000u64).map(|s| (s, b"x".to_vec())).collect();
    for s in 2..=seq {
        rows.insert(s % 3000, s.to_string().into_bytes());
    }
    rows
}

/// With a change log too short to cover a scan, snapshots start over, and whatever
/// completes is still exact; what cannot complete fails as transient, never as wrong rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_log_too_short_restarts_snapshots_but_never_lies() {
    let server = RedisServer::start();
    let tight = OutboxRetention {
        max_entries: 2,
        max_bytes: u64::MAX,
    };
    let writer = server
        .connect(RedisStoreOptions::new().change_log_retention(tight))
        .await;
    let reader = server
        .connect(RedisStoreOptions::new().scan_batch(8).snapshot_attempts(3))
        .await;
    let rows: Vec<_> = (0..3000u64).map(|s| RowMutation::upsert(s, b"x")).collect();
    commit(&writer, 1, &rows).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let (writer, stop) = (writer.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut seq = 2;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = seq.to_string();
                let m = [RowMutation::upsert(seq % 3000, data.as_bytes())];
                commit(&writer, seq, &m).await;
                seq += 1;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let mut failures = 0;
    for _ in 0..5 {
        match reader.snapshot(Q, 1000).await {
            Ok(snapshot) => {
                let info = snapshot.info().clone();
                let rows: Rows = snapshot.collect_rows().await.unwrap().into_iter().collect();
                assert_eq!(rows.len() as u64, info.row_count);
                assert_eq!(rows, model_of_one_row_writer(info.sequence.unwrap_or(0)));
            }
            Err(err) => {
                assert!(err.is_transient(), "{err}");
                failures += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writing.await.unwrap();
    let stats = reader.snapshot_stats();
    eprintln!("{failures} snapshots gave up; {stats:?}");
    assert!(
        stats.restarts > 0,
        "the short log never forced a restart: {stats:?}"
    );
    // Once the writer stops, a snapshot completes.
    let info = reader.snapshot(Q, 1000).await.unwrap().info().clone();
    assert_eq!(info.row_count, 3000);
}
