//! The diff between the rows liveresults holds for a query and the rows of a Drasi snapshot.
//!
//! Rebuilding from a snapshot is done as ONE ordinary commit of this diff (rows that changed or
//! appeared are written, rows that vanished are deleted), never as "clear, then load": a commit
//! is atomic, so a crash leaves the old state or the new one, never an empty query in between;
//! and downstream reactions and change-feed readers see what actually changed instead of a
//! reset followed by every row again. An identical snapshot yields an empty diff, which is how
//! the reaction recognises that it may simply continue.
//!
//! Cost: our rows of the query are held in memory while Drasi's snapshot streams past them
//! (Drasi's own snapshot is an in-memory map already), once per attach: on start and after an
//! upstream restart, not per result.

use std::collections::HashMap;

use liveresults_core::codec::row::{decode_row, encode_row_into};
use liveresults_core::formats::Diff;
use liveresults_core::row::Value;
use serde_json::Value as Json;

/// Accumulates the diff from our rows to Drasi's while the snapshot streams in.
pub struct SnapshotDiff {
    query_id: String,
    /// Our rows not (yet) seen in Drasi's snapshot: whatever is left at the end has vanished.
    ours: HashMap<u64, Vec<u8>>,
    diffs: Vec<Diff>,
    unchanged: u64,
    theirs: u64,
    scratch: Vec<u8>,
}

impl SnapshotDiff {
    /// Starts from our rows of `query_id`, as `(signature, stored bytes)` pairs.
    pub fn new(query_id: &str, ours: Vec<(u64, Vec<u8>)>) -> Self {
        SnapshotDiff {
            query_id: query_id.to_owned(),
            ours: ours.into_iter().collect(),
            diffs: Vec::new(),
            unchanged: 0,
            theirs: 0,
            scratch: Vec::new(),
        }
    }

    /// Takes one row of Drasi's snapshot.
    ///
    /// Rows are compared by their stored bytes: the runtime stores a row as the row codec's
    /// encoding of the same [`Value`] conversion, and that encoding is canonical (ordered keys,
    /// one form per number), so equal rows have equal bytes.
    pub fn push(&mut self, signature: u64, row: Json) {
        self.theirs = self.theirs.saturating_add(1);
        let row = Value::from(row);
        self.scratch.clear();
        encode_row_into(&row, &mut self.scratch);
        match self.ours.remove(&signature) {
            Some(stored) if stored == self.scratch => {
                self.unchanged = self.unchanged.saturating_add(1);
            }
            Some(stored) => self.diffs.push(Diff::Update {
                before: self.decode(signature, &stored),
                after: row,
                grouping_keys: None,
                signature: Some(signature),
            }),
            None => self.diffs.push(Diff::Add {
                data: row,
                signature: Some(signature),
            }),
        }
    }

    /// The diffs, deletions of vanished rows last (in signature order, so a rebuild is
    /// deterministic), with the counts for the log.
    pub fn finish(mut self) -> Reconciled {
        let mut vanished: Vec<(u64, Vec<u8>)> =
            std::mem::take(&mut self.ours).into_iter().collect();
        vanished.sort_unstable_by_key(|(signature, _)| *signature);
        let deleted = vanished.len() as u64;
        for (signature, stored) in vanished {
            let data = self.decode(signature, &stored);
            self.diffs.push(Diff::Delete {
                data,
                signature: Some(signature),
            });
        }
        Reconciled {
            diffs: self.diffs,
            unchanged: self.unchanged,
            deleted,
            drasi_rows: self.theirs,
        }
    }

    /// The old row, for the `before`/`data` side of a diff. Only downstream readers look at it
    /// (the commit goes by signature), so an undecodable stored row must not stop a rebuild that
    /// replaces it anyway: it is logged and shown as `null`.
    fn decode(&self, signature: u64, stored: &[u8]) -> Value {
        decode_row(stored).unwrap_or_else(|e| {
            tracing::warn!(query_id = %self.query_id, signature, error = %e,
                "stored row does not decode; it is replaced from Drasi's snapshot");
            Value::Null
        })
    }
}

/// The outcome of [`SnapshotDiff::finish`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// What turns our rows into Drasi's: adds, updates, then deletes.
    pub diffs: Vec<Diff>,
    /// Rows that were already identical.
    pub unchanged: u64,
    /// Rows we held that Drasi no longer has.
    pub deleted: u64,
    /// Rows in Drasi's snapshot.
    pub drasi_rows: u64,
}

#[cfg(test)]
mod tests {
    use liveresults_core::codec::row::encode_row;
    use serde_json::json;

    use super::*;

    fn stored(json: Json) -> Vec<u8> {
        encode_row(&Value::from(json))
    }

    #[test]
    fn diff_adds_updates_and_deletes_only_what_differs() {
        let ours = vec![
            (1, stored(json!({"id": "a", "total": 150.0}))),
            (2, stored(json!({"id": "b", "total": 200.0}))),
            (3, stored(json!({"id": "c", "total": 300.0}))),
        ];
        let mut diff = SnapshotDiff::new("big", ours);
        diff.push(1, json!({"total": 150.0, "id": "a"})); // same row, other key order
        diff.push(2, json!({"id": "b", "total": 250.0}));
        diff.push(4, json!({"id": "d", "total": 400.0}));
        let done = diff.finish();
        assert_eq!(done.unchanged, 1);
        assert_eq!(done.deleted, 1);
        assert_eq!(done.drasi_rows, 3);
        assert_eq!(
            done.diffs,
            vec![
                Diff::Update {
                    before: Value::from(json!({"id": "b", "total": 200.0})),
                    after: Value::from(json!({"id": "b", "total": 250.0})),
                    grouping_keys: None,
                    signature: Some(2),
                },
                Diff::Add {
                    data: Value::from(json!({"id": "d", "total": 400.0})),
                    signature: Some(4),
                },
                Diff::Delete {
                    data: Value::from(json!({"id": "c", "total": 300.0})),
                    signature: Some(3),
                },
            ]
        );
    }

    #[test]
    fn identical_snapshot_is_an_empty_diff() {
        let ours = vec![(7, stored(json!({"customer": "bob", "spent": 120.0})))];
        let mut diff = SnapshotDiff::new("spent", ours);
        diff.push(7, json!({"customer": "bob", "spent": 120.0}));
        assert!(diff.finish().diffs.is_empty());
    }

    #[test]
    fn integer_and_float_of_the_same_number_are_different_rows() {
        // Drasi reports `sum` as a float; a stored integer must be rewritten, not kept.
        let ours = vec![(7, stored(json!({"spent": 120})))];
        let mut diff = SnapshotDiff::new("spent", ours);
        diff.push(7, json!({"spent": 120.0}));
        assert_eq!(diff.finish().diffs.len(), 1);
    }
}
