//! Store errors.
//!
//! One enum for every store operation, because the runtime treats them alike: it retries what
//! [`StoreError::is_transient`] calls transient and stops the query on anything else. Variants
//! carry the query and the numbers involved so that a log line alone explains the failure.

use std::fmt;

/// Drasi names the seed trait's error `IndexError`; the alias lets code written against Drasi's
/// `LiveResultsWriter` compile against ours with only the import changed.
pub type IndexError = StoreError;

/// What a backend error means for the caller: retry, or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Worth retrying with backoff (busy, timed out, try again).
    Transient,
    /// Retrying will not help (I/O failure, invalid argument, unsupported operation).
    Permanent,
}

/// Errors returned by store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The query id cannot be stored (empty, or longer than the key layout allows).
    #[error("invalid query id {query_id:?}: {reason}")]
    InvalidQueryId {
        /// The rejected id (truncated to 80 characters when very long).
        query_id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A commit carried a sequence that is not after the query's committed sequence, or a
    /// span whose first sequence is after its last.
    #[error("query {query_id:?}: sequence span {attempted} does not follow committed sequence {committed:?}")]
    SequenceRegression {
        /// The query committed to.
        query_id: String,
        /// The query's committed sequence (`None` before the first sequenced commit).
        committed: Option<u64>,
        /// The rejected span.
        attempted: SpanDisplay,
    },
    /// The outbox no longer holds the entries right after the requested position: the reader
    /// must rebuild from a snapshot.
    #[error("query {query_id:?}: outbox no longer holds entries after {requested_after:?} (evicted through {evicted_through})")]
    OutboxGap {
        /// The query read.
        query_id: String,
        /// The position asked for (`None` = from the start of the query's history).
        requested_after: Option<u64>,
        /// The last sequence that has left the outbox.
        evicted_through: u64,
    },
    /// The store was written by a format version this build does not understand.
    #[error("unsupported store format version {found} (this build reads version {supported})")]
    UnsupportedFormat {
        /// The version recorded in the store.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },
    /// A stored record could not be decoded.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which record (for example `meta record of query "q1"`).
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// Another process (or another open handle in this process) holds the store.
    #[error("store at {path} is locked by another process or handle: {detail}")]
    Locked {
        /// The store directory.
        path: String,
        /// The backend's own message.
        detail: String,
    },
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
    /// A write's fencing token (a commit's, clear's or removal's) is not the query's live
    /// lease token (the lease expired or moved to another host, or a lease is live and the
    /// write carried none): nothing was written. See `liveresults_core::lease`.
    #[error("query {query_id:?}: write fenced (its token {fence:?}, live lease {live:?})")]
    Fenced {
        /// The query written to.
        query_id: String,
        /// The token the write carried.
        fence: Option<u64>,
        /// The live lease's holder and token, if a lease is live.
        live: Option<(String, u64)>,
    },
    /// An error from the storage backend.
    #[error("{backend} error ({class:?}): {message}")]
    Backend {
        /// Which backend (`rocksdb`, `memory`, ...).
        backend: &'static str,
        /// Whether retrying can help.
        class: ErrorClass,
        /// The backend's message.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                class: ErrorClass::Transient,
                ..
            }
        )
    }

    /// Builds [`StoreError::InvalidQueryId`], truncating very long ids so errors stay readable.
    pub fn invalid_query_id(query_id: &str, reason: &'static str) -> Self {
        let query_id = query_id.chars().take(80).collect();
        StoreError::InvalidQueryId { query_id, reason }
    }

    /// Builds [`StoreError::Corrupt`]: the one place a stored record that does not decode, or
    /// holds numbers no valid history can produce, becomes an error. `what` names the record
    /// (and its query) so that the log line alone says where to look; `detail` is the
    /// decoder's own message.
    pub fn corrupt(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// A stored row of `query_id` whose bytes do not decode.
    pub fn corrupt_row(query_id: &str, signature: u64, detail: impl fmt::Display) -> Self {
        StoreError::corrupt(format!("row {signature} of query {query_id:?}"), detail)
    }

    /// A stored key of `query_id` that does not have its layout; `kind` names the key's
    /// column (`"row"`, `"outbox"`).
    pub fn corrupt_key(kind: &str, query_id: &str, key: &[u8]) -> Self {
        StoreError::corrupt(
            format!("{kind} key of query {query_id:?}"),
            format_args!("{key:?}"),
        )
    }

    /// An outbox entry of `query_id`, named by the last sequence it covers, that does not
    /// decode.
    pub fn corrupt_outbox_entry(
        query_id: &str,
        last_sequence: u64,
        detail: impl fmt::Display,
    ) -> Self {
        StoreError::corrupt(
            format!("outbox entry {last_sequence} of query {query_id:?}"),
            detail,
        )
    }

    /// The meta record of `query_id` (sequence, row count, epoch) is undecodable, or a change
    /// to it would overflow.
    pub fn corrupt_meta(query_id: &str, detail: impl fmt::Display) -> Self {
        StoreError::corrupt(format!("meta record of query {query_id:?}"), detail)
    }
}

/// A sequence span as shown in errors: `7` or `5..=7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanDisplay {
    /// First sequence of the span.
    pub first: u64,
    /// Last sequence of the span.
    pub last: u64,
}

impl fmt::Display for SpanDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.last)
        } else {
            write!(f, "{}..={}", self.first, self.last)
        }
    }
}
