//! Runtime errors, by where they surface: submitting events, running reactions, starting up.

use liveresults_core::formats::LineError;
use liveresults_core::StoreError;

/// Why a query stopped accepting events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// Under `Strict`, upstream skipped sequences.
    #[error("sequence gap: received {received} right after {}", sequence_or_start(*committed))]
    Gap {
        /// The sequence before the gap: the committed one, or one earlier in the same
        /// (refused) batch — then nothing of the batch was committed.
        committed: Option<u64>,
        /// The sequence that arrived.
        received: u64,
    },
    /// The store failed permanently (or transiently beyond the retry budget).
    #[error("store failure: {0}")]
    Store(String),
    /// Upstream deleted the query; its results were cleared.
    #[error("query was deleted upstream")]
    Deleted,
    /// Several hosts share the store and this one no longer holds the query's lease (a
    /// renewal found it expired or taken, or the store fenced a commit): another host writes
    /// the query now. Nothing was committed after the loss; a later submit asks for the lease
    /// again (and is told who holds it).
    #[error("this host lost the query's lease to another host")]
    LeaseLost,
    /// An operator removed the query entirely (`RuntimeHandle::remove_query`, the server's
    /// purge) while this was queued behind the removal: nothing of it was applied. A later
    /// submit re-creates the query.
    #[error("query was removed")]
    Removed,
}

/// A sequence for a message, `none` when there is none (never Rust's `Some(1)`).
fn sequence_or_none(sequence: Option<u64>) -> String {
    sequence.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

/// The sequence before a gap for a message; `None` is the query's start.
fn sequence_or_start(sequence: Option<u64>) -> String {
    sequence.map_or_else(
        || "the start (nothing committed)".to_owned(),
        |s| s.to_string(),
    )
}

/// Why an event was not committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The query is stopped; nothing is accepted until it is cleared.
    #[error("query {query_id:?} is stopped ({reason}); last committed sequence: {}", sequence_or_none(*committed))]
    QueryStopped {
        /// The query.
        query_id: String,
        /// Why it stopped.
        reason: StopReason,
        /// Its last committed sequence.
        committed: Option<u64>,
    },
    /// The query's queue is full and the backpressure policy is `Reject`.
    #[error("query {query_id:?} queue is full")]
    Overloaded {
        /// The query.
        query_id: String,
    },
    /// The runtime is shutting down.
    #[error("runtime is shutting down")]
    ShuttingDown,
    /// A batch mixed queries (an atomic batch belongs to one query).
    #[error("event for query {found:?} in a batch for query {expected:?}")]
    WrongQuery {
        /// The batch's query.
        expected: String,
        /// The event's query.
        found: String,
    },
    /// Several hosts share the store and another one holds the query's lease: it alone
    /// writes the query (events, clears, resumes) until its lease expires.
    #[error("query {query_id:?} is owned by host {holder:?} at {address}; send writes there")]
    NotOwner {
        /// The query.
        query_id: String,
        /// The owning host's name.
        holder: String,
        /// Where the owning host can be reached.
        address: String,
    },
    /// The store refused the commit.
    #[error("query {query_id:?}: {source}; last committed sequence: {}", sequence_or_none(*committed))]
    Store {
        /// The query.
        query_id: String,
        /// Its last committed sequence.
        committed: Option<u64>,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// A reaction's own failure.
#[derive(Debug, thiserror::Error)]
#[error("reaction {reaction_id:?}: {message}")]
pub struct ReactionError {
    /// The reaction.
    pub reaction_id: String,
    /// What went wrong.
    pub message: String,
}

impl ReactionError {
    /// Builds an error for `reaction_id`.
    pub fn new(reaction_id: &str, message: impl std::fmt::Display) -> Self {
        ReactionError {
            reaction_id: reaction_id.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Errors starting, recovering or stopping the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reaction could not be rebuilt under the query's policy.
    #[error("reaction {reaction_id:?} cannot recover query {query_id:?}: {reason}")]
    Recovery {
        /// The reaction.
        reaction_id: String,
        /// The query.
        query_id: String,
        /// Why not.
        reason: String,
    },
    /// A reaction failed.
    #[error(transparent)]
    Reaction(#[from] ReactionError),
    /// Two reactions share an id (checkpoints are keyed by it).
    #[error("two reactions share the id {0:?}")]
    DuplicateReaction(String),
    /// While waiting for reactions to catch up: this reaction failed for the query and
    /// receives nothing more for it until the query is reset.
    #[error("reaction {reaction_id:?} failed for query {query_id:?}: {message}")]
    ReactionFailed {
        /// The reaction.
        reaction_id: String,
        /// The query.
        query_id: String,
        /// Why it failed.
        message: String,
    },
    /// While waiting for reactions to catch up: several hosts share the store and this one
    /// does not own the query, so its reactions receive none of the query's commits.
    #[error("query {query_id:?} is not owned by this host; its reactions do not follow it")]
    NotOwned {
        /// The query.
        query_id: String,
    },
    /// While waiting for reactions to catch up: the runtime stopped this reaction's worker
    /// before it got there.
    #[error("reaction {reaction_id:?} stopped before catching up on query {query_id:?}")]
    ReactionStopped {
        /// The reaction.
        reaction_id: String,
        /// The query.
        query_id: String,
    },
}

/// Errors of the NDJSON source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a valid event; nothing of it was submitted.
    #[error(transparent)]
    Line(#[from] LineError),
    /// A line is longer than the configured limit, or not UTF-8 (the same error HTTP ingest
    /// reports for the same input).
    #[error(transparent)]
    Ndjson(#[from] liveresults_core::ndjson::NdjsonError),
    /// The runtime refused an event.
    #[error("line {line}: {source}")]
    Submit {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: SubmitError,
    },
}
