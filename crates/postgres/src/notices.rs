//! Commit notices across hosts. Every commit, clear and removal calls `pg_notify` on the
//! schema's channel (`<schema>_notices`) inside its transaction — PostgreSQL delivers a
//! notification only when that transaction commits, so a rolled-back or refused write
//! announces nothing — and each store handle keeps one dedicated connection (outside the
//! pool) that `LISTEN`s and turns the payloads into [`CommitNotice`]s on a broadcast channel.
//!
//! Payload: `<epoch> ":" <sequence> ":" <query id>` — the epoch after the write in decimal,
//! the committed sequence as 16 lowercase hex digits (empty when none), then the id with `%`
//! and NUL escaped (`codec::notice_id`); an id too long for a notice is sent empty, which
//! receivers read as the lost-notices marker. The same shape as the Redis backend's.
//!
//! The server queues notifications for a listening session while it is connected, but a
//! session that is gone misses everything sent meanwhile. So when the listening connection
//! drops, the task reconnects with backoff and, once `LISTEN` is confirmed again, sends the
//! *lost-notices marker* (empty query id): a receiver that re-reads every query on it misses
//! nothing, since every write before the new `LISTEN` is covered by the re-read and every
//! later one arrives as a notice. A connection that dies silently (a partition) is found by
//! a `SELECT 1` every [`PING_EVERY`] that must answer within the connect timeout.

use std::time::Duration;

use futures_util::StreamExt;
use liveresults_core::lease::CommitNotice;
use liveresults_core::notice::NoticeHub;
use liveresults_core::StoreError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config};

use crate::codec::notice_id_decode;
use crate::error::{from_pg, transient};
use crate::tls::Tls;

/// Notices kept for a slow receiver before it starts losing them (it then sees `Lagged`).
const CAPACITY: usize = 1024;
/// How often an idle listening connection is checked.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First and longest wait between reconnect attempts (doubling in between).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Decodes a payload; `None` for anything the store's functions do not send. An empty id
/// (sent for an id too long for a notice) decodes as the lost-notices marker.
pub(crate) fn decode(payload: &str) -> Option<CommitNotice> {
    let (epoch, sequence, id) = CommitNotice::parse_payload(payload)?;
    Some(CommitNotice {
        query_id: notice_id_decode(id)?,
        epoch,
        sequence,
    })
}

/// One handle's listener: receivers subscribe here; dropping it (with the store) or
/// [`NoticeHub::stop`] ends the task.
pub(crate) type Notices = NoticeHub<CommitNotice>;

/// Connects and `LISTEN`s (failing, transiently, when the server cannot be reached), then
/// hands the connection to a background task. Notices of writes committed after this returns
/// reach every receiver.
pub(crate) async fn start(
    config: Config,
    tls: Tls,
    channel: String,
    timeout: Duration,
) -> Result<Notices, StoreError> {
    let listener = Listener {
        config,
        tls,
        channel,
        timeout,
    };
    let connection = listener.listen().await?;
    let (hub, sender, stop) = NoticeHub::new(CAPACITY);
    tokio::spawn(listener.run(connection, sender, stop));
    Ok(hub)
}

/// A listening connection: the client (for `SELECT 1`), the task driving the socket, and
/// the notifications (or the error that ended the connection) it forwards.
struct Connection {
    client: Client,
    driver: JoinHandle<()>,
    messages: mpsc::UnboundedReceiver<Result<String, String>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

struct Listener {
    config: Config,
    tls: Tls,
    channel: String,
    timeout: Duration,
}

impl Listener {
    /// Opens a connection and `LISTEN`s, all within the timeout.
    async fn listen(&self) -> Result<Connection, StoreError> {
        let attempt = async {
            let (client, mut stream) = self.tls.connect(&self.config).await.map_err(from_pg)?;
            let (tx, messages) = mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                while let Some(message) = stream.next().await {
                    let forwarded = match message {
                        Ok(AsyncMessage::Notification(n)) => tx.send(Ok(n.payload().to_owned())),
                        Ok(_) => Ok(()),
                        Err(err) => {
                            let _ = tx.send(Err(err.to_string()));
                            return;
                        }
                    };
                    if forwarded.is_err() {
                        return;
                    }
                }
            });
            let connection = Connection {
                client,
                driver,
                messages,
            };
            // The channel name is `<validated schema>_notices`: no quoting issues.
            connection
                .client
                .batch_execute(&format!("LISTEN \"{}\"", self.channel))
                .await
                .map_err(from_pg)?;
            Ok(connection)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(transient(format!(
                    "LISTEN on {:?} did not complete within {:?}",
                    self.channel, self.timeout
                )))
            })
    }

    /// Delivers notices, reconnecting whenever the connection is lost, until `stop` fires
    /// (or its sender is dropped with the store).
    async fn run(
        self,
        mut connection: Connection,
        sender: broadcast::Sender<CommitNotice>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let why = tokio::select! {
                _ = &mut stop => return,
                why = self.pump(&mut connection, &sender) => why,
            };
            tracing::warn!(
                channel = %self.channel,
                %why,
                "commit notice connection lost; reconnecting (receivers will be told that \
                 notices may have been lost)"
            );
            drop(connection);
            let mut delay = RETRY_MIN;
            connection = loop {
                let attempt = tokio::select! {
                    _ = &mut stop => return,
                    attempt = async {
                        tokio::time::sleep(delay).await;
                        self.listen().await
                    } => attempt,
                };
                match attempt {
                    Ok(connection) => break connection,
                    Err(err) => {
                        tracing::debug!(%err, "commit notice connection: reconnect failed");
                        delay = delay.saturating_mul(2).min(RETRY_MAX);
                    }
                }
            };
            tracing::info!(channel = %self.channel, "commit notice connection restored");
            // No receiver is normal (nobody waits for notices right now).
            let _ = sender.send(CommitNotice::lost());
        }
    }

    /// Forwards notifications until the connection fails; returns why it failed.
    async fn pump(
        &self,
        connection: &mut Connection,
        sender: &broadcast::Sender<CommitNotice>,
    ) -> String {
        let start = tokio::time::Instant::now() + PING_EVERY;
        let mut ping = tokio::time::interval_at(start, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = connection.messages.recv() => match message {
                    Some(Ok(payload)) => self.deliver(&payload, sender),
                    Some(Err(err)) => return err,
                    None => return "connection closed".to_owned(),
                },
                _ = ping.tick() => {
                    let answer = tokio::time::timeout(
                        self.timeout,
                        connection.client.simple_query("SELECT 1"),
                    )
                    .await;
                    match answer {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return err.to_string(),
                        Err(_) => return format!("no answer to SELECT 1 within {:?}", self.timeout),
                    }
                }
            }
        }
    }

    fn deliver(&self, payload: &str, sender: &broadcast::Sender<CommitNotice>) {
        match decode(payload) {
            // No receiver is normal (nobody waits for notices right now).
            Some(notice) => {
                let _ = sender.send(notice);
            }
            None => tracing::debug!(
                channel = %self.channel,
                %payload,
                "ignoring a notification that is not a commit notice"
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

    #[test]
    fn payloads_decode() {
        assert_eq!(
            decode("2:00000000000000ff:orders"),
            Some(notice("orders", 2, Some(255)))
        );
        assert_eq!(decode("3::a:b:c"), Some(notice("a:b:c", 3, None)));
        assert_eq!(decode("0::a%00b%25"), Some(notice("a\0b%", 0, None)));
        assert_eq!(
            decode("18446744073709551615:ffffffffffffffff:x"),
            Some(notice("x", u64::MAX, Some(u64::MAX)))
        );
        // An id too long for a notice arrives empty: the lost-notices marker.
        assert_eq!(decode("1:0000000000000001:"), Some(notice("", 1, Some(1))));
    }

    #[test]
    fn foreign_payloads_are_not_notices() {
        for bad in [
            "",
            "1:",
            "::q",
            "+1::q",
            "x::q",
            "1:ff:q",
            "1:000000000000000g:q",
            "18446744073709551616::q",
            "1::%zz",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert!(CommitNotice::lost().is_lost());
    }
}
