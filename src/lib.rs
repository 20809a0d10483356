//! liveresults: a live-query results reaction store.
//!
//! Continuous queries emit result diffs; reactions act on them and, after a restart, rebuild
//! from a point-in-time snapshot of the current result set instead of replaying history. This
//! crate is the facade over the workspace:
//!
//! - [`core`]: the data model, the store traits ([`LiveResultsWriter`], [`ResultStore`]) and
//!   the in-memory store;
//! - [`rocksdb`]: the durable RocksDB store, and [`rocksdb::verify`], its offline integrity
//!   check;
//! - [`runtime`]: the reaction runtime (pipelines, recovery policies, reactions, sources);
//! - [`server`]: the HTTP API (ingest, snapshots, stats, clear, change feed, metrics).
//!
//! # Features: the library without the command line
//!
//! The `cli` feature (on by default) builds the `liveresults` binary and brings in what only
//! the binary needs: clap, indicatif, mimalloc, toml, tracing-subscriber, serde/serde_json and
//! tokio's process-level features (signals, stdin, files). Library users turn it off and
//! compile none of them:
//!
//! ```toml
//! [dependencies]
//! liveresults = { version = "0.1", default-features = false }
//! ```
//!
//! Why a default feature: Cargo shares `[dependencies]` between a package's library and its
//! binaries, so a dependency only the binary uses can only be left out through a feature; the
//! binary declares `required-features = ["cli"]`. Keeping it default means `cargo install`,
//! `cargo run --release -- serve` and the tests that drive the binary work with no flags,
//! while a library user opts out once, in one line.

pub use liveresults_core as core;
pub use liveresults_rocksdb as rocksdb;
pub use liveresults_runtime as runtime;
pub use liveresults_server as server;

pub use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, IndexError, LiveResultsWriter, MemoryStore, OutboxEntry,
    OutboxRetention, QueryInfo, ResultStore, RowMutation, SequenceSpan, Snapshot, StoreError,
};
pub use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
