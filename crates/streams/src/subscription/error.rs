//! Errors of the subscription API, with the protocol's error codes (`{"error":{"code":…}}`).

use crate::error::StreamError;
use crate::store::StoreError;

/// Why a subscription request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubscriptionError {
    /// The request is malformed (400 `INVALID_REQUEST`).
    #[error("{0}")]
    Invalid(String),
    /// No such subscription (404 `SUBSCRIPTION_NOT_FOUND`).
    #[error("subscription {0:?} not found")]
    NotFound(String),
    /// No such control route (404 `SUBSCRIPTION_NOT_FOUND`, as the protocol answers).
    #[error("no Durable Streams control route {0}")]
    NoRoute(String),
    /// The id exists with another configuration (409 `SUBSCRIPTION_ALREADY_EXISTS`).
    #[error("subscription {0:?} exists with a different configuration")]
    Exists(String),
    /// The webhook URL is not one the server calls (400 `WEBHOOK_URL_REJECTED`).
    #[error("webhook URL rejected: {0}")]
    WebhookUrl(String),
    /// Missing or invalid wake token (401 `TOKEN_INVALID`).
    #[error("the wake token is missing or invalid")]
    TokenInvalid,
    /// The request is for a wake that is no longer current (409 `FENCED`).
    #[error("wake generation is stale")]
    Fenced,
    /// Another worker holds the claim (409 `ALREADY_CLAIMED`).
    #[error("the subscription is claimed by {holder:?}")]
    AlreadyClaimed {
        /// The worker holding it.
        holder: String,
        /// The current generation.
        generation: u64,
    },
    /// Nothing to claim (409 `NO_PENDING_WORK`).
    #[error("the subscription has no pending work")]
    NoPendingWork,
    /// An ack names an unknown stream or an offset out of range (409 `INVALID_OFFSET`).
    #[error("{0}")]
    InvalidOffset(String),
    /// The subscription is not of the kind the route serves (400 `INVALID_REQUEST`).
    #[error("subscription is not {0}")]
    WrongKind(&'static str),
    /// The server holds its maximum of subscriptions (403 `TOO_MANY_SUBSCRIPTIONS`).
    #[error("the server holds its maximum of {0} subscriptions; delete some first")]
    TooManySubscriptions(usize),
    /// The subscription would link too many streams (403 `TOO_MANY_SUBSCRIPTION_STREAMS`).
    #[error("a subscription links at most {0} streams")]
    TooManyStreams(usize),
    /// All subscriptions together would link too many streams (403
    /// `TOO_MANY_SUBSCRIPTION_STREAMS`).
    #[error("the server's subscriptions link at most {0} streams in all")]
    TooManyLinks(usize),
    /// Other hosts kept changing the subscription first (503).
    #[error("subscription {0:?}: other requests kept changing it first; retry")]
    Contended(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stream operation failed (appending a wake event).
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl SubscriptionError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        use SubscriptionError as E;
        match self {
            E::Invalid(_) | E::WebhookUrl(_) | E::WrongKind(_) => 400,
            E::TokenInvalid => 401,
            E::TooManySubscriptions(_) | E::TooManyStreams(_) | E::TooManyLinks(_) => 403,
            E::NotFound(_) | E::NoRoute(_) => 404,
            E::Exists(_)
            | E::Fenced
            | E::AlreadyClaimed { .. }
            | E::NoPendingWork
            | E::InvalidOffset(_) => 409,
            E::Contended(_) => 503,
            E::Store(StoreError::Corrupt(_)) => 500,
            E::Store(_) => 503,
            E::Stream(e) => e.status(),
        }
    }

    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        use SubscriptionError as E;
        match self {
            E::Invalid(_) | E::WrongKind(_) => "INVALID_REQUEST",
            E::NotFound(_) | E::NoRoute(_) => "SUBSCRIPTION_NOT_FOUND",
            E::Exists(_) => "SUBSCRIPTION_ALREADY_EXISTS",
            E::WebhookUrl(_) => "WEBHOOK_URL_REJECTED",
            E::TokenInvalid => "TOKEN_INVALID",
            E::Fenced => "FENCED",
            E::AlreadyClaimed { .. } => "ALREADY_CLAIMED",
            E::NoPendingWork => "NO_PENDING_WORK",
            E::InvalidOffset(_) => "INVALID_OFFSET",
            E::TooManySubscriptions(_) => "TOO_MANY_SUBSCRIPTIONS",
            E::TooManyStreams(_) | E::TooManyLinks(_) => "TOO_MANY_SUBSCRIPTION_STREAMS",
            E::Contended(_) | E::Store(_) | E::Stream(_) => "UNAVAILABLE",
        }
    }

    /// The kind in the server's problem-type URN (`urn:liveresults:problem:<kind>`).
    pub fn kind(&self) -> String {
        self.code().to_ascii_lowercase().replace('_', "-")
    }
}
