//! [`MemoryStreamStore`]: streams in process memory, gone at exit (`serve --memory`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::meta::{ProducerState, StreamMeta};
use crate::store::{Loaded, Record, StoreError, StreamStore, WriteSet};

/// Streams in memory. One lock over everything: a write set applies as one step, so readers
/// never see half of it.
#[derive(Debug, Default)]
pub struct MemoryStreamStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    metas: BTreeMap<String, StreamMeta>,
    /// `(stream id, start)` → bytes.
    records: BTreeMap<(u64, u64), bytes::Bytes>,
    producers: BTreeMap<(u64, String), ProducerState>,
    next_id: u64,
}

impl MemoryStreamStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStreamStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write set: every write
        // set is applied by infallible map operations.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl StreamStore for MemoryStreamStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let inner = self.lock();
        Ok(Loaded {
            streams: (inner.metas.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            next_id: inner.next_id,
        })
    }

    async fn producer(&self, id: u64, producer: &str) -> Result<Option<ProducerState>, StoreError> {
        Ok(self
            .lock()
            .producers
            .get(&(id, producer.to_owned()))
            .copied())
    }

    async fn producer_count(&self, id: u64, at_most: usize) -> Result<Option<usize>, StoreError> {
        let inner = self.lock();
        let from = (id, String::new());
        let count = (inner.producers.range(from..))
            .take_while(|((stream, _), _)| *stream == id)
            .take(at_most)
            .count();
        Ok(Some(count))
    }

    async fn write(&self, set: WriteSet) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for id in set.drop_streams {
            let keys: Vec<(u64, u64)> = (inner.records.range((id, 0)..=(id, u64::MAX)))
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                inner.records.remove(&key);
            }
            inner.producers.retain(|(stream, _), _| *stream != id);
        }
        for (name, meta) in set.metas {
            match meta {
                Some(meta) => inner.metas.insert(name, meta),
                None => inner.metas.remove(&name),
            };
        }
        for (id, record) in set.records {
            inner.records.insert((id, record.start), record.bytes);
        }
        for (id, producer, state) in set.producers {
            inner.producers.insert((id, producer), state);
        }
        if let Some(next) = set.next_id {
            inner.next_id = next;
        }
        Ok(())
    }

    async fn read(
        &self,
        id: u64,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let inner = self.lock();
        let mut total = 0usize;
        // The record containing `from` starts at or before it.
        let first = inner.records.range((id, 0)..=(id, from)).next_back();
        let first = first.filter(|((_, start), bytes)| start + bytes.len() as u64 > from);
        let rest = inner.records.range((id, from.saturating_add(1))..(id, to));
        for ((_, start), bytes) in first.into_iter().chain(rest) {
            if *start >= to || total >= max_bytes {
                break;
            }
            total = total.saturating_add(bytes.len());
            out.push(Record {
                start: *start,
                bytes: bytes.clone(),
            });
        }
        Ok(out)
    }

    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
