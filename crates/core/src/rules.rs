//! The contract's rules, written once so every backend applies them identically: id
//! validation, sequence ordering, last-write-wins batches and outbox retention.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{SpanDisplay, StoreError};
use crate::model::{OutboxRetention, RowMutation, SequenceSpan};

/// Longest query id the key layouts accept: ids are length-prefixed with a big-endian `u16`.
pub const MAX_QUERY_ID_BYTES: usize = u16::MAX as usize;

/// Rejects ids no backend can store: empty ones, and ones longer than [`MAX_QUERY_ID_BYTES`].
pub fn validate_query_id(query_id: &str) -> Result<(), StoreError> {
    if query_id.is_empty() {
        return Err(StoreError::invalid_query_id(query_id, "must not be empty"));
    }
    if query_id.len() > MAX_QUERY_ID_BYTES {
        return Err(StoreError::invalid_query_id(
            query_id,
            "longer than 65535 bytes",
        ));
    }
    Ok(())
}

/// Rejects empty reaction ids (the key layouts store them after the query prefix).
pub fn validate_reaction_id(reaction_id: &str) -> Result<(), StoreError> {
    if reaction_id.is_empty() {
        return Err(StoreError::invalid_query_id(
            reaction_id,
            "reaction id must not be empty",
        ));
    }
    Ok(())
}

/// Checks that `span` is well formed and starts after the committed sequence.
pub fn check_sequence(
    query_id: &str,
    committed: Option<u64>,
    span: SequenceSpan,
) -> Result<(), StoreError> {
    let follows = committed.is_none_or(|c| span.first > c);
    if span.first > span.last || !follows {
        return Err(StoreError::SequenceRegression {
            query_id: query_id.to_owned(),
            committed,
            attempted: SpanDisplay {
                first: span.first,
                last: span.last,
            },
        });
    }
    Ok(())
}

/// A hasher for row signatures, which are usually hashes already: one multiply spreads
/// sequential upstream signatures too, at a fraction of SipHash's cost on the commit path.
#[derive(Default, Clone, Copy)]
pub struct SignatureHasher(u64);

impl Hasher for SignatureHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fold the high half down so the table's low index bits see every input bit.
        let x = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

/// A set of row signatures.
pub type SignatureSet = HashSet<u64, BuildHasherDefault<SignatureHasher>>;

/// A map keyed by row signature.
pub type SignatureMap<V> = HashMap<u64, V, BuildHasherDefault<SignatureHasher>>;

/// The mutations of a batch that take effect, in batch order: when a signature appears more
/// than once, only its last mutation survives (last write wins).
pub fn last_wins<'b, 'a>(mutations: &'b [RowMutation<'a>]) -> Vec<&'b RowMutation<'a>> {
    if mutations.len() < 2 {
        return mutations.iter().collect();
    }
    let mut last: SignatureMap<usize> = SignatureMap::default();
    last.reserve(mutations.len());
    for (i, m) in mutations.iter().enumerate() {
        last.insert(m.row_signature, i);
    }
    if last.len() == mutations.len() {
        return mutations.iter().collect();
    }
    mutations
        .iter()
        .enumerate()
        .filter(|(i, m)| last.get(&m.row_signature) == Some(i))
        .map(|(_, m)| m)
        .collect()
}

/// Bookkeeping of one query's outbox: which spans it holds, their sizes, and how far it has
/// been trimmed. Backends keep the payloads; this decides what to evict and when a read has a
/// gap, so the retention rule cannot differ between backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxWindow {
    entries: VecDeque<(SequenceSpan, u64)>,
    bytes: u64,
    evicted_through: Option<u64>,
}

/// What adding one entry to an [`OutboxWindow`] will do; computed before the commit is written
/// and applied only after it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPlan {
    /// The oldest entries to delete, oldest first.
    pub evict: Vec<SequenceSpan>,
    /// The window's `evicted_through` after the commit.
    pub evicted_through: Option<u64>,
}

impl OutboxWindow {
    /// A window that has already been trimmed through `evicted_through`.
    pub fn new(evicted_through: Option<u64>) -> Self {
        OutboxWindow {
            evicted_through,
            ..OutboxWindow::default()
        }
    }

    /// Adds an entry found in storage while loading; entries must come oldest first.
    pub fn push_loaded(&mut self, span: SequenceSpan, bytes: u64) {
        self.entries.push_back((span, bytes));
        self.bytes += bytes;
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total payload bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The last sequence that has left the outbox, if any has.
    pub fn evicted_through(&self) -> Option<u64> {
        self.evicted_through
    }

    /// What adding an entry of `bytes` under `retention` evicts. The new entry always stays.
    pub fn plan_push(&self, bytes: u64, retention: OutboxRetention) -> OutboxPlan {
        let max_entries = retention.max_entries.max(1);
        let mut count = self.entries.len() + 1;
        let mut total = self.bytes + bytes;
        let mut evict = Vec::new();
        let mut evicted_through = self.evicted_through;
        for &(span, size) in &self.entries {
            if count <= max_entries && total <= retention.max_bytes {
                break;
            }
            evict.push(span);
            evicted_through = Some(span.last);
            count -= 1;
            total -= size;
        }
        OutboxPlan {
            evict,
            evicted_through,
        }
    }

    /// Records a committed push planned by [`OutboxWindow::plan_push`].
    pub fn apply_push(&mut self, span: SequenceSpan, bytes: u64, plan: &OutboxPlan) {
        for evicted in &plan.evict {
            if let Some((held, size)) = self.entries.pop_front() {
                debug_assert_eq!(held, *evicted, "outbox plan applied to another window");
                self.bytes -= size;
            }
        }
        self.entries.push_back((span, bytes));
        self.bytes += bytes;
        self.evicted_through = plan.evicted_through;
    }

    /// Fails with [`StoreError::OutboxGap`] when entries right after `after` have left.
    pub fn check_read(&self, query_id: &str, after: Option<u64>) -> Result<(), StoreError> {
        match self.evicted_through {
            Some(evicted) if after.is_none_or(|a| a < evicted) => Err(StoreError::OutboxGap {
                query_id: query_id.to_owned(),
                requested_after: after,
                evicted_through: evicted,
            }),
            _ => Ok(()),
        }
    }

    /// Forgets everything (the query was cleared: its history restarts).
    pub fn clear(&mut self) {
        *self = OutboxWindow::default();
    }
}
