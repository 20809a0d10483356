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
//!
//! **Shared stores** ([`StreamStore::shared`], Redis behind several hosts): the cache is then
//! only this host's last view, so (1) every write carries the metas it was decided on
//! ([`WriteSet::expected`]) and the store refuses it with a conflict if another host wrote
//! first; the engine reloads those streams and decides again (idempotent producers included:
//! the retry sees the other host's producer state), at most [`MAX_ATTEMPTS`] times; (2) every
//! request reloads its stream's meta first ([`Engine::refresh`]: load on miss, deletions and
//! re-creations elsewhere, the latest tail), under the slot's write lock, so what a slot
//! publishes only moves forward; (3) the `follow` module applies the store's change notices,
//! which wakes readers parked here when another host appends, and re-checks watched streams
//! every second in case a notice was lost.

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

/// Attempts of one operation on a shared store whose writes other hosts keep beating (each
/// lost attempt means another host's write went through, so this runs out only under
/// pathological contention; then the client gets 503 and retries).
pub const MAX_ATTEMPTS: usize = 64;

/// Whether `err` is a shared store's write conflict (the operation is decided again).
pub(crate) fn is_conflict(err: &StreamError) -> bool {
    matches!(err, StreamError::Store(e) if e.is_conflict())
}

/// Waits before attempt `attempt + 1` of an operation that lost a conflict: not at all at
/// first (the other host's write is done; deciding again at once usually wins), then a short
/// pause that grows (up to ~25 ms) and varies, so hosts that keep colliding drift apart.
pub(crate) async fn backoff(attempt: usize) {
    if attempt < 2 {
        return;
    }
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) % 100);
    let steps = 1u64 << attempt.min(7);
    let micros = steps
        .saturating_mul(100)
        .saturating_add(jitter.saturating_mul(steps));
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// The error of an operation that lost [`MAX_ATTEMPTS`] conflicts in a row.
pub(crate) fn contended(name: &str) -> StreamError {
    StreamError::Store(StoreError::Backend(format!(
        "stream {name:?}: other hosts kept changing it first ({MAX_ATTEMPTS} attempts); retry"
    )))
}

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

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
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

    /// Whether live readers wait on this stream (they subscribed to its commits).
    pub(crate) fn watched(&self) -> bool {
        self.state.receiver_count() > 0
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
    /// [`StreamStore::shared`], read once.
    pub(crate) shared: bool,
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
            shared: store.shared(),
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

    /// Applies `set` (through [`StreamStore::write`]). On a shared store's conflict it reloads
    /// every stream the set expected — the caller holds the slot locks of those that have
    /// slots — and returns the conflict, for the caller to decide again.
    pub(crate) async fn commit(&self, set: WriteSet) -> Result<(), StreamError> {
        let expected: Vec<String> = if self.shared {
            set.expected.iter().map(|(name, _)| name.clone()).collect()
        } else {
            Vec::new()
        };
        match self.store.write(set).await {
            Err(e) if e.is_conflict() => {
                tracing::debug!(streams = ?expected, "another host wrote first; reloading");
                let fresh = self.store.load_metas(&expected).await?;
                for (name, meta) in expected.iter().zip(fresh) {
                    self.apply(name, meta);
                }
                Err(e.into())
            }
            other => other.map_err(StreamError::from),
        }
    }

    /// Makes the engine hold `fresh`, the stored meta of `name`: a new slot for a stream
    /// created elsewhere, removal (readers see `None`) of one deleted elsewhere, a fresh slot
    /// for a name deleted and created again (a different id: its old readers must not read
    /// the new stream's bytes at their offsets), else the new meta if it differs. Callers
    /// serialize this with the stream's writers (its slot lock, or the structure lock when it
    /// has no slot), so what a slot publishes only moves forward.
    pub(crate) fn apply(&self, name: &str, fresh: Option<StreamMeta>) {
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = slots.get(name).cloned();
        match (current, fresh) {
            (None, None) => {}
            (None, Some(meta)) => {
                slots.insert(name.to_owned(), Slot::new(name.to_owned(), meta));
            }
            (Some(slot), None) => {
                slots.remove(name);
                slot.publish(None);
            }
            (Some(slot), Some(meta)) => match slot.meta() {
                Some(held) if held.id == meta.id => {
                    if *held != meta {
                        slot.publish(Some(meta));
                    }
                }
                _ => {
                    slots.insert(name.to_owned(), Slot::new(name.to_owned(), meta));
                    slot.publish(None);
                }
            },
        }
    }

    /// Shared stores: brings `name` up to date with the store (see [`Engine::apply`]), under
    /// its slot's write lock (the structure lock when there is no slot, so a create on this
    /// host cannot interleave). A fork whose source this host does not know loads the source
    /// too. A no-op for single-writer stores.
    pub async fn refresh(&self, name: &str) -> Result<(), StoreError> {
        if !self.shared {
            return Ok(());
        }
        let mut name = name.to_owned();
        for _ in 0..MAX_FORK_DEPTH {
            let fresh = self.refresh_one(&name).await?;
            // Follow the source unless this host holds that very stream (same id): a slot for
            // an older stream of the same name (deleted and re-created elsewhere) is stale.
            match fresh.and_then(|m| m.fork.clone()) {
                Some(fork)
                    if self.slot(&fork.source).and_then(|s| s.meta()).map(|m| m.id)
                        != Some(fork.source_id) =>
                {
                    name = fork.source;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Reads `name`'s stored meta without any lock first (most requests find it unchanged),
    /// and takes the locks — then reads again, so what it applies is not older than what a
    /// writer holding the lock published — only when it differs from this host's view (for a
    /// name without a slot, only when the store has it).
    async fn refresh_one(&self, name: &str) -> Result<Option<Arc<StreamMeta>>, StoreError> {
        let names = [name.to_owned()];
        let held = || self.slot(name).and_then(|s| s.meta());
        let unlocked = self.store.load_metas(&names).await?.pop().flatten();
        if held().as_deref() == unlocked.as_ref() {
            return Ok(held());
        }
        for _ in 0..MAX_ATTEMPTS {
            match self.slot(name) {
                Some(slot) => {
                    let _guard = slot.lock().await;
                    // Replaced while this waited: lock the current one instead.
                    if !self.slot(name).is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
                        continue;
                    }
                    let fresh = self.store.load_metas(&names).await?.pop().flatten();
                    self.apply(name, fresh);
                }
                None => {
                    let _structure = self.structure.lock().await;
                    if self.slot(name).is_some() {
                        continue;
                    }
                    let fresh = self.store.load_metas(&names).await?.pop().flatten();
                    self.apply(name, fresh);
                }
            }
            return Ok(held());
        }
        Ok(held())
    }

    /// Shared stores: refreshes every stream whose stored meta differs from this host's view
    /// (one read for all of them, then [`Engine::refresh`] for each that differs). `all`:
    /// every stream, including ones this host has never heard of (after lost notices);
    /// otherwise only the streams live readers wait on (the fallback for a lost notice).
    pub async fn recheck(&self, all: bool) -> Result<usize, StoreError> {
        if !self.shared {
            return Ok(0);
        }
        let mut stale = Vec::new();
        if all {
            let loaded = self.store.load().await?;
            let mut cached: HashMap<String, Option<Arc<StreamMeta>>> = (self.all_slots())
                .into_iter()
                .map(|s| (s.name.clone(), s.meta()))
                .collect();
            for (name, meta) in loaded.streams {
                match cached.remove(&name).flatten() {
                    Some(held) if *held == meta => {}
                    _ => stale.push(name),
                }
            }
            stale.extend(cached.into_keys());
        } else {
            let watched: Vec<Arc<Slot>> = self
                .all_slots()
                .into_iter()
                .filter(|s| s.watched())
                .collect();
            if watched.is_empty() {
                return Ok(0);
            }
            let names: Vec<String> = watched.iter().map(|s| s.name.clone()).collect();
            let fresh = self.store.load_metas(&names).await?;
            for (slot, meta) in watched.iter().zip(fresh) {
                if slot.meta().as_deref() != meta.as_ref() {
                    stale.push(slot.name.clone());
                }
            }
        }
        for name in &stale {
            self.refresh(name).await?;
        }
        Ok(stale.len())
    }

    /// How many streams this engine holds (soft-deleted ones included), for the stream cap.
    pub fn stream_count(&self) -> usize {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.len()
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
        self.refresh(name).await?;
        let slot = self.slot(name).ok_or_else(not_found)?;
        let meta = slot.meta().ok_or_else(not_found)?;
        if meta.soft_deleted {
            return Err(StreamError::Gone(name.to_owned()));
        }
        let now = now_ms();
        if expired(&slot, &meta, now) {
            self.expire(name).await?;
            // The expire may have lost to another host's write (an append that renewed the
            // TTL): then the slot holds the fresh, unexpired meta and the request goes on.
            let slot = self.slot(name).ok_or_else(not_found)?;
            return match slot.meta() {
                Some(m) if m.soft_deleted => Err(StreamError::Gone(name.to_owned())),
                Some(m) if !expired(&slot, &m, now_ms()) => {
                    if touch {
                        slot.touch(now_ms());
                    }
                    Ok((slot, m))
                }
                _ => Err(not_found()),
            };
        }
        if touch {
            slot.touch(now);
        }
        Ok((slot, meta))
    }

    /// Removes `name` if it has expired (checked again under the locks, and against what
    /// another host wrote meanwhile).
    pub async fn expire(&self, name: &str) -> Result<(), StreamError> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut next_id = self.structure.lock().await;
            let Some(slot) = self.slot(name) else {
                return Ok(());
            };
            let expired_now = slot.meta().is_some_and(|m| expired(&slot, &m, now_ms()));
            if !expired_now {
                return Ok(());
            }
            tracing::debug!(stream = name, "stream expired");
            match self.remove_locked(name, &mut next_id).await {
                Err(e) if is_conflict(&e) => {
                    drop(next_id);
                    backoff(attempt).await;
                }
                other => return other,
            }
        }
        Err(contended(name))
    }

    /// Deletes `name` (client DELETE): 404 / 410 like [`Engine::lookup`].
    pub async fn delete(&self, name: &str) -> Result<(), StreamError> {
        for attempt in 0..MAX_ATTEMPTS {
            self.lookup(name, false).await?;
            let mut next_id = self.structure.lock().await;
            let removed = match self.slot(name).and_then(|s| s.meta()) {
                None => Err(StreamError::NotFound(name.to_owned())),
                Some(m) if m.soft_deleted => Err(StreamError::Gone(name.to_owned())),
                Some(_) => self.remove_locked(name, &mut next_id).await,
            };
            drop(next_id);
            match removed {
                Err(e) if is_conflict(&e) => backoff(attempt).await,
                other => return other,
            }
        }
        Err(contended(name))
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
        set.expected.push((name.to_owned(), Some((*meta).clone())));
        if meta.forks > 0 {
            let mut hidden = (*meta).clone();
            hidden.soft_deleted = true;
            set.metas.push((name.to_owned(), Some(hidden.clone())));
            self.commit(set).await?;
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
                // Checked like the rest: if the store has it after all, the write is refused,
                // the source reloaded and the delete decided again.
                set.expected.push((fork.source.clone(), None));
                tracing::warn!(
                    stream = name,
                    source = fork.source,
                    "fork source is missing"
                );
                break;
            };
            guards.push(parent.lock().await);
            let held = parent.meta();
            if held.as_ref().is_none_or(|p| p.id != fork.source_id) {
                // This host holds an older stream of that name (or none): expecting it makes
                // the store refuse the write if the fork's real source is stored, so its fork
                // count is not left behind (the conflict reloads it and the caller retries).
                set.expected
                    .push((fork.source.clone(), held.as_deref().cloned()));
            }
            let Some(pmeta) = held.filter(|p| p.id == fork.source_id) else {
                tracing::warn!(
                    stream = name,
                    source = fork.source,
                    "fork source was replaced"
                );
                break;
            };
            set.expected
                .push((fork.source.clone(), Some((*pmeta).clone())));
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
        self.commit(set).await?;
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
        let expected = vec![(slot.name.clone(), Some((*meta).clone()))];
        let mut meta = (*meta).clone();
        meta.last_access_ms = touched;
        let set = WriteSet {
            metas: vec![(slot.name.clone(), Some(meta.clone()))],
            expected,
            ..WriteSet::default()
        };
        match self.commit(set).await {
            // Another host wrote (and so accessed) it meanwhile; the next sweep decides again.
            Err(e) if is_conflict(&e) => return Ok(()),
            other => other?,
        }
        slot.publish(Some(meta));
        Ok(())
    }
}
