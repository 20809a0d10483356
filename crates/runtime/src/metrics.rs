//! Counters the server exports to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic runtime counters.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    commits: AtomicU64,
    events: AtomicU64,
    row_ops: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Atomic commits made.
    pub commits: u64,
    /// Upstream events committed.
    pub events: u64,
    /// Row mutations committed.
    pub row_ops: u64,
}

impl RuntimeMetrics {
    pub(crate) fn record_commit(&self, events: u64, row_ops: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.row_ops.fetch_add(row_ops, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            row_ops: self.row_ops.load(Ordering::Relaxed),
        }
    }
}
