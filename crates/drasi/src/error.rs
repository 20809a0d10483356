//! Errors of the Drasi reaction.

use drasi_lib::queries::output_state::FetchError;
use liveresults_core::StoreError;
use liveresults_runtime::SubmitError;

/// Why [`crate::LiveResultsReaction`] could not take a result or rebuild a query.
///
/// drasi-lib sees these as `anyhow` errors (its reaction trait's error type), logs them and drops
/// the result; the reaction itself forgets where the query stood and re-attaches it to Drasi's
/// snapshot, in the background with a capped backoff and at the next result, instead of applying
/// on top of a hole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrasiReactionError {
    /// A result arrived before drasi-lib initialised the reaction, so no snapshot is reachable.
    #[error("reaction {reaction_id:?} has no drasi-lib context yet (not initialised)")]
    NotInitialized {
        /// The reaction.
        reaction_id: String,
    },
    /// drasi-lib gave no snapshot of the query.
    #[error("query {query_id:?}: drasi-lib snapshot unavailable: {source}")]
    Fetch {
        /// The query.
        query_id: String,
        /// drasi-lib's reason.
        source: FetchError,
    },
    /// Reading our own rows for the rebuild failed.
    #[error("query {query_id:?}: reading the liveresults store failed: {source}")]
    Store {
        /// The query.
        query_id: String,
        /// The store's error.
        source: StoreError,
    },
    /// The runtime refused the result or the rebuild commit.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Drasi's sequence, mapped onto ours, does not fit in 64 bits.
    #[error("query {query_id:?}: sequence {drasi_sequence} overflows once mapped")]
    SequenceOverflow {
        /// The query.
        query_id: String,
        /// Drasi's sequence.
        drasi_sequence: u64,
    },
    /// A result beyond the snapshot just taken: the snapshot cannot be older than a result
    /// already handed to the reaction, so the two do not come from the same query.
    #[error(
        "query {query_id:?}: result {drasi_sequence} is after Drasi's snapshot at {as_of_sequence}"
    )]
    AheadOfSnapshot {
        /// The query.
        query_id: String,
        /// The result's sequence.
        drasi_sequence: u64,
        /// The snapshot's `as_of_sequence`.
        as_of_sequence: u64,
    },
    /// The background task computing a rebuild's diff ended without an answer (it panicked,
    /// or the executor is shutting down).
    #[error("query {query_id:?}: computing the rebuild's diff failed: {source}")]
    Diff {
        /// The query.
        query_id: String,
        /// Why the task ended.
        source: tokio::task::JoinError,
    },
    /// The runtime answered a rebuild commit without committing it (the query's committed
    /// sequence moved while the diff was computed, or the query was deleted).
    #[error("query {query_id:?}: rebuild commit not applied: {outcome}")]
    RebuildNotApplied {
        /// The query.
        query_id: String,
        /// What the runtime answered.
        outcome: String,
    },
}

impl DrasiReactionError {
    /// Whether the runtime is shutting down: retrying cannot help, so background repair stops.
    pub(crate) fn is_shutdown(&self) -> bool {
        matches!(self, DrasiReactionError::Submit(SubmitError::ShuttingDown))
    }
}
