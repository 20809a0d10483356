//! A liveresults source that consumes Drasi result events from Redis Streams.
//!
//! The Drasi platform publishes each continuous query's results to a Redis stream named
//! `{query}-results` (through Dapr pub/sub, or drasi-core's platform reaction), one event per
//! entry, in a field named `data`, wrapped in a CloudEvent envelope. [`StreamSource`] reads
//! such streams through a consumer group and feeds the events to a
//! [`liveresults_runtime::RuntimeHandle`]:
//!
//! ```rust,ignore
//! use liveresults_redis_streams::{StreamSource, StreamSourceConfig, StreamSpec};
//! let config = StreamSourceConfig::new(vec![StreamSpec::drasi_query("orders")], "liveresults", "host-1");
//! let source = StreamSource::new("redis://127.0.0.1:6379", config)?;
//! let report = source.run(&runtime.handle(), shutdown_signal).await?;
//! ```
//!
//! # Formats
//!
//! An entry's `data` field holds either a CloudEvent envelope (a JSON object with
//! `specversion`), whose `data` is the event, or a bare event; the event is a Drasi platform
//! event or a drasi-lib query result (see `liveresults_core::formats`). The `decode` module
//! has the details.
//!
//! # Guarantees and how
//!
//! - **Acknowledged only once durable.** An entry is `XACK`ed only after the runtime answered
//!   that its event is committed (which the runtime does once the store made it durable), or
//!   after finding its event at or below the query's committed sequence. A crash anywhere
//!   leaves the entry pending; its next delivery is recognised as committed and acknowledged
//!   without being submitted again ([`liveresults_runtime::CommittedSequences`], the same
//!   check the NDJSON replay resumes with). Delivery is at least once; the effect is once.
//! - **Malformed entries do not wedge the group.** An entry that is not an event (not JSON, a
//!   malformed event, larger than `max_entry_bytes`, an envelope without JSON data, an event
//!   of another query than the stream's) is logged (a warning), counted
//!   ([`StreamReport::dead_lettered`]) and moved to `<stream>-deadletter`: one script adds it
//!   there (its fields, after `deadletter-stream`, `deadletter-id`, `deadletter-reason`,
//!   `deadletter-group` and `deadletter-consumer`) and then acknowledges the original; a failed
//!   add (the key is not a stream, memory is full) ends the script before the acknowledgement,
//!   so the entry stays pending and the run ends with the error. (Not MULTI/EXEC: Redis runs
//!   the rest of a transaction after a command fails in it.) The entries after it go on.
//! - **Dead consumers' entries are claimed.** At start, and then every `claim_every`,
//!   entries pending for at least `claim_idle` with any consumer are claimed (`XAUTOCLAIM`).
//!   At start the source first waits (at most `claim_idle`) for the oldest entries pending
//!   with other consumers to become claimable, then reads all of its own pending entries in id
//!   order, and only then new entries: a query's events must be committed in sequence order,
//!   and a stream read out of order would be a gap (or, for a query with nothing committed
//!   yet, a later start, after which the older events count as already committed). Entries
//!   still younger than `claim_idle` when the wait ends belong to a live consumer and are
//!   left to it.
//! - **Bounded memory.** At most `batch` entries are in flight (read, not yet acknowledged)
//!   over all streams; reads ask for no more than the room left.
//! - **Graceful shutdown.** When the shutdown future resolves, reading stops (a blocking read
//!   is abandoned; entries the server delivered to it stay pending with this consumer, which
//!   reads them first next time), every submitted entry is waited for and acknowledged.
//! - **Failures.** Lost connections, timeouts and busy or loading servers are retried with
//!   backoff; a group that disappeared (a server restarted without persistence) is created
//!   again. A refusal by the runtime (a stopped query) ends the run with
//!   [`StreamSourceError::Submit`], leaving the entry pending for after the query is resumed or
//!   cleared.
//!
//! # One consumer at a time per stream
//!
//! A consumer group splits a stream's entries between its consumers, so two live consumers of
//! one stream would each see part of a query's sequence — gaps for both. Run one consumer per
//! stream and group; others with other names are stand-bys that take over (by claiming) when
//! it stops acknowledging. `claim_idle` must be longer than the slowest commit, or a live
//! consumer's entries are taken from it.

mod commands;
mod config;
mod decode;
mod error;
mod inflight;
mod reply;
mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    StreamSourceConfig, StreamSpec, DEAD_LETTER_SUFFIX, DEFAULT_FIELD, DEFAULT_MAX_ENTRY_BYTES,
    DRASI_RESULTS_SUFFIX, MAX_BATCH,
};
pub use decode::{decode_entry, decode_json};
pub use error::{EntryError, StreamSourceError};
pub use inflight::StreamReport;
pub use source::StreamSource;
