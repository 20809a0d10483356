//! The synchronous engine: every RocksDB call lives here and runs on a blocking thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use liveresults_core::codec::records::{self, MetaRecord};
use liveresults_core::contract_rules::{next_epoch, validate_reaction_id};
use liveresults_core::outbox_window::OutboxWindow;
use liveresults_core::signature_set::SignatureSet;
use liveresults_core::{Checkpoint, ErrorClass, OutboxEntry, QueryInfo, SequenceSpan, StoreError};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use crate::error::from_rocksdb;
use crate::keys::{self, QueryPrefix};
use crate::options::{RocksStoreOptions, INDEX_BYTES_PER_ROW};
use crate::state::{IndexBudget, QueryHandle, QueryState, SignatureIndex};
pub(crate) use group::GroupCommit;
use index::Indexer;

/// Column family of the rows.
pub(crate) const CF_ROWS: &str = "rows";
/// Column family of the outbox entries.
pub(crate) const CF_OUTBOX: &str = "outbox";
/// Column family of the per-query meta records.
pub(crate) const CF_META: &str = "meta";
/// Column family of reaction checkpoints.
pub(crate) const CF_CHECKPOINTS: &str = "checkpoints";
const COLUMN_FAMILIES: [&str; 4] = [CF_ROWS, CF_OUTBOX, CF_META, CF_CHECKPOINTS];

/// Key of the format-version record in the default column family.
pub(crate) const FORMAT_KEY: &[u8] = b"liveresults.format_version";
/// Key the writability probe deletes: empty, so no query's key (a non-empty length-prefixed
/// id) can equal it.
const PROBE_KEY: &[u8] = b"";
/// The newest on-disk format this build reads and writes (keys, records, column families).
///
/// Version 2 is version 1 plus removed-query markers in the `meta` column family. A store is
/// created at [`STORE_FORMAT_BASE_VERSION`] and becomes version 2 in the batch of its first
/// `remove_query`: a build that knows only version 1 would misread a marker (and re-create a
/// removed id at epoch 0, making stale change-feed offsets look valid), so it must refuse the
/// store instead, while stores that never removed a query stay readable by it.
pub const STORE_FORMAT_VERSION: u32 = 2;
/// The format a new store is created at, and the oldest this build reads.
pub const STORE_FORMAT_BASE_VERSION: u32 = 1;

/// The open database plus per-query state.
pub(crate) struct Engine {
    pub(crate) db: DB,
    pub(crate) path: String,
    write_options: WriteOptions,
    pub(crate) options: RocksStoreOptions,
    queries: RwLock<HashMap<String, Arc<QueryHandle>>>,
    budget: IndexBudget,
    /// Builds large queries' signature indexes in the background (see the `index` module).
    indexer: Indexer,
    /// This engine, for the threads it starts: they hold it weakly, so dropping the last
    /// store handle still closes the database (a strong reference only while they work).
    me: Weak<Engine>,
}

fn poisoned<T>(_: PoisonError<T>) -> StoreError {
    StoreError::Backend {
        backend: "rocksdb",
        class: ErrorClass::Permanent,
        message: "engine lock poisoned by an earlier panic".into(),
    }
}

impl Engine {
    pub(crate) fn open(path: &Path, options: RocksStoreOptions) -> Result<Arc<Engine>, StoreError> {
        let shown = path.display().to_string();
        let cf_opts = options.cf_options();
        // The default family is named too: left out, RocksDB opens it with its own 64 MiB
        // memtable, and after a full disk it resumes writes only once the largest memtable of
        // any family fits in the free space.
        let descriptors = std::iter::once(&rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .chain(COLUMN_FAMILIES.iter())
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_opts.clone()));
        let db = DB::open_cf_descriptors(&options.db_options(), path, descriptors)
            .map_err(|e| from_rocksdb(e, &shown))?;
        check_format(&db, &shown)?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_commits);
        write_options.disable_wal(false);
        let budget = IndexBudget::new(options.signature_index_bytes / INDEX_BYTES_PER_ROW);
        Ok(Arc::new_cyclic(|me| Engine {
            db,
            path: shown,
            write_options,
            options,
            queries: RwLock::default(),
            budget,
            indexer: Indexer::default(),
            me: me.clone(),
        }))
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| {
            StoreError::corrupt(
                format!("store at {}", self.path),
                format_args!("column family {name:?} is missing"),
            )
        })
    }

    pub(crate) fn rocks(&self, err: rocksdb::Error) -> StoreError {
        from_rocksdb(err, &self.path)
    }

    /// The handle of a query already in memory, without touching the disk.
    pub(crate) fn cached(&self, query_id: &str) -> Option<Arc<QueryHandle>> {
        self.queries.read().ok()?.get(query_id).cloned()
    }

    /// The handle of a query the store knows, loading its meta record and outbox bookkeeping
    /// on first use; `None` for a query it does not know. Readers asking about arbitrary ids
    /// (an HTTP client probing) must not grow memory, so only writers create handles.
    fn handle(&self, query_id: &str) -> Result<Option<Arc<QueryHandle>>, StoreError> {
        if let Some(handle) = self.cached(query_id) {
            return Ok(Some(handle));
        }
        let prefix = QueryPrefix::new(query_id)?;
        match self.read_meta(query_id, &prefix, None)? {
            Some(meta) => self.insert_handle(query_id, prefix, meta, true).map(Some),
            None => Ok(None),
        }
    }

    /// The handle a commit writes through, created for a new query. A query removed before
    /// starts at the epoch its removed marker holds (see the `remove` module).
    fn writer_handle(&self, query_id: &str) -> Result<Arc<QueryHandle>, StoreError> {
        match self.handle(query_id)? {
            Some(handle) => Ok(handle),
            None => {
                let prefix = QueryPrefix::new(query_id)?;
                let floor = self.read_removed(query_id, &prefix)?;
                let meta = MetaRecord {
                    epoch: floor.unwrap_or(0),
                    ..MetaRecord::default()
                };
                self.insert_handle(query_id, prefix, meta, false)
            }
        }
    }

    /// Caches a handle: of a query with a meta record (`stored`), or of a new one.
    fn insert_handle(
        &self,
        query_id: &str,
        prefix: QueryPrefix,
        meta: MetaRecord,
        stored: bool,
    ) -> Result<Arc<QueryHandle>, StoreError> {
        let window = self.load_window(query_id, &prefix, meta.evicted_through)?;
        let handle = Arc::new(QueryHandle {
            query_id: query_id.to_owned(),
            prefix,
            state: Mutex::new(QueryState {
                meta,
                window,
                index: SignatureIndex::Unloaded,
                // A new query starts above epoch 0 only after a removal left a marker.
                removed_marker: !stored && meta.epoch > 0,
            }),
            published: Mutex::new(stored.then_some(meta)),
        });
        let mut queries = self.queries.write().map_err(poisoned)?;
        // Another thread may have loaded it meanwhile; keep the first so locks stay shared.
        Ok(Arc::clone(
            queries.entry(query_id.to_owned()).or_insert(handle),
        ))
    }

    /// Reads a query's meta record, from `snapshot` when given.
    pub(crate) fn read_meta(
        &self,
        query_id: &str,
        prefix: &QueryPrefix,
        snapshot: Option<&rocksdb::Snapshot<'_>>,
    ) -> Result<Option<MetaRecord>, StoreError> {
        let cf = self.cf(CF_META)?;
        let raw = match snapshot {
            Some(snap) => snap.get_cf(cf, prefix.as_bytes()),
            None => self.db.get_cf(cf, prefix.as_bytes()),
        }
        .map_err(|e| self.rocks(e))?;
        raw.map(|bytes| {
            records::decode_meta(&bytes).map_err(|e| StoreError::corrupt_meta(query_id, e))
        })
        .transpose()
    }

    fn load_window(
        &self,
        query_id: &str,
        prefix: &QueryPrefix,
        evicted_through: Option<u64>,
    ) -> Result<OutboxWindow, StoreError> {
        let mut window = OutboxWindow::new(evicted_through);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix.successor());
        let mode = IteratorMode::From(prefix.as_bytes(), Direction::Forward);
        for item in self.db.iterator_cf_opt(self.cf(CF_OUTBOX)?, read, mode) {
            let (key, value) = item.map_err(|e| self.rocks(e))?;
            let last = keys::split_key(&key)
                .and_then(|(_, rest)| keys::u64_suffix(rest))
                .ok_or_else(|| StoreError::corrupt_key("outbox", query_id, &key))?;
            let (first, _) = records::decode_outbox(&value)
                .map_err(|e| StoreError::corrupt_outbox_entry(query_id, last, e))?;
            let bytes = records::outbox_payload_len(value.len());
            window.push_loaded(SequenceSpan { first, last }, bytes);
        }
        Ok(window)
    }

    pub(crate) fn clear(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        let Some(handle) = self.handle(query_id)? else {
            return Ok(QueryInfo::empty(query_id));
        };
        let mut state = handle.state.lock().map_err(poisoned)?;
        let known = self.read_meta(query_id, &handle.prefix, None)?.is_some();
        if !known {
            return Ok(QueryInfo::empty(query_id));
        }
        let epoch = next_epoch(query_id, state.meta.epoch)?;
        let (start, end) = (handle.prefix.as_bytes(), handle.prefix.successor());
        let mut batch = WriteBatch::default();
        for cf in [CF_ROWS, CF_OUTBOX, CF_CHECKPOINTS] {
            batch.delete_range_cf(self.cf(cf)?, start, &end);
        }
        let meta = MetaRecord {
            sequence: None,
            row_count: 0,
            epoch,
            evicted_through: None,
        };
        batch.put_cf(self.cf(CF_META)?, start, records::encode_meta(&meta));
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.rocks(e))?;
        // A rebuild still scanning gives its own reservation back when it sees the new state.
        if let SignatureIndex::Loaded(set) = &state.index {
            self.budget.release(set.len() as u64);
        }
        state.index = SignatureIndex::Loaded(SignatureSet::default());
        state.window.clear();
        state.meta = meta;
        *handle.published.lock().map_err(poisoned)? = Some(meta);
        Ok(handle.info_from(&meta))
    }

    pub(crate) fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        let Some(handle) = self.handle(query_id)? else {
            return Ok(QueryInfo::empty(query_id));
        };
        let meta = *handle.published.lock().map_err(poisoned)?;
        Ok(handle.published_info(meta.as_ref()))
    }

    pub(crate) fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let Some(handle) = self.handle(query_id)? else {
            return Ok(Vec::new());
        };
        // Check the window and take a RocksDB snapshot under the commit lock, so the gap check
        // and the entries agree; then read without holding up commits.
        let state = handle.state.lock().map_err(poisoned)?;
        state.window.check_read(query_id, after)?;
        let snapshot = self.db.snapshot();
        drop(state);
        let start = match after.map(|a| a.checked_add(1)) {
            Some(Some(next)) => handle.prefix.with_u64(next),
            // Nothing can follow the largest sequence.
            Some(None) => return Ok(Vec::new()),
            None => handle.prefix.as_bytes().to_vec(),
        };
        let mut read = ReadOptions::default();
        read.set_snapshot(&snapshot);
        read.set_iterate_upper_bound(handle.prefix.successor());
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf(CF_OUTBOX)?, read, mode) {
            if entries.len() >= max_entries {
                break;
            }
            let (key, value) = item.map_err(|e| self.rocks(e))?;
            let last = keys::split_key(&key)
                .and_then(|(_, rest)| keys::u64_suffix(rest))
                .ok_or_else(|| StoreError::corrupt_key("outbox", query_id, &key))?;
            let (first, payload) = records::decode_outbox(&value)
                .map_err(|e| StoreError::corrupt_outbox_entry(query_id, last, e))?;
            entries.push(OutboxEntry {
                span: SequenceSpan { first, last },
                payload: payload.to_vec(),
            });
        }
        Ok(entries)
    }

    pub(crate) fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        validate_reaction_id(reaction_id)?;
        let key = QueryPrefix::new(query_id)?.with_str(reaction_id);
        let raw = self
            .db
            .get_cf(self.cf(CF_CHECKPOINTS)?, key)
            .map_err(|e| self.rocks(e))?;
        raw.map(|bytes| {
            records::decode_checkpoint(&bytes).map_err(|e| {
                StoreError::corrupt(format!("checkpoint of {reaction_id:?} in {query_id:?}"), e)
            })
        })
        .transpose()
    }

    pub(crate) fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), StoreError> {
        validate_reaction_id(reaction_id)?;
        let key = QueryPrefix::new(query_id)?.with_str(reaction_id);
        let cf = self.cf(CF_CHECKPOINTS)?;
        let mut batch = WriteBatch::default();
        match checkpoint {
            Some(cp) => batch.put_cf(cf, key, records::encode_checkpoint(&cp)),
            None => batch.delete_cf(cf, key),
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.rocks(e))
    }

    pub(crate) fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_META)?, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.rocks(e))?;
            let query_id = match keys::split_key(&key) {
                Some((id, [])) => id,
                // A removed query's marker: the query is not listed.
                Some((_, keys::REMOVED_SUFFIX)) => continue,
                _ => return Err(StoreError::corrupt("meta key", format_args!("{key:?}"))),
            };
            let meta =
                records::decode_meta(&value).map_err(|e| StoreError::corrupt_meta(query_id, e))?;
            out.push(QueryInfo {
                query_id: query_id.to_owned(),
                sequence: meta.sequence,
                row_count: meta.row_count,
                epoch: meta.epoch,
            });
        }
        // Keys sort by length prefix first; the contract orders by id.
        out.sort_by(|a, b| a.query_id.cmp(&b.query_id));
        Ok(out)
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.rocks(e))
    }

    /// Deletes the (never written) empty key of the meta column family: a real WAL write
    /// that no reader can see. While RocksDB holds a background error (a write or flush hit a
    /// full disk), every write fails with it, this one included; once RocksDB has resumed,
    /// it succeeds. The meta family is written by every commit, so the tombstone is flushed
    /// with it and pins no WAL file.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        self.db
            .delete_cf_opt(self.cf(CF_META)?, PROBE_KEY, &self.write_options)
            .map_err(|e| self.rocks(e))
    }

    /// Ends background index scans and waits until none uses the database (see `index`).
    pub(crate) fn stop_indexer(&self) {
        self.indexer.stop();
    }

    /// Writes the memtables to SST files, so the next open has no WAL to replay.
    pub(crate) fn flush_memtables(&self) -> Result<(), StoreError> {
        // The default column family too: while its memtable (the format record) is unflushed,
        // RocksDB keeps, and replays at open, every WAL file since the store was created.
        self.db.flush().map_err(|e| self.rocks(e))?;
        for name in COLUMN_FAMILIES {
            self.db
                .flush_cf(self.cf(name)?)
                .map_err(|e| self.rocks(e))?;
        }
        Ok(())
    }
}

/// Writes the format record into a new store, or checks the one an existing store has.
fn check_format(db: &DB, path: &str) -> Result<(), StoreError> {
    match db.get(FORMAT_KEY).map_err(|e| from_rocksdb(e, path))? {
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_slice().try_into().map_err(|_| {
                StoreError::corrupt(
                    format!("format record of store at {path}"),
                    format_args!("{} bytes, expected 4", raw.len()),
                )
            })?;
            let found = u32::from_be_bytes(bytes);
            if !(STORE_FORMAT_BASE_VERSION..=STORE_FORMAT_VERSION).contains(&found) {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: STORE_FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.put_opt(FORMAT_KEY, STORE_FORMAT_BASE_VERSION.to_be_bytes(), &opts)
                .map_err(|e| from_rocksdb(e, path))
        }
    }
}

mod group;
#[cfg(test)]
mod group_tests;
mod index;
mod remove;
#[cfg(test)]
mod tests;
