//! The Durable Streams service `serve` mounts at `/v1/stream/{name}`: on Redis with `--redis
//! URL` (the query store's server and namespace, so every host sharing it serves the same
//! streams), durable with `--data DIR` (its own RocksDB database in `DIR/streams`, next to the
//! query store's files, so the two formats and their options stay independent), in memory
//! otherwise.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use liveresults_redis::{RedisStoreOptions, RedisStreamStore};
use liveresults_server::streams::{RocksStreamStore, StreamStore, Streams, StreamsConfig};

use super::CliResult;

/// The subdirectory of the data directory that holds the streams database.
const STREAMS_DIR: &str = "streams";

/// Where the streams live.
#[derive(Clone, Copy, Debug)]
pub enum Home<'a> {
    /// The Redis server at this URL, shared with other hosts.
    Redis(&'a str),
    /// `DIR/streams` under this data directory.
    Data(&'a Path),
    /// Process memory.
    Memory,
}

/// Opens the streams service in `home`. Long-polls wait at most `long_poll_timeout`; at most
/// `max_streams` streams may exist, each with at most `max_producers` idempotent producers;
/// at most `max_subscriptions` subscriptions; `allow_dev_webhooks`: webhooks may target
/// loopback (development only).
pub async fn open(
    home: Home<'_>,
    long_poll_timeout: Duration,
    max_streams: usize,
    max_producers: usize,
    max_subscriptions: usize,
    allow_dev_webhooks: bool,
) -> CliResult<Streams> {
    let mut config = StreamsConfig::default()
        .long_poll_timeout(long_poll_timeout)
        .max_streams(max_streams)
        .max_producers(max_producers);
    config.subscriptions.max_subscriptions = max_subscriptions.max(1);
    config.subscriptions.allow_dev_webhooks = allow_dev_webhooks;
    let opened = match home {
        Home::Redis(url) => {
            let store = RedisStreamStore::connect(url, &RedisStoreOptions::new())
                .await
                .map_err(|e| format!("connecting the streams store to {url}: {e}"))?;
            Streams::open(Arc::new(store) as Arc<dyn StreamStore>, config).await
        }
        Home::Data(dir) => {
            let path = dir.join(STREAMS_DIR);
            let store = RocksStreamStore::open(&path, true)
                .await
                .map_err(|e| format!("opening the streams store {}: {e}", path.display()))?;
            Streams::open(Arc::new(store) as Arc<dyn StreamStore>, config).await
        }
        Home::Memory => Streams::memory(config).await,
    };
    opened.map_err(|e| format!("loading the streams: {e}"))
}
