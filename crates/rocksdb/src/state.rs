//! What the engine keeps in memory per query: its metadata, its outbox bookkeeping and the
//! signature index that lets a commit know which rows exist without reading them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use liveresults_core::codec::records::MetaRecord;
use liveresults_core::outbox_window::OutboxWindow;
use liveresults_core::signature_set::{SignatureMap, SignatureSet};
use liveresults_core::QueryInfo;

use crate::keys::QueryPrefix;

/// Whether a query's existing signatures are known in memory.
#[derive(Debug)]
pub(crate) enum SignatureIndex {
    /// Not built yet: the first commit after open builds it (inline for a small query, in the
    /// background for a large one).
    Unloaded,
    /// Every live signature of the query.
    Loaded(SignatureSet),
    /// The query does not fit the memory budget: commits check existence with `multi_get`.
    OverBudget,
    /// The background indexer is scanning the query's keys (see the `engine::index` module).
    /// Commits meanwhile check existence with `multi_get`, which is exact, and record what
    /// they changed in `delta`, so the scanned set can be brought up to date when it is
    /// installed: a commit that lands during the scan is never missing from the index.
    Building {
        /// Which rebuild this is: a clear or removal replaces the state, and a rebuild that
        /// finds another ticket (or none) abandons its scan.
        ticket: u64,
        /// Signature -> whether the row exists after the latest commit that touched it.
        delta: SignatureMap<bool>,
    },
    /// A background scan found the stored data inconsistent (the row count is not the
    /// number of rows, or a row key is malformed): commits to the query fail with this
    /// corruption, as they would if the scan had run inline, until the query is cleared.
    Corrupt {
        /// Which record is corrupt.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The mutable per-query state, behind the query's commit lock.
#[derive(Debug)]
pub(crate) struct QueryState {
    pub(crate) meta: MetaRecord,
    pub(crate) window: OutboxWindow,
    pub(crate) index: SignatureIndex,
    /// A removed marker may be on disk (the query was removed, and `meta.epoch` is the epoch
    /// it left): the next commit deletes it in its batch, so a marker and a meta record
    /// never exist together.
    pub(crate) removed_marker: bool,
}

/// One query as the engine tracks it.
#[derive(Debug)]
pub(crate) struct QueryHandle {
    pub(crate) query_id: String,
    pub(crate) prefix: QueryPrefix,
    /// Held for the whole of a commit or clear: commits to one query are serialised.
    pub(crate) state: Mutex<QueryState>,
    /// A copy of the committed metadata, locked only to copy it, so `row_count` and
    /// `query_info` never wait behind a commit's disk write. `None` while the query has no
    /// meta record on disk (not committed yet, or removed): it reads as unknown.
    pub(crate) published: Mutex<Option<MetaRecord>>,
}

impl QueryHandle {
    pub(crate) fn info_from(&self, meta: &MetaRecord) -> QueryInfo {
        QueryInfo {
            query_id: self.query_id.clone(),
            sequence: meta.sequence,
            row_count: meta.row_count,
            epoch: meta.epoch,
        }
    }

    /// The query's state as [`QueryHandle::published`] holds it.
    pub(crate) fn published_info(&self, published: Option<&MetaRecord>) -> QueryInfo {
        published.map_or_else(
            || QueryInfo::empty(&self.query_id),
            |meta| self.info_from(meta),
        )
    }
}

/// The signature-index memory budget shared by all queries, counted in rows.
#[derive(Debug)]
pub(crate) struct IndexBudget {
    limit_rows: u64,
    used_rows: AtomicU64,
}

impl IndexBudget {
    pub(crate) fn new(limit_rows: u64) -> Self {
        IndexBudget {
            limit_rows,
            used_rows: AtomicU64::new(0),
        }
    }

    /// Reserves room for `rows` more indexed signatures; false (nothing reserved) when the
    /// budget would be exceeded.
    pub(crate) fn try_reserve(&self, rows: u64) -> bool {
        self.used_rows
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(rows)
                    .filter(|&total| total <= self.limit_rows)
            })
            .is_ok()
    }

    /// Rows reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used_rows.load(Ordering::Acquire)
    }

    /// Returns room for `rows` signatures.
    pub(crate) fn release(&self, rows: u64) {
        let _ = self
            .used_rows
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(rows))
            });
    }
}
