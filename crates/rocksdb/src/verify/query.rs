//! The checks of one query's records: its rows against its row count, its outbox entries
//! against each other, its eviction mark, committed sequence and retention, and its
//! checkpoints against the committed history.

use liveresults_core::codec::changes::{decode_changes, ChangeItem, ChangeOp};
use liveresults_core::codec::records::{self, MetaRecord};
use liveresults_core::codec::row::decode_row;
use liveresults_core::StoreError;

use super::{Column, Problem, Record, Verifier};
use crate::keys::{self, QueryPrefix};

/// The outbox position an entry must follow.
#[derive(Clone, Copy)]
enum Before {
    /// The meta record's eviction mark.
    Evicted(u64),
    /// The previous entry's last sequence.
    Entry(u64),
}

impl Verifier<'_> {
    /// A query's rows, outbox and checkpoints; `meta` is `None` when its meta record does not
    /// decode (then only the records themselves are checked).
    pub(super) fn check_query(
        &mut self,
        query: &str,
        meta: Option<MetaRecord>,
    ) -> Result<(), StoreError> {
        self.report.queries += 1;
        let prefix = QueryPrefix::new(query)?;
        let rows = self.check_rows(query, &prefix)?;
        if let (Some(meta), Some(found)) = (meta, rows) {
            if meta.row_count != found {
                let stored = meta.row_count;
                self.push(Some(query), Problem::RowCountMismatch { stored, found });
            }
        }
        self.check_outbox(query, &prefix, meta)?;
        self.check_checkpoints(query, &prefix, meta)
    }

    /// Decodes every row; returns how many there are (`None` if the scan was cut short).
    fn check_rows(&mut self, query: &str, prefix: &QueryPrefix) -> Result<Option<u64>, StoreError> {
        let Some(mut iter) = self.iter(Column::Rows, Some(prefix)) else {
            return Ok(None);
        };
        let prefix_len = prefix.as_bytes().len();
        let mut found = 0u64;
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            match keys::u64_suffix(&key[prefix_len..]) {
                None => {
                    let reason = suffix_reason(key.len() - prefix_len, "a row signature");
                    self.malformed_key(Some(query), Column::Rows, key, reason);
                }
                Some(signature) => {
                    found += 1;
                    self.report.rows += 1;
                    if self.options.opaque_rows {
                        // Rows are the writer's own bytes: nothing to decode.
                    } else if let Err(e) = decode_row(value) {
                        let (record, detail) = (Record::Row { signature }, e.to_string());
                        self.push(Some(query), Problem::Undecodable { record, detail });
                    }
                }
            }
            iter.next();
        }
        Ok(self
            .finished(Column::Rows, Some(query), &iter)?
            .then_some(found))
    }

    fn check_outbox(
        &mut self,
        query: &str,
        prefix: &QueryPrefix,
        meta: Option<MetaRecord>,
    ) -> Result<(), StoreError> {
        let Some(mut iter) = self.iter(Column::Outbox, Some(prefix)) else {
            return Ok(());
        };
        let prefix_len = prefix.as_bytes().len();
        let mut before = meta.and_then(|m| m.evicted_through).map(Before::Evicted);
        let (mut entries, mut bytes, mut newest) = (0u64, 0u64, None);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let Some(last) = keys::u64_suffix(&key[prefix_len..]) else {
                let reason = suffix_reason(key.len() - prefix_len, "the last sequence");
                self.malformed_key(Some(query), Column::Outbox, key, reason);
                iter.next();
                continue;
            };
            entries += 1;
            self.report.outbox_entries += 1;
            bytes = bytes.saturating_add(records::outbox_payload_len(value.len()));
            newest = Some(last);
            match records::decode_outbox(value) {
                Err(e) => {
                    let (record, detail) = (Record::OutboxEntry { last }, e.to_string());
                    self.push(Some(query), Problem::Undecodable { record, detail });
                }
                Ok((first, _)) if first > last => {
                    self.push(Some(query), Problem::OutboxSpanReversed { first, last });
                }
                Ok((first, payload)) => {
                    self.check_follows(query, before, first, last);
                    self.check_payload(query, first, last, payload);
                }
            }
            before = Some(Before::Entry(last));
            iter.next();
        }
        if !self.finished(Column::Outbox, Some(query), &iter)? {
            return Ok(());
        }
        let Some(meta) = meta else {
            return Ok(());
        };
        if newest != meta.sequence {
            let (committed, last_entry) = (meta.sequence, newest);
            self.push(
                Some(query),
                Problem::OutboxEnd {
                    committed,
                    last_entry,
                },
            );
        }
        if let Some(evicted_through) = meta.evicted_through {
            if meta.sequence.is_none_or(|s| evicted_through >= s) {
                let committed = meta.sequence;
                let problem = Problem::EvictionBeyondSequence {
                    evicted_through,
                    committed,
                };
                self.push(Some(query), problem);
            }
        }
        // The rule of `OutboxWindow::plan_push`: trim to both limits, but never the newest.
        let retention = self.options.retention;
        let max_entries = retention.max_entries.max(1);
        let too_many = entries > max_entries as u64;
        if too_many || (bytes > retention.max_bytes && entries > 1) {
            let max_bytes = retention.max_bytes;
            let problem = Problem::OutboxBeyondRetention {
                entries,
                bytes,
                max_entries,
                max_bytes,
            };
            self.push(Some(query), problem);
        }
        Ok(())
    }

    /// Entry `first..=last` must start right after what precedes it.
    fn check_follows(&mut self, query: &str, before: Option<Before>, first: u64, last: u64) {
        let problem = match before {
            None => return,
            Some(Before::Evicted(evicted_through)) if first <= evicted_through => {
                Problem::OutboxBeforeEviction {
                    evicted_through,
                    first,
                    last,
                }
            }
            Some(Before::Entry(previous_last)) if first <= previous_last => {
                Problem::OutboxOverlap {
                    previous_last,
                    first,
                    last,
                }
            }
            Some(Before::Evicted(after) | Before::Entry(after)) => {
                if self.options.allow_sequence_gaps || after.checked_add(1) == Some(first) {
                    return;
                }
                Problem::OutboxHole {
                    after,
                    next_first: first,
                }
            }
        };
        self.push(Some(query), problem);
    }

    /// The payload decodes, its items lie in the entry's span and its rows decode (the first
    /// problem of each kind per entry is reported).
    fn check_payload(&mut self, query: &str, first: u64, last: u64, payload: &[u8]) {
        if self.options.opaque_payloads {
            return;
        }
        let record = Record::OutboxEntry { last };
        let items = match decode_changes(payload) {
            Ok(items) => items,
            Err(e) => {
                let detail = format!("payload: {e}");
                self.push(Some(query), Problem::Undecodable { record, detail });
                return;
            }
        };
        if let Some(item_sequence) = items
            .iter()
            .map(ChangeItem::sequence)
            .find(|s| !(first..=last).contains(s))
        {
            let problem = Problem::PayloadOutsideSpan {
                first,
                last,
                item_sequence,
            };
            self.push(Some(query), problem);
        }
        let bad_row = items.iter().find_map(|item| {
            let ChangeItem::Rows { sequence, ops } = item else {
                return None;
            };
            ops.iter().find_map(|op| match op {
                ChangeOp::Upsert { signature, row } => decode_row(row)
                    .err()
                    .map(|e| format!("payload row {signature} at sequence {sequence}: {e}")),
                ChangeOp::Delete { .. } => None,
            })
        });
        if let Some(detail) = bad_row {
            self.push(Some(query), Problem::Undecodable { record, detail });
        }
    }

    fn check_checkpoints(
        &mut self,
        query: &str,
        prefix: &QueryPrefix,
        meta: Option<MetaRecord>,
    ) -> Result<(), StoreError> {
        let Some(mut iter) = self.iter(Column::Checkpoints, Some(prefix)) else {
            return Ok(());
        };
        let prefix_len = prefix.as_bytes().len();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let reaction = match std::str::from_utf8(&key[prefix_len..]) {
                Ok("") => Err("no reaction id after the query id".to_owned()),
                Ok(reaction) => Ok(reaction.to_owned()),
                Err(e) => Err(format!("reaction id is not UTF-8: {e}")),
            };
            match reaction {
                Err(reason) => {
                    self.malformed_key(Some(query), Column::Checkpoints, key, reason);
                }
                Ok(reaction) => {
                    self.report.checkpoints += 1;
                    match records::decode_checkpoint(value) {
                        Err(e) => {
                            let (record, detail) = (Record::Checkpoint { reaction }, e.to_string());
                            self.push(Some(query), Problem::Undecodable { record, detail });
                        }
                        Ok(cp) => {
                            if let (Some(meta), Some(checkpoint)) = (meta, cp.sequence) {
                                self.check_checkpoint_at(
                                    query, prefix, meta, reaction, checkpoint,
                                )?;
                            }
                        }
                    }
                }
            }
            iter.next();
        }
        self.finished(Column::Checkpoints, Some(query), &iter)?;
        Ok(())
    }

    /// A checkpoint at `checkpoint` must be committed and, where the outbox still holds that
    /// part of the history, be the end of a commit.
    fn check_checkpoint_at(
        &mut self,
        query: &str,
        prefix: &QueryPrefix,
        meta: MetaRecord,
        reaction: String,
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        // As the runtime's recovery compares: `Some(checkpoint) > committed`.
        if meta.sequence.is_none_or(|s| checkpoint > s) {
            let committed = meta.sequence;
            let problem = Problem::CheckpointBeyondSequence {
                reaction,
                checkpoint,
                committed,
            };
            self.push(Some(query), problem);
            return Ok(());
        }
        let retained = meta.evicted_through.is_none_or(|e| checkpoint > e);
        if retained && self.db.cf_handle(Column::Outbox.name()).is_some() {
            let key = prefix.with_u64(checkpoint);
            if self.get(Column::Outbox, Some(query), &key)?.is_none() {
                let problem = Problem::CheckpointNotAtCommit {
                    reaction,
                    checkpoint,
                };
                self.push(Some(query), problem);
            }
        }
        Ok(())
    }
}

fn suffix_reason(found: usize, what: &str) -> String {
    format!("{found} bytes after the query id, expected 8 ({what})")
}
