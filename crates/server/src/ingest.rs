//! `POST /queries/{id}/events`: NDJSON result diffs, committed chunk by chunk.
//!
//! The body is read as a stream and cut into chunks of N lines (default 1,000) or about M
//! bytes (default 8 MiB), whichever comes first. Each chunk is
//! parsed (on the blocking pool: JSON parsing is CPU work), handed to the runtime as ONE
//! atomic commit, and awaited before the next byte of the body is read — so the client is
//! paced by the store, memory stays bounded by one chunk, and after any failure exactly the
//! chunks before the failing one are committed. (One exception, from the runtime's batch
//! rules: a lifecycle signal that clears the query — `deleted`, or `bootstrapStarted` and
//! gaps under AutoReset — splits its chunk there, so the part before it may be committed
//! even if a later line of the chunk is refused; `committed_sequence` always says where the
//! query stands.) Every error names the 1-based line (counted
//! over the whole body) and the query's committed sequence, which is where a retry resumes
//! (events at or below it are skipped as redeliveries).
//!
//! Lines are found by `liveresults_core::ndjson::LineSplitter`, the splitter the runtime's
//! NDJSON source uses too: an over-long or non-UTF-8 line gets the same error, worded the same,
//! whether it arrives over HTTP or from a file.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use futures_util::StreamExt;
use liveresults_core::formats::{parse_ndjson_line, Event};
use liveresults_core::ndjson::{Line, LineSplitter};
use liveresults_runtime::{Applied, StopReason, SubmitError};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::{AppState, Inner};

/// Ingests an NDJSON body.
pub async fn ingest(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let inner = &*state.inner;
    let result = run(inner, &query_id, &headers, body).await;
    match &result {
        Ok(report) => tracing::info!(
            query_id = %query_id,
            lines = report.lines,
            chunks = report.chunks,
            committed_sequence = ?report.committed,
            "ingest done"
        ),
        Err(error) => {
            inner.metrics.record_rejection();
            tracing::warn!(query_id = %query_id, error = %error, "ingest rejected");
        }
    }
    let report = result?;
    Ok(Json(json!({
        "query_id": query_id,
        "lines": report.lines,
        "committed_sequence": report.committed,
        "chunks": report.chunks,
    })))
}

/// What an ingest did so far.
#[derive(Debug, Default)]
struct Report {
    /// Lines seen (blank ones included).
    lines: usize,
    /// Chunks committed.
    chunks: usize,
    /// The query's committed sequence.
    committed: Option<u64>,
}

/// The lines of the chunk being gathered: their text, and where each non-blank line is.
///
/// Its buffers are kept from one chunk to the next (cleared, not freed), so a body of many
/// chunks does not regrow — and copy — them from empty for every chunk; they stay bounded by
/// one chunk.
#[derive(Debug, Default)]
struct Chunk {
    /// Non-blank lines, back to back (each already checked to be UTF-8).
    text: String,
    /// Each non-blank line: its number, its bytes in `text`, and (once parsed) its sequence.
    lines: Vec<LineAt>,
    /// Lines in the chunk, blank ones included.
    line_count: usize,
    /// First line number of the chunk (0 while empty).
    first_line: usize,
}

/// Where a non-blank line of a chunk is.
#[derive(Debug)]
struct LineAt {
    /// 1-based line number over the whole body.
    number: usize,
    /// Its bytes in the chunk's text.
    range: Range<usize>,
    /// Its event's sequence, once parsed: names the line of a sequence the runtime refuses.
    sequence: u64,
}

impl Chunk {
    /// Adds a line; blank lines count but are not kept.
    fn add(&mut self, line: Line<'_>) {
        if self.line_count == 0 {
            self.first_line = line.number;
        }
        self.line_count += 1;
        if !line.is_blank() {
            let start = self.text.len();
            self.text.push_str(line.text);
            self.lines.push(LineAt {
                number: line.number,
                range: start..self.text.len(),
                sequence: 0,
            });
        }
    }

    /// Empties the chunk for the next one, keeping its buffers.
    fn clear(&mut self) {
        self.text.clear();
        self.lines.clear();
        self.line_count = 0;
        self.first_line = 0;
    }

    /// Whether the chunk is due for its commit.
    fn full(&self, inner: &Inner) -> bool {
        self.line_count >= inner.chunk_lines || self.text.len() >= inner.chunk_bytes
    }
}

async fn run(
    inner: &Inner,
    query_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Report, ApiError> {
    let info = inner.runtime.store().query_info(query_id).await?;
    let mut report = Report {
        committed: info.sequence,
        ..Report::default()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > inner.max_body_bytes) {
        return Err(ApiError::BodyTooLarge {
            limit: inner.max_body_bytes,
            committed_sequence: report.committed,
        });
    }
    // The same splitter as the runtime's NDJSON source: the same bad input gets the same
    // error whichever way it arrives.
    let mut splitter = LineSplitter::new(inner.max_line_bytes);
    let mut chunk = Chunk::default();
    let mut total = 0u64;
    let mut stream = body.into_data_stream();
    loop {
        let frame = tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => {
                return Err(ApiError::ShuttingDown { committed_sequence: report.committed });
            }
            frame = stream.next() => frame,
        };
        let Some(frame) = frame else { break };
        let bytes = frame.map_err(|e| ApiError::BodyRead {
            line: report.lines,
            detail: e.to_string(),
            committed_sequence: report.committed,
        })?;
        total = total.saturating_add(bytes.len() as u64);
        if total > inner.max_body_bytes {
            return Err(ApiError::BodyTooLarge {
                limit: inner.max_body_bytes,
                committed_sequence: report.committed,
            });
        }
        let mut lines = splitter.push(&bytes);
        while let Some(line) = lines.next_line() {
            let line = line.map_err(|source| ApiError::Ndjson {
                source,
                committed_sequence: report.committed,
            })?;
            report.lines = line.number;
            chunk.add(line);
            if chunk.full(inner) {
                commit(inner, query_id, &mut chunk, &mut report).await?;
                if inner.shutdown.is_cancelled() {
                    return Err(ApiError::ShuttingDown {
                        committed_sequence: report.committed,
                    });
                }
            }
        }
    }
    // A last line without a trailing newline.
    let last = splitter.finish().map_err(|source| ApiError::Ndjson {
        source,
        committed_sequence: report.committed,
    })?;
    if let Some(line) = last {
        report.lines = line.number;
        chunk.add(line);
    }
    if chunk.line_count > 0 {
        commit(inner, query_id, &mut chunk, &mut report).await?;
    }
    Ok(report)
}

/// Parses the chunk's lines, noting each one's sequence; the first bad line rejects the chunk.
fn parse_chunk(
    text: &str,
    lines: &mut [LineAt],
    query_id: &str,
) -> Result<Vec<Event>, (usize, String)> {
    let mut events = Vec::with_capacity(lines.len());
    for line in lines {
        let line_no = line.number;
        let event = parse_ndjson_line(line_no, text.get(line.range.clone()).unwrap_or_default())
            .map_err(|e| (line_no, e.source.to_string()))?;
        if event.query_id() != query_id {
            return Err((
                line_no,
                format!(
                    "event is for query {:?}, but the request is for query {query_id:?}",
                    event.query_id()
                ),
            ));
        }
        line.sequence = event.sequence();
        events.push(event);
    }
    Ok(events)
}

/// Parses and commits the gathered chunk as one atomic commit, then clears it.
async fn commit(
    inner: &Inner,
    query_id: &str,
    chunk: &mut Chunk,
    report: &mut Report,
) -> Result<(), ApiError> {
    let (first_line, line_count) = (chunk.first_line, chunk.line_count);
    // The buffers go to the blocking pool and come back with the events.
    let (text, mut lines) = (
        std::mem::take(&mut chunk.text),
        std::mem::take(&mut chunk.lines),
    );
    let owned_id = query_id.to_owned();
    let (text, lines, parsed) = tokio::task::spawn_blocking(move || {
        let parsed = parse_chunk(&text, &mut lines, &owned_id);
        (text, lines, parsed)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("parsing task failed: {e}")))?;
    (chunk.text, chunk.lines) = (text, lines);
    let events = parsed.map_err(|(line, detail)| ApiError::BadLine {
        line,
        detail,
        committed_sequence: report.committed,
    })?;
    if events.is_empty() {
        chunk.clear();
        return Ok(());
    }
    match inner.runtime.commit_batch(query_id, events).await {
        Ok(applied) => {
            match applied {
                Applied::Committed { sequence } => report.committed = Some(sequence),
                Applied::Skipped { committed } => report.committed = committed.or(report.committed),
                Applied::Deprovisioned => report.committed = None,
            }
            report.chunks += 1;
            chunk.clear();
            inner.metrics.record_chunk(line_count as u64);
            tracing::debug!(query_id, first_line, line_count, committed_sequence = ?report.committed, "chunk committed");
            Ok(())
        }
        Err(source) => {
            // A Strict gap names the sequence that broke the order: point at its line.
            let line = match &source {
                SubmitError::QueryStopped {
                    reason: StopReason::Gap { received, .. },
                    ..
                } => chunk
                    .lines
                    .iter()
                    .find(|l| l.sequence == *received)
                    .map(|l| l.number),
                _ => None,
            };
            let committed_sequence = match &source {
                SubmitError::QueryStopped { committed, .. }
                | SubmitError::Store { committed, .. } => *committed,
                _ => report.committed,
            };
            Err(ApiError::Refused {
                first_line,
                line,
                committed_sequence,
                source,
            })
        }
    }
}
