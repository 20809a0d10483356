//! What a refusal by the runtime does: which refusals end the run, which pause only the
//! refused entry's stream, and where each stream's reading stands.
//!
//! A refusal concerns one query (its stream's), so it must not stop the other streams, and
//! the refused entry must not be acknowledged (it was not committed) nor passed over (the
//! next one would be a gap). So its stream pauses: nothing more of it is read or submitted;
//! once every entry of it in flight was answered, it waits (a pause that doubles with each
//! refusal in a row), then reads its pending entries again from the oldest, one at a time
//! until one passes. An entry refused *for good* — its query stopped by a sequence gap, or
//! deleted upstream: nothing changes that but an operator — is moved to the dead-letter stream
//! with the refusal as the reason once Redis counts `max_deliveries` deliveries of it
//! (restarts included), so a poison entry cannot wedge its stream across restarts forever.
//! Refusals that pass by themselves or are no fault of the entry (a full queue, another host
//! owning the query, a store failure) pause and retry without ever dead-lettering.

use std::time::Duration;

use liveresults_runtime::{StopReason, SubmitError};
use tokio::time::Instant;

/// How a refusal is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The runtime is going away: the run ends.
    Fatal,
    /// The entry's query refuses it until an operator acts: paused, dead-lettered after
    /// `max_deliveries`.
    Permanent,
    /// Expected to pass, or no fault of the entry: paused and retried.
    Temporary,
}

/// Classifies a refusal.
pub(crate) fn kind(error: &SubmitError) -> Kind {
    match error {
        SubmitError::ShuttingDown => Kind::Fatal,
        SubmitError::QueryStopped { reason, .. } => match reason {
            // A store failure is the store's, not the entry's; a lost lease moves the query
            // to another host; a removed query is re-created by the next submit.
            StopReason::Store(_) | StopReason::LeaseLost | StopReason::Removed => Kind::Temporary,
            _ => Kind::Permanent,
        },
        // One event at a time cannot mix queries; should it happen, no retry cures it.
        SubmitError::WrongQuery { .. } => Kind::Permanent,
        _ => Kind::Temporary,
    }
}

/// Where one stream's reading stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading this consumer's pending entries after `after`, oldest first (then new ones).
    /// With `probe`, one at a time until one is answered without a refusal: after a refusal
    /// or a restart, only the oldest entry's delivery count grows while its query refuses.
    Pending { after: String, probe: bool },
    /// Reading new entries.
    Live,
    /// Refused: nothing of the stream is read or submitted. `head` is its oldest refused
    /// entry and `error` why; `until` is set (or the head dead-lettered) once nothing of the
    /// stream is in flight.
    Paused {
        head: String,
        error: SubmitError,
        until: Option<Instant>,
    },
}

/// One stream's reading and its next pause.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub phase: Phase,
    /// How long the next pause lasts.
    pub pause: Duration,
}

impl StreamState {
    pub fn new(pause: Duration) -> Self {
        StreamState {
            phase: Phase::Pending {
                after: "0".to_owned(),
                probe: true,
            },
            pause,
        }
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.phase, Phase::Paused { .. })
    }

    /// Reads again from this consumer's oldest pending entry, one at a time.
    pub fn probe(&mut self) {
        self.phase = Phase::Pending {
            after: "0".to_owned(),
            probe: true,
        };
    }

    /// Notes the refusal of entry `id`: the stream pauses, and its head is the oldest entry
    /// refused.
    pub fn refused(&mut self, id: String, error: SubmitError) {
        match &mut self.phase {
            Phase::Paused {
                head, error: why, ..
            } => {
                if order(&id) < order(head) {
                    *head = id;
                    *why = error;
                }
            }
            phase => {
                *phase = Phase::Paused {
                    head: id,
                    error,
                    until: None,
                }
            }
        }
    }
}

/// An entry id (`<ms>-<seq>`) as numbers, for ordering (anything else sorts last).
pub(crate) fn order(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .unwrap_or((u64::MAX, u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(reason: StopReason) -> SubmitError {
        SubmitError::QueryStopped {
            query_id: "q".into(),
            reason,
            committed: Some(1),
        }
    }

    #[test]
    fn refusals_are_classified() {
        let gap = StopReason::Gap {
            committed: Some(1),
            received: 3,
        };
        assert_eq!(kind(&stopped(gap)), Kind::Permanent);
        assert_eq!(kind(&stopped(StopReason::Deleted)), Kind::Permanent);
        assert_eq!(
            kind(&stopped(StopReason::Store("x".into()))),
            Kind::Temporary
        );
        assert_eq!(kind(&stopped(StopReason::LeaseLost)), Kind::Temporary);
        assert_eq!(kind(&SubmitError::ShuttingDown), Kind::Fatal);
        let full = SubmitError::Overloaded {
            query_id: "q".into(),
        };
        assert_eq!(kind(&full), Kind::Temporary);
    }

    #[test]
    fn the_head_is_the_oldest_refused_entry() {
        let mut state = StreamState::new(Duration::from_secs(1));
        state.refused("10-2".into(), SubmitError::ShuttingDown);
        state.refused("9-5".into(), stopped(StopReason::Deleted));
        state.refused("10-0".into(), SubmitError::ShuttingDown);
        let Phase::Paused { head, error, until } = &state.phase else {
            panic!("paused: {state:?}");
        };
        assert_eq!(head, "9-5");
        assert_eq!(kind(error), Kind::Permanent);
        assert!(until.is_none());
        assert!(order("9-5") < order("10-0") && order("10-0") < order("x"));
    }
}
