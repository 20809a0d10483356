//! The liveresults data model and store contract.
//!
//! A continuous query emits result diffs; a reaction acts on them and, after a restart, rebuilds
//! its downstream state from a *snapshot* of the current result set instead of replaying
//! history. This crate fixes what such a store must guarantee:
//!
//! - [`LiveResultsWriter`] is Drasi's seed trait, kept signature for signature, so code written
//!   against Drasi compiles against this crate with only the import changed.
//! - [`ResultStore`] is the richer contract the runtime uses: one atomic commit of rows, sequence
//!   and outbox entry; O(1) exact `row_count` and `clear`; point-in-time chunked snapshots; a
//!   bounded outbox; durable reaction checkpoints; query discovery. Every `ResultStore` is a
//!   `LiveResultsWriter` through a blanket impl.
//! - [`MemoryStore`] implements the contract in memory, for tests and throwaway runs.
//! - With the `testing` feature, the `testing` module holds the conformance suite every backend runs.

pub mod codec;
pub mod contract_rules;
pub mod error;
pub mod formats;
pub mod lease;
pub mod memory;
pub mod model;
pub mod ndjson;
pub mod notice;
pub mod outbox_window;
pub mod row;
pub mod signature;
pub mod signature_set;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

/// The former home of [`contract_rules`], [`outbox_window`] and [`signature_set`], kept so
/// that code importing `liveresults_core::rules::…` still compiles.
pub mod rules {
    pub use crate::contract_rules::*;
    pub use crate::outbox_window::*;
    pub use crate::signature_set::*;
}

pub use error::{ErrorClass, IndexError, StoreError};
pub use memory::MemoryStore;
pub use model::{
    Checkpoint, Commit, CommitReceipt, OutboxEntry, OutboxRetention, QueryInfo, RowChunk,
    RowMutation, SequenceSpan,
};
pub use store::{LiveResultsWriter, ResultStore, Snapshot, SnapshotChunks};
