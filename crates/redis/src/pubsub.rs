//! One Pub/Sub subscriber for every notice channel this crate listens on (query-store commit
//! notices, stream change notices): a dedicated connection whose background task turns
//! messages into items on a broadcast channel, so readers on every host wake when any host
//! writes.
//!
//! Pub/Sub is fire-and-forget: what is published while the subscriber is disconnected is
//! gone, and the server also disconnects a subscriber whose output buffer overflows. So when
//! the connection drops, the task reconnects with backoff and, *once the new subscription is
//! confirmed*, sends the feed's lost-notices item: a receiver that re-reads everything when it
//! sees it misses nothing, since every write before the re-subscription is covered by that
//! re-read and every write after it arrives as a notice. (Reporting the loss before the
//! re-subscription would leave a window whose notices nobody re-reads.)
//!
//! A connection can also die without the client noticing (a partition, a crashed host in
//! between); the task `PING`s through the subscription every [`PING_EVERY`] and treats a
//! missing answer like a dropped connection.

use std::time::Duration;

use futures_util::StreamExt;
use liveresults_core::notice::NoticeHub;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{RedisError, RedisResult};
use tokio::sync::{broadcast, oneshot};

/// How often an idle subscription is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First and longest wait between reconnect attempts (doubling in between).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a channel's messages mean: how to read one, and what tells receivers that some may
/// have been lost.
pub(crate) trait Feed: Send + Sync + 'static {
    type Item: Clone + Send + 'static;
    /// Names the feed in logs ("commit notice", "stream notice").
    const WHAT: &'static str;
    /// Items kept for a slow receiver before it lags.
    const CAPACITY: usize;

    /// The item a message carries; `None` for one to skip (foreign, or this handle's own).
    fn decode(&self, payload: &[u8]) -> Option<Self::Item>;

    /// Sent after a reconnect: receivers must re-read everything.
    fn lost(&self) -> Self::Item;
}

/// Timeouts of a subscription.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// Connecting and subscribing, at start and on every reconnect.
    pub connect: Duration,
    /// Waiting for the answer to a keep-alive `PING`.
    pub ping: Duration,
}

/// One handle's subscription: receivers subscribe here; dropping it (with the store) or
/// [`NoticeHub::stop`] ends the task.
pub(crate) type Subscription<F> = NoticeHub<<F as Feed>::Item>;

/// Subscribes to `channel` (failing, transiently, when the server cannot be reached within
/// `timeouts.connect`), then hands the subscription to a background task. Messages published
/// after this returns reach every receiver.
pub(crate) async fn start<F: Feed>(
    client: redis::Client,
    channel: String,
    feed: F,
    timeouts: Timeouts,
) -> RedisResult<Subscription<F>> {
    let (sink, stream) = subscribe::<F>(&client, &channel, timeouts.connect).await?;
    let (hub, sender, stop) = NoticeHub::new(F::CAPACITY);
    let task = Task {
        client,
        channel,
        feed,
        sender,
        timeouts,
    };
    tokio::spawn(task.run(sink, stream, stop));
    Ok(hub)
}

/// Opens a Pub/Sub connection and subscribes, all within `within`.
async fn subscribe<F: Feed>(
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
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("subscribing to {}s on {channel} timed out", F::WHAT),
            )))
        })
}

/// The background task's state.
struct Task<F: Feed> {
    client: redis::Client,
    channel: String,
    feed: F,
    sender: broadcast::Sender<F::Item>,
    timeouts: Timeouts,
}

impl<F: Feed> Task<F> {
    /// Delivers items, reconnecting whenever the subscription is lost, until `stop` fires (or
    /// its sender is dropped with the store).
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
                "{} subscription lost; reconnecting (receivers will be told that notices may \
                 have been lost)",
                F::WHAT
            );
            let mut delay = RETRY_MIN;
            (sink, stream) = loop {
                let attempt = tokio::select! {
                    _ = &mut stop => return,
                    attempt = async {
                        tokio::time::sleep(delay).await;
                        subscribe::<F>(&self.client, &self.channel, self.timeouts.connect).await
                    } => attempt,
                };
                match attempt {
                    Ok(subscription) => break subscription,
                    Err(err) => {
                        tracing::debug!(%err, "{} subscription: reconnect failed", F::WHAT);
                        delay = delay.saturating_mul(2).min(RETRY_MAX);
                    }
                }
            };
            tracing::info!(channel = %self.channel, "{} subscription restored", F::WHAT);
            // No receiver is normal (nobody waits for notices right now).
            let _ = self.sender.send(self.feed.lost());
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
                        self.timeouts.ping,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    match answer {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return err.to_string(),
                        Err(_) => {
                            return format!("no answer to PING within {:?}", self.timeouts.ping)
                        }
                    }
                }
            }
        }
    }

    fn deliver(&self, payload: &[u8]) {
        match self.feed.decode(payload) {
            // No receiver is normal (nobody waits for notices right now).
            Some(item) => {
                let _ = self.sender.send(item);
            }
            None => tracing::trace!(
                channel = %self.channel,
                payload = %String::from_utf8_lossy(payload),
                "skipping a message: not a {}, or this handle's own",
                F::WHAT
            ),
        }
    }
}
