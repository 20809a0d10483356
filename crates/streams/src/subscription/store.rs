//! Where subscription records and the signing key live: [`SubscriptionStore`], kept by the
//! streams' own store ([`crate::StreamStore::subscriptions`]) so a subscription is exactly as
//! durable and as shared as the streams it follows.
//!
//! The contract is a compare-and-swap per record (by the stored bytes): every change to a
//! subscription is read, decided, and written only if nobody wrote in between — the same
//! optimistic scheme as the streams' write sets on a shared store, and trivially true on a
//! single-writer store.
//!
//! RocksDB keeps records in the streams database's `default` column family under
//! `liveresults.streams.subscription/<id>` and the key seed under
//! `liveresults.streams.signing_key`, each write a synced single-key write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::signing::SEED_BYTES;
use crate::rocks::RocksStreamStore;
use crate::store::StoreError;

/// Durable home of subscriptions. Implementations must be safe to call concurrently.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Every record, by id.
    async fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The record of `id`.
    async fn load(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Puts `new` (`None`: deletes) as the record of `id` if the stored record is byte for
    /// byte `expected` (`None`: there is none). `Ok(false)`: it was not; nothing changed.
    async fn swap(
        &self,
        id: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError>;

    /// The stored signing-key seed; if there is none, stores `candidate` and returns it.
    async fn signing_seed(
        &self,
        candidate: [u8; SEED_BYTES],
    ) -> Result<[u8; SEED_BYTES], StoreError>;
}

/// Records by id, and the seed.
type MemoryState = (HashMap<String, Vec<u8>>, Option<[u8; SEED_BYTES]>);

/// Subscriptions in process memory (`serve --memory`, and stores that keep none).
#[derive(Debug, Default)]
pub struct MemorySubscriptionStore {
    inner: Mutex<MemoryState>,
}

impl MemorySubscriptionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SubscriptionStore for MemorySubscriptionStore {
    async fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn load(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().0.get(id).cloned())
    }

    async fn swap(
        &self,
        id: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.0.get(id).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(bytes) => inner.0.insert(id.to_owned(), bytes.to_vec()),
            None => inner.0.remove(id),
        };
        Ok(true)
    }

    async fn signing_seed(&self, candidate: [u8; SEED_BYTES]) -> Result<[u8; 32], StoreError> {
        Ok(*self.lock().1.get_or_insert(candidate))
    }
}

const RECORD_PREFIX: &[u8] = b"liveresults.streams.subscription/";
const SEED_KEY: &[u8] = b"liveresults.streams.signing_key";

/// Serializes swaps of one process (RocksDB has one writer; the lock makes read-compare-write
/// one step). A std lock taken inside the blocking closure: it lives exactly as long as the
/// read-compare-write. (An async lock held by the awaiting future would be released when that
/// future is dropped — a client disconnecting — while the closure still runs, letting a second
/// swap read the same bytes.)
static ROCKS_SWAP: Mutex<()> = Mutex::new(());

fn swap_lock() -> std::sync::MutexGuard<'static, ()> {
    ROCKS_SWAP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn record_key(id: &str) -> Vec<u8> {
    [RECORD_PREFIX, id.as_bytes()].concat()
}

/// The seed of stored bytes.
pub fn seed_of(bytes: &[u8]) -> Result<[u8; SEED_BYTES], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("the signing key seed is not 32 bytes".into()))
}

impl RocksStreamStore {
    async fn sub_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rocksdb::DB, &rocksdb::WriteOptions) -> Result<T, rocksdb::Error>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let (db, sync) = (Arc::clone(&self.db), self.sync);
        tokio::task::spawn_blocking(move || {
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(sync);
            f(&db, &options)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("subscription store task failed: {e}")))?
        .map_err(|e| StoreError::Backend(format!("subscription store: {e}")))
    }
}

#[async_trait]
impl SubscriptionStore for RocksStreamStore {
    async fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.sub_blocking(|db, _| {
            let mode = rocksdb::IteratorMode::From(RECORD_PREFIX, rocksdb::Direction::Forward);
            let mut out = Vec::new();
            for item in db.iterator(mode) {
                let (key, value) = item?;
                let Some(id) = key.strip_prefix(RECORD_PREFIX) else {
                    break;
                };
                out.push((String::from_utf8_lossy(id).into_owned(), value.to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn load(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = record_key(id);
        self.sub_blocking(move |db, _| db.get(key)).await
    }

    async fn swap(
        &self,
        id: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let (key, expected, new) = (
            record_key(id),
            expected.map(<[u8]>::to_vec),
            new.map(<[u8]>::to_vec),
        );
        self.sub_blocking(move |db, options| {
            let _one = swap_lock();
            if db.get(&key)? != expected {
                return Ok(false);
            }
            match new {
                Some(bytes) => db.put_opt(&key, bytes, options)?,
                None => db.delete_opt(&key, options)?,
            }
            Ok(true)
        })
        .await
    }

    async fn signing_seed(&self, candidate: [u8; SEED_BYTES]) -> Result<[u8; 32], StoreError> {
        let stored = self
            .sub_blocking(move |db, options| {
                let _one = swap_lock();
                match db.get(SEED_KEY)? {
                    Some(bytes) => Ok(bytes),
                    None => {
                        db.put_opt(SEED_KEY, candidate, options)?;
                        Ok(candidate.to_vec())
                    }
                }
            })
            .await?;
        seed_of(&stored)
    }
}
