//! `GET /metrics` (Prometheus text format) and the middleware counting responses.
//!
//! The counters themselves live in the `counters` module, which the shared state holds.
//!
//! Runtime counters and per-query gauges come from the runtime's in-memory registry, so a
//! scrape never touches the store. A host sharing its store with others reports the queries
//! whose lease it holds (`liveresults_leases_held` counts them).

use std::fmt::Write as _;
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use liveresults_runtime::{QueryState, QueryStatus};

use crate::state::AppState;

pub use crate::counters::ServerMetrics;

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

/// The Durable Streams families (only when the server serves streams).
fn durable_streams(out: &mut String, c: &liveresults_streams::metrics::StreamCounts) {
    use liveresults_streams::metrics::{CLASSES, OPERATIONS};
    family(
        out,
        "liveresults_stream_requests_total",
        "counter",
        "Durable Streams requests by operation and status class.",
    );
    for (op, row) in OPERATIONS.iter().zip(&c.requests) {
        for (class, count) in CLASSES.iter().zip(row) {
            let _ = writeln!(
                out,
                "liveresults_stream_requests_total{{operation=\"{op}\",class=\"{class}\"}} {count}"
            );
        }
    }
    family(
        out,
        "liveresults_stream_appended_bytes_total",
        "counter",
        "Body bytes of successful Durable Streams appends.",
    );
    let _ = writeln!(
        out,
        "liveresults_stream_appended_bytes_total {}",
        c.appended_bytes
    );
    family(
        out,
        "liveresults_streams",
        "gauge",
        "Durable Streams this host holds (soft-deleted ones included, as --max-streams counts).",
    );
    let _ = writeln!(out, "liveresults_streams {}", c.streams);
}

/// The Prometheus scrape.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = state.inner.metrics.counts();
    let runtime = &state.inner.runtime;
    let counters = runtime.metrics();
    let mut out = String::with_capacity(4096);
    // Process-wide families: name, type, help, value.
    let totals: [(&str, &str, &str, u64); 8] = [
        (
            "liveresults_commits_total",
            "counter",
            "Atomic store commits made by the runtime.",
            counters.commits,
        ),
        (
            "liveresults_events_total",
            "counter",
            "Upstream events committed.",
            counters.events,
        ),
        (
            "liveresults_row_ops_total",
            "counter",
            "Row mutations committed.",
            counters.row_ops,
        ),
        (
            "liveresults_ingest_lines_total",
            "counter",
            "NDJSON lines committed through HTTP ingest.",
            m.ingest_lines,
        ),
        (
            "liveresults_ingest_chunks_total",
            "counter",
            "Ingest chunks committed (one atomic commit each).",
            m.ingest_chunks,
        ),
        (
            "liveresults_ingest_rejections_total",
            "counter",
            "Ingest requests that ended with an error.",
            m.ingest_rejections,
        ),
        (
            "liveresults_long_polls_open",
            "gauge",
            "Change-feed long-polls parked waiting for a commit.",
            m.long_polls_open,
        ),
        (
            "liveresults_sse_clients",
            "gauge",
            "Open change-feed SSE streams.",
            m.sse_clients,
        ),
    ];
    for (name, kind, help, value) in totals {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    // Several hosts sharing the store: how many queries this one writes.
    let owned = runtime.owned_queries();
    family(
        &mut out,
        "liveresults_leases_held",
        "gauge",
        "Query leases this host holds (queries it writes, when several hosts share the store).",
    );
    let _ = writeln!(out, "liveresults_leases_held {}", owned.len());
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
            m.responses[i]
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
        m.responses[3].saturating_add(m.responses[4])
    );
    if let Some(streams) = &state.inner.streams {
        durable_streams(&mut out, &streams.counts());
    }

    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // Per-query families: name, type, help, and the value (None: no sample for that query).
    type Sample = fn(&QueryStatus, u64) -> Option<f64>;
    let families: [(&str, &str, &str, Sample); 8] = [
        ("liveresults_query_rows", "gauge", "Exact live rows per query.", |s, _| {
            Some(s.row_count as f64)
        }),
        (
            "liveresults_query_sequence",
            "gauge",
            "Last committed sequence per query (-1: none).",
            |s, _| Some(s.sequence.map_or(-1.0, |v| v as f64)),
        ),
        ("liveresults_query_epoch", "gauge", "Clears per query.", |s, _| {
            Some(s.epoch as f64)
        }),
        (
            "liveresults_query_stopped",
            "gauge",
            "1 when the query is stopped and refuses events.",
            |s, _| Some(f64::from(u8::from(matches!(s.state, QueryState::Stopped(_))))),
        ),
        (
            "liveresults_query_lag_seconds",
            "gauge",
            "Now minus the upstream source time of the newest committed event (queries whose events carry one).",
            |s, now| s.source_time_ms.map(|t| now.saturating_sub(t) as f64 / 1000.0),
        ),
        ("liveresults_query_commits_total", "counter", "Atomic commits per query.", |s, _| {
            Some(s.commits as f64)
        }),
        (
            "liveresults_query_skipped_total",
            "counter",
            "Redelivered events skipped per query.",
            |s, _| Some(s.skipped as f64),
        ),
        ("liveresults_query_gaps_total", "counter", "Sequence gaps seen per query.", |s, _| {
            Some(s.gaps as f64)
        }),
    ];
    // Sharing the store, a host reports the queries it writes: another host's query would
    // show this host's stale numbers next to the owner's current ones.
    let mut statuses = runtime.statuses();
    if runtime.host().is_some() {
        statuses.retain(|s| owned.binary_search(&s.query_id).is_ok());
    }
    for (name, kind, help, sample) in families {
        family(&mut out, name, kind, help);
        for s in &statuses {
            if let Some(value) = sample(s, now_ms) {
                let _ = writeln!(out, "{name}{{query=\"{}\"}} {value}", label(&s.query_id));
            }
        }
    }
    // Per query and reaction: what each reaction still has to handle (a failed one stops
    // catching up, so its lag grows with every commit).
    let name = "liveresults_reaction_lag";
    family(
        &mut out,
        name,
        "gauge",
        "Committed sequences a reaction has not handled yet, per query and reaction.",
    );
    for s in &statuses {
        for r in &s.reactions {
            let _ = writeln!(
                out,
                "{name}{{query=\"{}\",reaction=\"{}\"}} {}",
                label(&s.query_id),
                label(&r.reaction),
                r.lag
            );
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
