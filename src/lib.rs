//! liveresults: a live-query results reaction store.
//!
//! Continuous queries emit result diffs; reactions act on them and, after a restart, rebuild
//! from a point-in-time snapshot of the current result set instead of replaying history. This
//! crate is the facade over the workspace:
//!
//! - [`core`]: the data model, the store traits ([`LiveResultsWriter`], [`ResultStore`]) and
//!   the in-memory store;
//! - [`rocksdb`]: the durable RocksDB store;
//! - [`runtime`]: the reaction runtime (pipelines, recovery policies, reactions, sources);
//! - [`server`]: the HTTP API (ingest, snapshots, stats, clear, change feed, metrics).

pub use liveresults_core as core;
pub use liveresults_rocksdb as rocksdb;
pub use liveresults_runtime as runtime;
pub use liveresults_server as server;

pub use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, IndexError, LiveResultsWriter, MemoryStore, OutboxEntry,
    OutboxRetention, QueryInfo, ResultStore, RowMutation, SequenceSpan, Snapshot, StoreError,
};
pub use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
