//! Event sources: an in-process channel, and an NDJSON reader (file or stdin) that resumes
//! after what the store already holds.

use std::collections::{HashMap, VecDeque};

use liveresults_core::formats::{parse_ndjson_line, Event};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{SourceError, SubmitError};
use crate::pipeline::Applied;
use crate::runtime::{Pending, RuntimeHandle};

/// Longest NDJSON line accepted by default (16 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// What an NDJSON run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Lines read (blank lines included).
    pub lines: usize,
    /// Events submitted to the runtime.
    pub submitted: usize,
    /// Events skipped because the store already had their sequence.
    pub resumed_past: usize,
}

/// Feeds NDJSON events to the runtime, line by line, and waits until all of them are
/// committed. Events at or below a query's stored sequence are skipped without submitting,
/// so rerunning the same input resumes where the last run stopped. A malformed line stops the
/// run with its line number; everything before it stays committed. An event the runtime
/// refuses (a stopped query) stops the run too, reported with that event's line.
pub async fn run_ndjson<R: AsyncBufRead + Unpin>(
    mut reader: R,
    handle: &RuntimeHandle,
    max_line_bytes: usize,
    mut progress: impl FnMut(&SourceReport),
) -> Result<SourceReport, SourceError> {
    let mut report = SourceReport::default();
    let mut inflight = InFlight::default();
    let read = read_lines(
        &mut reader,
        handle,
        max_line_bytes,
        &mut progress,
        &mut report,
        &mut inflight,
    )
    .await;
    // Even when a line is bad, what was submitted before it is waited for, so that "earlier
    // lines stay committed" holds when this returns, not at some later moment.
    let refused = inflight.wait_all().await;
    read?;
    match refused {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Submitted events not yet known to be committed, oldest first. Answered ones are dropped
/// as reading goes on, so this holds no more than the runtime's bounded queues do, and a
/// refusal is seen (with its own line number) soon after it happens instead of at the end.
#[derive(Default)]
struct InFlight {
    pending: VecDeque<(usize, Pending)>,
    refused: Option<SourceError>,
}

impl InFlight {
    fn push(&mut self, line: usize, pending: Pending) {
        self.pending.push_back((line, pending));
        while let Some((line, front)) = self.pending.front_mut() {
            let line = *line;
            match front.try_result() {
                None => break,
                Some(result) => {
                    self.pending.pop_front();
                    self.note(line, result);
                }
            }
        }
    }

    fn note(&mut self, line: usize, result: Result<Applied, SubmitError>) {
        if let Err(source) = result {
            if self.refused.is_none() {
                self.refused = Some(SourceError::Submit { line, source });
            }
        }
    }

    async fn wait_all(mut self) -> Option<SourceError> {
        while let Some((line, pending)) = self.pending.pop_front() {
            let result = pending.wait().await;
            self.note(line, result);
        }
        self.refused
    }
}

/// Reads and submits lines until the input ends, a line is bad, or an event is refused.
async fn read_lines<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    handle: &RuntimeHandle,
    max_line_bytes: usize,
    progress: &mut impl FnMut(&SourceReport),
    report: &mut SourceReport,
    inflight: &mut InFlight,
) -> Result<(), SourceError> {
    let mut stored: HashMap<String, Option<u64>> = HashMap::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = u64::try_from(max_line_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let n = (&mut *reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            break;
        }
        report.lines += 1;
        let line_no = report.lines;
        if buf.last() != Some(&b'\n') && buf.len() > max_line_bytes {
            return Err(SourceError::LineTooLong {
                line: line_no,
                limit: max_line_bytes,
            });
        }
        let text = std::str::from_utf8(&buf).map_err(|e| {
            SourceError::Line(liveresults_core::formats::LineError {
                line: line_no,
                source: liveresults_core::formats::FormatError::InvalidJson {
                    column: e.valid_up_to() + 1,
                    message: "invalid UTF-8".into(),
                },
            })
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let event = parse_ndjson_line(line_no, text)?;
        let query_id = event.query_id().to_owned();
        let committed = match stored.get(&query_id) {
            Some(c) => *c,
            None => {
                let info = handle
                    .store()
                    .query_info(&query_id)
                    .await
                    .map_err(|source| SourceError::Submit {
                        line: line_no,
                        source: SubmitError::Store {
                            query_id: query_id.clone(),
                            committed: None,
                            source,
                        },
                    })?;
                stored.insert(query_id.clone(), info.sequence);
                info.sequence
            }
        };
        if committed.is_some_and(|c| event.sequence() <= c) {
            report.resumed_past += 1;
            continue;
        }
        let pending = handle
            .submit_tracked(event)
            .await
            .map_err(|source| SourceError::Submit {
                line: line_no,
                source,
            })?;
        inflight.push(line_no, pending);
        report.submitted += 1;
        progress(report);
        if inflight.refused.is_some() {
            return Ok(()); // reported by the caller, with the refused line
        }
    }
    Ok(())
}

/// An in-process source: events sent on the returned channel are submitted in order. The task
/// ends when the sender is dropped (returning the first refusal, if any).
pub fn channel_source(
    handle: RuntimeHandle,
    capacity: usize,
) -> (mpsc::Sender<Event>, JoinHandle<Result<(), SubmitError>>) {
    let (tx, mut rx) = mpsc::channel::<Event>(capacity.max(1));
    let task = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            handle.submit(event).await?;
        }
        Ok(())
    });
    (tx, task)
}
