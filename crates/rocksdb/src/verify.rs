//! Offline integrity check of a store directory, in the spirit of `redb check` or RocksDB's
//! `ldb checkconsistency`: [`verify`] reads every record of every column family and checks it
//! against the rules the engine follows when it writes:
//!
//! - the format record names a version this build reads (otherwise nothing else is checked:
//!   records of another version would be misread, not verified);
//! - every key has its column family's layout, and every value decodes: rows with the row
//!   codec, meta records, outbox records and their payloads (the runtime's change format),
//!   checkpoints;
//! - each query's stored row count equals its rows;
//! - each query's outbox entries follow each other without overlap or holes, from its
//!   eviction mark to its committed sequence, within retention;
//! - checkpoints are not beyond the committed sequence and, inside the retained outbox, sit
//!   where a commit ended;
//! - no rows, outbox entries or checkpoints belong to a query without a meta record;
//! - a removed query's marker decodes, and no query has both a marker and a meta record.
//!
//! # Open mode: the normal lock
//!
//! The store is opened read-write, taking RocksDB's `LOCK` exactly as `RocksStore::open`
//! does, and only read. A read-only RocksDB instance takes no lock: next to a running server
//! its open can race a flush or a WAL deletion and read a state no commit ever produced,
//! which would be reported as damage that is not there. With the lock, no writer can change
//! the store during the check, so counts, sequences and entries are compared within one
//! state, and a running server is refused with `StoreError::Locked` (as `stats`, `dump` and
//! `clear` are). The check writes no record; the open itself does what any open does (replays
//! a WAL left by a crash, writes RocksDB's own MANIFEST/OPTIONS/LOG files), with automatic
//! compactions off so no data file is rewritten. A missing directory is an error, never a
//! new store.
//!
//! # Bounded memory
//!
//! Every column family is streamed in key order, one query range at a time; nothing is
//! collected per row. Records of queries without a meta record are found by seeking past each
//! known query's range. The report keeps at most `max_findings` findings and counts the rest.

mod query;
mod report;

use std::path::Path;

use liveresults_core::codec::records::{self, MetaRecord};
use liveresults_core::{ErrorClass, OutboxRetention, StoreError};
use rocksdb::{
    ColumnFamilyDescriptor, DBRawIterator, DBRecoveryMode, ErrorKind, Options, ReadOptions, DB,
};

pub use report::{Column, Finding, KeyDisplay, Problem, Record, VerifyReport};

use crate::engine::{FORMAT_KEY, STORE_FORMAT_BASE_VERSION, STORE_FORMAT_VERSION};
use crate::error::from_rocksdb;
use crate::keys::{self, QueryPrefix};
use crate::options::RocksStoreOptions;

/// The column families the store creates, besides RocksDB's `default`.
const DATA_COLUMNS: [Column; 4] = [
    Column::Rows,
    Column::Outbox,
    Column::Meta,
    Column::Checkpoints,
];
/// The column families that hold records keyed by query, checked for orphans.
const QUERY_COLUMNS: [Column; 3] = [Column::Rows, Column::Outbox, Column::Checkpoints];

/// What [`verify_with`] assumes about how the store was written.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    retention: OutboxRetention,
    allow_sequence_gaps: bool,
    opaque_payloads: bool,
    opaque_rows: bool,
    max_findings: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            retention: OutboxRetention::default(),
            allow_sequence_gaps: false,
            opaque_payloads: false,
            opaque_rows: false,
            max_findings: 1000,
        }
    }
}

impl VerifyOptions {
    /// Defaults: the store's default outbox retention, holes between outbox entries are
    /// damage, payloads are in the runtime's change format, at most 1,000 findings listed.
    pub fn new() -> Self {
        VerifyOptions::default()
    }

    /// The outbox retention the store was written with (default: the store's default). Each
    /// commit trims the outbox to the retention it was opened with, so checking against a
    /// smaller one reports entries that are not damage.
    #[must_use]
    pub fn outbox_retention(mut self, retention: OutboxRetention) -> Self {
        self.retention = retention;
        self
    }

    /// Accept holes between outbox entries (default `false`). The store allows a commit to
    /// skip sequences, and the runtime's `AutoSkipGap` policy does; under `Strict` and
    /// `AutoReset` a hole can only come from a lost entry.
    #[must_use]
    pub fn allow_sequence_gaps(mut self, allow: bool) -> Self {
        self.allow_sequence_gaps = allow;
        self
    }

    /// Do not decode outbox payloads (default `false`: decode them as the runtime's change
    /// format). For stores written through `ResultStore::commit` with payloads of your own.
    #[must_use]
    pub fn opaque_payloads(mut self, opaque: bool) -> Self {
        self.opaque_payloads = opaque;
        self
    }

    /// Do not decode rows (default `false`: decode them with the row codec). For stores whose
    /// rows are bytes of the writer's own, e.g. written through the seed `LiveResultsWriter`
    /// trait (drasi-core's writer hands it its own serialisation); row counts, keys and
    /// everything else are still checked.
    #[must_use]
    pub fn opaque_rows(mut self, opaque: bool) -> Self {
        self.opaque_rows = opaque;
        self
    }

    /// How many findings the report lists (default 1,000; at least 1); the rest are counted.
    #[must_use]
    pub fn max_findings(mut self, max: usize) -> Self {
        self.max_findings = max.max(1);
        self
    }
}

/// Checks the store in `path` with default options; see [`verify_with`].
pub fn verify(path: impl AsRef<Path>, query: Option<&str>) -> Result<VerifyReport, StoreError> {
    verify_with(path.as_ref(), query, &VerifyOptions::default())
}

/// Checks the store in `path` — every query, or only `query`'s records — and reports every
/// problem found. Blocks the calling thread (run it on a blocking thread in async code).
///
/// The store is opened with its normal lock and only read: no writer can change it during
/// the check, so every count and sequence is compared within one state (a read-only RocksDB
/// open takes no lock and, next to a running server, can read a state no commit produced).
/// No record is written; automatic compactions are off so no data file is rewritten.
///
/// Errors mean the check could not run: no store at `path` (never created), the store is open
/// elsewhere ([`StoreError::Locked`]), RocksDB cannot open it ([`StoreError::Corrupt`] when
/// it says its files are damaged), an invalid `query` id, or an I/O error while reading.
/// Damage RocksDB reports while reading a column family is a finding, not an error.
pub fn verify_with(
    path: &Path,
    query: Option<&str>,
    options: &VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    let shown = path.display().to_string();
    if !path.join("CURRENT").is_file() {
        return Err(StoreError::Backend {
            backend: "rocksdb",
            class: ErrorClass::Permanent,
            message: format!("no store at {shown} (no RocksDB CURRENT file)"),
        });
    }
    let names = DB::list_cf(&Options::default(), path).map_err(|e| from_rocksdb(e, &shown))?;
    let store_options = RocksStoreOptions::new();
    let mut db_options = store_options.db_options();
    db_options.create_if_missing(false);
    db_options.create_missing_column_families(false);
    // A normal open silently drops a damaged WAL tail (point-in-time recovery) and writes what
    // it kept to table files, which would destroy the evidence and report the rest as clean:
    // demand a consistent WAL, so damage there is an open error, reported as damage. (The rocksdb
    // crate does not expose `avoid_flush_during_recovery`, so a replayed WAL is still flushed:
    // the same records, moved into a table file.)
    db_options.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
    let mut cf_options = store_options.cf_options();
    cf_options.set_disable_auto_compactions(true);
    let descriptors = names
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(name, cf_options.clone()));
    let db = DB::open_cf_descriptors(&db_options, path, descriptors)
        .map_err(|e| from_rocksdb(e, &shown))?;
    let mut verifier = Verifier {
        db: &db,
        path: shown,
        options,
        report: VerifyReport::default(),
    };
    verifier.check_column_families(&names);
    if verifier.check_format()? {
        verifier.report.records_checked = true;
        match query {
            Some(id) => verifier.check_one(id)?,
            None => verifier.check_all()?,
        }
    }
    Ok(verifier.report)
}

struct Verifier<'a> {
    db: &'a DB,
    path: String,
    options: &'a VerifyOptions,
    report: VerifyReport,
}

impl<'a> Verifier<'a> {
    fn malformed_key(&mut self, query: Option<&str>, column: Column, key: &[u8], reason: String) {
        let key = key.to_vec();
        self.push(
            query,
            Problem::MalformedKey {
                column,
                key,
                reason,
            },
        );
    }

    fn push(&mut self, query: Option<&str>, problem: Problem) {
        if self.report.findings.len() < self.options.max_findings {
            self.report.findings.push(Finding {
                query: query.map(str::to_owned),
                problem,
            });
        } else {
            self.report.omitted = self.report.omitted.saturating_add(1);
        }
    }

    /// Turns a RocksDB read error into a finding when it reports damage (`Ok(false)`), or into
    /// the error that stops the check otherwise.
    fn read_error(
        &mut self,
        column: Column,
        query: Option<&str>,
        err: rocksdb::Error,
    ) -> Result<bool, StoreError> {
        if err.kind() == ErrorKind::Corruption {
            let detail = err.into_string();
            self.push(query, Problem::StorageCorruption { column, detail });
            return Ok(false);
        }
        Err(from_rocksdb(err, &self.path))
    }

    /// Whether a scan reached its end (`false`: RocksDB reported damage, now a finding).
    fn finished(
        &mut self,
        column: Column,
        query: Option<&str>,
        iter: &DBRawIterator<'a>,
    ) -> Result<bool, StoreError> {
        match iter.status() {
            Ok(()) => Ok(true),
            Err(e) => self.read_error(column, query, e),
        }
    }

    /// An iterator over `column`, limited to one query's records when `range` is given;
    /// `None` when the column family is missing (already a finding).
    fn iter(&self, column: Column, range: Option<&QueryPrefix>) -> Option<DBRawIterator<'a>> {
        let db: &'a DB = self.db;
        let cf = db.cf_handle(column.name())?;
        let mut read = ReadOptions::default();
        // A full scan must not evict the working set of a cache it will never reuse.
        read.fill_cache(false);
        if let Some(prefix) = range {
            read.set_iterate_upper_bound(prefix.successor());
        }
        let mut iter = db.raw_iterator_cf_opt(cf, read);
        match range {
            Some(prefix) => iter.seek(prefix.as_bytes()),
            None => iter.seek_to_first(),
        }
        Some(iter)
    }

    /// A point read in `column`; `Ok(None)` also when the read reported damage (a finding).
    fn get(
        &mut self,
        column: Column,
        query: Option<&str>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(cf) = self.db.cf_handle(column.name()) else {
            return Ok(None);
        };
        match self.db.get_cf(cf, key) {
            Ok(value) => Ok(value),
            Err(e) => self.read_error(column, query, e).map(|_| None),
        }
    }

    fn check_column_families(&mut self, names: &[String]) {
        for column in DATA_COLUMNS {
            if !names.iter().any(|n| n == column.name()) {
                let name = column.name().to_owned();
                self.push(None, Problem::MissingColumnFamily { name });
            }
        }
        for name in names {
            let known = name == Column::Default.name()
                || DATA_COLUMNS.iter().any(|c| c.name() == name.as_str());
            if !known {
                let name = name.clone();
                self.push(None, Problem::UnexpectedColumnFamily { name });
            }
        }
    }

    /// Checks the `default` column family; `false` when the format is one this build must
    /// not interpret.
    fn check_format(&mut self) -> Result<bool, StoreError> {
        let raw = self.get(Column::Default, None, FORMAT_KEY)?;
        match raw.as_deref().map(<[u8; 4]>::try_from) {
            None => {
                let detail = "missing (every store writes it at creation)".to_owned();
                self.push(None, Problem::BadFormatRecord { detail });
            }
            Some(Err(_)) => {
                let len = raw.as_ref().map_or(0, Vec::len);
                let detail = format!("{len} bytes, expected a 4-byte version");
                self.push(None, Problem::BadFormatRecord { detail });
            }
            Some(Ok(bytes)) => {
                let found = u32::from_be_bytes(bytes);
                self.report.format_version = Some(found);
                if !(STORE_FORMAT_BASE_VERSION..=STORE_FORMAT_VERSION).contains(&found) {
                    let supported = STORE_FORMAT_VERSION;
                    self.push(None, Problem::UnsupportedFormat { found, supported });
                    return Ok(false);
                }
            }
        }
        if let Some(mut iter) = self.iter(Column::Default, None) {
            while let Some(key) = iter.key() {
                if key != FORMAT_KEY {
                    let key = key.to_vec();
                    let column = Column::Default;
                    self.push(None, Problem::UnexpectedRecord { column, key });
                }
                iter.next();
            }
            self.finished(Column::Default, None, &iter)?;
        }
        Ok(true)
    }

    /// Every query with a meta record, then every record no meta record owns.
    fn check_all(&mut self) -> Result<(), StoreError> {
        if let Some(mut iter) = self.iter(Column::Meta, None) {
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                match query_of(key) {
                    Err(reason) => {
                        self.malformed_key(None, Column::Meta, key, reason);
                    }
                    Ok((id, prefix_len)) if &key[prefix_len..] == keys::REMOVED_SUFFIX => {
                        let (id, key) = (id.to_owned(), key.to_vec());
                        self.check_removed(&id, &key, value)?;
                    }
                    Ok((id, prefix_len)) if prefix_len != key.len() => {
                        let reason = format!(
                            "{} bytes after the query id (a meta key is the query's prefix alone)",
                            key.len() - prefix_len
                        );
                        self.malformed_key(Some(id), Column::Meta, key, reason);
                    }
                    Ok((id, _)) => {
                        let id = id.to_owned();
                        let meta = self.decode_meta(&id, value);
                        self.check_query(&id, meta)?;
                    }
                }
                iter.next();
            }
            self.finished(Column::Meta, None, &iter)?;
        }
        for column in QUERY_COLUMNS {
            self.check_unowned(column, None)?;
        }
        Ok(())
    }

    /// One query: its records if it has a meta record, orphans under its prefix otherwise.
    fn check_one(&mut self, query: &str) -> Result<(), StoreError> {
        let prefix = QueryPrefix::new(query)?;
        if let Some(value) = self.get(Column::Meta, Some(query), prefix.as_bytes())? {
            let meta = self.decode_meta(query, &value);
            self.check_query(query, meta)?;
        }
        let marker = prefix.removed_key();
        if let Some(value) = self.get(Column::Meta, Some(query), &marker)? {
            self.check_removed(query, &marker, &value)?;
        }
        for column in QUERY_COLUMNS {
            self.check_unowned(column, Some(&prefix))?;
        }
        Ok(())
    }

    /// A removed query's marker: it must decode, and its query must have no meta record (the
    /// first commit of a re-created query deletes the marker in its batch).
    fn check_removed(&mut self, query: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if let Err(e) = records::decode_removed(value) {
            let (record, detail) = (Record::RemovedMarker, e.to_string());
            self.push(Some(query), Problem::Undecodable { record, detail });
        }
        let prefix = QueryPrefix::new(query)?;
        if self
            .get(Column::Meta, Some(query), prefix.as_bytes())?
            .is_some()
        {
            let (column, key) = (Column::Meta, key.to_vec());
            self.push(Some(query), Problem::UnexpectedRecord { column, key });
        }
        Ok(())
    }

    fn decode_meta(&mut self, query: &str, value: &[u8]) -> Option<MetaRecord> {
        match records::decode_meta(value) {
            Ok(meta) => Some(meta),
            Err(e) => {
                let (record, detail) = (Record::Meta, e.to_string());
                self.push(Some(query), Problem::Undecodable { record, detail });
                None
            }
        }
    }

    /// Records in `column` (under `range`, or all of them) that no meta record owns, and keys
    /// too damaged to name a query. Each known query's range is skipped with one seek, so this
    /// reads only what is unowned.
    fn check_unowned(
        &mut self,
        column: Column,
        range: Option<&QueryPrefix>,
    ) -> Result<(), StoreError> {
        let Some(mut iter) = self.iter(column, range) else {
            return Ok(());
        };
        while let Some(key) = iter.key() {
            let id = match query_of(key) {
                Ok((id, _)) => id.to_owned(),
                Err(reason) => {
                    self.malformed_key(None, column, key, reason);
                    iter.next();
                    continue;
                }
            };
            let prefix = QueryPrefix::new(&id)?;
            if self
                .get(Column::Meta, Some(&id), prefix.as_bytes())?
                .is_some()
            {
                iter.seek(prefix.successor());
                continue;
            }
            let first_key = key.to_vec();
            let mut records = 0u64;
            while iter.key().is_some_and(|k| k.starts_with(prefix.as_bytes())) {
                records += 1;
                iter.next();
            }
            let problem = Problem::Orphan {
                column,
                records,
                first_key,
            };
            self.push(Some(&id), problem);
        }
        self.finished(column, None, &iter)?;
        Ok(())
    }
}

/// The query id a key starts with and the prefix's length, or why the key has no valid
/// prefix (the layout is `keys::split_key`'s; this only explains its refusals).
fn query_of(key: &[u8]) -> Result<(&str, usize), String> {
    match keys::split_key(key) {
        Some(("", _)) => Err("empty query id".to_owned()),
        Some((id, rest)) => Ok((id, key.len() - rest.len())),
        None => Err(match key.get(..2) {
            None => "shorter than the 2-byte length field".to_owned(),
            Some(len) => {
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if key.len() - 2 < len {
                    format!(
                        "length field says {len} bytes of query id, the key holds {}",
                        key.len() - 2
                    )
                } else {
                    "query id is not UTF-8".to_owned()
                }
            }
        }),
    }
}
