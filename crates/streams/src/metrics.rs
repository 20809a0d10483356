//! Counters of the streams service, for the embedding server's Prometheus scrape.
//!
//! Counted where every request passes (the HTTP dispatch), so no handler has to remember to:
//! requests by operation and status class, and the body bytes of successful appends. The
//! server renders them with its other families; this crate only counts (atomics, no locks on
//! the request path).

use std::sync::atomic::{AtomicU64, Ordering};

/// The operations counted, in [`StreamCounts::requests`] order.
pub const OPERATIONS: [&str; 7] = [
    "create", "append", "read", "head", "delete", "options", "other",
];
/// The status classes counted, in [`StreamCounts::requests`] order.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Live counters (shared by every clone of the service).
#[derive(Debug, Default)]
pub(crate) struct StreamMetrics {
    requests: [[AtomicU64; CLASSES.len()]; OPERATIONS.len()],
    appended_bytes: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Responses by operation ([`OPERATIONS`]) and status class ([`CLASSES`]).
    pub requests: [[u64; CLASSES.len()]; OPERATIONS.len()],
    /// Request body bytes of appends answered with success (by their `Content-Length`).
    pub appended_bytes: u64,
    /// Streams the service holds now (soft-deleted ones included, as for `--max-streams`).
    pub streams: u64,
}

/// The operation an HTTP method names.
pub(crate) fn operation(method: &str) -> usize {
    let name = match method {
        "PUT" => "create",
        "POST" => "append",
        "GET" => "read",
        "HEAD" => "head",
        "DELETE" => "delete",
        "OPTIONS" => "options",
        _ => "other",
    };
    OPERATIONS
        .iter()
        .position(|op| *op == name)
        .unwrap_or(OPERATIONS.len() - 1)
}

impl StreamMetrics {
    /// Counts one answered request; `appended` is the body size of a successful append.
    pub(crate) fn record(&self, operation: usize, status: u16, appended: Option<u64>) {
        let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
        if let Some(row) = self.requests.get(operation) {
            row[class].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(bytes) = appended.filter(|_| (200..300).contains(&status)) {
            self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn counts(&self, streams: usize) -> StreamCounts {
        let mut counts = StreamCounts {
            appended_bytes: self.appended_bytes.load(Ordering::Relaxed),
            streams: u64::try_from(streams).unwrap_or(u64::MAX),
            ..StreamCounts::default()
        };
        for (row, live) in counts.requests.iter_mut().zip(&self.requests) {
            for (count, live) in row.iter_mut().zip(live) {
                *count = live.load(Ordering::Relaxed);
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_operation_and_class() {
        let m = StreamMetrics::default();
        m.record(operation("POST"), 204, Some(100));
        m.record(operation("POST"), 409, Some(50));
        m.record(operation("GET"), 200, None);
        m.record(operation("BREW"), 405, None);
        m.record(operation("GET"), 999, None);
        let c = m.counts(3);
        assert_eq!(c.requests[1], [0, 1, 0, 1, 0], "append");
        assert_eq!(c.requests[2], [0, 1, 0, 0, 1], "read, 999 counted as 5xx");
        assert_eq!(c.requests[6], [0, 0, 0, 1, 0], "other");
        assert_eq!(c.appended_bytes, 100, "only successful appends");
        assert_eq!(c.streams, 3);
    }
}
