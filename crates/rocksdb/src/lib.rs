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
//! A commit is one `WriteBatch`, or part of one shared with the other commits of its group
//! (see below): the row puts and deletes, the outbox put (plus the deletes of evicted entries)
//! and the query's new meta record (sequence, row count, eviction mark). RocksDB applies a
//! batch to the WAL as one record, so after any crash recovery replays either the whole batch
//! or none of it:
//!
//! - crash before the WAL write: the previous commit's state, sequence and count;
//! - crash after it: the new state; the WAL is always on, so a process crash loses nothing,
//!   and with `sync_commits(false)` a power loss can lose only a suffix of commits.
//!
//! The row count is exact because each commit knows which of its signatures exist: from an
//! in-memory signature index, or, for queries beyond the index's memory budget, from one
//! batched `multi_get`. After a reopen the index is rebuilt by a key-only scan, inline for a
//! small query and in the background for a large one, whose commits meanwhile use the batched
//! reads and record what they change so the index is current when installed: the first commit
//! after a reopen does not wait for the scan. A clear is three range deletes and a meta put in
//! one batch: O(1), no scan.
//!
//! # Group commit
//!
//! Commits, clears and removals go through one writer thread, which writes every commit queued
//! at once (of any query) as one batch: one WAL write and, with `sync_commits(true)`, one fsync
//! for the group. Each commit is still checked on its own against the state the earlier
//! commits of its group leave, so an invalid commit fails alone; commits to one query land in
//! queue order, and a clear or removal applies between the commits queued before and after it.
//! The writer holds the group's query locks from the existence checks to the in-memory update,
//! so the index never diverges from what was written.

mod engine;
mod error;
mod keys;
mod options;
mod owned;
mod snapshot;
mod state;
mod store;
mod verify;
mod writer;

pub use engine::{STORE_FORMAT_BASE_VERSION, STORE_FORMAT_VERSION};
pub use options::RocksStoreOptions;
pub use store::RocksStore;
pub use verify::{
    verify, verify_with, Column, Finding, KeyDisplay, Problem, Record, VerifyOptions, VerifyReport,
};

/// The `rocksdb` crate this backend is built on, so benchmarks can drive the same version.
pub use rocksdb;
