//! The signature index of each query: which signatures exist, so a commit keeps the row count
//! exact without reading the rows it touches.
//!
//! After a reopen the index has to be rebuilt by a key-only scan of the query's rows (about
//! 0.35–0.4 s per million rows). A small query is scanned inline by the commit that needs the
//! index. A large one is scanned in the background by the indexer thread, so the first commit
//! after a reopen does not wait for it: meanwhile commits check existence with one batched
//! `multi_get` (exact, as for queries over the memory budget) and record what they changed
//! in the state's `delta`. When the scan ends, the indexer takes the query's commit lock,
//! applies the delta to the scanned set and installs it. The switch needs no pause and misses
//! nothing: recording starts before the first key is read, so any commit the scan may not
//! have seen is in the delta, and the delta holds the latest state of every signature in it.
//! The scanned set plus delta must hold exactly the stored row count, as the inline build
//! checks too; otherwise the meta record is corrupt and commits to the query say so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};

use liveresults_core::signature_set::{SignatureMap, SignatureSet};
use liveresults_core::StoreError;
use rocksdb::ReadOptions;

use super::{poisoned, Engine, CF_ROWS};
use crate::keys;
use crate::state::{QueryHandle, QueryState, SignatureIndex};

/// Queries of at most this many rows are indexed inline by the commit that needs the index:
/// about 1.5 ms of scanning, cheaper than a thread hand-off and a fallback read per commit.
pub(crate) const INLINE_INDEX_ROWS: u64 = 4096;
/// Keys a background scan reads before it lets go of the database: `close` waits for at
/// most one chunk (a few milliseconds), and a removed or cleared query stops being scanned
/// within one.
const SCAN_CHUNK_KEYS: usize = 32_768;

/// The background indexer: one thread, started on first need, scanning one query at a time.
#[derive(Default)]
pub(crate) struct Indexer {
    /// The queue to the thread; `None` until it is started, and again once the store closes.
    queue: Mutex<Option<Sender<Rebuild>>>,
    gate: Arc<Gate>,
    tickets: AtomicU64,
}

/// What `close` and the thread share, outside the engine so it outlives it.
#[derive(Default)]
struct Gate {
    /// Set by `close`: the thread starts no further chunk.
    closing: AtomicBool,
    /// Held by the thread for each chunk, while it holds a strong reference to the engine:
    /// taking it tells `close` that the thread no longer uses the database.
    busy: Mutex<()>,
    /// Tests hold this to stop a finished scan before it is installed.
    #[cfg(test)]
    before_install: Mutex<()>,
    /// Set once a scan has read every key, before `before_install` is taken.
    #[cfg(test)]
    scanned: AtomicBool,
}

/// One rebuild: the query, its ticket (see [`SignatureIndex::Building`]) and the index rows
/// reserved from the budget for it.
struct Rebuild {
    handle: Arc<QueryHandle>,
    ticket: u64,
    reserved: u64,
}

impl Indexer {
    /// Stops background scans for good and waits until the thread has let go of the
    /// database, so a store closed by its last handle really is closed when `close` returns.
    pub(crate) fn stop(&self) {
        self.gate.closing.store(true, Ordering::Release);
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        let _idle = self.gate.busy.lock();
    }

    /// Queues a rebuild, starting the thread if needed; gives it back when that is impossible
    /// (the store is closing, or no thread could be started).
    fn submit(&self, engine: &Weak<Engine>, rebuild: Rebuild) -> Result<(), Rebuild> {
        if self.gate.closing.load(Ordering::Acquire) {
            return Err(rebuild);
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Err(rebuild);
        };
        if queue.is_none() {
            let (tx, rx) = mpsc::channel();
            let (engine, gate) = (engine.clone(), Arc::clone(&self.gate));
            let started = std::thread::Builder::new()
                .name("liveresults-indexer".into())
                .spawn(move || run(&engine, &gate, &rx));
            if let Err(err) = started {
                tracing::warn!(%err, "cannot start the index thread; indexing inline");
                return Err(rebuild);
            }
            *queue = Some(tx);
        }
        let Some(tx) = queue.as_ref() else {
            return Err(rebuild);
        };
        tx.send(rebuild).map_err(|mpsc::SendError(rebuild)| {
            // The thread is gone (it only ends with the engine): start afresh next time.
            *queue = None;
            rebuild
        })
    }
}

fn run(engine: &Weak<Engine>, gate: &Gate, jobs: &Receiver<Rebuild>) {
    while let Ok(job) = jobs.recv() {
        rebuild(engine, gate, &job);
    }
}

/// Scans one query chunk by chunk, then installs the index (or gives up, returning the
/// reservation, once the query has moved on).
fn rebuild(engine: &Weak<Engine>, gate: &Gate, job: &Rebuild) {
    let mut set = SignatureSet::default();
    set.reserve(usize::try_from(job.reserved).unwrap_or(0));
    let mut resume = None;
    loop {
        // Declared before the engine, so the engine reference is dropped first.
        let Ok(_busy) = gate.busy.lock() else { return };
        if gate.closing.load(Ordering::Acquire) {
            return;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if !engine.still_building(job) {
            engine.budget.release(job.reserved);
            return;
        }
        match engine.scan_keys(&job.handle, &mut set, &mut resume, SCAN_CHUNK_KEYS) {
            Ok(false) => {}
            Ok(true) => {
                #[cfg(test)]
                let _held = {
                    gate.scanned.store(true, Ordering::Release);
                    gate.before_install.lock()
                };
                engine.install(job, set);
                return;
            }
            Err(err) => {
                engine.scan_failed(job, err);
                return;
            }
        }
    }
}

impl Engine {
    /// Makes sure the query's index is usable or being built: an unloaded index is built
    /// inline for a small query, handed to the indexer for a large one.
    pub(super) fn ensure_index(
        &self,
        handle: &Arc<QueryHandle>,
        state: &mut QueryState,
    ) -> Result<(), StoreError> {
        if !matches!(state.index, SignatureIndex::Unloaded) {
            return Ok(());
        }
        let rows = state.meta.row_count;
        if rows <= INLINE_INDEX_ROWS {
            return self.load_index(handle, state);
        }
        if !self.budget.try_reserve(rows) {
            state.index = SignatureIndex::OverBudget;
            return Ok(());
        }
        let ticket = self.indexer.tickets.fetch_add(1, Ordering::Relaxed);
        state.index = SignatureIndex::Building {
            ticket,
            delta: SignatureMap::default(),
        };
        let job = Rebuild {
            handle: Arc::clone(handle),
            ticket,
            reserved: rows,
        };
        if self.indexer.submit(&self.me, job).is_err() {
            // No background thread: build inline, as a store without one always did.
            self.budget.release(rows);
            state.index = SignatureIndex::Unloaded;
            return self.load_index(handle, state);
        }
        Ok(())
    }

    /// Builds the signature index inline with a key-only scan, if the budget allows.
    fn load_index(&self, handle: &QueryHandle, state: &mut QueryState) -> Result<(), StoreError> {
        let rows = state.meta.row_count;
        if !self.budget.try_reserve(rows) {
            state.index = SignatureIndex::OverBudget;
            return Ok(());
        }
        let mut set = SignatureSet::default();
        set.reserve(usize::try_from(rows).unwrap_or(0));
        if let Err(err) = self.scan_keys(handle, &mut set, &mut None, usize::MAX) {
            self.budget.release(rows);
            return Err(err);
        }
        if set.len() as u64 != rows {
            self.budget.release(rows);
            return Err(count_mismatch(&handle.query_id, rows, set.len() as u64));
        }
        state.index = SignatureIndex::Loaded(set);
        Ok(())
    }

    /// Adds up to `limit` of the query's signatures to `set`, starting at key `resume` (the
    /// query's first key when `None`). True when the query's keys are exhausted; otherwise
    /// `resume` is left at the first key not read.
    fn scan_keys(
        &self,
        handle: &QueryHandle,
        set: &mut SignatureSet,
        resume: &mut Option<Vec<u8>>,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(handle.prefix.successor());
        read.fill_cache(false);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_ROWS)?, read);
        iter.seek(resume.as_deref().unwrap_or(handle.prefix.as_bytes()));
        let mut read_keys = 0;
        while let Some(key) = iter.key() {
            if read_keys == limit {
                *resume = Some(key.to_vec());
                return iter.status().map(|()| false).map_err(|e| self.rocks(e));
            }
            let sig = keys::split_key(key)
                .and_then(|(_, rest)| keys::u64_suffix(rest))
                .ok_or_else(|| StoreError::corrupt_key("row", &handle.query_id, key))?;
            set.insert(sig);
            read_keys += 1;
            iter.next();
        }
        iter.status().map(|()| true).map_err(|e| self.rocks(e))
    }

    /// Whether the query still waits for this rebuild (no clear, removal or newer rebuild
    /// replaced it).
    fn still_building(&self, job: &Rebuild) -> bool {
        job.handle.state.lock().is_ok_and(
            |state| matches!(state.index, SignatureIndex::Building { ticket, .. } if ticket == job.ticket),
        )
    }

    /// Brings the scanned set up to date with the commits made during the scan and installs
    /// it, under the commit lock so that no commit falls between the two.
    fn install(&self, job: &Rebuild, mut set: SignatureSet) {
        let Ok(mut state) = job.handle.state.lock().map_err(poisoned) else {
            self.budget.release(job.reserved);
            return;
        };
        let delta = match &mut state.index {
            SignatureIndex::Building { ticket, delta } if *ticket == job.ticket => {
                std::mem::take(delta)
            }
            _ => {
                self.budget.release(job.reserved);
                return;
            }
        };
        for (sig, present) in delta {
            if present {
                set.insert(sig);
            } else {
                set.remove(&sig);
            }
        }
        let found = set.len() as u64;
        let stored = state.meta.row_count;
        if found != stored {
            self.budget.release(job.reserved);
            let err = count_mismatch(&job.handle.query_id, stored, found);
            tracing::error!(query_id = %job.handle.query_id, %err, "signature index rebuild");
            state.index = corrupt_index(err);
            return;
        }
        if found > job.reserved && !self.budget.try_reserve(found - job.reserved) {
            // Grew past the budget while scanning: stay on batched reads.
            self.budget.release(job.reserved);
            state.index = SignatureIndex::OverBudget;
            return;
        }
        self.budget.release(job.reserved.saturating_sub(found));
        state.index = SignatureIndex::Loaded(set);
        tracing::debug!(query_id = %job.handle.query_id, rows = found, "signature index built");
    }

    /// A scan that failed: corrupt keys make the query's commits fail as corrupt (as an
    /// inline build would); any other error leaves the index unloaded, so a later commit
    /// starts a new scan.
    fn scan_failed(&self, job: &Rebuild, err: StoreError) {
        self.budget.release(job.reserved);
        tracing::warn!(query_id = %job.handle.query_id, %err, "signature index rebuild failed");
        let Ok(mut state) = job.handle.state.lock() else {
            return;
        };
        if matches!(state.index, SignatureIndex::Building { ticket, .. } if ticket == job.ticket) {
            state.index = match err {
                StoreError::Corrupt { .. } => corrupt_index(err),
                _ => SignatureIndex::Unloaded,
            };
        }
    }

    /// Records a landed commit's effect in the index: the set itself, or the delta of a
    /// rebuild in progress.
    pub(super) fn update_index<'a>(
        &self,
        state: &mut QueryState,
        ops: impl Iterator<Item = (u64, Option<&'a [u8]>)>,
        inserted: u64,
        deleted: u64,
    ) {
        match &mut state.index {
            SignatureIndex::Loaded(set) => {
                if inserted > deleted && !self.budget.try_reserve(inserted - deleted) {
                    // Grew past the budget: give the memory back and fall back to batched reads.
                    self.budget.release(set.len() as u64);
                    state.index = SignatureIndex::OverBudget;
                    return;
                }
                self.budget.release(deleted.saturating_sub(inserted));
                for (sig, data) in ops {
                    if data.is_some() {
                        set.insert(sig);
                    } else {
                        set.remove(&sig);
                    }
                }
            }
            SignatureIndex::Building { delta, .. } => {
                for (sig, data) in ops {
                    delta.insert(sig, data.is_some());
                }
            }
            _ => {}
        }
    }
}

fn count_mismatch(query_id: &str, stored: u64, found: u64) -> StoreError {
    StoreError::corrupt_meta(
        query_id,
        format_args!("row count {stored} but {found} rows stored"),
    )
}

/// The index state that makes every commit to the query fail with `err`.
fn corrupt_index(err: StoreError) -> SignatureIndex {
    match err {
        StoreError::Corrupt { what, detail } => SignatureIndex::Corrupt { what, detail },
        other => SignatureIndex::Corrupt {
            what: "signature index".into(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
