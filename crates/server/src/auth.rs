//! Access control: bearer tokens with roles, the Host check, the cross-origin check and the
//! Content-Type check on ingest — everything that decides whether a request reaches a handler.
//!
//! Roles are ordered: `read` (every GET) < `write` (`POST /queries/{id}/events`, and every
//! Durable Streams write under `/v1/stream/`) < `admin`
//! (`DELETE /queries/{id}`, `POST /queries/{id}/resume` and any other non-GET route). They are
//! decided here by method and path, so a handler added later is admin-only until it is listed
//! here. `/healthz` and `/readyz` stay open for probes.
//!
//! Without tokens the server is open (bind it to loopback); the Host, Origin and Content-Type
//! checks still apply, because they are what stop a web page in the operator's browser from
//! writing to a loopback server (a cross-site `text/plain` POST needs no CORS preflight).

use std::fmt;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::problem::problem;
use crate::state::AppState;

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_BYTES: usize = 16;

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every GET: list, stats, snapshots, change feeds, metrics.
    Read,
    /// Read, and ingest events.
    Write,
    /// Write, and clear, delete and resume queries.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// A token list that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{origin}, entry {entry}: {detail}")]
pub struct TokenError {
    /// Where the tokens came from (a file path, an environment variable).
    origin: String,
    /// 1-based entry (line of a file, item of a variable).
    entry: usize,
    /// What is wrong (never the token itself).
    detail: String,
}

/// One secret with its role. Its `Debug` never shows the secret.
struct Token {
    secret: Vec<u8>,
    role: Role,
}

/// The configured bearer tokens. `Debug` shows how many there are, never a secret; they are
/// never logged.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// No tokens: the server is open.
    pub fn new() -> Self {
        Tokens::default()
    }

    /// Adds the entries of `text`, each `ROLE:TOKEN` (role `read`, `write` or `admin`),
    /// separated by newlines, commas or whitespace; blank entries and lines starting with `#`
    /// are skipped. `origin` names the source in errors (a path, a variable name). Tokens are
    /// at least [`MIN_TOKEN_BYTES`] visible ASCII characters, so they fit a header unchanged.
    pub fn add(mut self, text: &str, origin: &str) -> Result<Self, TokenError> {
        let lines = text.lines().filter(|l| !l.trim_start().starts_with('#'));
        let entries = lines.flat_map(|l| l.split([',', ' ', '\t']));
        for (index, entry) in entries.filter(|e| !e.trim().is_empty()).enumerate() {
            let fail = |detail: String| TokenError {
                origin: origin.to_owned(),
                entry: index.saturating_add(1),
                detail,
            };
            let (role, secret) = entry
                .trim()
                .split_once(':')
                .ok_or_else(|| fail("expected ROLE:TOKEN (role read, write or admin)".into()))?;
            let role = match role.to_ascii_lowercase().as_str() {
                "read" => Role::Read,
                "write" => Role::Write,
                "admin" => Role::Admin,
                other => {
                    return Err(fail(format!(
                        "unknown role {other:?}: expected read, write or admin"
                    )))
                }
            };
            if secret.len() < MIN_TOKEN_BYTES {
                return Err(fail(format!(
                    "token shorter than {MIN_TOKEN_BYTES} characters"
                )));
            }
            if !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(fail("token has characters other than visible ASCII".into()));
            }
            self.tokens.push(Token {
                secret: secret.as_bytes().to_vec(),
                role,
            });
        }
        Ok(self)
    }

    /// Whether any token is configured (without one, the server is open).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The role of `presented`, comparing it with every token in constant time (no early
    /// exit, neither within a token nor across tokens), so timing tells nothing about how
    /// much of a guess was right.
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&token.secret, presented) {
                found = found.max(Some(token.role));
            }
        }
        found
    }
}

/// Byte-wise equality whose running time depends only on the longer length: every byte is
/// compared and the differences are OR-ed, never returned early.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// Who may reach the server and from where: tokens, allowed Host values, allowed CORS origins.
#[derive(Debug, Default)]
pub struct Security {
    pub(crate) tokens: Tokens,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) cors_origins: Vec<String>,
}

impl Security {
    /// Open: no tokens, any Host, no CORS.
    pub fn new() -> Self {
        Security::default()
    }

    /// Requires a bearer token with the route's role (when `tokens` is not empty).
    #[must_use]
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Accepts only requests whose Host header is one of `hosts` (`name` matches any port,
    /// `name:port` that port only; case-insensitive): a DNS-rebinding page sends its own name.
    /// Empty: any Host.
    #[must_use]
    pub fn allowed_hosts(mut self, hosts: Vec<String>) -> Self {
        self.allowed_hosts = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    /// Lets pages of these origins (`https://app.example`) call the API from a browser.
    /// Empty (the default): no CORS headers, and writes carrying a foreign `Origin` are refused.
    #[must_use]
    pub fn cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = origins;
        self
    }

    /// Whether tokens are required.
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// The role a request needs, by method and path.
fn required_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Read
    } else if method == Method::POST && path.starts_with("/queries/") && path.ends_with("/events") {
        Role::Write
    } else if path.starts_with("/v1/stream/") {
        // Durable Streams: create, append, close and delete all write.
        Role::Write
    } else {
        Role::Admin
    }
}

/// The host part of a Host value: `[::1]:80` → `[::1]`, `a.example:80` → `a.example`.
fn host_name(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn host_header(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(host.trim().to_ascii_lowercase())
}

/// `None` when the Host is allowed, else why not.
fn check_host(security: &Security, host: Option<&str>) -> Option<String> {
    if security.allowed_hosts.is_empty() {
        return None;
    }
    let Some(host) = host else {
        return Some("the request has no Host header".to_owned());
    };
    let name = host_name(host);
    let allowed = security
        .allowed_hosts
        .iter()
        .any(|a| a == host || a == name);
    (!allowed).then(|| format!("host {host:?} is not one of --allowed-hosts"))
}

/// `None` when a state-changing request comes from no browser page, the server's own origin
/// or an allowed CORS origin; else why it is refused.
fn check_origin(security: &Security, headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if security.cors_origins.iter().any(|o| *o == origin) {
        return None;
    }
    let authority = origin
        .split_once("://")
        .map(|(_, a)| a.to_ascii_lowercase());
    if authority.is_some() && authority.as_deref() == host {
        return None;
    }
    Some(format!(
        "cross-origin request from {origin:?} refused; allow the origin with --cors-origin"
    ))
}

/// The bearer token of the request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..).unwrap_or_default().trim_ascii())
}

/// Whether the media type of `Content-Type` is one ingest reads (parameters such as
/// `charset` are ignored).
fn is_ingest_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/x-ndjson")
        || media.eq_ignore_ascii_case("application/json")
}

fn unauthorized(detail: &str) -> Response {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"liveresults\""),
    );
    response
}

/// The middleware: Host, then Origin (writes only), then token and role, then Content-Type
/// (ingest only). The first failing check answers; the handler never runs.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let security = &state.inner.security;
    let headers = request.headers();
    let host = host_header(headers);
    if let Some(detail) = check_host(security, host.as_deref()) {
        return problem(
            StatusCode::MISDIRECTED_REQUEST,
            "host-not-allowed",
            "Host not allowed",
            detail,
        );
    }
    let method = request.method();
    let path = request.uri().path();
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS].contains(method);
    if !safe {
        if let Some(detail) = check_origin(security, headers, host.as_deref()) {
            return problem(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "Cross-origin request refused",
                detail,
            );
        }
    }
    // CORS preflights carry no token (browsers never send one with them).
    let preflight = method == Method::OPTIONS && path.starts_with("/v1/stream/");
    // Subscription callbacks, acks and releases carry their wake's own token; the webhook
    // signing keys are public.
    let own_auth = liveresults_streams::http::subscription::authenticates_itself(method, path);
    let open = matches!(path, "/healthz" | "/readyz") || preflight || own_auth;
    if security.requires_tokens() && !open {
        let needed = required_role(method, path);
        let Some(presented) = bearer(headers) else {
            return unauthorized(
                "this server requires a bearer token: send Authorization: Bearer <token>",
            );
        };
        let Some(role) = security.tokens.role_of(presented) else {
            return unauthorized("the bearer token is not valid");
        };
        if role < needed {
            return problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!(
                    "{method} {path} needs the {} role; the token has the {} role",
                    needed.name(),
                    role.name()
                ),
            );
        }
    }
    let ingest = method == Method::POST && path.starts_with("/queries/");
    if ingest && required_role(method, path) == Role::Write && !is_ingest_type(headers) {
        let mut response = problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "events must be sent with Content-Type: application/x-ndjson (or application/json)",
        );
        response.headers_mut().insert(
            "accept-post",
            HeaderValue::from_static("application/x-ndjson, application/json"),
        );
        return response;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abcdefgh", b"abcdefgh"));
        assert!(!constant_time_eq(b"abcdefgh", b"abcdefgX"));
        assert!(!constant_time_eq(b"abcdefgh", b"abcdefghi"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn tokens_parse_roles_and_refuse_weak_ones_without_echoing_them() {
        let tokens = Tokens::new()
            .add(
                "# comment\nread:rrrrrrrrrrrrrrrr\nadmin:aaaaaaaaaaaaaaaa",
                "file",
            )
            .and_then(|t| t.add("write:wwwwwwwwwwwwwwww", "env"));
        let tokens = tokens.map_err(|e| e.to_string());
        let tokens = tokens.as_ref().map_err(String::as_str);
        assert_eq!(
            tokens.map(|t| t.role_of(b"wwwwwwwwwwwwwwww")),
            Ok(Some(Role::Write))
        );
        assert_eq!(tokens.map(|t| t.role_of(b"nope")), Ok(None));
        assert_eq!(
            tokens.map(|t| format!("{t:?}")),
            Ok("Tokens { count: 3, .. }".to_owned())
        );
        let weak = Tokens::new().add("read:short", "env").map(|_| ());
        let weak = weak.map_err(|e| e.to_string());
        assert_eq!(
            weak,
            Err("env, entry 1: token shorter than 16 characters".to_owned())
        );
        let role = Tokens::new()
            .add("root:xxxxxxxxxxxxxxxxxxxx", "f")
            .map(|_| ());
        assert!(role.is_err_and(|e| !e.to_string().contains("xxxx")));
    }

    #[test]
    fn roles_by_route() {
        assert_eq!(
            required_role(&Method::GET, "/queries/q/changes"),
            Role::Read
        );
        assert_eq!(
            required_role(&Method::POST, "/queries/q/events"),
            Role::Write
        );
        assert_eq!(
            required_role(&Method::POST, "/queries/q/resume"),
            Role::Admin
        );
        assert_eq!(required_role(&Method::DELETE, "/queries/q"), Role::Admin);
        assert_eq!(required_role(&Method::GET, "/v1/stream/s"), Role::Read);
        assert_eq!(required_role(&Method::PUT, "/v1/stream/s"), Role::Write);
        assert_eq!(required_role(&Method::DELETE, "/v1/stream/s"), Role::Write);
    }

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(host_name("a.example:8080"), "a.example");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("a.example"), "a.example");
    }
}
