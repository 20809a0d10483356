//! `liveresults consume` as a real child process over a RocksDB directory, fed by a real
//! `redis-server`: SIGKILLed four times while it holds entries in flight and publishing goes
//! on, restarted each time, then stopped with SIGTERM. The store then holds exactly the rows
//! of the model at the last sequence and nothing of the stream is left pending: no event lost
//! (a gap would stop the query), none applied twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use liveresults::{ResultStore, RocksStore, RocksStoreOptions};
use liveresults_redis_streams::testing::{
    connect, group_lag, pending_count, publish, wait_until, workload, RedisServer,
};
use liveresults_runtime::testing::{model_values, store_rows};

const GROUP: &str = "liveresults";
const PATIENCE: Duration = Duration::from_secs(60);

/// A `liveresults consume` child; killed (and reaped) on drop. Its stdout stays open so that
/// the summary it prints when stopped finds a reader.
struct Consumer(Child, BufReader<ChildStdout>);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the consumer and waits for its "consuming …" line (the store is open by then).
fn start(redis_url: &str, data: &Path) -> Consumer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveresults"))
        .args(["consume", "--redis-url", redis_url, "--query", "orders"])
        .args(["--consumer", "c1", "--batch", "16", "--block-ms", "100"])
        .args(["--claim-idle-ms", "500", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn liveresults consume");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    stdout.read_line(&mut line).expect("read the first line");
    assert!(
        line.starts_with("consuming orders-results as liveresults/c1"),
        "unexpected first line {line:?}"
    );
    Consumer(child, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_consume_and_restart_lose_no_event_and_apply_none_twice() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("store");
    let w = workload("orders", 3000, 11);
    let (first, rest) = w.entries.split_at(1000);
    publish(&mut conn, "orders-results", first).await;

    let mut consumer = start(&server.url(), &data);
    for chunk in rest.chunks(500) {
        // More is published while it works; it is killed while it holds entries it read and
        // has not acknowledged (committed or not).
        let mut publishing = conn.clone();
        let chunk = chunk.to_vec();
        let publisher = tokio::spawn(async move {
            for part in chunk.chunks(10) {
                publish(&mut publishing, "orders-results", part).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        wait_until("the consumer holds entries in flight", PATIENCE, || {
            let mut conn = conn.clone();
            async move { pending_count(&mut conn, "orders-results", GROUP).await > 0 }
        })
        .await;
        consumer.0.kill().expect("SIGKILL"); // mid-consume
        let _ = consumer.0.wait();
        publisher.await.expect("publishing");
        consumer = start(&server.url(), &data);
    }
    wait_until("everything read and acknowledged", PATIENCE, || {
        let mut conn = conn.clone();
        async move {
            group_lag(&mut conn, "orders-results", GROUP).await == Some(0)
                && pending_count(&mut conn, "orders-results", GROUP).await == 0
        }
    })
    .await;
    // SIGTERM: a clean stop, exit 0.
    let term = Command::new("kill")
        .args(["-TERM", &consumer.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success(), "kill -TERM failed: {term}");
    let mut summary = String::new();
    consumer
        .1
        .read_line(&mut summary)
        .expect("read the summary");
    let status = consumer.0.wait().expect("wait for the consumer");
    assert!(status.success(), "consume exited with {status}");
    assert!(summary.starts_with("consumed "), "{summary:?}");

    let store = RocksStore::open(&data, RocksStoreOptions::new())
        .await
        .expect("open the store after the runs");
    let info = store.query_info("orders").await.expect("query_info");
    assert_eq!(info.sequence, Some(3000));
    assert_eq!(store_rows(&store, "orders").await, model_values(&w.model));
    assert_eq!(info.row_count, w.model.len() as u64);
    store.close().await.expect("close the store");
}
