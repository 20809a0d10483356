//! [`RocksStreamStore`]: streams in their own RocksDB database (`serve --data DIR` keeps it in
//! `DIR/streams`), apart from the query store's database so the two formats version and
//! evolve independently and neither's options (or compactions) disturb the other.
//!
//! Layout (docs/FORMAT.md, "Durable Streams store", has the record bytes):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `default` | `liveresults.streams.format_version` | `u32 BE` format version (1) |
//! | `default` | `liveresults.streams.next_id` | `u64 BE` next stream id |
//! | `stream_meta` | stream name (UTF-8) | meta record |
//! | `stream_records` | `id: u64 BE ++ start: u64 BE` | the record's bytes |
//! | `stream_producers` | `id: u64 BE ++ producer id (UTF-8)` | producer record |
//!
//! Every [`WriteSet`] is one `WriteBatch`, written with `sync` on by default: an append, its
//! stream's new tail and its producer's new sequence reach the WAL as one record, so after any
//! crash all of them are there or none is. Every call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::meta::{ProducerState, StreamMeta};
use crate::store::{Loaded, Record, StoreError, StreamStore, WriteSet};

/// The format version this build writes and reads.
pub const STREAMS_FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"liveresults.streams.format_version";
const NEXT_ID_KEY: &[u8] = b"liveresults.streams.next_id";
const CF_META: &str = "stream_meta";
const CF_RECORDS: &str = "stream_records";
const CF_PRODUCERS: &str = "stream_producers";

/// Streams in a RocksDB database. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct RocksStreamStore {
    pub(crate) db: Arc<DB>,
    pub(crate) sync: bool,
    path: Arc<str>,
}

impl std::fmt::Debug for RocksStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStreamStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend(path: &str, err: &rocksdb::Error) -> StoreError {
    StoreError::Backend(format!("{path}: {err}"))
}

fn record_key(id: u64, start: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&start.to_be_bytes());
    key
}

fn producer_key(id: u64, producer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + producer.len());
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(producer.as_bytes());
    key
}

/// The `(id, start)` of a record key, if `key` is one.
fn parse_record_key(key: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let start = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    (key.len() == 16).then_some((id, start))
}

impl RocksStreamStore {
    /// Opens (creating if needed) the database in directory `path`, on the blocking pool.
    /// `sync`: fsync the WAL on every write before acknowledging it (power-loss safe).
    pub async fn open(path: impl AsRef<Path>, sync: bool) -> Result<RocksStreamStore, StoreError> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || RocksStreamStore::open_blocking(&path, sync))
            .await
            .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))?
    }

    /// Opens (creating if needed) the database in directory `path` on this thread.
    pub fn open_blocking(path: &Path, sync: bool) -> Result<RocksStreamStore, StoreError> {
        let shown = path.display().to_string();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_background_jobs(2);
        let family = |name: &str, buffer: usize| {
            let mut cf = Options::default();
            cf.set_write_buffer_size(buffer);
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, cf)
        };
        let families = [
            family(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, 1 << 20),
            family(CF_META, 4 << 20),
            family(CF_RECORDS, 32 << 20),
            family(CF_PRODUCERS, 4 << 20),
        ];
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| backend(&shown, &e))?;
        match db.get(FORMAT_KEY).map_err(|e| backend(&shown, &e))? {
            None => db
                .put(FORMAT_KEY, STREAMS_FORMAT_VERSION.to_be_bytes())
                .map_err(|e| backend(&shown, &e))?,
            Some(v) if v.as_slice() == STREAMS_FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{shown}: streams format version {v:?} is not {STREAMS_FORMAT_VERSION}"
                )))
            }
        }
        Ok(RocksStreamStore {
            db: Arc::new(db),
            sync,
            path: shown.into(),
        })
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&DB, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let (db, path) = (Arc::clone(&self.db), Arc::clone(&self.path));
        tokio::task::spawn_blocking(move || f(&db, &path))
            .await
            .map_err(|e| StoreError::Backend(format!("blocking task failed: {e}")))?
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Corrupt(format!("column family {name} is missing")))
}

#[async_trait]
impl StreamStore for RocksStreamStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.blocking(|db, path| {
            let next_id = match db.get(NEXT_ID_KEY).map_err(|e| backend(path, &e))? {
                None => 0,
                Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("{path}: next stream id is {} bytes", v.len()))
                })?),
            };
            let mut streams = Vec::new();
            for item in db.iterator_cf(cf(db, CF_META)?, IteratorMode::Start) {
                let (key, value) = item.map_err(|e| backend(path, &e))?;
                let name = String::from_utf8(key.to_vec()).map_err(|_| {
                    StoreError::Corrupt(format!("{path}: a stream name is not UTF-8"))
                })?;
                let meta = StreamMeta::decode(&value)
                    .map_err(|e| StoreError::Corrupt(format!("{path}: stream {name:?}: {e}")))?;
                streams.push((name, meta));
            }
            Ok(Loaded { streams, next_id })
        })
        .await
    }

    async fn producer(&self, id: u64, producer: &str) -> Result<Option<ProducerState>, StoreError> {
        let key = producer_key(id, producer);
        self.blocking(move |db, path| {
            let value = db
                .get_pinned_cf(cf(db, CF_PRODUCERS)?, &key)
                .map_err(|e| backend(path, &e))?;
            value
                .map(|v| ProducerState::decode(&v))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("{path}: producer state: {e}")))
        })
        .await
    }

    async fn producer_count(&self, id: u64, at_most: usize) -> Result<Option<usize>, StoreError> {
        self.blocking(move |db, path| {
            let prefix = id.to_be_bytes();
            let mode = IteratorMode::From(&prefix, Direction::Forward);
            let mut count = 0;
            for item in db.iterator_cf(cf(db, CF_PRODUCERS)?, mode) {
                let (key, _) = item.map_err(|e| backend(path, &e))?;
                if !key.starts_with(&prefix) || count >= at_most {
                    break;
                }
                count += 1;
            }
            Ok(Some(count))
        })
        .await
    }

    async fn write(&self, set: WriteSet) -> Result<(), StoreError> {
        let sync = self.sync;
        self.blocking(move |db, path| {
            let (metas, records, producers) =
                (cf(db, CF_META)?, cf(db, CF_RECORDS)?, cf(db, CF_PRODUCERS)?);
            let mut batch = WriteBatch::default();
            for id in set.drop_streams {
                let next = id.saturating_add(1);
                batch.delete_range_cf(records, record_key(id, 0), record_key(next, 0));
                batch.delete_range_cf(producers, id.to_be_bytes(), next.to_be_bytes());
            }
            for (name, meta) in set.metas {
                match meta {
                    Some(meta) => batch.put_cf(metas, name.as_bytes(), meta.encode()),
                    None => batch.delete_cf(metas, name.as_bytes()),
                }
            }
            for (id, record) in set.records {
                batch.put_cf(records, record_key(id, record.start), &record.bytes);
            }
            for (id, producer, state) in set.producers {
                batch.put_cf(producers, producer_key(id, &producer), state.encode());
            }
            if let Some(next) = set.next_id {
                batch.put(NEXT_ID_KEY, next.to_be_bytes());
            }
            let mut options = WriteOptions::default();
            options.set_sync(sync);
            db.write_opt(batch, &options).map_err(|e| backend(path, &e))
        })
        .await
    }

    async fn read(
        &self,
        id: u64,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.blocking(move |db, path| {
            let records = cf(db, CF_RECORDS)?;
            let mut out = Vec::new();
            let mut total = 0usize;
            // The record containing `from`, which may start before it.
            let mut it = db.raw_iterator_cf(records);
            it.seek_for_prev(record_key(id, from));
            if let (Some(key), Some(value)) = (it.key(), it.value()) {
                if let Some((rid, start)) = parse_record_key(key) {
                    if rid == id && start.saturating_add(value.len() as u64) > from {
                        total = value.len();
                        out.push(Record {
                            start,
                            bytes: Bytes::copy_from_slice(value),
                        });
                    }
                }
            }
            it.status().map_err(|e| backend(path, &e))?;
            if total >= max_bytes && !out.is_empty() {
                return Ok(out);
            }
            let upper = record_key(id, to);
            let mode =
                IteratorMode::From(&record_key(id, from.saturating_add(1)), Direction::Forward);
            for item in db.iterator_cf(records, mode) {
                let (key, value) = item.map_err(|e| backend(path, &e))?;
                if key.as_ref() >= upper.as_slice() {
                    break;
                }
                let Some((_, start)) = parse_record_key(&key) else {
                    return Err(StoreError::Corrupt(format!(
                        "{path}: record key of {} bytes",
                        key.len()
                    )));
                };
                total = total.saturating_add(value.len());
                out.push(Record {
                    start,
                    bytes: Bytes::from(value.into_vec()),
                });
                if total >= max_bytes {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Subscriptions live in this database too (`subscription::store`).
    fn subscriptions(&self) -> Option<Arc<dyn crate::subscription::SubscriptionStore>> {
        Some(Arc::new(self.clone()))
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.blocking(|db, path| {
            db.flush_wal(true).map_err(|e| backend(path, &e))?;
            db.flush().map_err(|e| backend(path, &e))
        })
        .await
    }
}
