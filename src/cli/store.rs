//! Opening and closing the store a subcommand works on.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use liveresults::{MemoryStore, ResultStore, RocksStore, RocksStoreOptions};

use super::CliResult;

/// Where the data lives.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// The RocksDB data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
}

/// An open store, with the handle needed to close it cleanly.
pub enum Opened {
    /// The durable RocksDB store.
    Rocks(RocksStore),
    /// A throwaway in-memory store.
    Memory(Arc<MemoryStore>),
}

impl Opened {
    /// Opens the RocksDB store in `dir`.
    pub async fn rocks(dir: &Path) -> CliResult<Opened> {
        RocksStore::open(dir, RocksStoreOptions::new())
            .await
            .map(Opened::Rocks)
            .map_err(|e| format!("opening {}: {e}", dir.display()))
    }

    /// The store as the runtime and the server use it.
    pub fn shared(&self) -> Arc<dyn ResultStore> {
        match self {
            Opened::Rocks(store) => Arc::new(store.clone()),
            Opened::Memory(store) => store.clone(),
        }
    }

    /// Syncs and closes the store (a no-op for memory).
    pub async fn close(self) -> CliResult {
        match self {
            Opened::Rocks(store) => store
                .close()
                .await
                .map_err(|e| format!("closing the store: {e}")),
            Opened::Memory(_) => Ok(()),
        }
    }
}

/// Opens the RocksDB store in `dir`, runs `work` on it, then closes the store cleanly whatever
/// `work` returned (a subcommand's error must not skip the WAL sync and memtable flush).
pub async fn with_rocks<T, F, Fut>(dir: &Path, work: F) -> CliResult<T>
where
    F: FnOnce(Arc<dyn ResultStore>) -> Fut,
    Fut: Future<Output = CliResult<T>>,
{
    let store = Opened::rocks(dir).await?;
    let result = work(store.shared()).await;
    store.close().await?;
    result
}
