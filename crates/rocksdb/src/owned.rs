//! An owned copy of a commit, so it can cross onto a blocking thread.

use std::ops::Range;

use liveresults_core::contract_rules::last_wins;
use liveresults_core::{Commit, SequenceSpan};

/// The effective mutations of a commit (last write wins already applied), flattened into one
/// byte buffer: copying a 1,000-row batch costs three allocations, not a thousand.
#[derive(Debug, Default)]
pub(crate) struct OwnedCommit {
    ops: Vec<(u64, Option<Range<usize>>)>,
    data: Vec<u8>,
    pub(crate) sequence: Option<SequenceSpan>,
    pub(crate) payload: Vec<u8>,
}

impl OwnedCommit {
    pub(crate) fn new(commit: &Commit<'_>) -> Self {
        let effective = last_wins(commit.mutations);
        let bytes = effective
            .iter()
            .filter_map(|m| m.data)
            .map(<[u8]>::len)
            .sum();
        let mut data = Vec::with_capacity(bytes);
        let ops = effective
            .iter()
            .map(|m| {
                let range = m.data.map(|d| {
                    let start = data.len();
                    data.extend_from_slice(d);
                    start..data.len()
                });
                (m.row_signature, range)
            })
            .collect();
        OwnedCommit {
            ops,
            data,
            sequence: commit.sequence,
            payload: if commit.sequence.is_some() {
                commit.payload.to_vec()
            } else {
                Vec::new()
            },
        }
    }

    /// Roughly the bytes this commit adds to a write batch, to bound a group's size.
    pub(crate) fn weight(&self) -> usize {
        self.data.len() + self.payload.len() + self.ops.len() * 24
    }

    /// `(signature, Some(row) | None)` per effective mutation, in batch order.
    pub(crate) fn ops(&self) -> impl Iterator<Item = (u64, Option<&[u8]>)> + '_ {
        self.ops
            .iter()
            .map(|(sig, range)| (*sig, range.clone().map(|r| &self.data[r])))
    }
}
