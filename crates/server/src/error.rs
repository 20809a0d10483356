//! One error type for every handler, and its one mapping to an HTTP response.
//!
//! Responses are RFC 9457 problem documents (`application/problem+json`):
//! `{"type", "title", "status", "detail", ...extra}`. Client errors explain themselves in
//! `detail`; server errors are logged in full here and answered with a generic detail, so
//! that store internals never reach a client.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use liveresults_core::ndjson::NdjsonError;
use liveresults_core::StoreError;
use liveresults_runtime::{StopReason, SubmitError};
use serde_json::{Map, Value as Json};

use crate::feed::FeedError;

/// Prefix of every problem `type`: a URN needs no web page to exist behind it.
const TYPE_PREFIX: &str = "urn:liveresults:problem:";

/// Seconds an overloaded client is told to wait before retrying.
const RETRY_AFTER_SECS: &str = "1";

/// Header naming the host that owns a query, on a `not-owner` answer (several hosts sharing
/// the store).
pub const OWNER_HEADER: &str = "liveresults-owner";
/// Header giving the owning host's address, on a `not-owner` answer.
pub const OWNER_ADDRESS_HEADER: &str = "liveresults-owner-address";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The query is known neither to the runtime nor to the store.
    #[error("query {query_id:?} not found")]
    NotFound {
        /// The query asked for.
        query_id: String,
    },
    /// A request parameter or header is invalid.
    #[error("{detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// An ingest line is not a valid event for this query: its chunk was not committed.
    #[error("line {line}: {detail}")]
    BadLine {
        /// 1-based line number over the whole body.
        line: usize,
        /// What is wrong with the line.
        detail: String,
        /// The query's committed sequence (earlier chunks stay committed).
        committed_sequence: Option<u64>,
    },
    /// An ingest line is longer than the line limit or not UTF-8: the NDJSON splitter's
    /// error, worded exactly as the runtime's NDJSON source words it. The line's chunk was
    /// not committed.
    #[error("{source}")]
    Ndjson {
        /// What is wrong, and on which line.
        #[source]
        source: NdjsonError,
        /// The query's committed sequence (earlier chunks stay committed).
        committed_sequence: Option<u64>,
    },
    /// The request body is larger than the body limit.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// The query's committed sequence (chunks before the limit stay committed).
        committed_sequence: Option<u64>,
    },
    /// The body could not be read (the client went away or sent a broken stream).
    #[error("reading the request body after line {line}: {detail}")]
    BodyRead {
        /// Lines read before the failure.
        line: usize,
        /// The transport's message.
        detail: String,
        /// The query's committed sequence.
        committed_sequence: Option<u64>,
    },
    /// The runtime refused a chunk (stopped query, full queue, shutdown, store failure).
    #[error("chunk starting at line {first_line}: {source}")]
    Refused {
        /// First line of the refused chunk.
        first_line: usize,
        /// The line whose event caused the refusal, when known (a sequence gap).
        line: Option<usize>,
        /// The query's committed sequence (earlier chunks stay committed).
        committed_sequence: Option<u64>,
        /// The runtime's answer.
        #[source]
        source: SubmitError,
    },
    /// The offset cannot be served: entries after it left the outbox, or it belongs to an
    /// older epoch of the query. The client must refetch the snapshot.
    #[error("{detail}")]
    MustRefetch {
        /// Why.
        detail: String,
        /// The query's current tail offset, to resume from after the snapshot.
        offset: String,
    },
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown {
        /// The query's committed sequence, for an interrupted ingest.
        committed_sequence: Option<u64>,
    },
    /// A store failure (logged, not shown).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else that is the server's fault (logged, not shown).
    #[error("{0}")]
    Internal(String),
}

impl From<SubmitError> for ApiError {
    fn from(source: SubmitError) -> Self {
        let committed_sequence = match &source {
            SubmitError::QueryStopped { committed, .. } | SubmitError::Store { committed, .. } => {
                *committed
            }
            _ => None,
        };
        ApiError::Refused {
            first_line: 0,
            line: None,
            committed_sequence,
            source,
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(error: FeedError) -> Self {
        match error {
            FeedError::MustRefetch { detail, tail } => ApiError::MustRefetch {
                detail,
                offset: tail.to_string(),
            },
            FeedError::Store(e) => ApiError::Store(e),
            FeedError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// A problem document under construction.
struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Json>,
    retry_after: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            status,
            kind,
            title,
            detail,
            extra: Map::new(),
            retry_after: false,
            headers: Vec::new(),
        }
    }

    /// Adds a response header; a value that is not a valid header (a name with control
    /// characters) is left out: the body carries it anyway.
    fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    fn with(mut self, key: &str, value: impl Into<Json>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    fn committed(self, sequence: Option<u64>) -> Self {
        self.with(
            "committed_sequence",
            sequence.map_or(Json::Null, Json::from),
        )
    }
}

/// Texts of a store error caused by a full disk (RocksDB's `NoSpace` and `SpaceLimit`).
const NO_SPACE_MARKERS: [&str; 2] = ["No space left on device", "Space limit"];

/// Whether a store error's text says the disk is full.
fn is_no_space(message: &str) -> bool {
    NO_SPACE_MARKERS.iter().any(|m| message.contains(m))
}

/// What a client may learn of a store fault: the cause when it is one an operator fixes
/// outside the store (a full disk), otherwise a pointer to the log — store messages carry
/// paths and internals that stay in the server's log.
pub(crate) fn store_fault_summary(message: &str) -> &'static str {
    if is_no_space(message) {
        "the disk is full"
    } else {
        "a store error; see the server log"
    }
}

/// A store that cannot write for now: 507 for a full disk (the operator must free space),
/// 503 otherwise, both with `Retry-After`. `what` names the refused operation.
fn store_unavailable(error: &StoreError, what: &str) -> Problem {
    tracing::warn!(error = %error, "store unavailable");
    let message = error.to_string();
    let mut p = if is_no_space(&message) {
        Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk-full",
            "Store disk full",
            format!(
                "{what} failed: the store's disk is full. Nothing of it was stored. Writes \
                 resume by themselves once space is freed (the store checks every few \
                 seconds); a query stopped by this can then be resumed \
                 (POST /queries/{{id}}/resume) or cleared"
            ),
        )
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Store temporarily unavailable",
            format!("{what} failed: the store is busy or closing; retry later"),
        )
    };
    p.retry_after = true;
    p
}

/// A server-side failure: log everything, tell the client nothing specific.
fn internal(error: &dyn std::fmt::Display) -> Problem {
    tracing::error!(error = %error, "request failed");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal server error",
        "the server failed to process the request; see its log".to_owned(),
    )
}

fn refused(
    first_line: usize,
    line: Option<usize>,
    committed_sequence: Option<u64>,
    source: &SubmitError,
) -> Problem {
    let problem = match source {
        // Several hosts share the store and another one writes this query: say which, so the
        // client sends its writes there (a redirect would need the body again, which a
        // streamed ingest no longer has).
        SubmitError::NotOwner {
            query_id,
            holder,
            address,
        } => Problem::new(
            StatusCode::CONFLICT,
            "not-owner",
            "Query owned by another host",
            format!(
                "query {query_id:?} is written by host {holder:?} at {address}; nothing was \
                 committed here. Send its writes there; reads work on every host"
            ),
        )
        .with("owner", holder.as_str())
        .with("owner_address", address.as_str())
        .header(OWNER_HEADER, holder)
        .header(OWNER_ADDRESS_HEADER, address),
        // The lease moved while this host was writing: a retry is answered by the new state
        // (most likely `not-owner`, naming the new owner).
        SubmitError::QueryStopped {
            query_id,
            reason: StopReason::LeaseLost,
            ..
        } => {
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "lease-lost",
                "Query moved to another host",
                format!(
                    "this host lost the lease of query {query_id:?} to another host; nothing \
                     after the committed sequence was committed. Retry: the answer names the \
                     host that writes the query now"
                ),
            );
            p.retry_after = true;
            p.with("reason", StopReason::LeaseLost.to_string())
        }
        // A store fault's message stays in the log; the client learns its kind and the way out.
        SubmitError::QueryStopped {
            query_id,
            reason: StopReason::Store(message),
            committed,
        } => {
            let reason = StopReason::Store(store_fault_summary(message).to_owned());
            Problem::new(
                StatusCode::CONFLICT,
                "query-stopped",
                "Query stopped",
                format!(
                    "query {query_id:?} is stopped ({reason}); last committed sequence: \
                     {}. Once the cause is gone, resume it \
                     (POST /queries/{{id}}/resume: it continues after its last committed \
                     sequence) or clear it (DELETE)",
                    committed.map_or_else(|| "none".to_owned(), |c| c.to_string())
                ),
            )
            .with("reason", reason.to_string())
        }
        // Refused because a purge removed the query while the request waited in its queue.
        SubmitError::QueryStopped {
            query_id,
            reason: StopReason::Removed,
            ..
        } => Problem::new(
            StatusCode::CONFLICT,
            "query-removed",
            "Query removed",
            format!(
                "query {query_id:?} was purged (DELETE ?purge=true) while this request waited; \
                 this part of it was not committed. Send it again to create the query anew"
            ),
        ),
        SubmitError::QueryStopped { reason, .. } => Problem::new(
            StatusCode::CONFLICT,
            "query-stopped",
            "Query stopped",
            format!("{source}; clear the query (DELETE) to accept events again"),
        )
        .with("reason", reason.to_string()),
        SubmitError::Overloaded { .. } => {
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                source.to_string(),
            );
            p.retry_after = true;
            p
        }
        SubmitError::ShuttingDown => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "Shutting down",
            source.to_string(),
        ),
        SubmitError::WrongQuery { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            "wrong-query",
            "Event for another query",
            source.to_string(),
        ),
        SubmitError::Store {
            source: StoreError::InvalidQueryId { .. },
            ..
        } => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query-id",
            "Invalid query id",
            source.to_string(),
        ),
        SubmitError::Store {
            source: store,
            query_id,
            ..
        } if store.is_transient() => store_unavailable(store, &format!("query {query_id:?}")),
        _ => internal(source),
    }
    .committed(committed_sequence);
    let problem = if first_line > 0 {
        problem.with("chunk_first_line", first_line)
    } else {
        problem
    };
    match line {
        Some(line) => problem.with("line", line),
        None => problem,
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::NotFound { query_id } => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Query not found",
                self.to_string(),
            )
            .with("query_id", query_id.as_str()),
            ApiError::BadRequest { detail } => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                detail.clone(),
            ),
            ApiError::BadLine {
                line,
                committed_sequence,
                ..
            } => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-line",
                "Invalid event line",
                format!("{self}; its chunk was not committed, earlier chunks were"),
            )
            .with("line", *line)
            .committed(*committed_sequence),
            ApiError::Ndjson {
                source,
                committed_sequence,
            } => {
                let problem = match source {
                    NdjsonError::LineTooLong { limit, .. } => Problem::new(
                        StatusCode::BAD_REQUEST,
                        "line-too-long",
                        "Line too long",
                        self.to_string(),
                    )
                    .with("limit", *limit),
                    _ => Problem::new(
                        StatusCode::BAD_REQUEST,
                        "bad-line",
                        "Invalid event line",
                        self.to_string(),
                    ),
                };
                problem
                    .with("line", source.line())
                    .committed(*committed_sequence)
            }
            ApiError::BodyTooLarge {
                limit,
                committed_sequence,
            } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                self.to_string(),
            )
            .with("limit", *limit)
            .committed(*committed_sequence),
            ApiError::BodyRead {
                line,
                committed_sequence,
                ..
            } => Problem::new(
                StatusCode::BAD_REQUEST,
                "body-read",
                "Request body could not be read",
                self.to_string(),
            )
            .with("line", *line)
            .committed(*committed_sequence),
            ApiError::Refused {
                first_line,
                line,
                committed_sequence,
                source,
            } => refused(*first_line, *line, *committed_sequence, source),
            ApiError::MustRefetch { offset, .. } => Problem::new(
                StatusCode::CONFLICT,
                "must-refetch",
                "Offset no longer readable: refetch the snapshot",
                format!("{self}; GET the snapshot and continue from the offset in its header line"),
            )
            .with("offset", offset.as_str()),
            ApiError::ShuttingDown { committed_sequence } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Shutting down",
                self.to_string(),
            )
            .committed(*committed_sequence),
            ApiError::Store(StoreError::InvalidQueryId { .. }) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query-id",
                "Invalid query id",
                self.to_string(),
            ),
            // Busy, timed out, disk full or closing: the client should come back, not give up.
            ApiError::Store(e) if e.is_transient() || matches!(e, StoreError::Closed) => {
                store_unavailable(e, "the request")
            }
            ApiError::Store(e) => internal(e),
            ApiError::Internal(e) => internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = self.problem();
        let mut body = Map::new();
        body.insert("type".into(), format!("{TYPE_PREFIX}{}", p.kind).into());
        body.insert("title".into(), p.title.into());
        body.insert("status".into(), p.status.as_u16().into());
        body.insert("detail".into(), p.detail.into());
        body.extend(p.extra);
        let mut response = (p.status, Json::Object(body).to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if p.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        for (name, value) in p.headers {
            headers.insert(name, value);
        }
        response
    }
}
