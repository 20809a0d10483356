//! Commit notices across hosts. Every commit and clear script `PUBLISH`es a short message on
//! the namespace's channel (`<ns>:notices`) in the same atomic step as its writes, and each
//! store handle keeps one dedicated Pub/Sub subscription ([`crate::pubsub`]) that turns the
//! messages into [`CommitNotice`]s: readers on every host wake when any host writes.
//!
//! Message: `<epoch> ":" <sequence> ":" <query id>` — the epoch after the write in decimal,
//! the committed sequence as 16 lowercase hex digits (empty when the query has none), then
//! the raw query id, last because it may itself contain `:`.
//!
//! After a reconnect the subscriber sends the *lost-notices marker* (a notice with an empty
//! query id, which no query can have): a receiver re-reads every query when it sees it. The
//! contract is documented on
//! [`ResultStore::commit_notices`](liveresults_core::ResultStore::commit_notices).

use std::time::Duration;

use liveresults_core::lease::CommitNotice;
use liveresults_core::StoreError;

use crate::error::from_redis;
use crate::pubsub::{self, Feed, Subscription, Timeouts};

/// The commit-notice feed of one store handle.
pub(crate) struct CommitFeed;

impl Feed for CommitFeed {
    type Item = CommitNotice;
    const WHAT: &'static str = "commit notice";
    /// Notices kept for a slow receiver before it starts losing them (it then sees `Lagged`).
    const CAPACITY: usize = 1024;

    fn decode(&self, payload: &[u8]) -> Option<CommitNotice> {
        decode(payload)
    }

    fn lost(&self) -> CommitNotice {
        CommitNotice::lost()
    }
}

/// One handle's subscription to its namespace's commit notices.
pub(crate) type Notices = Subscription<CommitFeed>;

/// Subscribes to `channel`; fails (transiently) when the server cannot be reached within
/// `connect_timeout`.
pub(crate) async fn start(
    client: redis::Client,
    channel: String,
    connect_timeout: Duration,
    ping_timeout: Duration,
) -> Result<Notices, StoreError> {
    let timeouts = Timeouts {
        connect: connect_timeout,
        ping: ping_timeout,
    };
    pubsub::start(client, channel, CommitFeed, timeouts)
        .await
        .map_err(from_redis)
}

/// Decodes a published message; `None` for anything the scripts do not send (their ids are
/// raw and never empty).
pub(crate) fn decode(message: &[u8]) -> Option<CommitNotice> {
    let payload = std::str::from_utf8(message).ok()?;
    let (epoch, sequence, query_id) = CommitNotice::parse_payload(payload)?;
    (!query_id.is_empty()).then(|| CommitNotice {
        query_id: query_id.to_owned(),
        epoch,
        sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(query_id: &str, epoch: u64, sequence: Option<u64>) -> CommitNotice {
        CommitNotice {
            query_id: query_id.to_owned(),
            epoch,
            sequence,
        }
    }

    /// The message as the scripts build it.
    fn encode(notice: &CommitNotice) -> Vec<u8> {
        let sequence = notice
            .sequence
            .map_or_else(String::new, |s| format!("{s:016x}"));
        format!("{}:{sequence}:{}", notice.epoch, notice.query_id).into_bytes()
    }

    #[test]
    fn notices_round_trip() {
        for n in [
            notice("q", 0, Some(7)),
            notice("a:b:c", 3, None),
            notice("ü{}", u64::MAX, Some(u64::MAX)),
            notice("x", 1, Some(0)),
        ] {
            assert_eq!(decode(&encode(&n)), Some(n.clone()), "{n:?}");
        }
        assert_eq!(encode(&notice("q", 2, Some(255))), b"2:00000000000000ff:q");
    }

    #[test]
    fn foreign_messages_are_not_notices() {
        for bad in [
            &b""[..],
            b"1::",
            b"::q",
            b"+1::q",
            b"x::q",
            b"1:ff:q",
            b"1:+00000000000000f:q",
            b"1:000000000000000g:q",
            b"18446744073709551616::q",
            b"1::\xff",
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
