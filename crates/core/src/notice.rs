//! What every backend's commit-notice listener shares: the notice's wire shape, the
//! lost-notices marker, and the handle that owns a listener task's broadcast channel.
//!
//! Backends announce writes on their own transport (Redis Pub/Sub, PostgreSQL
//! `LISTEN`/`NOTIFY`) with the same payload, `<epoch> ":" <sequence> ":" <query id>`: the
//! epoch after the write in decimal, the committed sequence as 16 lowercase hex digits (empty
//! when the query has none), then the id (raw, or escaped by the backend), last because it
//! may itself contain `:`. Both transports lose messages while a listener is disconnected,
//! so a listener that reconnects sends the marker, [`CommitNotice::lost`], once it listens
//! again: receivers re-read everything on it.

use std::sync::Mutex;

use tokio::sync::{broadcast, oneshot};

use crate::lease::CommitNotice;

impl CommitNotice {
    /// The lost-notices marker: an empty query id, which no query can have.
    pub fn lost() -> CommitNotice {
        CommitNotice {
            query_id: String::new(),
            epoch: 0,
            sequence: None,
        }
    }

    /// Whether this is the lost-notices marker.
    pub fn is_lost(&self) -> bool {
        self.query_id.is_empty()
    }

    /// Splits a payload into epoch, sequence and the id's text as sent (the caller decodes
    /// it); `None` for anything not of the shape. Digits only: `parse` alone would also take
    /// a leading `+`.
    pub fn parse_payload(payload: &str) -> Option<(u64, Option<u64>, &str)> {
        let mut parts = payload.splitn(3, ':');
        let (epoch, sequence, id) = (parts.next()?, parts.next()?, parts.next()?);
        let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        if !digits(epoch, 10) {
            return None;
        }
        let sequence = match sequence.len() {
            0 => None,
            16 if digits(sequence, 16) => Some(u64::from_str_radix(sequence, 16).ok()?),
            _ => return None,
        };
        Some((epoch.parse().ok()?, sequence, id))
    }
}

/// The receiving end of a listener task: receivers subscribe here, and stopping (or dropping)
/// it ends the task. The task gets the broadcast sender and the stop signal from
/// [`NoticeHub::new`].
pub struct NoticeHub<T> {
    live: Mutex<Option<Live<T>>>,
}

struct Live<T> {
    sender: broadcast::Sender<T>,
    /// Dropping it wakes the task's stop branch.
    _stop: oneshot::Sender<()>,
}

impl<T: Clone> NoticeHub<T> {
    /// A hub keeping `capacity` items for a slow receiver (it then sees `Lagged`), with the
    /// sender its task publishes on and the signal that fires when the hub is stopped or
    /// dropped.
    pub fn new(capacity: usize) -> (NoticeHub<T>, broadcast::Sender<T>, oneshot::Receiver<()>) {
        let (sender, _) = broadcast::channel(capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let live = Live {
            sender: sender.clone(),
            _stop: stop_tx,
        };
        let hub = NoticeHub {
            live: Mutex::new(Some(live)),
        };
        (hub, sender, stop_rx)
    }

    /// A new receiver; after [`NoticeHub::stop`] one that answers `Closed` at once.
    pub fn receiver(&self) -> broadcast::Receiver<T> {
        match self.live.lock().as_deref() {
            Ok(Some(live)) => live.sender.subscribe(),
            _ => broadcast::channel(1).1,
        }
    }

    /// Ends the task; receivers see `Closed` after the items already queued for them.
    pub fn stop(&self) {
        if let Ok(mut live) = self.live.lock() {
            live.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            CommitNotice::parse_payload("2:00000000000000ff:a:b"),
            Some((2, Some(255), "a:b"))
        );
        assert_eq!(CommitNotice::parse_payload("0::"), Some((0, None, "")));
        for bad in [
            "",
            "1:",
            "::q",
            "+1::q",
            "x::q",
            "1:ff:q",
            "1:+00000000000000f:q",
            "1:000000000000000g:q",
            "18446744073709551616::q",
        ] {
            assert_eq!(CommitNotice::parse_payload(bad), None, "{bad}");
        }
        assert!(CommitNotice::lost().is_lost());
    }

    #[tokio::test]
    async fn a_stopped_hub_closes_its_receivers_and_signals_the_task() {
        let (hub, sender, stop) = NoticeHub::<u32>::new(4);
        let mut receiver = hub.receiver();
        sender.send(7).ok();
        hub.stop();
        assert!(stop.await.is_err(), "the stop signal fired");
        drop(sender);
        assert_eq!(
            receiver.recv().await.ok(),
            Some(7),
            "queued items still arrive"
        );
        assert!(receiver.recv().await.is_err());
        assert!(
            hub.receiver().recv().await.is_err(),
            "new receivers are closed"
        );
    }
}
