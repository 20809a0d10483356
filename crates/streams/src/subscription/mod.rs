//! Subscriptions (the protocol's §6–7, "Reserved Subscription APIs"): durable cursors over a
//! set of streams — named explicitly or matched by a glob `pattern` — that wake a worker when
//! any of them has data past its acknowledged offset, by a signed webhook or by a wake event
//! appended to a `wake_stream` that workers read and then claim.
//!
//! The layers:
//!
//! - this module: the stored [`Record`] of one subscription (its configuration, one cursor per
//!   linked stream, the wake generation and the wake in flight, the webhook retry schedule);
//! - [`input`]: parsing and validating what clients send (ids, paths, globs, webhook URLs);
//! - [`store`]: where records live ([`SubscriptionStore`]) — the same store as the streams
//!   (RocksDB's `default` column family, a Redis hash, or memory), so subscriptions survive a
//!   restart with `serve --data` and every `serve --redis` host sees the same ones;
//! - [`signing`]: the server's Ed25519 key (stored there too, so every host signs with it),
//!   webhook signatures, the JWKS and the wake tokens;
//! - [`manager`]: the operations, each a compare-and-swap of one record, so two hosts (or two
//!   requests) changing one subscription never lose each other's change: the loser re-reads
//!   and decides again;
//! - [`delivery`]: the background task that links newly appended streams, expires leases,
//!   issues wakes and delivers them.
//!
//! A record is one JSON document: the cursor of every linked stream, the generation and the
//! wake in flight change together in one swap, so an ack can never advance a cursor for a
//! wake that was already fenced (the swap of the fencing change and the ack's are ordered).

pub mod delivery;
pub mod error;
mod in_flight;
pub mod input;
mod links;
pub mod manager;
pub mod signing;
pub mod store;
pub mod webhook_client;
pub mod wire;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use error::SubscriptionError;
pub use manager::Subscriptions;
pub use store::{MemorySubscriptionStore, SubscriptionStore};

/// Default of [`SubscriptionLimits::max_subscriptions`].
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1_000;
/// Default of [`SubscriptionLimits::max_streams_per_subscription`].
pub const DEFAULT_MAX_SUBSCRIPTION_STREAMS: usize = 1_000;

/// Default of [`SubscriptionLimits::max_total_links`].
pub const DEFAULT_MAX_TOTAL_LINKS: usize = 100_000;

/// The format version of a stored [`Record`].
pub const RECORD_VERSION: u8 = 1;

/// Caps that keep what clients with the write role can make the server hold and scan bounded:
/// every subscription's record is kept in memory and scanned by the delivery task.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionLimits {
    /// Subscriptions the server keeps at most (default 1,000); a create beyond answers 403.
    pub max_subscriptions: usize,
    /// Streams one subscription links at most, explicit and glob together (default 1,000);
    /// a create or add beyond answers 403, and glob matches beyond are not linked.
    pub max_streams_per_subscription: usize,
    /// Links of all subscriptions together (default 100,000): every pass of the delivery task
    /// looks at each link, so the product of the two caps above must not be what bounds it. A
    /// create or add beyond answers 403, and glob matches beyond are not linked.
    pub max_total_links: usize,
    /// Development mode (`serve --allow-dev-webhooks`, default off): webhooks may target
    /// `http://localhost` / `http://127.0.0.x` and names resolving to loopback. Off, any
    /// write-role client could make the server POST to its own or a sidecar's local ports.
    pub allow_dev_webhooks: bool,
}

impl Default for SubscriptionLimits {
    fn default() -> Self {
        SubscriptionLimits {
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_streams_per_subscription: DEFAULT_MAX_SUBSCRIPTION_STREAMS,
            max_total_links: DEFAULT_MAX_TOTAL_LINKS,
            allow_dev_webhooks: false,
        }
    }
}

/// How a subscription wakes its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A signed `POST` to the configured URL.
    Webhook,
    /// A wake event appended to the configured stream; workers claim the wake.
    PullWake,
}

impl Kind {
    /// The protocol's name of the kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::PullWake => "pull-wake",
        }
    }
}

/// What a client configures; a re-create with an equal configuration is a re-confirmation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Webhook or pull-wake.
    pub kind: Kind,
    /// Glob over stream names (`*` one segment, `**` any number).
    pub pattern: Option<String>,
    /// Explicitly linked streams, sorted and without duplicates.
    pub streams: Vec<String>,
    /// The webhook URL (webhook subscriptions).
    pub webhook_url: Option<String>,
    /// The wake stream (pull-wake subscriptions).
    pub wake_stream: Option<String>,
    /// How long a wake's lease lasts without a callback or ack.
    pub lease_ttl_ms: u64,
    /// Free text.
    pub description: Option<String>,
}

/// One linked stream's cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Linked by `streams` / `POST …/streams`.
    pub explicit: bool,
    /// Linked because the pattern matched.
    pub glob: bool,
    /// Position of the last processed byte's end (inclusive ack); `None`: nothing processed
    /// (`-1`), every byte of the stream is pending.
    pub acked: Option<u64>,
    /// The id of the stream the cursor belongs to, once seen: a stream deleted and created
    /// again under the same name has a new id and restarts the cursor.
    pub stream_id: Option<u64>,
}

/// The wake in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    /// Unique per wake: a request for one wake cannot be replayed into another.
    pub id: String,
    /// Each linked stream's tail when the wake was issued (what a webhook's `done` acks).
    pub snapshot: BTreeMap<String, u64>,
    /// The stream whose data caused the wake.
    pub trigger: String,
    /// The worker holding a pull-wake claim.
    pub holder: Option<String>,
    /// When the lease ends (webhook: from the wake on; pull-wake: from the claim on).
    pub lease_until_ms: Option<u64>,
    /// Whether the wake was delivered (webhook POSTed, or event appended to the wake stream).
    pub announced: bool,
}

/// One stored subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub v: u8,
    /// The client's id.
    pub id: String,
    /// What the client configured.
    pub config: Config,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
    /// `scheme://authority` the subscription was created through: callback URLs point there.
    pub base_url: String,
    /// Random per creation, part of every token's signed text: tokens of a deleted
    /// subscription are worthless for a new one with the same id and generation.
    pub nonce: String,
    /// Linked streams by name.
    pub links: BTreeMap<String, Link>,
    /// Fencing counter: +1 per wake.
    pub generation: u64,
    /// The wake in flight.
    pub wake: Option<Wake>,
    /// Failed webhook deliveries in a row (the status is `failed` while > 0).
    pub failures: u32,
    /// No webhook wake before this time (the retry backoff).
    pub next_attempt_ms: Option<u64>,
}

impl Record {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and maps with string keys always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads stored bytes back.
    pub fn decode(bytes: &[u8]) -> Result<Record, crate::store::StoreError> {
        let record: Record = serde_json::from_slice(bytes)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("subscription record: {e}")))?;
        if record.v != RECORD_VERSION {
            return Err(crate::store::StoreError::Corrupt(format!(
                "subscription record version {} is not {RECORD_VERSION}",
                record.v
            )));
        }
        Ok(record)
    }

    /// `active`, or `failed` while webhook deliveries fail.
    pub fn status(&self) -> &'static str {
        if self.failures > 0 {
            "failed"
        } else {
            "active"
        }
    }
}

/// A linked stream as this host sees it: its id and tail position, `None` when it does not
/// exist (or is deleted).
pub type StreamView = Option<(u64, u64)>;

/// Whether the link has data past its cursor, given the stream's view.
pub fn has_pending(link: &Link, view: StreamView) -> bool {
    match view {
        None => false,
        Some((_, tail)) => tail > link.acked.unwrap_or(0),
    }
}

/// The text form of a cursor (`-1` before anything was processed).
pub fn offset_text(acked: Option<u64>) -> String {
    acked.map_or_else(|| "-1".to_owned(), crate::offset::format_offset)
}
