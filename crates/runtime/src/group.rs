//! A group commit being assembled: consecutive accepted events of one query folded into the
//! mutations, outbox payload and reaction deliveries of ONE atomic commit.
//!
//! Per-commit bookkeeping is kept to what the commit needs: rows are encoded once, straight
//! into the buffer the store and the outbox payload both read; the rows reactions receive are
//! moved out of the events rather than cloned; and the buffers of a small commit are handed
//! back after it ([`Group::recycle`]) so that a stream of small commits does not regrow them
//! from empty every time.

use std::ops::Range;

use liveresults_core::codec::changes::ChangeEncoder;
use liveresults_core::codec::row::encode_row_into;
use liveresults_core::formats::{ControlSignal, Diff, ResultBatch, RowOp};
use liveresults_core::row::Value;
use liveresults_core::signature::KeyColumns;
use liveresults_core::{RowMutation, SequenceSpan};

use crate::reaction::{ChangeEvent, RowChange};

/// Buffers up to this size are kept for the next batch or group; larger ones (a big ingest
/// chunk, an event of many diffs) are freed, so an idle query holds little memory.
const KEEP_BYTES: usize = 64 << 10;

/// One row operation of the group: the signature and, for an upsert, where its encoded row
/// is in the group's row buffer.
type Op = (u64, Option<Range<usize>>);

/// Accumulates accepted events until the pipeline flushes them as one commit.
pub(crate) struct Group {
    first: Option<u64>,
    last: u64,
    rows: Vec<u8>,
    ops: Vec<Op>,
    encoder: ChangeEncoder,
    /// Decoded events for reactions; left empty when no reaction listens.
    events: Vec<ChangeEvent>,
    signals: Vec<ControlSignal>,
    /// Newest upstream source time among the group's events.
    source_time_ms: Option<u64>,
    /// Operations per diff of the batch being added (reused between batches).
    per_diff: Vec<usize>,
    /// The allocation of the last batch's `RowOp` list, for the next batch's.
    row_ops: Vec<RowOp<'static>>,
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
            per_diff: Vec::new(),
            row_ops: Vec::new(),
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
    /// outbox payload alike. The batch is consumed: reactions get its rows without a copy.
    pub(crate) fn add_rows(&mut self, batch: ResultBatch, keys: &KeyColumns) {
        let start = self.ops.len();
        self.per_diff.clear();
        // Every upsert's row is its own diff's row (`data` of an ADD, `after` otherwise): the
        // documented diff mapping. Checked rather than trusted, so that reactions always get
        // the exact row; when it does not hold the rows are cloned, as they once always were.
        let mut movable = true;
        let mut cloned = None;
        {
            let mut ops = relabel(std::mem::take(&mut self.row_ops));
            ops.reserve(batch.diffs.len());
            for diff in &batch.diffs {
                let from = ops.len();
                diff.mutations(keys, &mut ops);
                self.per_diff.push(ops.len() - from);
                let own = own_row(diff);
                let mut upserts = ops[from..].iter().filter_map(|op| match op {
                    RowOp::Upsert { row, .. } => Some(*row),
                    RowOp::Delete { .. } => None,
                });
                movable &= match (upserts.next(), upserts.next()) {
                    (None, _) => true,
                    (Some(row), None) => own.is_some_and(|own| std::ptr::eq(own, row)),
                    (Some(_), Some(_)) => false,
                };
            }
            for op in &ops {
                self.ops.push(match op {
                    RowOp::Upsert { signature, row } => {
                        let at = self.rows.len();
                        encode_row_into(row, &mut self.rows);
                        (*signature, Some(at..self.rows.len()))
                    }
                    RowOp::Delete { signature } => (*signature, None),
                });
            }
            if self.want_events && !movable {
                cloned = Some(ops.iter().map(|op| op_change(op, Value::clone)).collect());
            }
            if small(&ops) {
                self.row_ops = relabel(ops);
            }
        }
        let (rows, added) = (&self.rows, &self.ops[start..]);
        self.encoder.push_rows(
            batch.sequence,
            added
                .iter()
                .map(|(sig, r)| (*sig, r.clone().map(|r| &rows[r]))),
        );
        if self.want_events {
            let changes = match cloned {
                Some(changes) => changes,
                None => moved_changes(batch.diffs, &self.per_diff, added),
            };
            self.events.push(ChangeEvent::Rows {
                sequence: batch.sequence,
                changes,
            });
        }
        if !small(&self.per_diff) {
            self.per_diff = Vec::new();
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

    /// Takes back the row buffers of a commit the store is done with, for the next group,
    /// unless they grew large. (Only while the group has none: it may have started anew.)
    pub(crate) fn recycle(&mut self, commit: &mut GroupCommit) {
        if self.rows.capacity() == 0 && small(&commit.rows) {
            self.rows = std::mem::take(&mut commit.rows);
            self.rows.clear();
        }
        if self.ops.capacity() == 0 && small(&commit.ops) {
            self.ops = std::mem::take(&mut commit.ops);
            self.ops.clear();
        }
    }
}

/// Whether a buffer is small enough to keep for the next batch or group (see [`KEEP_BYTES`]).
fn small<T>(buffer: &Vec<T>) -> bool {
    buffer.capacity().saturating_mul(size_of::<T>()) <= KEEP_BYTES
}

/// An emptied `RowOp` list with another lifetime, keeping its allocation: a list borrowing
/// one batch's rows cannot be kept in the group, but its memory can, saving an allocation per
/// event. (Collecting an empty `Vec` iterator into an element type of the same layout reuses
/// the allocation; `commit_allocations` in this crate's tests notices when it does not.)
// `filter` cannot change the element type (the lifetime); `filter_map` can.
#[allow(clippy::unnecessary_filter_map)]
fn relabel<'b>(ops: Vec<RowOp<'_>>) -> Vec<RowOp<'b>> {
    ops.into_iter().filter_map(|_| None).collect()
}

/// The row a diff's upsert carries, if the diff upserts one.
fn own_row(diff: &Diff) -> Option<&Value> {
    match diff {
        Diff::Add { data, .. } => Some(data),
        Diff::Update { after, .. } | Diff::Aggregation { after, .. } => Some(after),
        Diff::Delete { .. } | Diff::Noop => None,
    }
}

/// [`own_row`], taking the row out of the diff.
fn into_own_row(diff: Diff) -> Option<Value> {
    match diff {
        Diff::Add { data, .. } => Some(data),
        Diff::Update { after, .. } | Diff::Aggregation { after, .. } => Some(after),
        Diff::Delete { .. } | Diff::Noop => None,
    }
}

/// The change a reaction receives for one operation.
fn op_change(op: &RowOp<'_>, row: impl FnOnce(&Value) -> Value) -> RowChange {
    match op {
        RowOp::Upsert { signature, row: r } => RowChange::Upsert {
            signature: *signature,
            row: row(r),
        },
        RowOp::Delete { signature } => RowChange::Delete {
            signature: *signature,
        },
    }
}

/// The reactions' changes of a batch whose upserts each carry their own diff's row
/// (`per_diff[i]` operations of `ops` belong to diff `i`), moving every row out of its diff.
fn moved_changes(diffs: Vec<Diff>, per_diff: &[usize], ops: &[Op]) -> Vec<RowChange> {
    let mut changes = Vec::with_capacity(ops.len());
    let mut ops = ops.iter();
    for (diff, &count) in diffs.into_iter().zip(per_diff) {
        let mut row = into_own_row(diff);
        for (signature, range) in ops.by_ref().take(count) {
            let signature = *signature;
            // At most one upsert per diff, and only in a diff with a row: `add_rows` checked
            // that before choosing to move, so an upsert always finds its row here.
            changes.push(match range.as_ref().and_then(|_| row.take()) {
                Some(row) => RowChange::Upsert { signature, row },
                None => RowChange::Delete { signature },
            });
        }
    }
    changes
}

/// A group ready to commit.
pub(crate) struct GroupCommit {
    /// Upstream events folded into the commit.
    pub(crate) items: u64,
    pub(crate) span: SequenceSpan,
    rows: Vec<u8>,
    ops: Vec<Op>,
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

#[cfg(test)]
mod tests {
    use liveresults_core::formats::Event;
    use serde_json::json;

    use super::*;
    use crate::testing::{add, aggregation, delete, lib, platform, prow, update};

    /// What reactions got before rows were moved: every operation's row cloned.
    fn cloned_changes(batch: &ResultBatch, keys: &KeyColumns) -> Vec<RowChange> {
        let mut ops = Vec::new();
        for diff in &batch.diffs {
            diff.mutations(keys, &mut ops);
        }
        ops.iter().map(|op| op_change(op, Value::clone)).collect()
    }

    fn check(event: Event, keys: &KeyColumns) {
        let Event::Change(batch) = event else {
            panic!("a change event")
        };
        let expected = cloned_changes(&batch, keys);
        let mut group = Group::new(true);
        group.add_rows(batch, keys);
        let commit = group.take().expect("a group");
        let [ChangeEvent::Rows { changes, .. }] = &commit.events[..] else {
            panic!("one rows event: {:?}", commit.events)
        };
        assert_eq!(changes, &expected);
        assert_eq!(commit.mutations().len(), expected.len());
    }

    #[test]
    fn reactions_get_the_rows_cloning_would_have_given() {
        // drasi-lib: upstream signatures (an UPDATE is one upsert).
        check(
            lib(
                "q",
                1,
                &[add(1, 1), update(1, 1, 2), delete(2), aggregation(3, 4)],
            ),
            &KeyColumns::WholeRow,
        );
        // Platform: no signatures, so an update whose row changes is a delete plus an upsert,
        // and grouped aggregations replace by their columns.
        check(
            platform(
                "q",
                1,
                &[prow(1, 1), prow(2, 2)],
                &[
                    json!({"before": prow(1, 1), "after": prow(1, 5)}),
                    json!({"before": prow(2, 2), "after": prow(2, 2)}),
                ],
                &[prow(3, 3)],
            ),
            &KeyColumns::WholeRow,
        );
        check(
            platform(
                "q",
                1,
                &[],
                &[
                    json!({"before": prow(1, 1), "after": prow(1, 5), "groupingKeys": ["g"]}),
                    json!({"after": prow(4, 1), "groupingKeys": ["g"]}),
                ],
                &[],
            ),
            &KeyColumns::WholeRow,
        );
    }
}
