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

mod config;
mod delivery;
mod envelope;
mod error;
mod group;
mod metrics;
mod pipeline;
mod progress;
mod reaction;
pub mod reactions;
mod recovery;
mod retry;
mod runtime;
mod source;
mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Backpressure, QueryConfig, RecoveryPolicy, RetryPolicy, RuntimeConfig};
pub use envelope::Applied;
pub use error::{ReactionError, RuntimeError, SourceError, StopReason, SubmitError};
pub use metrics::{MetricsSnapshot, RuntimeMetrics};
pub use progress::ReactionFailure;
pub use reaction::{ChangeEvent, CommittedChange, Delivery, Reaction, RowChange};
pub use runtime::{Pending, Runtime, RuntimeHandle};
pub use source::{channel_source, run_ndjson, SourceReport, DEFAULT_MAX_LINE_BYTES};
pub use status::{Position, QueryState, QueryStatus, ReactionLag};
