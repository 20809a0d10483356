//! A group commit being assembled: consecutive accepted events of one query folded into the
//! mutations, outbox payload and reaction deliveries of ONE atomic commit.

use std::ops::Range;

use liveresults_core::codec::changes::ChangeEncoder;
use liveresults_core::codec::row::encode_row_into;
use liveresults_core::formats::{ControlSignal, ResultBatch, RowOp};
use liveresults_core::signature::KeyColumns;
use liveresults_core::{RowMutation, SequenceSpan};

use crate::reaction::{ChangeEvent, RowChange};

/// Accumulates accepted events until the pipeline flushes them as one commit.
pub(crate) struct Group {
    first: Option<u64>,
    last: u64,
    rows: Vec<u8>,
    ops: Vec<(u64, Option<Range<usize>>)>,
    encoder: ChangeEncoder,
    /// Decoded events for reactions; left empty when no reaction listens.
    events: Vec<ChangeEvent>,
    signals: Vec<ControlSignal>,
    /// Newest upstream source time among the group's events.
    source_time_ms: Option<u64>,
    scratch: Vec<(u64, Option<Range<usize>>)>,
    want_events: bool,
}

impl Group {
    pub(crate) fn new(want_events: bool) -> Self {
        Group {
            first: None,
            last: 0,
            rows: Vec::new(),
            ops: Vec::new(),
            encoder: ChangeEncoder::new(),
            events: Vec::new(),
            signals: Vec::new(),
            source_time_ms: None,
            scratch: Vec::new(),
            want_events,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The last sequence accepted into the group.
    pub(crate) fn last(&self) -> Option<u64> {
        self.first.map(|_| self.last)
    }

    pub(crate) fn events(&self) -> usize {
        self.encoder.items() as usize
    }

    fn note(&mut self, sequence: u64, source_time_ms: Option<u64>) {
        self.first.get_or_insert(sequence);
        self.last = sequence;
        self.source_time_ms = self.source_time_ms.max(source_time_ms);
    }

    /// Adds a batch of diffs: signatures computed, rows encoded once for the store and the
    /// outbox payload alike.
    pub(crate) fn add_rows(&mut self, batch: &ResultBatch, keys: &KeyColumns) {
        let mut ops = Vec::with_capacity(batch.diffs.len());
        for diff in &batch.diffs {
            diff.mutations(keys, &mut ops);
        }
        self.scratch.clear();
        for op in ops.iter() {
            match op {
                RowOp::Upsert { signature, row } => {
                    let start = self.rows.len();
                    encode_row_into(row, &mut self.rows);
                    self.scratch
                        .push((*signature, Some(start..self.rows.len())));
                }
                RowOp::Delete { signature } => self.scratch.push((*signature, None)),
            }
        }
        let rows = &self.rows;
        self.encoder.push_rows(
            batch.sequence,
            self.scratch
                .iter()
                .map(|(sig, r)| (*sig, r.clone().map(|r| &rows[r]))),
        );
        self.ops.append(&mut self.scratch);
        if self.want_events {
            let changes = ops
                .iter()
                .map(|op| match op {
                    RowOp::Upsert { signature, row } => RowChange::Upsert {
                        signature: *signature,
                        row: (*row).clone(),
                    },
                    RowOp::Delete { signature } => RowChange::Delete {
                        signature: *signature,
                    },
                })
                .collect();
            self.events.push(ChangeEvent::Rows {
                sequence: batch.sequence,
                changes,
            });
        }
        self.note(batch.sequence, batch.timestamp_ms);
    }

    /// Adds a lifecycle signal (committed like any event, so change feeds see it).
    pub(crate) fn add_control(
        &mut self,
        sequence: u64,
        signal: ControlSignal,
        source_time_ms: Option<u64>,
    ) {
        self.encoder.push_control(sequence, signal);
        self.signals.push(signal);
        if self.want_events {
            self.events.push(ChangeEvent::Control { sequence, signal });
        }
        self.note(sequence, source_time_ms);
    }

    /// Takes the group apart for committing; the group is empty afterwards.
    pub(crate) fn take(&mut self) -> Option<GroupCommit> {
        let first = self.first.take()?;
        let encoder = std::mem::take(&mut self.encoder);
        Some(GroupCommit {
            items: u64::from(encoder.items()),
            source_time_ms: self.source_time_ms.take(),
            span: SequenceSpan {
                first,
                last: self.last,
            },
            rows: std::mem::take(&mut self.rows),
            ops: std::mem::take(&mut self.ops),
            payload: encoder.finish(),
            events: std::mem::take(&mut self.events),
            signals: std::mem::take(&mut self.signals),
        })
    }
}

/// A group ready to commit.
pub(crate) struct GroupCommit {
    /// Upstream events folded into the commit.
    pub(crate) items: u64,
    pub(crate) span: SequenceSpan,
    rows: Vec<u8>,
    ops: Vec<(u64, Option<Range<usize>>)>,
    pub(crate) payload: Vec<u8>,
    pub(crate) events: Vec<ChangeEvent>,
    pub(crate) signals: Vec<ControlSignal>,
    /// Newest upstream source time among the commit's events.
    pub(crate) source_time_ms: Option<u64>,
}

impl GroupCommit {
    /// The row mutations, borrowing the group's row buffer.
    pub(crate) fn mutations(&self) -> Vec<RowMutation<'_>> {
        self.ops
            .iter()
            .map(|(sig, r)| RowMutation {
                row_signature: *sig,
                data: r.clone().map(|r| &self.rows[r]),
            })
            .collect()
    }
}
