//! The subscription API's routes under the reserved `/v1/stream/__ds/` prefix (routed before
//! any stream, so no stream can shadow them):
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `__ds/jwks.json` | the webhook signing keys (public) |
//! | `PUT` / `GET` / `DELETE` | `__ds/subscriptions/{id}` | create or re-confirm / read / delete |
//! | `POST` | `__ds/subscriptions/{id}/streams` | link streams explicitly |
//! | `DELETE` | `__ds/subscriptions/{id}/streams/{path}` | unlink one (URL-encoded path) |
//! | `POST` | `__ds/subscriptions/{id}/claim` | a pull-wake worker claims the wake |
//! | `POST` | `__ds/subscriptions/{id}/callback`, `…/ack`, `…/release` | acks of a wake |
//!
//! Access control: the embedding server's roles apply (read for `GET`, write for the rest),
//! except for the routes of [`authenticates_itself`]: callback, ack and release carry the
//! wake's own token in `Authorization` (a webhook receiver holds no server token), and the
//! JWK Set is public key material receivers fetch to verify signatures.
//!
//! Errors are problem documents that also carry the protocol's `{"error":{"code":…}}`.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tracing::Instrument;

use super::HttpState;
use crate::subscription::input::{self, percent_decode};
use crate::subscription::wire::WakeRequest;
use crate::subscription::{Kind, SubscriptionError as E};

/// The reserved control prefix.
pub const CONTROL_PREFIX: &str = "/v1/stream/__ds";
/// Largest subscription request body (a create naming many streams).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Whether `path` is under the reserved control prefix.
pub fn is_control(path: &str) -> bool {
    path.strip_prefix(CONTROL_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a request authenticates itself rather than with a server token: the wake-token
/// routes (`POST …/callback`, `…/ack`, `…/release`) and the public JWK Set.
pub fn authenticates_itself(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(CONTROL_PREFIX) else {
        return false;
    };
    if rest == "/jwks.json" {
        return method == Method::GET || method == Method::HEAD;
    }
    let Some(rest) = rest.strip_prefix("/subscriptions/") else {
        return false;
    };
    let mut parts = rest.split('/');
    let (Some(id), Some(action), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    method == Method::POST && !id.is_empty() && matches!(action, "callback" | "ack" | "release")
}

/// Answers a request under [`CONTROL_PREFIX`].
pub(crate) async fn handle(state: &HttpState, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!("subscription_request", %method, path);
    let result = route(state, request).instrument(span).await;
    result.unwrap_or_else(|e| error_response(&e, &method, &path))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &E, method: &Method, path: &str) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match error {
        E::Store(_) | E::Stream(_) | E::Contended(_) => {
            tracing::error!(%method, path, error = %error, "subscription request failed");
            "the subscription store is unavailable; retry".to_owned()
        }
        _ => error.to_string(),
    };
    let mut detail = json!({ "code": error.code(), "message": message });
    if let E::AlreadyClaimed { holder, generation } = error {
        detail["current_holder"] = json!(holder);
        detail["generation"] = json!(generation);
    }
    let body = json!({
        "type": format!("urn:liveresults:problem:{}", error.kind()),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": message,
        "error": detail,
    });
    let mut response = json_response(status, &body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn method_not_allowed(allowed: &'static str) -> Response {
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": {"code": "INVALID_REQUEST", "message": format!("allowed: {allowed}")}}),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// `scheme://authority` of the request (for the URLs the server hands out).
fn base_url(headers: &HeaderMap) -> Result<String, E> {
    let host = (headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .ok_or_else(|| E::Invalid("the request needs a valid Host header".into()))?;
    let https = (headers.get("x-forwarded-proto"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

fn bearer(headers: &HeaderMap) -> Result<&str, E> {
    let value = (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .ok_or(E::TokenInvalid)?;
    let (scheme, token) = value.split_once(' ').ok_or(E::TokenInvalid)?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Ok(token.trim())
    } else {
        Err(E::TokenInvalid)
    }
}

async fn route(state: &HttpState, request: Request) -> Result<Response, E> {
    let subs = &state.streams.subscriptions;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let rest = path.strip_prefix(CONTROL_PREFIX).unwrap_or_default();
    if rest == "/jwks.json" {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Ok(method_not_allowed("GET, HEAD"));
        }
        let mut response = json_response(StatusCode::OK, &subs.signer().jwks());
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        return Ok(response);
    }
    let Some(rest) = rest.strip_prefix("/subscriptions/") else {
        return Err(E::NoRoute(path.to_owned()));
    };
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let id = input::subscription_id(
        &percent_decode(id).ok_or_else(|| E::Invalid("bad %-escape in the id".into()))?,
    )?;
    let body = super::read_body(body, super::content_length(&parts.headers), MAX_BODY_BYTES)
        .await
        .map_err(|e| E::Invalid(e.to_string()))?;
    let headers = &parts.headers;
    let method = &parts.method;
    match action {
        "" => match *method {
            Method::PUT => {
                let config = input::create_body(&body, subs.limits.allow_dev_webhooks)?;
                let base = base_url(headers)?;
                let (created, record) = subs.create(&id, config, &base).await?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(json_response(status, &subs.describe(&record, &base)))
            }
            Method::GET => {
                let record = subs.get(&id).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &subs.describe(&record, &base_url(headers)?),
                ))
            }
            Method::DELETE => {
                subs.delete(&id).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            _ => Ok(method_not_allowed("GET, PUT, DELETE")),
        },
        "streams" if *method == Method::POST => {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|_| E::Invalid("invalid JSON body".into()))?;
            let paths = input::stream_list(value.get("streams"), true)?;
            subs.add_streams(&id, &paths).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "streams" => Ok(method_not_allowed("POST")),
        "claim" | "callback" | "ack" | "release" if *method != Method::POST => {
            Ok(method_not_allowed("POST"))
        }
        "claim" => {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|_| E::Invalid("invalid JSON body".into()))?;
            let worker = (value.get("worker").and_then(Value::as_str))
                .filter(|w| !w.is_empty() && w.len() <= input::MAX_ID_BYTES)
                .ok_or_else(|| {
                    E::Invalid(format!(
                        "worker must be a string of 1 to {} bytes",
                        input::MAX_ID_BYTES
                    ))
                })?;
            let claimed = subs.claim(&id, worker).await?;
            let record = &claimed.record;
            let wake_id = record.wake.as_ref().map(|w| w.id.clone());
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "wake_id": wake_id,
                    "generation": record.generation,
                    "token": claimed.token,
                    "streams": subs.stream_infos(record, None),
                    "lease_ttl_ms": record.config.lease_ttl_ms,
                }),
            ))
        }
        "callback" | "ack" => {
            let token = bearer(headers)?;
            let request = WakeRequest::parse(&body)?;
            let kind = if action == "callback" {
                Kind::Webhook
            } else {
                Kind::PullWake
            };
            let next_wake = subs.ack(&id, kind, token, &request).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"ok": true, "next_wake": next_wake}),
            ))
        }
        "release" => {
            let token = bearer(headers)?;
            let request = WakeRequest::parse(&body)?;
            subs.release(&id, token, &request).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => match action.strip_prefix("streams/") {
            Some(encoded) if *method == Method::DELETE => {
                let decoded = percent_decode(encoded)
                    .ok_or_else(|| E::Invalid("bad %-escape in the stream path".into()))?;
                subs.remove_stream(&id, &input::stream_path(&decoded)?)
                    .await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Some(_) => Ok(method_not_allowed("DELETE")),
            None => Err(E::NoRoute(path.to_owned())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_routes_and_the_jwks_authenticate_themselves() {
        let post = Method::POST;
        assert!(authenticates_itself(
            &post,
            "/v1/stream/__ds/subscriptions/s/callback"
        ));
        assert!(authenticates_itself(
            &post,
            "/v1/stream/__ds/subscriptions/s/ack"
        ));
        assert!(authenticates_itself(
            &post,
            "/v1/stream/__ds/subscriptions/s/release"
        ));
        assert!(authenticates_itself(
            &Method::GET,
            "/v1/stream/__ds/jwks.json"
        ));
        assert!(!authenticates_itself(
            &post,
            "/v1/stream/__ds/subscriptions/s/claim"
        ));
        assert!(!authenticates_itself(
            &Method::PUT,
            "/v1/stream/__ds/subscriptions/s"
        ));
        assert!(!authenticates_itself(
            &Method::GET,
            "/v1/stream/__ds/subscriptions/s"
        ));
        assert!(!authenticates_itself(
            &post,
            "/v1/stream/__ds/subscriptions/s/ack/x"
        ));
        assert!(!authenticates_itself(&post, "/v1/stream/events/callback"));
        assert!(is_control("/v1/stream/__ds"));
        assert!(is_control("/v1/stream/__ds/x"));
        assert!(!is_control("/v1/stream/__dsx"));
    }
}
