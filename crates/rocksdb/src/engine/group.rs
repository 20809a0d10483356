//! Group commit: every commit queued at one moment, of any query, written as one
//! `WriteBatch` — one WAL record, one fsync with `sync_commits(true)` — and then answered one
//! by one. RocksDB groups concurrent writers itself, but only after each caller has paid a
//! thread hand-off and a lock; a commit of a few rows costs little more than that overhead,
//! so grouping one level up is what makes small commits cheap.
//!
//! What each commit keeps:
//!
//! - **Its own verdict.** Each commit is checked (sequence, existence, row count) against its
//!   query's state as the earlier commits of the same group leave it, before any of its keys
//!   go into the batch: an invalid commit is answered with its error and adds nothing, the
//!   others still land. Two commits to one query in one group therefore behave exactly as two
//!   consecutive writes.
//! - **Its atomicity.** A group is one batch: after a crash it is there whole or not at all,
//!   so each commit in it is too. A failed write (a full disk, a store gone read-only) fails
//!   every commit of the group, none of which landed, and leaves the in-memory state as it
//!   was: nothing is applied until the write has succeeded.
//! - **Its outbox entry and receipt.** Entries and evictions are planned per commit, in
//!   order; the receipt carries the sequence and row count right after that commit. The meta
//!   record is written once per query per group, with the state after its last commit.
//!
//! All the group's query locks are held from the first check to the in-memory update, so
//! readers (`read_outbox`) never see the window and the disk disagree, and the index never
//! diverges from what was written. Only the writer thread takes more than one such lock.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};

use liveresults_core::codec::records::{self, MetaRecord};
use liveresults_core::contract_rules::{check_sequence, next_row_count};
use liveresults_core::outbox_window::{OutboxPlan, OutboxWindow};
use liveresults_core::signature_set::SignatureMap;
use liveresults_core::{CommitReceipt, ErrorClass, SequenceSpan, StoreError};
use rocksdb::{ColumnFamily, WriteBatch};

use super::{Engine, CF_META, CF_OUTBOX, CF_ROWS};
use crate::owned::OwnedCommit;
use crate::state::{QueryHandle, QueryState, SignatureIndex};

/// One commit of a group: the query it goes to and its owned mutations.
pub(crate) type GroupCommit<'a> = (&'a str, &'a OwnedCommit);

/// One query's working state within a group: what its earlier commits in the group have
/// made of it, applied to the real state only after the write.
struct Work {
    meta: MetaRecord,
    /// The query's first outbox push in the group; later ones go to `window`.
    first_push: Option<(SequenceSpan, u64, OutboxPlan)>,
    /// The outbox window after every push so far, copied only once a second push needs it
    /// (the runtime sends one commit per query at a time, so this is rare).
    window: Option<OutboxWindow>,
    /// Signature -> exists, as left by this query's earlier commits in the group; kept only
    /// while more of its commits follow.
    overlay: Option<SignatureMap<bool>>,
    /// This query's commits in the group not yet staged.
    remaining: usize,
    /// This query's commits in the group that are in the batch.
    landed: usize,
}

/// A commit that is in the batch, waiting for the write.
struct Staged {
    index: usize,
    slot: usize,
    receipt: CommitReceipt,
}

/// The column families a commit writes.
struct Families<'a> {
    rows: &'a ColumnFamily,
    outbox: &'a ColumnFamily,
    meta: &'a ColumnFamily,
}

impl Engine {
    /// Commits one query's batch alone (a group of one).
    #[cfg(test)]
    pub(crate) fn commit(
        &self,
        query_id: &str,
        commit: &OwnedCommit,
    ) -> Result<CommitReceipt, StoreError> {
        let mut results = self.commit_group(&[(query_id, commit)]);
        results.pop().unwrap_or(Err(StoreError::Closed))
    }

    /// Commits a group in one write and returns each commit's outcome, in group order.
    pub(crate) fn commit_group(
        &self,
        group: &[GroupCommit<'_>],
    ) -> Vec<Result<CommitReceipt, StoreError>> {
        let mut results: Vec<Option<Result<CommitReceipt, StoreError>>> =
            group.iter().map(|_| None).collect();
        let families = match (self.cf(CF_ROWS), self.cf(CF_OUTBOX), self.cf(CF_META)) {
            (Ok(rows), Ok(outbox), Ok(meta)) => Families { rows, outbox, meta },
            (Err(err), ..) | (_, Err(err), _) | (.., Err(err)) => {
                let message = err.to_string();
                return group.iter().map(|_| Err(permanent(&message))).collect();
            }
        };

        // The query handles, one slot per query, loaded (or created) as needed.
        let mut handles: Vec<Arc<QueryHandle>> = Vec::new();
        let mut slot_of: Vec<Option<usize>> = Vec::with_capacity(group.len());
        let mut slots: HashMap<&str, usize> = HashMap::new();
        for (i, &(query_id, _)) in group.iter().enumerate() {
            if let Some(&slot) = slots.get(query_id) {
                slot_of.push(Some(slot));
                continue;
            }
            match self.writer_handle(query_id) {
                Ok(handle) => {
                    handles.push(handle);
                    slots.insert(query_id, handles.len() - 1);
                    slot_of.push(Some(handles.len() - 1));
                }
                Err(err) => {
                    results[i] = Some(Err(err));
                    slot_of.push(None);
                }
            }
        }

        let mut guards: Vec<Option<MutexGuard<'_, QueryState>>> =
            handles.iter().map(|h| h.state.lock().ok()).collect();
        let mut works: Vec<Option<Work>> = guards
            .iter()
            .map(|guard| {
                guard.as_ref().map(|state| Work {
                    meta: state.meta,
                    first_push: None,
                    window: None,
                    overlay: None,
                    remaining: 0,
                    landed: 0,
                })
            })
            .collect();
        for &slot in slot_of.iter().flatten() {
            if let Some(work) = works[slot].as_mut() {
                work.remaining += 1;
            }
        }

        let mut batch = WriteBatch::default();
        let mut staged: Vec<Staged> = Vec::with_capacity(group.len());
        for (i, &(_, commit)) in group.iter().enumerate() {
            let Some(slot) = slot_of[i] else { continue };
            let (Some(state), Some(work)) = (guards[slot].as_deref_mut(), works[slot].as_mut())
            else {
                results[i] = Some(Err(permanent("query lock poisoned by an earlier panic")));
                continue;
            };
            work.remaining -= 1;
            match self.stage(&handles[slot], state, work, commit, &families, &mut batch) {
                Ok(receipt) => {
                    work.landed += 1;
                    staged.push(Staged {
                        index: i,
                        slot,
                        receipt,
                    });
                }
                Err(err) => results[i] = Some(Err(err)),
            }
        }

        if !staged.is_empty() {
            for (slot, work) in works.iter().enumerate() {
                let (Some(work), Some(state)) = (work, guards[slot].as_deref()) else {
                    continue;
                };
                if work.landed == 0 {
                    continue;
                }
                let prefix = &handles[slot].prefix;
                batch.put_cf(
                    families.meta,
                    prefix.as_bytes(),
                    records::encode_meta(&work.meta),
                );
                if state.removed_marker {
                    batch.delete_cf(families.meta, prefix.removed_key());
                }
            }
            match self.db.write_opt(batch, &self.write_options) {
                Ok(()) => self.apply(group, &handles, &mut guards, &mut works, &staged),
                Err(err) => {
                    // Nothing of the group landed, and nothing in memory changed.
                    for s in &staged {
                        results[s.index] = Some(Err(self.rocks(err.clone())));
                    }
                    staged.clear();
                }
            }
        }
        drop(guards);
        for s in staged {
            results[s.index] = Some(Ok(s.receipt));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(permanent("commit left unanswered by its group"))))
            .collect()
    }

    /// Checks one commit against its query's working state and appends its keys to the batch;
    /// nothing is appended unless every check passed.
    fn stage(
        &self,
        handle: &Arc<QueryHandle>,
        state: &mut QueryState,
        work: &mut Work,
        commit: &OwnedCommit,
        families: &Families<'_>,
        batch: &mut WriteBatch,
    ) -> Result<CommitReceipt, StoreError> {
        let query_id = handle.query_id.as_str();
        if let Some(span) = commit.sequence {
            check_sequence(query_id, work.meta.sequence, span)?;
        }
        self.ensure_index(handle, state)?;
        if let SignatureIndex::Corrupt { what, detail } = &state.index {
            return Err(StoreError::corrupt(what.clone(), detail));
        }
        let exists = self.existence(handle, state, work.overlay.as_ref(), commit)?;
        let (mut inserted, mut deleted) = (0u64, 0u64);
        for ((_, data), &existed) in commit.ops().zip(&exists) {
            match data {
                Some(_) => inserted += u64::from(!existed),
                None => deleted += u64::from(existed),
            }
        }
        // Checked before anything is appended: a stored count that cannot absorb this commit
        // is corrupt, and the commit fails whole.
        let row_count = next_row_count(query_id, work.meta.row_count, inserted, deleted)?;

        let mut key = handle.prefix.with_u64(0);
        for ((sig, data), &existed) in commit.ops().zip(&exists) {
            handle.prefix.set_u64(&mut key, sig);
            match data {
                Some(data) => batch.put_cf(families.rows, &key, data),
                // Deleting an absent row needs no tombstone.
                None if existed => batch.delete_cf(families.rows, &key),
                None => {}
            }
        }
        if let Some(span) = commit.sequence {
            let bytes = commit.payload.len() as u64;
            if let (Some(first), None) = (&work.first_push, &work.window) {
                let mut window = state.window.clone();
                window.apply_push(first.0, first.1, &first.2);
                work.window = Some(window);
            }
            let plan = work
                .window
                .as_ref()
                .unwrap_or(&state.window)
                .plan_push(bytes, self.options.retention);
            for evicted in &plan.evict {
                batch.delete_cf(families.outbox, handle.prefix.with_u64(evicted.last));
            }
            let value = records::encode_outbox(span.first, &commit.payload);
            batch.put_cf(families.outbox, handle.prefix.with_u64(span.last), value);
            work.meta.sequence = Some(span.last);
            work.meta.evicted_through = plan.evicted_through;
            match &mut work.window {
                Some(window) => window.apply_push(span, bytes, &plan),
                None => work.first_push = Some((span, bytes, plan)),
            }
        }
        work.meta.row_count = row_count;
        if work.remaining > 0 {
            let overlay = work.overlay.get_or_insert_with(SignatureMap::default);
            for (sig, data) in commit.ops() {
                overlay.insert(sig, data.is_some());
            }
        }
        Ok(CommitReceipt {
            sequence: work.meta.sequence,
            row_count,
            inserted,
            deleted,
        })
    }

    /// Which of the commit's signatures exist now: from the group's earlier commits, else
    /// from the index, else from one batched read.
    fn existence(
        &self,
        handle: &QueryHandle,
        state: &QueryState,
        overlay: Option<&SignatureMap<bool>>,
        commit: &OwnedCommit,
    ) -> Result<Vec<bool>, StoreError> {
        let mut exists: Vec<bool> = match &state.index {
            SignatureIndex::Loaded(set) => {
                commit.ops().map(|(sig, _)| set.contains(&sig)).collect()
            }
            _ => {
                let keys: Vec<_> = commit
                    .ops()
                    .map(|(sig, _)| handle.prefix.with_u64(sig))
                    .collect();
                self.db
                    .batched_multi_get_cf(self.cf(CF_ROWS)?, &keys, false)
                    .into_iter()
                    .map(|r| r.map(|v| v.is_some()).map_err(|e| self.rocks(e)))
                    .collect::<Result<_, _>>()?
            }
        };
        if let Some(overlay) = overlay {
            for ((sig, _), existed) in commit.ops().zip(exists.iter_mut()) {
                if let Some(&now) = overlay.get(&sig) {
                    *existed = now;
                }
            }
        }
        Ok(exists)
    }

    /// Brings the in-memory state up to the written group: publish each query's new meta
    /// (a snapshot may already see it), then its outbox window and index, commit by commit.
    fn apply(
        &self,
        group: &[GroupCommit<'_>],
        handles: &[Arc<QueryHandle>],
        guards: &mut [Option<MutexGuard<'_, QueryState>>],
        works: &mut [Option<Work>],
        staged: &[Staged],
    ) {
        for (slot, work) in works.iter_mut().enumerate() {
            let (Some(work), Some(state)) = (work.as_mut(), guards[slot].as_deref_mut()) else {
                continue;
            };
            if work.landed == 0 {
                continue;
            }
            // The write landed: publish it even if a panic elsewhere poisoned the lock.
            *handles[slot]
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(work.meta);
            state.removed_marker = false;
            if let Some(window) = work.window.take() {
                state.window = window;
            } else if let Some((span, bytes, plan)) = work.first_push.take() {
                state.window.apply_push(span, bytes, &plan);
            }
            state.meta = work.meta;
        }
        for s in staged {
            if let Some(state) = guards[s.slot].as_deref_mut() {
                let commit = group[s.index].1;
                self.update_index(state, commit.ops(), s.receipt.inserted, s.receipt.deleted);
            }
        }
    }
}

fn permanent(message: &str) -> StoreError {
    StoreError::Backend {
        backend: "rocksdb",
        class: ErrorClass::Permanent,
        message: message.to_owned(),
    }
}
