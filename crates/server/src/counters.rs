//! The server's own counters and gauges, apart from the scrape that renders them.
//!
//! They live in their own module because the shared state holds them and the `/metrics`
//! handler reads that state: keeping the counters here lets both depend on this module
//! without depending on each other.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters and gauges. Lock-free; updated on every request.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    responses: [AtomicU64; 5],
    ingest_lines: AtomicU64,
    ingest_chunks: AtomicU64,
    ingest_rejections: AtomicU64,
    long_polls_open: AtomicU64,
    sse_clients: AtomicU64,
}

/// One consistent-enough reading of every counter, for rendering (each value is read once,
/// so a family's samples cannot disagree with the totals computed from them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub(crate) responses: [u64; 5],
    pub(crate) ingest_lines: u64,
    pub(crate) ingest_chunks: u64,
    pub(crate) ingest_rejections: u64,
    pub(crate) long_polls_open: u64,
    pub(crate) sse_clients: u64,
}

/// Decrements a gauge when dropped, so a gauge stays right however its holder ends
/// (response sent, client gone, task cancelled).
#[derive(Debug)]
pub(crate) struct GaugeGuard<'a>(&'a AtomicU64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServerMetrics {
    pub(crate) fn record_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_chunk(&self, lines: u64) {
        self.ingest_chunks.fetch_add(1, Ordering::Relaxed);
        self.ingest_lines.fetch_add(lines, Ordering::Relaxed);
    }

    pub(crate) fn record_rejection(&self) {
        self.ingest_rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn long_poll(&self) -> GaugeGuard<'_> {
        self.long_polls_open.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.long_polls_open)
    }

    pub(crate) fn sse_client(&self) -> GaugeGuard<'_> {
        self.sse_clients.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.sse_clients)
    }

    /// Long-polls currently parked waiting for a commit.
    pub fn long_polls_open(&self) -> u64 {
        self.long_polls_open.load(Ordering::Relaxed)
    }

    /// SSE streams currently open.
    pub fn sse_clients(&self) -> u64 {
        self.sse_clients.load(Ordering::Relaxed)
    }

    /// Every counter's current value.
    pub(crate) fn counts(&self) -> Counts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            responses: self.responses.each_ref().map(load),
            ingest_lines: load(&self.ingest_lines),
            ingest_chunks: load(&self.ingest_chunks),
            ingest_rejections: load(&self.ingest_rejections),
            long_polls_open: load(&self.long_polls_open),
            sse_clients: load(&self.sse_clients),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_records_and_guards() {
        let m = ServerMetrics::default();
        m.record_response(200);
        m.record_response(404);
        m.record_response(999); // clamped into 5xx
        m.record_chunk(7);
        m.record_rejection();
        let guard = m.sse_client();
        let counts = m.counts();
        assert_eq!(counts.responses, [0, 1, 0, 1, 1]);
        assert_eq!((counts.ingest_lines, counts.ingest_chunks), (7, 1));
        assert_eq!(counts.ingest_rejections, 1);
        assert_eq!(m.sse_clients(), 1);
        drop(guard);
        assert_eq!(m.counts().sse_clients, 0);
    }
}
