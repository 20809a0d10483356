//! `liveresults consume` as a real child process over a RocksDB directory, fed by a real
//! `redis-server`: SIGKILLed four times while it holds entries in flight and publishing goes
//! on, restarted each time, then stopped with SIGTERM. The store then holds exactly the rows
//! of the model at the last sequence and nothing of the stream is left pending: no event lost
//! (a gap would stop the query), none applied twice. And a second process on the same
//! streams and group stands by, reading nothing, until the first stops.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use liveresults::{ResultStore, RocksStore, RocksStoreOptions};
use liveresults_redis_streams::testing::{
    connect, group_lag, lock_holder, pending_count, publish, wait_until, workload, RedisServer,
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
    let data = data.to_str().expect("a UTF-8 temp path");
    start_with(redis_url, "c1", &["--data", data])
}

/// Starts `consumer` of `orders` with `store` (`--data DIR` or `--memory`) and waits for its
/// "consuming …" line.
fn start_with(redis_url: &str, consumer: &str, store: &[&str]) -> Consumer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveresults"))
        .args(["consume", "--redis-url", redis_url, "--query", "orders"])
        .args(["--consumer", consumer, "--batch", "16", "--block-ms", "100"])
        // The restart after each SIGKILL waits for the killed run's lock to expire.
        .args(["--claim-idle-ms", "500", "--lock-ttl-ms", "1000"])
        .args(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn liveresults consume");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    stdout.read_line(&mut line).expect("read the first line");
    let expected = format!("consuming orders-results as liveresults/{consumer}");
    assert!(
        line.starts_with(&expected),
        "unexpected first line {line:?}"
    );
    Consumer(child, stdout)
}

/// SIGTERM: a clean stop, exit 0; the summary line it printed.
fn terminate(mut consumer: Consumer) -> String {
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
    summary
}

/// Waits until the group has read and acknowledged every entry of the stream.
async fn wait_drained(server: &RedisServer) {
    let conn = connect(server).await;
    wait_until("everything read and acknowledged", PATIENCE, || {
        let mut conn = conn.clone();
        async move {
            group_lag(&mut conn, "orders-results", GROUP).await == Some(0)
                && pending_count(&mut conn, "orders-results", GROUP).await == 0
        }
    })
    .await;
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
        // (Once it holds the lock: a restarted consumer waits for the killed one's lock to
        // expire before it reads.)
        let pid = format!("(pid {},", consumer.0.id());
        wait_until("the consumer holds entries in flight", PATIENCE, || {
            let (mut conn, pid) = (conn.clone(), pid.clone());
            async move {
                let holder = lock_holder(&mut conn, "orders-results", GROUP).await;
                holder.is_some_and(|h| h.contains(&pid))
                    && pending_count(&mut conn, "orders-results", GROUP).await > 0
            }
        })
        .await;
        consumer.0.kill().expect("SIGKILL"); // mid-consume
        let _ = consumer.0.wait();
        publisher.await.expect("publishing");
        consumer = start(&server.url(), &data);
    }
    wait_drained(&server).await;
    terminate(consumer);

    let store = RocksStore::open(&data, RocksStoreOptions::new())
        .await
        .expect("open the store after the runs");
    let info = store.query_info("orders").await.expect("query_info");
    assert_eq!(info.sequence, Some(3000));
    assert_eq!(store_rows(&store, "orders").await, model_values(&w.model));
    assert_eq!(info.row_count, w.model.len() as u64);
    store.close().await.expect("close the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_stands_by_until_the_first_stops() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let w = workload("orders", 300, 12);
    publish(&mut conn, "orders-results", &w.entries[..100]).await;
    let first = start_with(&server.url(), "a", &["--memory"]);
    wait_drained(&server).await;
    let second = start_with(&server.url(), "b", &["--memory"]);
    publish(&mut conn, "orders-results", &w.entries[100..200]).await;
    wait_drained(&server).await;
    // The first read everything; the second, standing by, nothing.
    let summary = terminate(first);
    assert!(summary.starts_with("consumed 200 entries"), "{summary:?}");
    // Stopped cleanly, the first released the lock: the second takes over.
    publish(&mut conn, "orders-results", &w.entries[200..]).await;
    wait_drained(&server).await;
    let summary = terminate(second);
    assert!(summary.starts_with("consumed 100 entries"), "{summary:?}");
}
