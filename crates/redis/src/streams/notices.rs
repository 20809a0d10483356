//! Stream change notices across hosts: the write script `PUBLISH`es `<sender>:<stream name>`
//! for every stream whose meta it changed, in the same atomic step, and each store keeps one
//! Pub/Sub connection whose task turns other senders' messages into [`Change::Stream`] on a
//! broadcast channel (its own writes it skips: its engine already holds them).
//!
//! Pub/Sub keeps nothing for a disconnected subscriber, so after the task reconnects it sends
//! [`Change::Lost`]: the engine then re-checks every stream, which covers whatever was
//! published meanwhile. A connection that dies silently is found by a `PING` every
//! [`PING_EVERY`].

use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use liveresults_streams::store::{Change, StoreError};
use redis::aio::{PubSubSink, PubSubStream};
use redis::RedisResult;
use tokio::sync::{broadcast, oneshot};

/// Changes kept for a slow receiver before it lags (and then re-checks everything).
const CAPACITY: usize = 4096;
/// How often an idle subscription is checked.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First and longest wait between reconnect attempts.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The stream a message names, unless this store's own `sender` wrote it (or it is not a
/// notice).
pub(super) fn decode(message: &[u8], sender: &str) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let (from, name) = text.split_once(':')?;
    (from != sender && !from.is_empty()).then(|| name.to_owned())
}

/// The subscription: the sender receivers subscribe to, and the task's stop signal.
pub(super) struct Notices {
    live: Mutex<Option<(broadcast::Sender<Change>, oneshot::Sender<()>)>>,
}

impl Notices {
    /// Subscribes (within `timeout`), then hands the subscription to a background task.
    pub(super) async fn start(
        client: redis::Client,
        channel: String,
        sender: String,
        timeout: Duration,
    ) -> Result<Notices, StoreError> {
        let (sink, stream) = subscribe(&client, &channel, timeout)
            .await
            .map_err(|e| StoreError::Backend(format!("subscribing to {channel}: {e}")))?;
        let (changes, _) = broadcast::channel(CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Task {
            client,
            channel,
            sender,
            changes: changes.clone(),
            timeout,
        };
        tokio::spawn(task.run(sink, stream, stop_rx));
        Ok(Notices {
            live: Mutex::new(Some((changes, stop_tx))),
        })
    }

    /// A new receiver (one that is closed at once after [`Notices::stop`]).
    pub(super) fn receiver(&self) -> broadcast::Receiver<Change> {
        match self.live.lock().as_deref() {
            Ok(Some((changes, _))) => changes.subscribe(),
            _ => broadcast::channel(1).1,
        }
    }

    /// Ends the task; receivers then see the channel closed.
    pub(super) fn stop(&self) {
        if let Ok(mut live) = self.live.lock() {
            live.take();
        }
    }
}

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
    match tokio::time::timeout(within, attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "subscribing to stream notices timed out",
        ))),
    }
}

struct Task {
    client: redis::Client,
    channel: String,
    sender: String,
    changes: broadcast::Sender<Change>,
    timeout: Duration,
}

impl Task {
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
            tracing::warn!(channel = %self.channel, %why,
                "stream notice subscription lost; reconnecting (every stream is re-checked)");
            let mut delay = RETRY_MIN;
            (sink, stream) = loop {
                let attempt = tokio::select! {
                    _ = &mut stop => return,
                    attempt = async {
                        tokio::time::sleep(delay).await;
                        subscribe(&self.client, &self.channel, self.timeout).await
                    } => attempt,
                };
                match attempt {
                    Ok(subscription) => break subscription,
                    Err(err) => {
                        tracing::debug!(%err, "stream notice subscription: reconnect failed");
                        delay = delay.saturating_mul(2).min(RETRY_MAX);
                    }
                }
            };
            // No receiver is normal (no engine follows this store).
            let _ = self.changes.send(Change::Lost);
        }
    }

    async fn pump(&self, sink: &mut PubSubSink, stream: &mut PubSubStream) -> String {
        let start = tokio::time::Instant::now() + PING_EVERY;
        let mut ping = tokio::time::interval_at(start, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        if let Some(name) = decode(message.get_payload_bytes(), &self.sender) {
                            let _ = self.changes.send(Change::Stream(name));
                        }
                    }
                    None => return "connection closed".to_owned(),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return err.to_string(),
                        Err(_) => return format!("no answer to PING within {:?}", self.timeout),
                    }
                }
            }
        }
    }
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
