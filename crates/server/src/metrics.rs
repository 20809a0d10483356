//! `GET /metrics` (Prometheus text format) and the server's own counters.
//!
//! Runtime counters and per-query gauges come from the runtime's in-memory registry, so a
//! scrape never touches the store.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use liveresults_runtime::QueryState;

use crate::state::AppState;

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
}

/// Middleware counting every response by status class.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .record_response(response.status().as_u16());
    response
}

/// Escapes a label value (Prometheus text format: backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus scrape.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.inner.metrics;
    let runtime = &state.inner.runtime;
    let counters = runtime.metrics();
    let mut out = String::with_capacity(4096);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "liveresults_commits_total",
            "Atomic store commits made by the runtime.",
            counters.commits,
        ),
        (
            "liveresults_events_total",
            "Upstream events committed.",
            counters.events,
        ),
        (
            "liveresults_row_ops_total",
            "Row mutations committed.",
            counters.row_ops,
        ),
        (
            "liveresults_ingest_lines_total",
            "NDJSON lines committed through HTTP ingest.",
            load(&m.ingest_lines),
        ),
        (
            "liveresults_ingest_chunks_total",
            "Ingest chunks committed (one atomic commit each).",
            load(&m.ingest_chunks),
        ),
        (
            "liveresults_ingest_rejections_total",
            "Ingest requests that ended with an error.",
            load(&m.ingest_rejections),
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    for (name, help, value) in [
        (
            "liveresults_long_polls_open",
            "Change-feed long-polls parked waiting for a commit.",
            load(&m.long_polls_open),
        ),
        (
            "liveresults_sse_clients",
            "Open change-feed SSE streams.",
            load(&m.sse_clients),
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "liveresults_http_responses_total",
        "counter",
        "HTTP responses by status class.",
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "liveresults_http_responses_total{{class=\"{class}\"}} {}",
            load(&m.responses[i])
        );
    }
    family(
        &mut out,
        "liveresults_http_errors_total",
        "counter",
        "HTTP error responses (4xx and 5xx).",
    );
    let _ = writeln!(
        out,
        "liveresults_http_errors_total {}",
        load(&m.responses[3]) + load(&m.responses[4])
    );

    let statuses = runtime.statuses();
    family(
        &mut out,
        "liveresults_query_rows",
        "gauge",
        "Exact live rows per query.",
    );
    for s in &statuses {
        let _ = writeln!(
            out,
            "liveresults_query_rows{{query=\"{}\"}} {}",
            label(&s.query_id),
            s.row_count
        );
    }
    family(
        &mut out,
        "liveresults_query_sequence",
        "gauge",
        "Last committed sequence per query (-1: none).",
    );
    for s in &statuses {
        let seq = s.sequence.map_or(-1.0, |v| v as f64);
        let _ = writeln!(
            out,
            "liveresults_query_sequence{{query=\"{}\"}} {seq}",
            label(&s.query_id)
        );
    }
    family(
        &mut out,
        "liveresults_query_epoch",
        "gauge",
        "Clears per query.",
    );
    for s in &statuses {
        let _ = writeln!(
            out,
            "liveresults_query_epoch{{query=\"{}\"}} {}",
            label(&s.query_id),
            s.epoch
        );
    }
    family(
        &mut out,
        "liveresults_query_stopped",
        "gauge",
        "1 when the query is stopped and refuses events.",
    );
    for s in &statuses {
        let stopped = u8::from(matches!(s.state, QueryState::Stopped(_)));
        let _ = writeln!(
            out,
            "liveresults_query_stopped{{query=\"{}\"}} {stopped}",
            label(&s.query_id)
        );
    }
    for (name, help, get) in [
        (
            "liveresults_query_commits_total",
            "Atomic commits per query.",
            (|s: &liveresults_runtime::QueryStatus| s.commits)
                as fn(&liveresults_runtime::QueryStatus) -> u64,
        ),
        (
            "liveresults_query_skipped_total",
            "Redelivered events skipped per query.",
            |s| s.skipped,
        ),
        (
            "liveresults_query_gaps_total",
            "Sequence gaps seen per query.",
            |s| s.gaps,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for s in &statuses {
            let _ = writeln!(out, "{name}{{query=\"{}\"}} {}", label(&s.query_id), get(s));
        }
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
