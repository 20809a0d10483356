//! The values that cross the store boundary: mutations, commits, positions, snapshots chunks.

/// A single row mutation: upsert if `data` is `Some`, delete if `None`.
///
/// Kept field for field as Drasi's seed type so existing callers compile unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMutation<'a> {
    /// Stable row identifier (hash of the row's key columns).
    pub row_signature: u64,
    /// Serialized row data for upsert, or `None` for delete.
    pub data: Option<&'a [u8]>,
}

impl<'a> RowMutation<'a> {
    /// An upsert (insert or replace) of `data` under `row_signature`.
    pub fn upsert(row_signature: u64, data: &'a [u8]) -> Self {
        RowMutation {
            row_signature,
            data: Some(data),
        }
    }

    /// A delete of `row_signature`; deleting an absent row is not an error.
    pub fn delete(row_signature: u64) -> Self {
        RowMutation {
            row_signature,
            data: None,
        }
    }
}

/// The inclusive range of upstream sequence numbers one commit covers.
///
/// Group commit folds several consecutive result batches into one atomic commit; the span
/// records all of them so an outbox reader positioned in the middle can tell what it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SequenceSpan {
    /// Sequence of the first batch folded into the commit.
    pub first: u64,
    /// Sequence of the last batch; it becomes the query's committed sequence.
    pub last: u64,
}

impl SequenceSpan {
    /// A span of exactly one sequence.
    pub fn single(sequence: u64) -> Self {
        SequenceSpan {
            first: sequence,
            last: sequence,
        }
    }
}

/// One atomic commit to one query: rows, the new sequence and the outbox entry together.
///
/// After a crash a store holds exactly the state after some complete commit: never the rows of
/// a commit without its sequence, never a sequence without its rows.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// Row upserts and deletes; when a signature appears twice, the last one wins.
    pub mutations: &'a [RowMutation<'a>],
    /// The sequences this commit covers. `None` commits rows only (the seed trait's
    /// `apply_mutations`): the sequence stays as it is and no outbox entry is written.
    pub sequence: Option<SequenceSpan>,
    /// The outbox entry (the committed result batch, encoded by the caller). Ignored when
    /// `sequence` is `None`.
    pub payload: &'a [u8],
    /// The fencing token of the lease the committing host holds on the query, when hosts
    /// share the store (see [`crate::lease`]); `None` for a host that holds no lease.
    pub fence: Option<u64>,
}

impl<'a> Commit<'a> {
    /// A rows-only commit: no sequence, no outbox entry.
    pub fn rows(mutations: &'a [RowMutation<'a>]) -> Self {
        Commit {
            mutations,
            sequence: None,
            payload: &[],
            fence: None,
        }
    }

    /// A sequenced commit with its outbox entry.
    pub fn sequenced(
        mutations: &'a [RowMutation<'a>],
        span: SequenceSpan,
        payload: &'a [u8],
    ) -> Self {
        Commit {
            mutations,
            sequence: Some(span),
            payload,
            fence: None,
        }
    }

    /// The same commit, carrying the fencing token of the committing host's lease.
    #[must_use]
    pub fn with_fence(self, token: u64) -> Self {
        Commit {
            fence: Some(token),
            ..self
        }
    }
}

/// What a successful commit changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReceipt {
    /// The query's committed sequence after the commit.
    pub sequence: Option<u64>,
    /// Exact number of live rows after the commit.
    pub row_count: u64,
    /// Rows that did not exist before and do now.
    pub inserted: u64,
    /// Rows that existed before and do not now.
    pub deleted: u64,
}

/// What the store knows about one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryInfo {
    /// The query id.
    pub query_id: String,
    /// Last committed sequence; `None` before the first sequenced commit or after a clear.
    pub sequence: Option<u64>,
    /// Exact number of live rows.
    pub row_count: u64,
    /// Incremented by every clear, so positions taken before a clear are recognisably stale.
    pub epoch: u64,
}

impl QueryInfo {
    /// The state of a query the store has never seen.
    pub fn empty(query_id: &str) -> Self {
        QueryInfo {
            query_id: query_id.to_owned(),
            sequence: None,
            row_count: 0,
            epoch: 0,
        }
    }
}

/// One committed result batch kept for readers catching up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The sequences the commit covered.
    pub span: SequenceSpan,
    /// The caller-encoded result batch.
    pub payload: Vec<u8>,
}

/// How many committed batches each query's outbox keeps. The newest entry is always kept, even
/// when it alone exceeds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRetention {
    /// Maximum number of entries per query (at least 1).
    pub max_entries: usize,
    /// Maximum total payload bytes per query.
    pub max_bytes: u64,
}

impl Default for OutboxRetention {
    /// 1,024 entries or 64 MiB per query, whichever is reached first.
    fn default() -> Self {
        OutboxRetention {
            max_entries: 1024,
            max_bytes: 64 << 20,
        }
    }
}

/// A durable reaction's position in one query, with the configuration it was built under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Last sequence the reaction has fully applied (`None`: built from an empty query).
    pub sequence: Option<u64>,
    /// Hash of the reaction's configuration; a change means the reaction must rebuild.
    pub config_hash: u64,
}

/// A chunk of snapshot rows, stored flat (one signature array, one byte buffer) so that a chunk
/// of thousands of rows costs three allocations instead of one per row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowChunk {
    signatures: Vec<u64>,
    ends: Vec<usize>,
    data: Vec<u8>,
}

impl RowChunk {
    /// An empty chunk with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        RowChunk {
            signatures: Vec::with_capacity(rows),
            ends: Vec::with_capacity(rows),
            data: Vec::new(),
        }
    }

    /// Appends one row.
    pub fn push(&mut self, signature: u64, data: &[u8]) {
        self.data.extend_from_slice(data);
        self.signatures.push(signature);
        self.ends.push(self.data.len());
    }

    /// Number of rows in the chunk.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether the chunk holds no rows.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// Total row bytes held.
    pub fn data_bytes(&self) -> usize {
        self.data.len()
    }

    /// The rows as `(signature, data)` pairs, in store order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &[u8])> + '_ {
        (0..self.signatures.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            (self.signatures[i], &self.data[start..self.ends[i]])
        })
    }

    /// The rows as owned pairs, the shape the seed trait's `read_snapshot` returns.
    pub fn to_pairs(&self) -> Vec<(u64, Vec<u8>)> {
        self.iter().map(|(s, d)| (s, d.to_vec())).collect()
    }
}
