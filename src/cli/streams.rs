//! The Durable Streams service `serve` mounts at `/v1/stream/{name}`: durable with `--data DIR`
//! (its own RocksDB database in `DIR/streams`, next to the query store's files, so the two
//! formats and their options stay independent), in memory otherwise.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use liveresults_server::streams::{RocksStreamStore, StreamStore, Streams, StreamsConfig};

use super::CliResult;

/// The subdirectory of the data directory that holds the streams database.
const STREAMS_DIR: &str = "streams";

/// Opens the streams service: over `DIR/streams` when `data` is a directory, else in memory.
/// Long-polls wait at most `long_poll_timeout`.
pub async fn open(data: Option<&Path>, long_poll_timeout: Duration) -> CliResult<Streams> {
    let config = StreamsConfig::default().long_poll_timeout(long_poll_timeout);
    let opened = match data {
        Some(dir) => {
            let path = dir.join(STREAMS_DIR);
            let store = RocksStreamStore::open(&path, true)
                .await
                .map_err(|e| format!("opening the streams store {}: {e}", path.display()))?;
            Streams::open(Arc::new(store) as Arc<dyn StreamStore>, config).await
        }
        None => Streams::memory(config).await,
    };
    opened.map_err(|e| format!("loading the streams: {e}"))
}
