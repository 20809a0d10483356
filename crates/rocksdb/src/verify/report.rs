//! What [`crate::verify`] found: one [`Finding`] per problem, each naming the query, the record
//! and the expected against the found value, so that the report alone says where to look.

use std::fmt;

/// A column family of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// RocksDB's `default` column family: only the format record lives there.
    Default,
    /// The rows.
    Rows,
    /// The outbox entries.
    Outbox,
    /// The per-query meta records.
    Meta,
    /// The reaction checkpoints.
    Checkpoints,
}

impl Column {
    /// The column family's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Column::Default => "default",
            Column::Rows => crate::engine::CF_ROWS,
            Column::Outbox => crate::engine::CF_OUTBOX,
            Column::Meta => crate::engine::CF_META,
            Column::Checkpoints => crate::engine::CF_CHECKPOINTS,
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One stored record of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The store's format record.
    Format,
    /// The query's meta record.
    Meta,
    /// A row, by signature.
    Row {
        /// The row's signature (from its key).
        signature: u64,
    },
    /// An outbox entry, by the last sequence it covers (from its key).
    OutboxEntry {
        /// The entry's last sequence.
        last: u64,
    },
    /// A reaction's checkpoint.
    Checkpoint {
        /// The reaction id (from the key).
        reaction: String,
    },
    /// The marker a removed query leaves: the epoch a re-created query starts at.
    RemovedMarker,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Format => f.write_str("format record"),
            Record::Meta => f.write_str("meta record"),
            Record::Row { signature } => write!(f, "row {signature}"),
            Record::OutboxEntry { last } => write!(f, "outbox entry {last}"),
            Record::Checkpoint { reaction } => write!(f, "checkpoint {reaction:?}"),
            Record::RemovedMarker => f.write_str("removed marker"),
        }
    }
}

/// What is wrong. Numbers are as stored; "expected" is what the store's own rules (the ones
/// the engine applies when it writes) say the value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The format record names a version this build does not read. Nothing else is checked:
    /// records of another version would be misread, not verified.
    UnsupportedFormat {
        /// The version recorded in the store.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The format record is missing (every store writes it at creation) or is not 4 bytes.
    BadFormatRecord {
        /// What is wrong with it.
        detail: String,
    },
    /// One of the store's column families does not exist.
    MissingColumnFamily {
        /// Its name.
        name: String,
    },
    /// A column family the store never creates (the store would refuse to open).
    UnexpectedColumnFamily {
        /// Its name.
        name: String,
    },
    /// A record the store never writes (in the `default` column family, only the format
    /// record belongs; in `meta`, a removed query's marker next to a meta record).
    UnexpectedRecord {
        /// Where it is.
        column: Column,
        /// Its key.
        key: Vec<u8>,
    },
    /// A key that does not have its column family's layout.
    MalformedKey {
        /// Where it is.
        column: Column,
        /// The key.
        key: Vec<u8>,
        /// How it breaks the layout.
        reason: String,
    },
    /// A record whose value does not decode.
    Undecodable {
        /// Which record.
        record: Record,
        /// The decoder's message.
        detail: String,
    },
    /// RocksDB itself reported corruption (a checksum mismatch, a damaged file) while
    /// reading; the rest of that scan was skipped.
    StorageCorruption {
        /// The column family being read.
        column: Column,
        /// RocksDB's message.
        detail: String,
    },
    /// The meta record's row count is not the number of rows stored.
    RowCountMismatch {
        /// The count in the meta record (expected to equal `found`).
        stored: u64,
        /// Rows actually stored.
        found: u64,
    },
    /// An outbox entry whose first sequence is after its last.
    OutboxSpanReversed {
        /// The first sequence in the record.
        first: u64,
        /// The last sequence in the key.
        last: u64,
    },
    /// An outbox entry that starts at or before the end of the entry before it.
    OutboxOverlap {
        /// The previous entry's last sequence (expected: `first` is after it).
        previous_last: u64,
        /// This entry's first sequence.
        first: u64,
        /// This entry's last sequence.
        last: u64,
    },
    /// An outbox entry at or below the meta record's eviction mark: it should have been
    /// deleted when the mark moved past it.
    OutboxBeforeEviction {
        /// The meta record's `evicted_through`.
        evicted_through: u64,
        /// This entry's first sequence.
        first: u64,
        /// This entry's last sequence.
        last: u64,
    },
    /// Sequences missing between two outbox entries, or between the eviction mark and the
    /// oldest entry. Legitimate only when upstream skipped them (the `AutoSkipGap` policy, or
    /// a library caller committing with gaps); `VerifyOptions::allow_sequence_gaps` accepts
    /// them.
    OutboxHole {
        /// The last sequence before the hole (an entry's last, or the eviction mark).
        after: u64,
        /// The first sequence of the next entry (expected: `after + 1`).
        next_first: u64,
    },
    /// The newest outbox entry does not end at the committed sequence: every sequenced commit
    /// writes an entry that retention never evicts, so they must agree.
    OutboxEnd {
        /// The meta record's sequence (expected end of the outbox).
        committed: Option<u64>,
        /// The newest entry's last sequence (`None`: the outbox is empty).
        last_entry: Option<u64>,
    },
    /// The eviction mark is not before the committed sequence (the newest entry is never
    /// evicted).
    EvictionBeyondSequence {
        /// The meta record's `evicted_through`.
        evicted_through: u64,
        /// The meta record's sequence.
        committed: Option<u64>,
    },
    /// The outbox holds more than retention allows (every commit trims it to the limits,
    /// keeping at least its own entry).
    OutboxBeyondRetention {
        /// Entries held.
        entries: u64,
        /// Payload bytes held.
        bytes: u64,
        /// The entry limit checked against.
        max_entries: usize,
        /// The byte limit checked against.
        max_bytes: u64,
    },
    /// A payload item's upstream sequence outside its entry's span.
    PayloadOutsideSpan {
        /// The entry's first sequence.
        first: u64,
        /// The entry's last sequence.
        last: u64,
        /// The item's sequence.
        item_sequence: u64,
    },
    /// A checkpoint at a sequence the query has not committed. Checkpoints are deleted with
    /// the query's other records by a clear, so every one left belongs to the current epoch
    /// and is compared with the current sequence, as the runtime does at recovery.
    CheckpointBeyondSequence {
        /// The reaction id.
        reaction: String,
        /// The checkpoint's sequence.
        checkpoint: u64,
        /// The query's committed sequence.
        committed: Option<u64>,
    },
    /// A checkpoint inside the outbox's retained range that no commit ended at: reactions only
    /// checkpoint the last sequence of a commit they applied.
    CheckpointNotAtCommit {
        /// The reaction id.
        reaction: String,
        /// The checkpoint's sequence (no outbox entry ends there).
        checkpoint: u64,
    },
    /// Records of a query that has no meta record: nothing reads or clears them.
    Orphan {
        /// Where they are.
        column: Column,
        /// How many.
        records: u64,
        /// The first one's key.
        first_key: Vec<u8>,
    },
}

/// Renders a key as a byte string (`b"\x00\x06orders\x00..."`): printable ASCII as is, every
/// other byte as `\xNN`, so the query id reads plainly and the numbers byte by byte.
pub struct KeyDisplay<'a>(pub &'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("b\"")?;
        for &b in self.0 {
            match b {
                b'"' | b'\\' => write!(f, "\\{}", char::from(b))?,
                b' '..=b'~' => write!(f, "{}", char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        f.write_str("\"")
    }
}

fn seq(s: Option<u64>) -> String {
    s.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnsupportedFormat { found, supported } => write!(
                f,
                "format version {found} is not supported (this build reads 1 to {supported}); no record was checked"
            ),
            Problem::BadFormatRecord { detail } => write!(f, "format record: {detail}"),
            Problem::MissingColumnFamily { name } => {
                write!(f, "column family {name:?} is missing")
            }
            Problem::UnexpectedColumnFamily { name } => {
                write!(f, "unexpected column family {name:?}")
            }
            Problem::UnexpectedRecord { column, key } => {
                write!(f, "{column}: unexpected record {}", KeyDisplay(key))
            }
            Problem::MalformedKey {
                column,
                key,
                reason,
            } => write!(f, "{column}: malformed key {}: {reason}", KeyDisplay(key)),
            Problem::Undecodable { record, detail } => {
                write!(f, "{record} does not decode: {detail}")
            }
            Problem::StorageCorruption { column, detail } => write!(
                f,
                "{column}: RocksDB reports corruption, rest of the scan skipped: {detail}"
            ),
            Problem::RowCountMismatch { stored, found } => write!(
                f,
                "meta record: row count {stored}, rows found {found}"
            ),
            Problem::OutboxSpanReversed { first, last } => write!(
                f,
                "outbox entry {last}: first sequence {first} is after its last sequence {last}"
            ),
            Problem::OutboxOverlap {
                previous_last,
                first,
                last,
            } => write!(
                f,
                "outbox entry {last}: starts at {first}, expected after the previous entry's last sequence {previous_last}"
            ),
            Problem::OutboxBeforeEviction {
                evicted_through,
                first,
                last,
            } => write!(
                f,
                "outbox entry {last} (from {first}): at or below the eviction mark {evicted_through}, should have been deleted"
            ),
            Problem::OutboxHole { after, next_first } => write!(
                f,
                "outbox hole: next entry after sequence {after} starts at {next_first}, expected {}",
                after.saturating_add(1)
            ),
            Problem::OutboxEnd {
                committed,
                last_entry,
            } => write!(
                f,
                "outbox ends at sequence {}, expected the committed sequence {}",
                seq(*last_entry),
                seq(*committed)
            ),
            Problem::EvictionBeyondSequence {
                evicted_through,
                committed,
            } => write!(
                f,
                "meta record: outbox evicted through {evicted_through}, expected below the committed sequence {}",
                seq(*committed)
            ),
            Problem::OutboxBeyondRetention {
                entries,
                bytes,
                max_entries,
                max_bytes,
            } => write!(
                f,
                "outbox holds {entries} entries / {bytes} payload bytes, retention allows {max_entries} entries / {max_bytes} bytes"
            ),
            Problem::PayloadOutsideSpan {
                first,
                last,
                item_sequence,
            } => write!(
                f,
                "outbox entry {last}: payload item at sequence {item_sequence}, outside the entry's span {first}..={last}"
            ),
            Problem::CheckpointBeyondSequence {
                reaction,
                checkpoint,
                committed,
            } => write!(
                f,
                "checkpoint {reaction:?}: at sequence {checkpoint}, beyond the committed sequence {}",
                seq(*committed)
            ),
            Problem::CheckpointNotAtCommit {
                reaction,
                checkpoint,
            } => write!(
                f,
                "checkpoint {reaction:?}: at sequence {checkpoint}, where no outbox entry ends"
            ),
            Problem::Orphan {
                column,
                records,
                first_key,
            } => write!(
                f,
                "{column}: records with no meta record: {records} (first key {})",
                KeyDisplay(first_key)
            ),
        }
    }
}

/// One problem, with the query it belongs to (`None`: the store as a whole, or a key too
/// damaged to name its query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The query whose record is damaged.
    pub query: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.query {
            Some(q) => write!(f, "query {q:?}: {}", self.problem),
            None => write!(f, "store: {}", self.problem),
        }
    }
}

/// The result of [`crate::verify`]: what was read and every problem found (up to
/// `VerifyOptions::max_findings`; the rest are counted in `omitted`, so a badly damaged store
/// cannot make the report itself unbounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The store's format version, when its format record could be read.
    pub format_version: Option<u32>,
    /// Whether the records were checked (false when the format version is not supported).
    pub records_checked: bool,
    /// Queries (meta records) checked.
    pub queries: u64,
    /// Row records read.
    pub rows: u64,
    /// Outbox entries read.
    pub outbox_entries: u64,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// The problems, in the order found: store-wide first, then query by query in key
    /// order, then records no query owns.
    pub findings: Vec<Finding>,
    /// Problems found beyond the listing limit.
    pub omitted: u64,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.omitted == 0
    }

    /// Total number of problems, listed or not.
    pub fn problems(&self) -> u64 {
        (self.findings.len() as u64).saturating_add(self.omitted)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format_version {
            Some(v) => writeln!(f, "format version {v}")?,
            None => writeln!(f, "format version unknown")?,
        }
        if self.records_checked {
            writeln!(
                f,
                "checked {} queries: {} rows, {} outbox entries, {} checkpoints",
                self.queries, self.rows, self.outbox_entries, self.checkpoints
            )?;
        } else {
            writeln!(f, "records not checked")?;
        }
        if self.is_clean() {
            return writeln!(f, "clean: no problems found");
        }
        writeln!(f, "problems found: {}", self.problems())?;
        for finding in &self.findings {
            writeln!(f, "  {finding}")?;
        }
        if self.omitted > 0 {
            writeln!(f, "  ... and {} more not listed", self.omitted)?;
        }
        Ok(())
    }
}
