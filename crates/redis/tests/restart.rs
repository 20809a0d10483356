//! A server killed with SIGKILL in the middle of commits and restarted from its AOF
//! (`appendfsync always`): every acknowledged commit is there, nothing is torn, and the same
//! store handle reconnects and carries on.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveresults_core::{Commit, QueryInfo, ResultStore, RowMutation, SequenceSpan};
use liveresults_redis::{RedisStore, RedisStoreOptions};
use support::RedisServer;

const Q: &str = "durable";

async fn commit(store: &RedisStore, seq: u64) -> Result<(), liveresults_core::StoreError> {
    let data = seq.to_be_bytes();
    let rows = [RowMutation::upsert(seq, &data)];
    store
        .commit(
            Q,
            Commit::sequenced(&rows, SequenceSpan::single(seq), &data),
        )
        .await
        .map(|_| ())
}

/// Retries `query_info` until the restarted server answers (the connection manager
/// reconnects on its own; the first calls see the old connection fail).
async fn info_after_restart(store: &RedisStore) -> QueryInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.query_info(Q).await {
            Ok(info) => return info,
            Err(err) => {
                assert!(err.is_transient(), "{err}");
                assert!(Instant::now() < deadline, "no reconnect: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_kill_9_with_aof_always() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let options = RedisStoreOptions::new().response_timeout(Duration::from_secs(2));
    let store = server.connect(options).await;
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, acked) = (store.clone(), Arc::clone(&acked));
        tokio::spawn(async move {
            for seq in 1.. {
                if let Err(err) = commit(&store, seq).await {
                    assert!(err.is_transient(), "{err}");
                    return;
                }
                acked.store(seq, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    writer.await.unwrap();
    let last_acked = acked.load(Ordering::SeqCst);
    server.restart();

    let info = info_after_restart(&store).await;
    let seq = info.sequence.expect("a sequence after restart");
    // The commit in flight at the kill may or may not have made it; nothing acknowledged is lost.
    assert!(
        seq == last_acked || seq == last_acked + 1,
        "acknowledged {last_acked}, found {seq}"
    );
    // Nothing torn: exactly the rows of commits 1..=seq, counted exactly.
    let rows: std::collections::BTreeMap<u64, Vec<u8>> = store
        .snapshot(Q, 1000)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: std::collections::BTreeMap<u64, Vec<u8>> =
        (1..=seq).map(|s| (s, s.to_be_bytes().to_vec())).collect();
    assert_eq!(rows, expected);
    assert_eq!(info.row_count, seq);
    let tail = store.read_outbox(Q, Some(seq - 1), 10).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].payload, seq.to_be_bytes());
    // The same handle carries on.
    commit(&store, seq + 1).await.unwrap();
    assert_eq!(store.query_info(Q).await.unwrap().row_count, seq + 1);
}
