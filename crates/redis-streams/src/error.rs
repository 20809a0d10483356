//! Why a run of the source ended, and why one entry could not be decoded.

use liveresults_core::formats::FormatError;
use liveresults_runtime::SubmitError;

/// Why [`crate::StreamSource`] stopped. Entries not acknowledged when it stops stay pending
/// with this consumer and are read again by its next run (or claimed by another consumer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamSourceError {
    /// The configuration cannot work.
    #[error("stream source configuration: {0}")]
    Config(String),
    /// The Redis URL cannot be used.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis refused a command for a reason that retrying does not cure (a key of the wrong
    /// type, a missing permission). Lost connections and busy servers are retried instead.
    #[error("redis {command} on stream {stream:?}: {source}")]
    Redis {
        /// The command.
        command: &'static str,
        /// The stream it was for.
        stream: String,
        /// Redis's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered in a shape this source does not understand (an incompatible server).
    #[error("redis {command}: unexpected reply: {detail}")]
    Reply {
        /// The command.
        command: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// The runtime refused an event because it is shutting down. (Refusals of one query —
    /// stopped, store failure, another owner — pause that query's stream instead and do not
    /// end the run.) The entry stays pending: the next run commits it.
    #[error("stream {stream:?} entry {id}: {source}")]
    Submit {
        /// The stream.
        stream: String,
        /// The entry's id.
        id: String,
        /// Why the runtime refused it.
        #[source]
        source: Box<SubmitError>,
    },
}

impl StreamSourceError {
    /// Whether retrying can cure it: a lost connection, a timeout, a busy or loading server.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, StreamSourceError::Redis { source, .. } if liveresults_redis::is_transient(source))
    }
}

/// Why an entry is not an event; the entry goes to the dead-letter stream with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The entry has no field with the event.
    #[error("no field {field:?} in the entry")]
    MissingField {
        /// The field looked for.
        field: String,
    },
    /// The field with the event appears more than once (Redis allows it; which one is meant
    /// is anyone's guess).
    #[error("the field {field:?} appears more than once in the entry")]
    DuplicateField {
        /// The field.
        field: String,
    },
    /// The entry is larger than the configured bound.
    #[error("entry of {bytes} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The entry's size (fields and values).
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The field's value is not UTF-8 text.
    #[error("field {field:?} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: String,
    },
    /// A CloudEvent envelope that does not carry a JSON event.
    #[error("cloudevent envelope: {0}")]
    Envelope(String),
    /// The event itself is malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The event belongs to another query than the stream's.
    #[error("event of query {found:?} on the stream of query {expected:?}")]
    WrongQuery {
        /// The stream's query.
        expected: String,
        /// The event's query.
        found: String,
    },
}
