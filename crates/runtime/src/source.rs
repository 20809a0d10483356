//! Event sources: an in-process channel, and an NDJSON reader (file or stdin) that resumes
//! after what the store already holds.

use std::collections::VecDeque;

use liveresults_core::formats::{parse_ndjson_line, Event};
use liveresults_core::ndjson::{Line, LineSplitter};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::envelope::Applied;
use crate::error::{SourceError, SubmitError};
use crate::resume::CommittedSequences;
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
///
/// The reader's buffer is fed to the shared NDJSON splitter as it fills, so lines are found,
/// numbered, length-checked and UTF-8-checked exactly as HTTP ingest does it.
async fn read_lines<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    handle: &RuntimeHandle,
    max_line_bytes: usize,
    progress: &mut impl FnMut(&SourceReport),
    report: &mut SourceReport,
    inflight: &mut InFlight,
) -> Result<(), SourceError> {
    let mut lines_in = LineSplitter::new(max_line_bytes);
    let mut stored = CommittedSequences::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let taken = buf.len();
        let mut lines = lines_in.push(buf);
        while let Some(line) = lines.next_line() {
            let line = line?;
            if submit_line(line, handle, &mut stored, progress, report, inflight).await? {
                return Ok(()); // reported by the caller, with the refused line
            }
        }
        reader.consume(taken);
    }
    if let Some(line) = lines_in.finish()? {
        submit_line(line, handle, &mut stored, progress, report, inflight).await?;
    }
    Ok(())
}

/// Parses and submits one line (unless it is blank or already committed); `true` when an
/// earlier submission has been refused and reading should stop.
async fn submit_line(
    line: Line<'_>,
    handle: &RuntimeHandle,
    stored: &mut CommittedSequences,
    progress: &mut impl FnMut(&SourceReport),
    report: &mut SourceReport,
    inflight: &mut InFlight,
) -> Result<bool, SourceError> {
    let line_no = line.number;
    report.lines = line_no;
    if line.is_blank() {
        return Ok(false);
    }
    let event = parse_ndjson_line(line_no, line.text)?;
    let covered = stored
        .covers(handle, &event)
        .await
        .map_err(|source| SourceError::Submit {
            line: line_no,
            source,
        })?;
    if covered {
        report.resumed_past += 1;
        return Ok(false);
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
    Ok(inflight.refused.is_some())
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
