//! The `Reaction` trait and what reactions receive.

use std::sync::Arc;

use async_trait::async_trait;
use liveresults_core::codec::changes::{ChangeItem, ChangeOp};
use liveresults_core::codec::row::decode_row;
use liveresults_core::formats::ControlSignal;
use liveresults_core::row::Value;
use liveresults_core::{OutboxEntry, SequenceSpan, StoreError};

use crate::error::ReactionError;

/// One row operation as a reaction sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// The row with `signature` is now `row`.
    Upsert {
        /// Row signature.
        signature: u64,
        /// The row.
        row: Value,
    },
    /// The row with `signature` left the result set.
    Delete {
        /// Row signature.
        signature: u64,
    },
}

/// One upstream event inside a committed change.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeEvent {
    /// Row operations of one upstream batch.
    Rows {
        /// Upstream sequence.
        sequence: u64,
        /// Effective operations in order.
        changes: Vec<RowChange>,
    },
    /// A lifecycle signal.
    Control {
        /// Upstream sequence.
        sequence: u64,
        /// The signal.
        signal: ControlSignal,
    },
}

/// One durable commit of one query: everything in it is on disk before any reaction sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedChange {
    /// The query.
    pub query_id: String,
    /// The query's epoch (incremented by every clear).
    pub epoch: u64,
    /// The upstream sequences the commit covers.
    pub span: SequenceSpan,
    /// The events, in order.
    pub events: Vec<ChangeEvent>,
}

impl CommittedChange {
    /// Rebuilds a committed change from its outbox entry (catching up after a restart).
    pub fn from_outbox(
        query_id: &str,
        epoch: u64,
        entry: &OutboxEntry,
    ) -> Result<Self, StoreError> {
        let corrupt =
            |detail: String| StoreError::corrupt_outbox_entry(query_id, entry.span.last, detail);
        let items = liveresults_core::codec::changes::decode_changes(&entry.payload)
            .map_err(|e| corrupt(e.to_string()))?;
        let mut events = Vec::with_capacity(items.len());
        for item in items {
            events.push(match item {
                ChangeItem::Control { sequence, signal } => {
                    ChangeEvent::Control { sequence, signal }
                }
                ChangeItem::Rows { sequence, ops } => {
                    let mut changes = Vec::with_capacity(ops.len());
                    for op in ops {
                        changes.push(match op {
                            ChangeOp::Delete { signature } => RowChange::Delete { signature },
                            ChangeOp::Upsert { signature, row } => RowChange::Upsert {
                                signature,
                                row: decode_row(&row).map_err(|e| corrupt(e.to_string()))?,
                            },
                        });
                    }
                    ChangeEvent::Rows { sequence, changes }
                }
            });
        }
        Ok(CommittedChange {
            query_id: query_id.to_owned(),
            epoch,
            span: entry.span,
            events,
        })
    }

    /// Number of row operations in the change.
    pub fn row_changes(&self) -> usize {
        self.events
            .iter()
            .map(|e| match e {
                ChangeEvent::Rows { changes, .. } => changes.len(),
                ChangeEvent::Control { .. } => 0,
            })
            .sum()
    }
}

/// What a reaction is told, in commit order per query.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Drop all downstream state of the query: a rebuild from a snapshot follows, or the query
    /// was cleared (AutoReset, `deleted`, an operator's clear).
    Reset {
        /// The query.
        query_id: String,
        /// The query's epoch after the reset.
        epoch: u64,
    },
    /// Rows of a snapshot being replayed during a rebuild.
    SnapshotRows {
        /// The query.
        query_id: String,
        /// `(signature, row)` pairs.
        rows: Arc<Vec<(u64, Value)>>,
    },
    /// The snapshot is complete: downstream state now equals the query at `sequence`.
    SnapshotDone {
        /// The query.
        query_id: String,
        /// The sequence the snapshot corresponds to.
        sequence: Option<u64>,
    },
    /// A committed, durable change.
    Change(Arc<CommittedChange>),
}

impl Delivery {
    /// The query this delivery is about.
    pub fn query_id(&self) -> &str {
        match self {
            Delivery::Reset { query_id, .. }
            | Delivery::SnapshotRows { query_id, .. }
            | Delivery::SnapshotDone { query_id, .. } => query_id,
            Delivery::Change(change) => &change.query_id,
        }
    }
}

/// Something that acts on committed result diffs: pushes to browsers, syncs a cache, writes a
/// log. Deliveries for one query arrive in commit order, one at a time.
#[async_trait]
pub trait Reaction: Send + Sync + 'static {
    /// A stable id; durable reactions' checkpoints are keyed by it.
    fn id(&self) -> &str;

    /// Whether the reaction keeps downstream state across restarts. Durable reactions keep a
    /// checkpoint and, on start, catch up from the outbox; others rebuild from a snapshot.
    fn durable(&self) -> bool {
        false
    }

    /// Hash of the configuration the downstream state was built with; a different hash at
    /// start means the checkpoint is stale and the reaction rebuilds.
    fn config_hash(&self) -> u64 {
        0
    }

    /// Handles one delivery. An error is retried with backoff, then the reaction is marked
    /// failed for that query; its checkpoint stays where it was.
    async fn deliver(&self, delivery: &Delivery) -> Result<(), ReactionError>;
}
