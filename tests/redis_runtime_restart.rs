//! The runtime over a Redis store whose server is SIGKILLed during ingest and restarted (AOF
//! with `appendfsync always`): every acknowledged commit is there afterwards, no commit is
//! torn, and the runtime retries through the outage and carries on without a restart of its
//! own (the scenario is `support/runtime_outage.rs`).

#[path = "support/runtime_outage.rs"]
mod runtime_outage;

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::ResultStore;
use liveresults_redis::testing::RedisServer;
use liveresults_redis::RedisStoreOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_during_ingest_keeps_every_acknowledged_commit() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store: Arc<dyn ResultStore> = Arc::new(
        server
            .connect(RedisStoreOptions::new().response_timeout(Duration::from_secs(2)))
            .await,
    );
    runtime_outage::ingest_through_an_outage(store, || {
        server.kill();
        std::thread::sleep(runtime_outage::DOWN);
        server.restart();
    })
    .await;
}
