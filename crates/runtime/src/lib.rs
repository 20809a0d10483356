//! The liveresults reaction runtime.
//!
//! Result diffs arrive from a source (an in-process channel, NDJSON, HTTP later), are routed to
//! one ordered pipeline per query (queries run in parallel, each queue bounded), checked
//! against the query's committed sequence, folded into group commits and written as ONE atomic
//! store commit each. Only then are they delivered to reactions. On start, every reaction is
//! brought up to date first: durable reactions catch up from the outbox after their checkpoint;
//! the others — and durable ones whose checkpoint has left the outbox, unless the query is
//! `Strict` — rebuild from a point-in-time snapshot instead of replaying history.
//!
//! Reactions run behind the commits, each at its own pace: [`QueryStatus::reactions`] reports
//! how far each one is, and [`RuntimeHandle::reactions_caught_up`] waits until all of them
//! have handled what is committed, before reading what a reaction shows.
//!
//! Sequence rules per query: at or below the committed sequence → skipped (redelivery is
//! idempotent); exactly the next → committed; beyond it → a gap, handled by the query's
//! [`RecoveryPolicy`].
//!
//! Several hosts can share one store ([`RuntimeConfig::host`], on a store with leases such as
//! Redis): each query is then written by the host holding its lease, every commit carries the
//! lease's fencing token so a paused or partitioned old owner can never commit, a submit on
//! another host fails with [`SubmitError::NotOwner`] naming the owner, a host that loses a
//! lease stops that query ([`StopReason::LeaseLost`]) and the next owner recovers it from the
//! store as after a restart. Change-feed watchers ([`RuntimeHandle::watch`]) wake for commits
//! made on any host, through the store's commit notices.

mod config;
mod delivery;
mod envelope;
mod error;
mod group;
mod metrics;
mod notices;
mod ownership;
mod pipeline;
mod progress;
mod reaction;
pub mod reactions;
mod recovery;
mod resume;
mod retry;
mod runtime;
mod source;
mod status;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use config::{
    Backpressure, HostIdentity, QueryConfig, RecoveryPolicy, RetryPolicy, RuntimeConfig,
    MIN_LEASE_TTL,
};
pub use envelope::Applied;
pub use error::{ReactionError, RuntimeError, SourceError, StopReason, SubmitError};
pub use metrics::{MetricsSnapshot, RuntimeMetrics};
pub use progress::ReactionFailure;
pub use reaction::{ChangeEvent, CommittedChange, Delivery, Reaction, RowChange};
pub use resume::CommittedSequences;
pub use runtime::{Pending, Runtime, RuntimeHandle};
pub use source::{channel_source, run_ndjson, SourceReport, DEFAULT_MAX_LINE_BYTES};
pub use status::{Position, QueryState, QueryStatus, ReactionLag};
