//! The engine: every stream's current meta in memory (one [`Slot`] per name), the protocol's
//! rules, and the store underneath. Writes to one stream are serialized by its slot's lock
//! (the protocol asks for validation and append to be one step per producer; one step per
//! stream is simpler and still lets different streams write in parallel). Operations that
//! change more than one stream — creating a fork (its source's fork count), deleting (its
//! sources' counts, cascading), expiring — also hold the engine's structure lock, always
//! taken before any slot lock, so they cannot deadlock with each other or with appends.
//!
//! A slot publishes its meta through a `watch` channel after the store has applied the change,
//! so a reader that sees a tail can read every byte before it, and live readers wake on the
//! commit that concerns them (a fork's readers never wake for its source's appends).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{watch, Mutex, OwnedMutexGuard};

use crate::error::StreamError;
use crate::meta::StreamMeta;
use crate::store::{StoreError, StreamStore, WriteSet};
use crate::time::now_ms;

/// Longest fork chain followed when reading (a fork of a fork of …): bounds the work of one
/// read whatever clients create.
pub const MAX_FORK_DEPTH: usize = 64;

/// One stream name's state.
pub struct Slot {
    /// The stream's name.
    pub name: String,
    /// Held by whoever changes this stream.
    write: Arc<Mutex<()>>,
    /// The committed meta; `None` once the stream is removed.
    state: watch::Sender<Option<Arc<StreamMeta>>>,
    /// Latest read that counts for the TTL, not yet persisted (milliseconds).
    touched_ms: AtomicU64,
}

impl Slot {
    fn new(name: String, meta: StreamMeta) -> Arc<Slot> {
        Arc::new(Slot {
            name,
            write: Arc::default(),
            state: watch::Sender::new(Some(Arc::new(meta))),
            touched_ms: AtomicU64::new(0),
        })
    }

    /// The committed meta, or `None` once removed.
    pub fn meta(&self) -> Option<Arc<StreamMeta>> {
        self.state.borrow().clone()
    }

    /// A receiver that sees every later commit (and removal) of this stream.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<StreamMeta>>> {
        self.state.subscribe()
    }

    pub(crate) fn publish(&self, meta: Option<StreamMeta>) {
        self.state.send_replace(meta.map(Arc::new));
    }

    pub(crate) async fn lock(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.write).lock_owned().await
    }

    /// Records a read at `now` for the sliding TTL.
    pub fn touch(&self, now: u64) {
        self.touched_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// The latest access that counts for the TTL.
    pub fn last_access(&self, meta: &StreamMeta) -> u64 {
        meta.last_access_ms
            .max(self.touched_ms.load(Ordering::Relaxed))
    }
}

/// Whether `meta` (of `slot`) has expired at `now`. Soft-deleted streams do not expire: they
/// are already gone for clients, and live on only for their forks.
pub fn expired(slot: &Slot, meta: &StreamMeta, now: u64) -> bool {
    if meta.soft_deleted {
        return false;
    }
    if meta.expires_at_ms.is_some_and(|at| now >= at) {
        return true;
    }
    meta.ttl_secs.is_some_and(|ttl| {
        now >= slot
            .last_access(meta)
            .saturating_add(ttl.saturating_mul(1000))
    })
}

/// The engine. See the module docs.
pub struct Engine {
    pub(crate) store: Arc<dyn StreamStore>,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    /// Serializes operations that change several streams; holds the next stream id.
    pub(crate) structure: Mutex<u64>,
}

impl Engine {
    /// Loads every stream from `store`.
    pub async fn open(store: Arc<dyn StreamStore>) -> Result<Engine, StoreError> {
        let loaded = store.load().await?;
        let slots = (loaded.streams.into_iter())
            .map(|(name, meta)| (name.clone(), Slot::new(name, meta)))
            .collect();
        Ok(Engine {
            store,
            slots: RwLock::new(slots),
            structure: Mutex::new(loaded.next_id),
        })
    }

    /// The slot of `name`, if the stream exists (or is soft-deleted).
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.get(name).cloned()
    }

    pub(crate) fn insert_slot(&self, name: &str, meta: StreamMeta) {
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.insert(name.to_owned(), Slot::new(name.to_owned(), meta));
    }

    pub(crate) fn remove_slot(&self, name: &str) {
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.remove(name) {
            slot.publish(None);
        }
    }

    /// Every slot (for the expiry sweep).
    pub fn all_slots(&self) -> Vec<Arc<Slot>> {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.values().cloned().collect()
    }

    /// The stream a client request addresses: 404 when there is none (or it just expired —
    /// then it is removed, or hidden if forks still read it), 410 when soft-deleted. `touch`
    /// counts the request as an access for the sliding TTL (every read and write, not HEAD).
    pub async fn lookup(
        &self,
        name: &str,
        touch: bool,
    ) -> Result<(Arc<Slot>, Arc<StreamMeta>), StreamError> {
        let not_found = || StreamError::NotFound(name.to_owned());
        let slot = self.slot(name).ok_or_else(not_found)?;
        let meta = slot.meta().ok_or_else(not_found)?;
        if meta.soft_deleted {
            return Err(StreamError::Gone(name.to_owned()));
        }
        let now = now_ms();
        if expired(&slot, &meta, now) {
            self.expire(name).await?;
            return match self.slot(name).and_then(|s| s.meta()) {
                Some(m) if m.soft_deleted => Err(StreamError::Gone(name.to_owned())),
                _ => Err(not_found()),
            };
        }
        if touch {
            slot.touch(now);
        }
        Ok((slot, meta))
    }

    /// Removes `name` if it has expired (checked again under the locks).
    pub async fn expire(&self, name: &str) -> Result<(), StreamError> {
        let mut next_id = self.structure.lock().await;
        let Some(slot) = self.slot(name) else {
            return Ok(());
        };
        let expired_now = slot.meta().is_some_and(|m| expired(&slot, &m, now_ms()));
        if expired_now {
            tracing::debug!(stream = name, "stream expired");
            self.remove_locked(name, &mut next_id).await?;
        }
        Ok(())
    }

    /// Deletes `name` (client DELETE): 404 / 410 like [`Engine::lookup`].
    pub async fn delete(&self, name: &str) -> Result<(), StreamError> {
        self.lookup(name, false).await?;
        let mut next_id = self.structure.lock().await;
        match self.slot(name).and_then(|s| s.meta()) {
            None => Err(StreamError::NotFound(name.to_owned())),
            Some(m) if m.soft_deleted => Err(StreamError::Gone(name.to_owned())),
            Some(_) => self.remove_locked(name, &mut next_id).await,
        }
    }

    /// Removes `name` under the structure lock: hidden (soft-deleted) while forks read through
    /// it; otherwise its meta and data go, its source's fork count drops, and a soft-deleted
    /// source whose count reaches zero goes too, up the chain — all in one write set.
    pub(crate) async fn remove_locked(
        &self,
        name: &str,
        _held: &mut u64,
    ) -> Result<(), StreamError> {
        let Some(slot) = self.slot(name) else {
            return Ok(());
        };
        let mut guards = vec![slot.lock().await];
        let Some(meta) = slot.meta() else {
            return Ok(());
        };
        let mut set = WriteSet::default();
        if meta.forks > 0 {
            let mut hidden = (*meta).clone();
            hidden.soft_deleted = true;
            set.metas.push((name.to_owned(), Some(hidden.clone())));
            self.store.write(set).await?;
            slot.publish(Some(hidden));
            return Ok(());
        }
        let mut removed = vec![name.to_owned()];
        let mut updated = Vec::new();
        set.metas.push((name.to_owned(), None));
        set.drop_streams.push(meta.id);
        let mut source = meta.fork.clone();
        while let Some(fork) = source.take() {
            let Some(parent) = self.slot(&fork.source) else {
                tracing::warn!(
                    stream = name,
                    source = fork.source,
                    "fork source is missing"
                );
                break;
            };
            guards.push(parent.lock().await);
            let Some(pmeta) = parent.meta().filter(|p| p.id == fork.source_id) else {
                tracing::warn!(
                    stream = name,
                    source = fork.source,
                    "fork source was replaced"
                );
                break;
            };
            let mut pmeta = (*pmeta).clone();
            pmeta.forks = pmeta.forks.saturating_sub(1);
            if pmeta.soft_deleted && pmeta.forks == 0 {
                set.metas.push((fork.source.clone(), None));
                set.drop_streams.push(pmeta.id);
                removed.push(fork.source.clone());
                source = pmeta.fork.clone();
            } else {
                set.metas.push((fork.source.clone(), Some(pmeta.clone())));
                updated.push((parent, pmeta));
            }
        }
        self.store.write(set).await?;
        for (parent, pmeta) in updated {
            parent.publish(Some(pmeta));
        }
        for name in removed {
            self.remove_slot(&name);
        }
        drop(guards);
        Ok(())
    }

    /// One sweep: removes expired streams, and persists read accesses of TTL streams that the
    /// stored meta does not reflect yet (so a restart does not expire a stream that is being
    /// read but not written). Returns how many streams expired.
    pub async fn sweep(&self) -> Result<usize, StreamError> {
        let now = now_ms();
        let mut expired_count = 0;
        for slot in self.all_slots() {
            let Some(meta) = slot.meta() else { continue };
            if expired(&slot, &meta, now) {
                self.expire(&slot.name).await?;
                expired_count += 1;
                continue;
            }
            let Some(ttl) = meta.ttl_secs else { continue };
            let touched = slot.last_access(&meta);
            let stale_after = (ttl.saturating_mul(1000) / 4).max(1000);
            if touched > meta.last_access_ms.saturating_add(stale_after) {
                self.persist_access(&slot, touched).await?;
            }
        }
        Ok(expired_count)
    }

    async fn persist_access(&self, slot: &Slot, touched: u64) -> Result<(), StreamError> {
        let _guard = slot.lock().await;
        let Some(meta) = slot.meta() else {
            return Ok(());
        };
        if meta.last_access_ms >= touched {
            return Ok(());
        }
        let mut meta = (*meta).clone();
        meta.last_access_ms = touched;
        let set = WriteSet {
            metas: vec![(slot.name.clone(), Some(meta.clone()))],
            ..WriteSet::default()
        };
        self.store.write(set).await?;
        slot.publish(Some(meta));
        Ok(())
    }
}
