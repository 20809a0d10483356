//! An in-memory materialized view: the current rows of every query, by signature. It is the
//! reference reaction for tests (a rebuilt view must equal one that never restarted) and a
//! ready-made read model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use liveresults_core::row::Value;

use crate::error::ReactionError;
use crate::reaction::{ChangeEvent, Delivery, Reaction, RowChange};

/// Rows of one query by signature.
pub type ViewRows = BTreeMap<u64, Value>;

/// The state of one query in the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewQuery {
    /// Current rows.
    pub rows: ViewRows,
    /// The last sequence applied.
    pub sequence: Option<u64>,
    /// The epoch of the last delivery.
    pub epoch: u64,
}

/// An in-memory materialized view of every query it is told about.
#[derive(Debug)]
pub struct MaterializedView {
    id: String,
    queries: Mutex<HashMap<String, ViewQuery>>,
}

impl MaterializedView {
    /// An empty view with reaction id `id`.
    pub fn new(id: impl Into<String>) -> Self {
        MaterializedView {
            id: id.into(),
            queries: Mutex::new(HashMap::new()),
        }
    }

    /// A copy of one query's state (empty if never seen).
    pub fn query(&self, query_id: &str) -> ViewQuery {
        self.lock().get(query_id).cloned().unwrap_or_default()
    }

    /// A copy of every query's rows.
    pub fn all_rows(&self) -> BTreeMap<String, ViewRows> {
        self.lock()
            .iter()
            .map(|(q, v)| (q.clone(), v.rows.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ViewQuery>> {
        // Each delivery applies completely under the lock, so a poisoned lock holds whole state.
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Reaction for MaterializedView {
    fn id(&self) -> &str {
        &self.id
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), ReactionError> {
        let mut queries = self.lock();
        let view = queries.entry(delivery.query_id().to_owned()).or_default();
        match delivery {
            Delivery::Reset { epoch, .. } => {
                *view = ViewQuery {
                    epoch: *epoch,
                    ..ViewQuery::default()
                };
            }
            Delivery::SnapshotRows { rows, .. } => {
                view.rows.extend(rows.iter().cloned());
            }
            Delivery::SnapshotDone { sequence, .. } => view.sequence = *sequence,
            Delivery::Change(change) => {
                for event in &change.events {
                    if let ChangeEvent::Rows { changes, .. } = event {
                        for c in changes {
                            match c {
                                RowChange::Upsert { signature, row } => {
                                    view.rows.insert(*signature, row.clone());
                                }
                                RowChange::Delete { signature } => {
                                    view.rows.remove(signature);
                                }
                            }
                        }
                    }
                }
                view.sequence = Some(change.span.last);
                view.epoch = change.epoch;
            }
        }
        Ok(())
    }
}
