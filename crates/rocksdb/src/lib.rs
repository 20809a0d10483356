//! The RocksDB backend of liveresults.
//!
//! # On-disk format (version 1)
//!
//! Column families and what each key holds (all integers big-endian; `prefix` is
//! `[len: u16][query id UTF-8]`, see the `keys` module):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `default` | `liveresults.format_version` | `u32` format version, written at creation |
//! | `rows` | `prefix ++ signature: u64` | the row bytes, as given |
//! | `outbox` | `prefix ++ last sequence: u64` | outbox record: version, first sequence, payload |
//! | `meta` | `prefix` | meta record: sequence, exact row count, epoch, evicted-through |
//! | `checkpoints` | `prefix ++ reaction id` | checkpoint record: sequence, config hash |
//!
//! Record layouts live in `liveresults_core::codec::records`. A store whose format record names
//! another version is refused with `StoreError::UnsupportedFormat`, never reinterpreted.
//!
//! # Why every commit is atomic
//!
//! A commit is one `WriteBatch`: the row puts and deletes, the outbox put (plus the deletes of
//! evicted entries) and the query's new meta record (sequence, row count, eviction mark). RocksDB
//! applies a batch to the WAL as one record, so after any crash recovery replays either the
//! whole batch or none of it:
//!
//! - crash before the WAL write: the previous commit's state, sequence and count;
//! - crash after it: the new state; the WAL is always on, so a process crash loses nothing,
//!   and with `sync_commits(false)` a power loss can lose only a suffix of commits.
//!
//! The row count is exact because each commit knows which of its signatures exist: from an
//! in-memory signature index (built on a query's first commit by a key-only scan and checked
//! against the stored count), or, for queries beyond the index's memory budget, from one
//! batched `multi_get`. A clear is three range deletes and a meta put in one batch: O(1),
//! no scan. Commits to one query hold that query's lock from the existence check to the
//! in-memory update, so the index never diverges from what was written.

mod engine;
mod error;
mod keys;
mod options;
mod owned;
mod snapshot;
mod state;
mod store;
mod verify;

pub use engine::{STORE_FORMAT_BASE_VERSION, STORE_FORMAT_VERSION};
pub use options::RocksStoreOptions;
pub use store::RocksStore;
pub use verify::{
    verify, verify_with, Column, Finding, KeyDisplay, Problem, Record, VerifyOptions, VerifyReport,
};

/// The `rocksdb` crate this backend is built on, so benchmarks can drive the same version.
pub use rocksdb;
