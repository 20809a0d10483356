//! Opening and closing the store a subcommand works on.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use liveresults::{MemoryStore, OutboxRetention, ResultStore, RocksStore, RocksStoreOptions};
use liveresults_postgres::{PgStore, PgStoreOptions};
use liveresults_redis::{RedisStore, RedisStoreOptions};

use super::CliResult;

/// Where the data lives: a RocksDB directory, or a Redis server or PostgreSQL database several
/// hosts share.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// The RocksDB data directory (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present_any = ["redis", "postgres"],
        conflicts_with_all = ["redis", "postgres"]
    )]
    pub data: Option<PathBuf>,
    /// A Redis server holding the store (`redis://HOST:PORT`), as `serve --redis` uses it.
    #[arg(long, value_name = "URL", conflicts_with = "postgres")]
    pub redis: Option<String>,
    /// A PostgreSQL database holding the store (`postgres://USER@HOST/DB`, schema
    /// `liveresults`), as `serve --postgres` uses it.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

impl DataArgs {
    /// Opens the store these arguments name, for reading or clearing (commits would prune
    /// outboxes to the default retention: commands that commit use [`DataArgs::open_with`]).
    pub async fn open(&self) -> CliResult<Opened> {
        self.open_with(OutboxRetention::default()).await
    }

    /// Opens the store these arguments name; commits keep `retention` of each outbox.
    pub async fn open_with(&self, retention: OutboxRetention) -> CliResult<Opened> {
        match (&self.data, &self.redis, &self.postgres) {
            (_, _, Some(url)) => Opened::postgres(url, retention).await,
            (_, Some(url), None) => Opened::redis(url, retention).await,
            (Some(dir), None, None) => Opened::rocks(dir, retention).await,
            // clap requires one of them.
            (None, None, None) => Err("give --data DIR, --redis URL or --postgres URL".to_owned()),
        }
    }
}

/// An open store, with the handle needed to close it cleanly.
pub enum Opened {
    /// The durable RocksDB store.
    Rocks(RocksStore),
    /// A Redis store, possibly shared with other hosts.
    Redis(RedisStore),
    /// A PostgreSQL store, possibly shared with other hosts.
    Postgres(PgStore),
    /// A throwaway in-memory store.
    Memory(Arc<MemoryStore>),
}

impl Opened {
    /// Opens the RocksDB store in `dir`, keeping `retention` of each outbox.
    pub async fn rocks(dir: &Path, retention: OutboxRetention) -> CliResult<Opened> {
        RocksStore::open(dir, RocksStoreOptions::new().outbox_retention(retention))
            .await
            .map(Opened::Rocks)
            .map_err(|e| format!("opening {}: {e}", dir.display()))
    }

    /// Connects to the Redis store at `url`, keeping `retention` of each outbox.
    pub async fn redis(url: &str, retention: OutboxRetention) -> CliResult<Opened> {
        let options = RedisStoreOptions::new().outbox_retention(retention);
        RedisStore::connect(url, options)
            .await
            .map(Opened::Redis)
            .map_err(|e| format!("connecting to {url}: {e}"))
    }

    /// Connects to the PostgreSQL store at `url` (creating or migrating its schema), keeping
    /// `retention` of each outbox.
    pub async fn postgres(url: &str, retention: OutboxRetention) -> CliResult<Opened> {
        PgStore::connect(url, PgStoreOptions::new().outbox_retention(retention))
            .await
            .map(Opened::Postgres)
            .map_err(|e| format!("connecting to PostgreSQL: {e}"))
    }

    /// The store as the runtime and the server use it.
    pub fn shared(&self) -> Arc<dyn ResultStore> {
        match self {
            Opened::Rocks(store) => Arc::new(store.clone()),
            Opened::Redis(store) => Arc::new(store.clone()),
            Opened::Postgres(store) => Arc::new(store.clone()),
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
            Opened::Redis(store) => store
                .close()
                .await
                .map_err(|e| format!("closing the Redis store: {e}")),
            Opened::Postgres(store) => store
                .close()
                .await
                .map_err(|e| format!("closing the PostgreSQL store: {e}")),
            Opened::Memory(_) => Ok(()),
        }
    }
}

/// Opens the store `data` names, runs `work` on it, then closes the store cleanly whatever
/// `work` returned (a subcommand's error must not skip the WAL sync and memtable flush).
pub async fn with_store<T, F, Fut>(data: &DataArgs, work: F) -> CliResult<T>
where
    F: FnOnce(Arc<dyn ResultStore>) -> Fut,
    Fut: Future<Output = CliResult<T>>,
{
    let store = data.open().await?;
    let result = work(store.shared()).await;
    store.close().await?;
    result
}
