//! What travels between the handle and a query's pipeline: the queued work (`Envelope`) and the
//! answer to each submitted event (`Applied`). Kept apart from both ends so that neither the
//! handle nor the pipeline has to import the other.

use liveresults_core::formats::Event;
use liveresults_core::QueryInfo;
use tokio::sync::oneshot;

use crate::error::SubmitError;

/// What happened to a submitted event (or atomic batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Committed durably; `sequence` is the commit's last sequence.
    Committed {
        /// The query's committed sequence after the commit.
        sequence: u64,
    },
    /// Already committed before (a redelivery); nothing changed.
    Skipped {
        /// The query's committed sequence.
        committed: Option<u64>,
    },
    /// A `deleted` signal: the query's results were cleared and it no longer accepts events.
    Deprovisioned,
}

/// Where a pipeline answers one submitted event or batch.
pub(crate) type Ack = oneshot::Sender<Result<Applied, SubmitError>>;

/// Where a pipeline answers an operator's removal: with what the query was.
pub(crate) type RemoveAck = oneshot::Sender<Result<QueryInfo, SubmitError>>;

/// What a pipeline's queue carries.
pub(crate) enum Envelope {
    /// One event, acknowledged once committed (or skipped) when `ack` is given.
    Event(Box<Event>, Option<Ack>),
    /// Events committed as ONE atomic commit (an ingest chunk).
    Batch(Vec<Event>, Ack),
    /// An operator's clear: reset the query (and restart it if stopped).
    Clear(oneshot::Sender<Result<QueryInfo, SubmitError>>),
    /// An operator's resume: re-read the committed position and accept events again.
    Resume(oneshot::Sender<Result<QueryInfo, SubmitError>>),
    /// An operator's removal (a purge): remove the query everywhere and retire the pipeline;
    /// what is queued behind it is refused. Answered with what the query was.
    Remove(RemoveAck),
}

impl Envelope {
    /// The query the envelope is for: an event names its own (so submitting one copies no
    /// id); everything else is queued for `given`.
    pub(crate) fn query_id<'a>(&'a self, given: &'a str) -> &'a str {
        match self {
            Envelope::Event(event, _) => event.query_id(),
            _ => given,
        }
    }
}
