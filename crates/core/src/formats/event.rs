//! The event model: what both input formats parse into.
//!
//! A [`ResultBatch`] of [`Diff`]s, or a lifecycle [`ControlSignal`], wrapped in an [`Event`].
//! The model is format-neutral so that everything downstream (the diff mapping, the runtime,
//! the outbox codec) never needs to know which dialect upstream spoke.

use serde_json::Value as Json;

use crate::row::Value;

/// One committed-to-be batch of result diffs of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultBatch {
    /// The continuous query that produced the batch.
    pub query_id: String,
    /// Upstream's per-query sequence number of this batch.
    pub sequence: u64,
    /// Source time in milliseconds since the Unix epoch, when upstream gave one as a number.
    pub timestamp_ms: Option<u64>,
    /// The diffs, in the order they must be applied.
    pub diffs: Vec<Diff>,
    /// Upstream metadata, passed through untouched.
    pub metadata: Option<Json>,
}

/// One change to a query's result set.
///
/// `signature` is the upstream row signature when the input carried one; otherwise
/// [`Diff::mutations`] computes it from the row.
#[derive(Debug, Clone, PartialEq)]
pub enum Diff {
    /// A row entered the result set.
    Add {
        /// The row.
        data: Value,
        /// Upstream signature, if given.
        signature: Option<u64>,
    },
    /// A row left the result set.
    Delete {
        /// The row as it was.
        data: Value,
        /// Upstream signature, if given.
        signature: Option<u64>,
    },
    /// A row changed.
    Update {
        /// The row before the change.
        before: Value,
        /// The row after the change.
        after: Value,
        /// Columns identifying the row (aggregation groups), if upstream named them.
        grouping_keys: Option<Vec<String>>,
        /// Upstream signature (the same for `before` and `after`), if given.
        signature: Option<u64>,
    },
    /// An aggregate row was created (`before` is `None`) or changed.
    Aggregation {
        /// The aggregate before the change, if it existed.
        before: Option<Value>,
        /// The aggregate after the change.
        after: Value,
        /// Columns identifying the aggregate group, if upstream named them.
        grouping_keys: Option<Vec<String>>,
        /// Upstream signature, if given.
        signature: Option<u64>,
    },
    /// Upstream evaluated a change that left the result set as it was.
    Noop,
}

/// A Drasi platform control signal: the query's lifecycle, not its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlSignal {
    /// The query started loading its initial result set.
    BootstrapStarted,
    /// The initial result set is complete.
    BootstrapCompleted,
    /// The query is running and emitting changes.
    Running,
    /// The query stopped.
    Stopped,
    /// The query was deleted; its results can be dropped.
    Deleted,
}

impl ControlSignal {
    /// The wire spelling (`"bootstrapStarted"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlSignal::BootstrapStarted => "bootstrapStarted",
            ControlSignal::BootstrapCompleted => "bootstrapCompleted",
            ControlSignal::Running => "running",
            ControlSignal::Stopped => "stopped",
            ControlSignal::Deleted => "deleted",
        }
    }
}

/// One parsed input event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A batch of result diffs.
    Change(ResultBatch),
    /// A lifecycle signal of a query.
    Control {
        /// The query the signal is about.
        query_id: String,
        /// Upstream's sequence number of the signal.
        sequence: u64,
        /// Source time in milliseconds since the Unix epoch, if given.
        timestamp_ms: Option<u64>,
        /// The signal.
        signal: ControlSignal,
    },
}

impl Event {
    /// The query this event belongs to.
    pub fn query_id(&self) -> &str {
        match self {
            Event::Change(batch) => &batch.query_id,
            Event::Control { query_id, .. } => query_id,
        }
    }

    /// Upstream's sequence number of this event.
    pub fn sequence(&self) -> u64 {
        match self {
            Event::Change(batch) => batch.sequence,
            Event::Control { sequence, .. } => *sequence,
        }
    }
}
