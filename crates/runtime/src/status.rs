//! Per-query status and position watchers, shared by the pipelines and whoever observes them.

use std::collections::HashMap;
use std::sync::Mutex;

use liveresults_core::formats::ControlSignal;
use tokio::sync::watch;

use crate::error::StopReason;

/// Whether a query accepts events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryState {
    /// Accepting and committing events.
    Running,
    /// Stopped; nothing is accepted until the query is cleared.
    Stopped(StopReason),
}

/// What the runtime knows about one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStatus {
    /// The query.
    pub query_id: String,
    /// Running or stopped (and why).
    pub state: QueryState,
    /// Last committed sequence.
    pub sequence: Option<u64>,
    /// Exact live rows after the last commit.
    pub row_count: u64,
    /// Clears so far.
    pub epoch: u64,
    /// The last lifecycle signal upstream sent (`running`, `stopped`, ...).
    pub upstream: Option<ControlSignal>,
    /// Set after an AutoReset until upstream starts a new bootstrap.
    pub awaiting_bootstrap: bool,
    /// Atomic commits made.
    pub commits: u64,
    /// Events skipped as already committed (redeliveries).
    pub skipped: u64,
    /// Sequence gaps seen.
    pub gaps: u64,
    /// Upstream source time (ms since the Unix epoch) of the newest committed event that
    /// carried one: how fresh the committed results are, for lag monitoring.
    pub source_time_ms: Option<u64>,
    /// Wall-clock time (ms since the Unix epoch) at which this host last committed to the
    /// query (`None`: not since it started here). Operators ask "is anything arriving?", which
    /// the sequence alone cannot answer.
    pub last_commit_ms: Option<u64>,
    /// How far each reaction has processed this query, in the runtime's reaction order.
    /// Filled in when the status is read through the runtime's handle.
    pub reactions: Vec<ReactionLag>,
}

/// One reaction's progress on one query, next to the query's committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionLag {
    /// The reaction's id.
    pub reaction: String,
    /// The epoch of the newest delivery the reaction has processed.
    pub epoch: u64,
    /// The newest sequence it has processed in that epoch (`None`: nothing since the reset).
    pub sequence: Option<u64>,
    /// Committed sequences it has not processed yet: the committed sequence minus its own in
    /// the same epoch, or the whole committed sequence while it is still in an older epoch.
    /// Sequences, not commits: a gap skipped upstream counts as lag until processed.
    pub lag: u64,
    /// Why the reaction failed for this query, if it did; it receives nothing more for the
    /// query until the query is reset, so its lag stops shrinking.
    pub failure: Option<String>,
}

impl ReactionLag {
    /// The lag of a reaction at `processed` behind `committed` (see [`ReactionLag::lag`]).
    pub(crate) fn sequences_behind(processed: Position, committed: Position) -> u64 {
        let committed_sequence = committed.sequence.unwrap_or(0);
        match processed.epoch.cmp(&committed.epoch) {
            std::cmp::Ordering::Less => committed_sequence,
            std::cmp::Ordering::Equal => {
                committed_sequence.saturating_sub(processed.sequence.unwrap_or(0))
            }
            // Only while a clear is being published: the reaction already has the new epoch.
            std::cmp::Ordering::Greater => 0,
        }
    }
}

impl QueryStatus {
    fn new(query_id: &str) -> Self {
        QueryStatus {
            query_id: query_id.to_owned(),
            state: QueryState::Running,
            sequence: None,
            row_count: 0,
            epoch: 0,
            upstream: None,
            awaiting_bootstrap: false,
            commits: 0,
            skipped: 0,
            gaps: 0,
            source_time_ms: None,
            last_commit_ms: None,
            reactions: Vec::new(),
        }
    }
}

/// A query's position: what is committed (change-feed readers wait on it), or what a reaction
/// has processed. Positions order by epoch, then sequence (`None`, nothing yet in the epoch,
/// first): a clear starts a new epoch that is ahead of everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The query's epoch.
    pub epoch: u64,
    /// The sequence in that epoch (`None`: nothing committed, or processed, since the clear).
    pub sequence: Option<u64>,
}

struct Entry {
    status: QueryStatus,
    /// The newest position commit notices reported (commits made by other hosts sharing the
    /// store). The published position is the later of this and the status's own.
    noticed: Position,
    position: watch::Sender<Position>,
}

impl Entry {
    fn new(query_id: &str) -> Self {
        Entry {
            status: QueryStatus::new(query_id),
            noticed: Position::default(),
            position: watch::Sender::new(Position::default()),
        }
    }

    /// Publishes the later of the own and the noticed position, waking watchers if it moved.
    fn publish(&self) {
        let own = Position {
            epoch: self.status.epoch,
            sequence: self.status.sequence,
        };
        let position = own.max(self.noticed);
        self.position.send_if_modified(|p| {
            let changed = *p != position;
            *p = position;
            changed
        });
    }
}

/// Status of every query the runtime has seen, plus a position watch per query.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    /// Updates (creating if needed) a query's status and publishes its position.
    pub(crate) fn update(&self, query_id: &str, f: impl FnOnce(&mut QueryStatus)) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Looked up before inserting: `entry` would copy the id on every commit.
        if !entries.contains_key(query_id) {
            entries.insert(query_id.to_owned(), Entry::new(query_id));
        }
        let Some(entry) = entries.get_mut(query_id) else {
            return;
        };
        f(&mut entry.status);
        entry.publish();
    }

    /// A commit (or clear) another host made, from the store's commit notices: moves the
    /// query's watched position forward so change-feed readers here wake. Only queries
    /// someone here watches (or this runtime has seen) have an entry; a reader that starts
    /// watching later reads the store first anyway. Positions only move forward: notices of
    /// this host's own commits arrive after the pipeline published them, possibly after later
    /// ones. A notice of an empty query (removed) wakes the watchers without moving.
    pub(crate) fn observe(&self, query_id: &str, noticed: Position) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let Some(entry) = entries.get_mut(query_id) else {
            return;
        };
        if noticed == Position::default() {
            entry.position.send_modify(|_| {});
        } else if noticed > entry.noticed {
            entry.noticed = noticed;
            entry.publish();
        }
    }

    /// Wakes every watcher of every query without moving any position: notices were lost
    /// (a slow subscriber, a reconnect), so any query may have changed and every reader must
    /// look at the store again.
    pub(crate) fn wake_all(&self) {
        let Ok(entries) = self.entries.lock() else {
            return;
        };
        for entry in entries.values() {
            entry.position.send_modify(|_| {});
        }
    }

    /// Forgets a query (it was removed): its status goes, and whoever watches its position
    /// sees the watch close, so a parked change-feed reader looks at the store again.
    pub(crate) fn remove(&self, query_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(query_id);
        }
    }

    /// [`Registry::remove`], unless `keep` (asked under the registry's lock) says otherwise.
    /// Returns whether an entry was removed.
    pub(crate) fn remove_unless(&self, query_id: &str, keep: impl FnOnce() -> bool) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        !keep() && entries.remove(query_id).is_some()
    }

    pub(crate) fn get(&self, query_id: &str) -> Option<QueryStatus> {
        self.entries
            .lock()
            .ok()?
            .get(query_id)
            .map(|e| e.status.clone())
    }

    /// The query's committed position (the default for a query never seen).
    pub(crate) fn position(&self, query_id: &str) -> Position {
        self.entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(query_id).map(|e| *e.position.borrow()))
            .unwrap_or_default()
    }

    pub(crate) fn all(&self) -> Vec<QueryStatus> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = entries.values().map(|e| e.status.clone()).collect();
        all.sort_by(|a, b| a.query_id.cmp(&b.query_id));
        all
    }

    /// A receiver of the query's position; subscribe before reading so no commit is missed.
    pub(crate) fn watch(&self, query_id: &str) -> watch::Receiver<Position> {
        self.update(query_id, |_| {});
        match self.entries.lock() {
            Ok(entries) => match entries.get(query_id) {
                Some(e) => e.position.subscribe(),
                None => watch::channel(Position::default()).1,
            },
            Err(_) => watch::channel(Position::default()).1,
        }
    }
}
