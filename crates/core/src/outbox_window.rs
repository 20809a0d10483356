//! Outbox retention bookkeeping, shared by every backend so the retention rule (and when a
//! read has a gap) cannot differ between them.

use std::collections::VecDeque;

use crate::error::StoreError;
use crate::model::{OutboxRetention, SequenceSpan};

/// Bookkeeping of one query's outbox: which spans it holds, their sizes, and how far it has
/// been trimmed. Backends keep the payloads; this decides what to evict and when a read has a
/// gap, so the retention rule cannot differ between backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxWindow {
    entries: VecDeque<(SequenceSpan, u64)>,
    bytes: u64,
    evicted_through: Option<u64>,
}

/// What adding one entry to an [`OutboxWindow`] will do; computed before the commit is written
/// and applied only after it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPlan {
    /// The oldest entries to delete, oldest first.
    pub evict: Vec<SequenceSpan>,
    /// The window's `evicted_through` after the commit.
    pub evicted_through: Option<u64>,
}

impl OutboxWindow {
    /// A window that has already been trimmed through `evicted_through`.
    pub fn new(evicted_through: Option<u64>) -> Self {
        OutboxWindow {
            evicted_through,
            ..OutboxWindow::default()
        }
    }

    /// Adds an entry found in storage while loading; entries must come oldest first.
    pub fn push_loaded(&mut self, span: SequenceSpan, bytes: u64) {
        self.entries.push_back((span, bytes));
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total payload bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The last sequence that has left the outbox, if any has.
    pub fn evicted_through(&self) -> Option<u64> {
        self.evicted_through
    }

    /// What adding an entry of `bytes` under `retention` evicts. The new entry always stays.
    pub fn plan_push(&self, bytes: u64, retention: OutboxRetention) -> OutboxPlan {
        let max_entries = retention.max_entries.max(1);
        let mut count = self.entries.len() + 1;
        // Sizes are sums of payload lengths: saturating keeps them meaningful (never wrapped)
        // even for sizes a real store cannot reach.
        let mut total = self.bytes.saturating_add(bytes);
        let mut evict = Vec::new();
        let mut evicted_through = self.evicted_through;
        for &(span, size) in &self.entries {
            if count <= max_entries && total <= retention.max_bytes {
                break;
            }
            evict.push(span);
            evicted_through = Some(span.last);
            count -= 1;
            total = total.saturating_sub(size);
        }
        OutboxPlan {
            evict,
            evicted_through,
        }
    }

    /// Records a committed push planned by [`OutboxWindow::plan_push`].
    pub fn apply_push(&mut self, span: SequenceSpan, bytes: u64, plan: &OutboxPlan) {
        for evicted in &plan.evict {
            if let Some((held, size)) = self.entries.pop_front() {
                debug_assert_eq!(held, *evicted, "outbox plan applied to another window");
                self.bytes = self.bytes.saturating_sub(size);
            }
        }
        self.entries.push_back((span, bytes));
        self.bytes = self.bytes.saturating_add(bytes);
        self.evicted_through = plan.evicted_through;
    }

    /// Fails with [`StoreError::OutboxGap`] when entries right after `after` have left.
    pub fn check_read(&self, query_id: &str, after: Option<u64>) -> Result<(), StoreError> {
        match self.evicted_through {
            Some(evicted) if after.is_none_or(|a| a < evicted) => Err(StoreError::OutboxGap {
                query_id: query_id.to_owned(),
                requested_after: after,
                evicted_through: evicted,
            }),
            _ => Ok(()),
        }
    }

    /// Forgets everything (the query was cleared: its history restarts).
    pub fn clear(&mut self) {
        *self = OutboxWindow::default();
    }
}
