//! Stream change notices across hosts: the write script `PUBLISH`es `<sender>:<stream name>`
//! for every stream whose meta it changed, in the same atomic step, and each store keeps one
//! Pub/Sub subscription ([`crate::pubsub`]) that turns other senders' messages into
//! [`Change::Stream`] (its own writes it skips: its engine already holds them).
//!
//! After a reconnect the subscriber sends [`Change::Lost`]: the engine then re-checks every
//! stream, which covers whatever was published meanwhile.

use std::time::Duration;

use liveresults_streams::store::{Change, StoreError};

use crate::pubsub::{self, Feed, Subscription, Timeouts};

/// The change feed of one stream store: other senders' notices.
pub(super) struct StreamFeed {
    /// This store's sender tag, whose own messages are skipped.
    sender: String,
}

impl Feed for StreamFeed {
    type Item = Change;
    const WHAT: &'static str = "stream notice";
    /// Changes kept for a slow receiver before it lags (and then re-checks everything).
    const CAPACITY: usize = 4096;

    fn decode(&self, payload: &[u8]) -> Option<Change> {
        decode(payload, &self.sender).map(Change::Stream)
    }

    fn lost(&self) -> Change {
        Change::Lost
    }
}

/// One store's subscription to its stream notices.
pub(super) type Notices = Subscription<StreamFeed>;

/// Subscribes (within `timeout`, which also bounds each keep-alive `PING`).
pub(super) async fn start(
    client: redis::Client,
    channel: String,
    sender: String,
    timeout: Duration,
) -> Result<Notices, StoreError> {
    let timeouts = Timeouts {
        connect: timeout,
        ping: timeout,
    };
    pubsub::start(client, channel.clone(), StreamFeed { sender }, timeouts)
        .await
        .map_err(|e| StoreError::Backend(format!("subscribing to {channel}: {e}")))
}

/// The stream a message names, unless this store's own `sender` wrote it (or it is not a
/// notice).
pub(super) fn decode(message: &[u8], sender: &str) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let (from, name) = text.split_once(':')?;
    (from != sender && !from.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn messages_name_streams_of_other_senders() {
        assert_eq!(decode(b"a1:chat/room:1", "b2"), Some("chat/room:1".into()));
        assert_eq!(decode(b"b2:chat", "b2"), None, "own writes are skipped");
        assert_eq!(decode(b"nocolon", "b2"), None);
        assert_eq!(decode(b":x", "b2"), None);
        assert_eq!(decode(b"a:\xff", "b2"), None);
    }
}
