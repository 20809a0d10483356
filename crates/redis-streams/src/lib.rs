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
//! - **One reader per stream and group.** A consumer group splits a stream's new entries
//!   between the consumers that ask, so two live consumers of one stream would each see part
//!   of a query's sequence — gaps for both. So a consumer first takes a lock in Redis (the
//!   `lock` module: a key per stream, `<stream>:liveresults-lock:<group>`, taken for all its
//!   streams at once with `SET … PX lock_ttl` when no other owner holds any, renewed every
//!   third of `lock_ttl` by a compare-and-renew script, deleted by a compare-and-delete script
//!   when it stops). A consumer that cannot take it waits as a stand-by (logged) and reads
//!   nothing; it takes over when the holder stops (at once) or dies (when the lock expires).
//!   A holder whose renewal finds the lock gone, or that could not renew it in time, stops
//!   reading, commits and acknowledges what is in flight, and stands by again. Reads never
//!   start, nor block, past a third of the TTL before the lock could expire (counted from when
//!   the last renewal was *sent*). A consumer restarted after a crash waits out its previous
//!   run's lock, whatever its name.
//! - **Entries of the previous holder are claimed, in order.** After taking the lock the
//!   source waits (at most `claim_idle`) for the oldest entries pending with other consumers
//!   to become claimable (`XAUTOCLAIM`; or to be acknowledged by a holder finishing what it
//!   had in flight), claims them, then reads all of its own pending entries in id order, and
//!   only then new entries: a query's events must be committed in sequence order, and a
//!   stream read out of order would be a gap (or, for a query with nothing committed yet, a
//!   later start, after which the older events count as already committed). Entries still
//!   younger than `claim_idle` when the wait ends are left to their consumer; entries of
//!   consumers idle for `claim_idle` are also claimed every `claim_every`. `claim_idle` must be
//!   longer than the slowest commit, or entries still being committed are taken over (they
//!   are then found committed, not applied twice).
//! - **A refused entry pauses its stream only.** When the runtime refuses an event, its entry
//!   stays pending (not acknowledged: nothing was committed) and its stream pauses — nothing
//!   more of it is read or submitted, so nothing after it is committed out of order — while
//!   the other streams go on ([`StreamReport::refused`] counts refusals). After
//!   `refusal_pause` (doubling while refusals go on, up to [`MAX_REFUSAL_PAUSE`]) the stream
//!   reads its pending entries again from the oldest, one at a time until one is committed.
//!   An entry refused *for good* — its query stopped by a sequence gap under `Strict`, or
//!   deleted upstream, which nothing but an operator changes — is dead-lettered with the
//!   refusal as its reason once Redis counted `max_deliveries` deliveries of it (`XPENDING`;
//!   restarts count, so the same entry cannot fail forever across restarts). While the query
//!   stays stopped, each of its next entries goes the same way in turn: resume or clear the
//!   query, and `XADD` the dead letters back if they should be applied. Refusals that pass by
//!   themselves or are no fault of the entry — a store failure (the query is back after a
//!   `resume`), a full queue, another host owning the query, a lost lease — pause and retry,
//!   never dead-letter. Only a runtime shutting down ends the run
//!   ([`StreamSourceError::Submit`]).
//! - **Bounded memory.** At most `batch` entries are in flight (read, not yet acknowledged)
//!   over all streams; reads ask for no more than the room left. An entry's size is known
//!   only once it is read (`XREADGROUP` has no size limit), so `max_entry_bytes` bounds what
//!   is *kept* — a larger entry is dead-lettered right after the read — but a read holds up
//!   to `batch` entries of whatever size the producer wrote (Redis allows 512 MB per value)
//!   until then. Bound the producers, or lower `batch`, where that matters.
//! - **Graceful shutdown.** When the shutdown future resolves, reading stops (a blocking read
//!   is abandoned; entries the server delivered to it stay pending with this consumer, which
//!   reads them first next time), every submitted entry is waited for and acknowledged, and
//!   the lock is released.
//! - **Failures.** Lost connections, timeouts and busy or loading servers are retried with
//!   backoff; a group that disappeared (a server restarted without persistence) is created
//!   again. Redis refusing a command for good (a key of the wrong type, a missing permission)
//!   ends the run with [`StreamSourceError::Redis`].
//!
//! # Commands
//!
//! `XGROUP CREATE`, `XREADGROUP`, `XACK`, `XAUTOCLAIM`, `XPENDING`, `XRANGE`, and scripts
//! (`EVALSHA`/`EVAL`) calling `XADD`, `XACK`, `GET`, `SET`, `PEXPIRE`, `PTTL` and `DEL`. In a
//! Redis Cluster the scripts would need a stream, its dead-letter stream and the lock keys of
//! a consumer's streams in one hash slot; this source is written for one server (with
//! replicas).

mod commands;
mod config;
mod decode;
mod error;
mod inflight;
mod lock;
mod refusal;
mod reply;
mod session;
mod shutdown;
mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    StreamSourceConfig, StreamSpec, DEAD_LETTER_SUFFIX, DEFAULT_FIELD, DEFAULT_LOCK_TTL,
    DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_ENTRY_BYTES, DRASI_RESULTS_SUFFIX, MAX_BATCH,
    MAX_REFUSAL_PAUSE,
};
pub use decode::{decode_entry, decode_json};
pub use error::{EntryError, StreamSourceError};
pub use inflight::StreamReport;
pub use lock::lock_key;
pub use source::StreamSource;
