//! Problem documents for answers given before a handler runs (access control, limits).
//!
//! They use the same RFC 9457 shape and `type` prefix as [`crate::error::ApiError`], so a
//! client parses one format whichever layer refused it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Prefix of every problem `type` (the same as the handlers' errors use).
const TYPE_PREFIX: &str = "urn:liveresults:problem:";

/// An `application/problem+json` response with `status`, a `kind` (appended to the type
/// prefix), a fixed `title` and a `detail` saying what to change.
pub(crate) fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: impl Into<String>,
) -> Response {
    let body = json!({
        "type": format!("{TYPE_PREFIX}{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
