//! Store configuration.

use std::time::Duration;

use liveresults_core::OutboxRetention;
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options};

/// How a [`crate::RocksStore`] is opened. Setters take `self` so options read as one chain.
#[derive(Debug, Clone)]
pub struct RocksStoreOptions {
    pub(crate) sync_commits: bool,
    pub(crate) block_cache_bytes: usize,
    pub(crate) write_buffer_bytes: usize,
    pub(crate) retention: OutboxRetention,
    pub(crate) signature_index_bytes: u64,
    pub(crate) max_blocking_jobs: usize,
    pub(crate) max_open_snapshots: usize,
    pub(crate) snapshot_wait: Duration,
    pub(crate) snapshot_idle_timeout: Duration,
}

impl Default for RocksStoreOptions {
    fn default() -> Self {
        RocksStoreOptions {
            sync_commits: false,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            retention: OutboxRetention::default(),
            signature_index_bytes: 512 << 20,
            max_blocking_jobs: 16,
            max_open_snapshots: 64,
            snapshot_wait: Duration::from_secs(30),
            snapshot_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Bytes one signature costs in the in-memory index (8 for the key, the table's control byte
/// and load-factor slack), used to turn the memory budget into a row budget.
pub(crate) const INDEX_BYTES_PER_ROW: u64 = 16;

impl RocksStoreOptions {
    /// Defaults: no fsync per commit, 64 MiB block cache, 64 MiB write buffers, default outbox
    /// retention, a 512 MiB signature index budget, 16 concurrent blocking jobs, 64 open
    /// snapshots (30 s wait for a slot, 60 s reader idle timeout).
    pub fn new() -> Self {
        RocksStoreOptions::default()
    }

    /// Whether every commit fsyncs the WAL before it is acknowledged (default `false`).
    /// Commits queued together share one write and so one fsync.
    ///
    /// The WAL is always written, so a process crash loses nothing either way; with `false` a
    /// power loss may lose a suffix of acknowledged commits, and the stored sequence tells
    /// upstream where to resume.
    #[must_use]
    pub fn sync_commits(mut self, sync: bool) -> Self {
        self.sync_commits = sync;
        self
    }

    /// Size of the shared LRU block cache in bytes (default 64 MiB).
    #[must_use]
    pub fn block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// Memtable size per column family in bytes (default 64 MiB). Also the free space RocksDB
    /// waits for before it resumes writes after a full disk.
    #[must_use]
    pub fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// How many committed batches each query's outbox keeps (default 1,024 entries / 64 MiB).
    #[must_use]
    pub fn outbox_retention(mut self, retention: OutboxRetention) -> Self {
        self.retention = retention;
        self
    }

    /// Memory budget in bytes for the in-memory signature index that keeps exact row counts
    /// without a read per row (default 512 MiB, about 32M rows at 16 bytes per row).
    ///
    /// A query whose index would not fit falls back to one batched `multi_get` per commit:
    /// still exact, about half as fast.
    #[must_use]
    pub fn signature_index_bytes(mut self, bytes: u64) -> Self {
        self.signature_index_bytes = bytes;
        self
    }

    /// How many store writes other than commits, clears and removals (checkpoints, flushes,
    /// probes), and separately how many reads, may run on the blocking thread pool at once
    /// (default 16 each). Commits, clears and removals go through the store's writer thread.
    #[must_use]
    pub fn max_blocking_jobs(mut self, jobs: usize) -> Self {
        self.max_blocking_jobs = jobs.max(1);
        self
    }

    /// How many snapshots may be open at once (default 64). Each open snapshot owns a blocking
    /// thread until it is read to the end or dropped; one more waits for a slot.
    #[must_use]
    pub fn max_open_snapshots(mut self, snapshots: usize) -> Self {
        self.max_open_snapshots = snapshots.max(1);
        self
    }

    /// How long opening a snapshot waits for a free slot before failing with a transient
    /// error (default 30 s).
    #[must_use]
    pub fn snapshot_wait(mut self, wait: Duration) -> Self {
        self.snapshot_wait = wait;
        self
    }

    /// How long a snapshot waits for its reader to take the next chunk before it is abandoned
    /// and its slot, thread and RocksDB snapshot are released (default 60 s). The reader then
    /// gets a transient error, never a silently truncated snapshot.
    #[must_use]
    pub fn snapshot_idle_timeout(mut self, idle: Duration) -> Self {
        self.snapshot_idle_timeout = idle;
        self
    }

    /// The database-wide RocksDB options this store opens with. Public so benchmarks can open
    /// a raw RocksDB with exactly the same settings.
    pub fn db_options(&self) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(4);
        opts.set_bytes_per_sync(1 << 20);
        opts.set_keep_log_file_num(4);
        opts
    }

    /// The column family options this store uses for every column family (shared block cache,
    /// bloom filters for the batched existence fallback, LZ4).
    pub fn cf_options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(self.block_cache_bytes));
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_write_buffer_size(self.write_buffer_bytes);
        opts
    }
}
