//! The conformance suite every backend runs (enabled by the `testing` feature).
//!
//! Storage behaviour is written once, here, against [`ResultStore`]; a backend provides a
//! [`Harness`] that opens (and reopens) its store and expands [`conformance_suite!`] in its
//! tests. Each case is a plain async function, so a failing case names itself.
//!
//! [`ResultStore`]: crate::ResultStore
//! [`conformance_suite!`]: crate::conformance_suite

pub mod crash;
mod model;
mod suite;

pub use model::{run_model_test, ModelConfig};
pub use suite::*;

use async_trait::async_trait;

use crate::{MemoryStore, OutboxRetention, ResultStore};

/// Opens a backend's store for the conformance suite.
#[async_trait]
pub trait Harness: Send {
    /// The store under test.
    type Store: ResultStore + 'static;

    /// Opens the harness's store, keeping `retention` worth of outbox entries. The first call
    /// opens an empty store.
    async fn open(&mut self, retention: OutboxRetention) -> Self::Store;

    /// Closes `store` and opens the same data again. Backends without durability return the
    /// store unchanged.
    async fn reopen(&mut self, store: Self::Store) -> Self::Store;

    /// Whether the data survives [`Harness::reopen`] because it was really written somewhere.
    fn durable(&self) -> bool;
}

/// Reads a number from environment variable `name`, or `default` when unset or unparsable:
/// how the long-running tests let a person raise their case counts (`PROPTEST_CASES`,
/// `LIVERESULTS_CRASH_ROUNDS`) without editing them.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The harness of the in-memory store.
#[derive(Debug, Default)]
pub struct MemoryHarness;

#[async_trait]
impl Harness for MemoryHarness {
    type Store = MemoryStore;

    async fn open(&mut self, retention: OutboxRetention) -> MemoryStore {
        MemoryStore::with_retention(retention)
    }

    async fn reopen(&mut self, store: MemoryStore) -> MemoryStore {
        store
    }

    fn durable(&self) -> bool {
        false
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling the case with a harness
/// built by `$make` (an expression evaluated afresh for every test).
///
/// ```ignore
/// liveresults_core::conformance_suite!(liveresults_core::testing::MemoryHarness);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases $make;
            upsert_then_read, delete_removes_and_absent_delete_is_fine,
            overwrite_replaces_without_counting_twice, duplicate_signatures_last_wins,
            mixed_batches_count_exactly, queries_are_isolated, clear_removes_one_query_only,
            clear_then_reuse, clear_unknown_query_is_a_no_op, persistence_across_reopen,
            sequence_must_advance_and_rejection_changes_nothing, outbox_reads_after_a_position,
            outbox_gap_is_an_error, outbox_byte_retention_keeps_newest,
            checkpoints_round_trip, list_queries_reports_every_query, snapshot_in_chunks,
            seed_trait_through_dyn, invalid_ids_are_rejected, unknown_query_reads_empty,
            rows_only_commit_keeps_sequence, snapshot_is_point_in_time
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testing::$case($make).await;
            }
        )*
    };
}
