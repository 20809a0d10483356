//! Commit notices across hosts. Every commit and clear script `PUBLISH`es a short message on
//! the namespace's channel (`<ns>:notices`) in the same atomic step as its writes, and each
//! store handle keeps one dedicated Pub/Sub connection whose task turns the messages into
//! [`CommitNotice`]s on a broadcast channel: readers on every host wake when any host writes.
//!
//! Message: `<epoch> ":" <sequence> ":" <query id>` — the epoch after the write in decimal,
//! the committed sequence as 16 lowercase hex digits (empty when the query has none), then
//! the raw query id, last because it may itself contain `:`.
//!
//! Pub/Sub is fire-and-forget: what is published while the subscriber is disconnected is
//! gone, and the server also disconnects a subscriber whose output buffer overflows. So when
//! the connection drops, the task reconnects with backoff and, once the new subscription is
//! confirmed, sends the *lost-notices marker* (a notice with an empty query id, which no query
//! can have): a receiver that re-reads every query when it sees the marker misses nothing,
//! since every write before the re-subscription is covered by that re-read and every write
//! after it arrives as a notice. The contract is documented on
//! [`ResultStore::commit_notices`](liveresults_core::ResultStore::commit_notices).
//!
//! A connection can also die without the client noticing (a partition, a crashed host in
//! between); the task `PING`s through the subscription every [`PING_EVERY`] and treats a
//! missing answer like a dropped connection.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use liveresults_core::lease::CommitNotice;
use liveresults_core::StoreError;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{RedisError, RedisResult};
use tokio::sync::{broadcast, oneshot};

use crate::error::from_redis;

/// Notices kept for a slow receiver before it starts losing them (it then sees `Lagged`).
const CAPACITY: usize = 1024;
/// How often an idle subscription is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First and longest wait between reconnect attempts (doubling in between).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Decodes a published message; `None` for anything the scripts do not send.
pub(crate) fn decode(message: &[u8]) -> Option<CommitNotice> {
    let mut parts = message.splitn(3, |&b| b == b':');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let sequence = std::str::from_utf8(parts.next()?).ok()?;
    let query_id = std::str::from_utf8(parts.next()?).ok()?;
    // Digits only: `parse` would also take a leading `+`.
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if !digits(epoch, 10) || query_id.is_empty() {
        return None;
    }
    let sequence = match sequence.len() {
        0 => None,
        16 if digits(sequence, 16) => Some(u64::from_str_radix(sequence, 16).ok()?),
        _ => return None,
    };
    Some(CommitNotice {
        query_id: query_id.to_owned(),
        epoch: epoch.parse().ok()?,
        sequence,
    })
}

/// The lost-notices marker: sent after a reconnect, it tells receivers to re-read every query.
pub(crate) fn lost_marker() -> CommitNotice {
    CommitNotice {
        query_id: String::new(),
        epoch: 0,
        sequence: None,
    }
}

/// One handle's subscription: the broadcast sender receivers subscribe to, and the task's
/// stop signal. Dropping it (with the store) or [`Notices::stop`] ends the task.
pub(crate) struct Notices {
    live: Mutex<Option<Live>>,
}

struct Live {
    sender: broadcast::Sender<CommitNotice>,
    /// Dropping it wakes the task's stop branch.
    _stop: oneshot::Sender<()>,
}

impl Notices {
    /// Subscribes to `channel` (failing, transiently, when the server cannot be reached within
    /// `connect_timeout`), then hands the subscription to a background task. Notices published
    /// after this returns reach every receiver.
    pub(crate) async fn start(
        client: redis::Client,
        channel: String,
        connect_timeout: Duration,
        ping_timeout: Duration,
    ) -> Result<Notices, StoreError> {
        let (sink, stream) = subscribe(&client, &channel, connect_timeout)
            .await
            .map_err(from_redis)?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Subscriber {
            client,
            channel,
            sender: sender.clone(),
            connect_timeout,
            ping_timeout,
        };
        tokio::spawn(task.run(sink, stream, stop_rx));
        Ok(Notices {
            live: Mutex::new(Some(Live {
                sender,
                _stop: stop_tx,
            })),
        })
    }

    /// A new receiver; after [`Notices::stop`] one that answers `Closed` at once.
    pub(crate) fn receiver(&self) -> broadcast::Receiver<CommitNotice> {
        match self.live.lock().as_deref() {
            Ok(Some(live)) => live.sender.subscribe(),
            _ => broadcast::channel(1).1,
        }
    }

    /// Ends the task; receivers see `Closed` after the notices already queued for them.
    pub(crate) fn stop(&self) {
        if let Ok(mut live) = self.live.lock() {
            live.take();
        }
    }
}

/// Opens a Pub/Sub connection and subscribes, all within `within`.
async fn subscribe(
    client: &redis::Client,
    channel: &str,
    within: Duration,
) -> RedisResult<(PubSubSink, PubSubStream)> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.split())
    };
    tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| Err(timed_out("subscribing to commit notices")))
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

/// The background task's state.
struct Subscriber {
    client: redis::Client,
    channel: String,
    sender: broadcast::Sender<CommitNotice>,
    connect_timeout: Duration,
    ping_timeout: Duration,
}

impl Subscriber {
    /// Delivers notices, reconnecting whenever the subscription is lost, until `stop` fires
    /// (or its sender is dropped with the store).
    async fn run(
        self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let why = tokio::select! {
                _ = &mut stop => return,
                why = self.pump(&mut sink, &mut stream) => why,
            };
            tracing::warn!(
                channel = %self.channel,
                %why,
                "commit notice subscription lost; reconnecting (receivers will be told that \
                 notices may have been lost)"
            );
            let mut delay = RETRY_MIN;
            (sink, stream) = loop {
                let attempt = tokio::select! {
                    _ = &mut stop => return,
                    attempt = async {
                        tokio::time::sleep(delay).await;
                        subscribe(&self.client, &self.channel, self.connect_timeout).await
                    } => attempt,
                };
                match attempt {
                    Ok(subscription) => break subscription,
                    Err(err) => {
                        tracing::debug!(%err, "commit notice subscription: reconnect failed");
                        delay = delay.saturating_mul(2).min(RETRY_MAX);
                    }
                }
            };
            tracing::info!(channel = %self.channel, "commit notice subscription restored");
            // No receiver is normal (nobody waits for notices right now).
            let _ = self.sender.send(lost_marker());
        }
    }

    /// Forwards messages until the subscription fails; returns why it failed.
    async fn pump(&self, sink: &mut PubSubSink, stream: &mut PubSubStream) -> String {
        let start = tokio::time::Instant::now() + PING_EVERY;
        let mut ping = tokio::time::interval_at(start, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.deliver(message.get_payload_bytes()),
                    None => return "connection closed".to_owned(),
                },
                _ = ping.tick() => {
                    let answer = tokio::time::timeout(
                        self.ping_timeout,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    match answer {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return err.to_string(),
                        Err(_) => return format!("no answer to PING within {:?}", self.ping_timeout),
                    }
                }
            }
        }
    }

    fn deliver(&self, payload: &[u8]) {
        match decode(payload) {
            // No receiver is normal (nobody waits for notices right now).
            Some(notice) => {
                let _ = self.sender.send(notice);
            }
            None => tracing::debug!(
                channel = %self.channel,
                payload = %String::from_utf8_lossy(payload),
                "ignoring a message that is not a commit notice"
            ),
        }
    }
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
        assert!(lost_marker().query_id.is_empty());
    }
}
