//! Resuming a source after what is already committed: the one place that decides whether an
//! incoming event can be passed over without submitting it.
//!
//! Every source that can deliver an event again — an NDJSON file replayed after an
//! interruption, a Redis stream entry redelivered after a crash between the commit and its
//! acknowledgement — asks [`CommittedSequences::covers`] first. Passing such events over is
//! an optimisation and a reporting aid, not what makes redelivery safe: the pipeline skips
//! an event at or below the committed sequence anyway.

use std::collections::HashMap;

use liveresults_core::formats::Event;

use crate::error::SubmitError;
use crate::runtime::RuntimeHandle;

/// The committed sequence of each query, looked up once per query and then remembered.
///
/// The runtime's own status is asked first (in memory, and current: it follows every commit
/// and clear of this runtime); a query the runtime has not seen yet is read from the store.
/// What is remembered is not refreshed, so a long-lived source should start a new one now
/// and then (the Redis Streams source takes a new one per read) so that a clear made in the
/// meantime, which lowers the committed sequence, is seen.
#[derive(Debug, Default)]
pub struct CommittedSequences {
    known: HashMap<String, Option<u64>>,
}

impl CommittedSequences {
    /// Nothing looked up yet.
    pub fn new() -> Self {
        CommittedSequences::default()
    }

    /// Whether `event` is at or below its query's committed sequence, i.e. already
    /// committed and safe to pass over. Fails only when the store cannot be read.
    pub async fn covers(
        &mut self,
        handle: &RuntimeHandle,
        event: &Event,
    ) -> Result<bool, SubmitError> {
        let committed = self.committed(handle, event.query_id()).await?;
        Ok(committed.is_some_and(|c| event.sequence() <= c))
    }

    /// The committed sequence of `query_id` (looked up on first use).
    pub async fn committed(
        &mut self,
        handle: &RuntimeHandle,
        query_id: &str,
    ) -> Result<Option<u64>, SubmitError> {
        if let Some(committed) = self.known.get(query_id) {
            return Ok(*committed);
        }
        let committed = match handle.status(query_id) {
            Some(status) => status.sequence,
            None => {
                handle
                    .store()
                    .query_info(query_id)
                    .await
                    .map_err(|source| SubmitError::Store {
                        query_id: query_id.to_owned(),
                        committed: None,
                        source,
                    })?
                    .sequence
            }
        };
        self.known.insert(query_id.to_owned(), committed);
        Ok(committed)
    }
}
