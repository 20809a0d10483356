//! Why a stream operation was refused, with the HTTP status and headers each reason gets.

use crate::offset::OffsetError;
use crate::store::StoreError;

/// A refused or failed stream operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// No stream at this name (or it expired).
    #[error("no stream named {0:?}")]
    NotFound(String),
    /// The stream was deleted while forks still read through it.
    #[error("stream {0:?} was deleted (its forks still read its data)")]
    Gone(String),
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A bad offset parameter or header.
    #[error(transparent)]
    Offset(#[from] OffsetError),
    /// A body larger than the configured limit.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The stream exists with another configuration (create), or the fork source is deleted.
    #[error("{0}")]
    Conflict(String),
    /// The append's content type is not the stream's.
    #[error("the stream's content type is {stream:?}, the request's {request:?}")]
    ContentType {
        /// The stream's content type.
        stream: String,
        /// The request's content type.
        request: String,
    },
    /// The stream is closed; `tail` is its final offset.
    #[error("the stream is closed")]
    Closed {
        /// The final position.
        tail: u64,
    },
    /// `Stream-Seq` did not increase.
    #[error("Stream-Seq {received:?} is not greater than the last one, {last:?}")]
    SeqRegression {
        /// The last accepted value.
        last: String,
        /// The value sent.
        received: String,
    },
    /// A producer epoch older than the stream's (a fenced zombie).
    #[error("producer epoch {received} is older than the current epoch {current}")]
    StaleEpoch {
        /// The producer's current epoch.
        current: u64,
        /// The epoch sent.
        received: u64,
    },
    /// A producer sequence that skips ahead.
    #[error("producer sequence {received} skips ahead of the expected {expected}")]
    SeqGap {
        /// The next sequence the server expects.
        expected: u64,
        /// The sequence sent.
        received: u64,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StreamError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            StreamError::NotFound(_) => 404,
            StreamError::Gone(_) => 410,
            StreamError::BadRequest(_) | StreamError::Offset(_) => 400,
            StreamError::TooLarge { .. } => 413,
            StreamError::Conflict(_)
            | StreamError::ContentType { .. }
            | StreamError::Closed { .. }
            | StreamError::SeqRegression { .. }
            | StreamError::SeqGap { .. } => 409,
            StreamError::StaleEpoch { .. } => 403,
            StreamError::ShuttingDown => 503,
            StreamError::Store(StoreError::Corrupt(_)) => 500,
            StreamError::Store(_) => 503,
        }
    }

    /// The problem type's last segment (after `urn:liveresults:problem:`).
    pub fn kind(&self) -> &'static str {
        match self {
            StreamError::NotFound(_) => "stream-not-found",
            StreamError::Gone(_) => "stream-gone",
            StreamError::BadRequest(_) => "bad-request",
            StreamError::Offset(_) => "bad-offset",
            StreamError::TooLarge { .. } => "body-too-large",
            StreamError::Conflict(_) => "stream-conflict",
            StreamError::ContentType { .. } => "content-type-mismatch",
            StreamError::Closed { .. } => "stream-closed",
            StreamError::SeqRegression { .. } => "stream-seq-regression",
            StreamError::StaleEpoch { .. } => "stale-producer-epoch",
            StreamError::SeqGap { .. } => "producer-sequence-gap",
            StreamError::ShuttingDown => "shutting-down",
            StreamError::Store(StoreError::Corrupt(_)) => "store-corrupt",
            StreamError::Store(_) => "store-unavailable",
        }
    }
}
