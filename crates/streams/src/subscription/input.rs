//! What clients send to the subscription API, parsed and checked: ids, stream paths, glob
//! patterns, webhook URLs (the SSRF rules of the protocol's §6.2) and the create body.
//! Every length is bounded, so a client cannot make a record (or a glob match) large.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use super::error::SubscriptionError;
use super::webhook_client::is_blocked;
use super::{Config, Kind};
use crate::http::headers::MAX_NAME_BYTES;

/// Longest subscription id and worker name, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest webhook URL and description, in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Default lease: 30 s. The protocol allows 1 s to 10 min.
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;
const MIN_LEASE_TTL_MS: u64 = 1_000;
const MAX_LEASE_TTL_MS: u64 = 600_000;
/// Most `**` segments in a pattern (more would add nothing a client needs).
const MAX_DOUBLE_STARS: usize = 4;

fn invalid(detail: impl Into<String>) -> SubscriptionError {
    SubscriptionError::Invalid(detail.into())
}

/// A subscription id: 1 to 256 bytes of URL-unreserved characters (`A-Z a-z 0-9 - . _ ~`),
/// so it needs no encoding in the callback URLs the server builds.
pub fn subscription_id(text: &str) -> Result<String, SubscriptionError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_ID_BYTES
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(invalid(format!(
            "a subscription id is 1 to {MAX_ID_BYTES} characters of A-Z a-z 0-9 - . _ ~"
        )))
    }
}

/// A stream-root-relative stream path as the stream routes name streams: leading and trailing
/// slashes dropped, 1 to 1024 bytes, not under the reserved `__ds` prefix.
pub fn stream_path(text: &str) -> Result<String, SubscriptionError> {
    let path = text.trim_matches('/');
    if path.is_empty() || path.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "a stream path is 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    if path.split('/').next() == Some("__ds") {
        return Err(invalid("stream paths under __ds are reserved"));
    }
    Ok(path.to_owned())
}

/// A glob pattern: a stream path whose segments may be `*` or `**`.
pub fn pattern(text: &str) -> Result<String, SubscriptionError> {
    let pattern = text.trim_matches('/');
    if pattern.is_empty() || pattern.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("a pattern is 1 to {MAX_NAME_BYTES} bytes")));
    }
    if pattern.split('/').filter(|s| *s == "**").count() > MAX_DOUBLE_STARS {
        return Err(invalid(format!(
            "a pattern has at most {MAX_DOUBLE_STARS} ** segments"
        )));
    }
    Ok(pattern.to_owned())
}

/// Whether `path` matches `pattern`: `*` is exactly one segment, `**` zero or more, any
/// other segment matches itself. Dynamic programming over (pattern, path) suffixes, so the
/// work is at most the product of their segment counts whatever the `**`s.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // `next[j]`: pattern[i + 1..] matches path[j..]; `here[j]`: pattern[i..] matches path[j..].
    let mut next = vec![false; path.len() + 1];
    next[path.len()] = true;
    for segment in pattern.iter().rev() {
        let mut here = vec![false; path.len() + 1];
        for j in (0..=path.len()).rev() {
            here[j] = match *segment {
                "**" => next[j] || (j < path.len() && here[j + 1]),
                "*" => j < path.len() && next[j + 1],
                literal => j < path.len() && path[j] == literal && next[j + 1],
            };
        }
        next = here;
    }
    next[0]
}

/// Checks a webhook URL against the protocol's SSRF rules: `https`, except `http` to
/// `localhost` or `127.0.0.x` when `allow_dev` (`serve --allow-dev-webhooks`; the protocol
/// allows it for development only); no IPv4 literal [`is_blocked`] refuses, no IPv6 literal.
/// Names are resolved at connect time, where the webhook client drops the same addresses
/// (see [`super::webhook_client`]).
pub fn webhook_url(text: &str, allow_dev: bool) -> Result<String, SubscriptionError> {
    let rejected = |why: &str| SubscriptionError::WebhookUrl(why.to_owned());
    if text.len() > MAX_TEXT_BYTES {
        return Err(rejected("the URL is too long"));
    }
    let url = reqwest::Url::parse(text).map_err(|_| rejected("not a valid URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(rejected("URLs with credentials are not accepted"));
    }
    // The parser has already normalized IPv4 literals (`0x7f.1` is `127.0.0.1` here).
    let host = match url.host_str() {
        None | Some("") => return Err(rejected("the URL has no host")),
        Some(h) if h.starts_with('[') => {
            return Err(rejected("IPv6 webhook hosts are not accepted"))
        }
        Some(h) => match h.parse::<Ipv4Addr>() {
            Ok(ip) => Host::V4(ip),
            Err(_) => Host::Name(h.to_ascii_lowercase()),
        },
    };
    let local_dev = match &host {
        Host::Name(name) => name == "localhost",
        Host::V4(ip) => ip.octets()[..3] == [127, 0, 0],
    };
    match url.scheme() {
        "http" if local_dev && allow_dev => Ok(url.to_string()),
        "http" if allow_dev => Err(rejected(
            "http webhook URLs are only allowed for localhost or 127.0.0.x",
        )),
        "http" => Err(rejected(
            "webhook URLs must use https (http to localhost needs serve --allow-dev-webhooks)",
        )),
        "https" if local_dev => Err(rejected("localhost webhook URLs must use http")),
        "https" => match host {
            Host::V4(ip) if is_blocked(IpAddr::V4(ip), false) => Err(rejected(
                "webhook URLs must not target private, loopback or link-local hosts",
            )),
            _ => Ok(url.to_string()),
        },
        _ => Err(rejected("webhook URLs must use https")),
    }
}

enum Host {
    Name(String),
    V4(Ipv4Addr),
}

fn opt_string<'a>(body: &'a Value, field: &str) -> Result<Option<&'a str>, SubscriptionError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

/// A list of stream paths (`streams` of a create or an add), sorted, without duplicates.
pub fn stream_list(
    value: Option<&Value>,
    required: bool,
) -> Result<Vec<String>, SubscriptionError> {
    let items = match value {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        Some(Value::Array(items)) if !(required && items.is_empty()) => items,
        _ => return Err(invalid("streams must be a non-empty array of stream paths")),
    };
    let mut paths = items
        .iter()
        .map(|item| match item {
            Value::String(s) => stream_path(s),
            _ => Err(invalid("streams must contain only strings")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Refuses `streams` naming `wake_stream`: every wake appends an event to it, which would be
/// new pending work and wake the subscription again, forever (and grow the stream).
pub fn own_wake_stream(wake_stream: &str, streams: &[String]) -> Result<(), SubscriptionError> {
    if streams.iter().any(|s| s == wake_stream) {
        return Err(invalid(format!(
            "streams must not include the subscription's own wake_stream {wake_stream}"
        )));
    }
    Ok(())
}

/// The body of `PUT …/subscriptions/{id}`.
///
/// `allow_dev_webhooks`: see [`webhook_url`].
pub fn create_body(body: &[u8], allow_dev_webhooks: bool) -> Result<Config, SubscriptionError> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON body: {e}")))?;
    if !body.is_object() {
        return Err(invalid("the body must be a JSON object"));
    }
    let kind = match body.get("type").and_then(Value::as_str) {
        Some("webhook") => Kind::Webhook,
        Some("pull-wake") => Kind::PullWake,
        _ => return Err(invalid("type must be \"webhook\" or \"pull-wake\"")),
    };
    let pattern = opt_string(&body, "pattern")?.map(pattern).transpose()?;
    let streams = stream_list(body.get("streams"), false)?;
    if pattern.is_none() && streams.is_empty() {
        return Err(invalid("at least one of pattern or streams is required"));
    }
    let lease_ttl_ms = match body.get("lease_ttl_ms") {
        None | Some(Value::Null) => DEFAULT_LEASE_TTL_MS,
        Some(v) => v
            .as_u64()
            .filter(|ms| (MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(ms))
            .ok_or_else(|| invalid("lease_ttl_ms must be an integer from 1000 to 600000"))?,
    };
    let webhook_url = match kind {
        Kind::Webhook => {
            let url = body
                .get("webhook")
                .and_then(|w| w.get("url"))
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| invalid("webhook subscriptions require webhook.url"))?;
            Some(webhook_url(url, allow_dev_webhooks)?)
        }
        Kind::PullWake => None,
    };
    let wake_stream = opt_string(&body, "wake_stream")?
        .map(stream_path)
        .transpose()?;
    if kind == Kind::PullWake && wake_stream.is_none() {
        return Err(invalid("pull-wake subscriptions require wake_stream"));
    }
    if let Some(wake) = &wake_stream {
        own_wake_stream(wake, &streams)?;
    }
    let description = opt_string(&body, "description")?.map(str::to_owned);
    if description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_TEXT_BYTES)
    {
        return Err(invalid(format!(
            "description is at most {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(Config {
        kind,
        pattern,
        streams,
        webhook_url,
        wake_stream,
        lease_ttl_ms,
        description,
    })
}

/// Decodes `%XX` escapes (a path segment such as `manual%2Fb`); `None` if one is malformed or
/// the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_segments() {
        assert!(glob_match("events/*", "events/a"));
        assert!(!glob_match("events/*", "events/a/b"));
        assert!(!glob_match("events/*", "events"));
        assert!(glob_match("events/**", "events"));
        assert!(glob_match("events/**", "events/a/b"));
        assert!(glob_match("**/x", "a/b/x"));
        assert!(!glob_match("a/*/c", "a/b/d"));
        assert!(glob_match("a/**/b/**/c", "a/x/b/y/z/c"));
        assert!(!glob_match("a/**/b/**/c", "a/x/c"));
        assert!(glob_match("**", "anything/at/all"));
        // Linear-time in practice: a long path against many `**` answers at once.
        let long = "s/".repeat(512);
        assert!(!glob_match("**/**/**/**/x", &long));
        assert!(glob_match("**/**/**/**/s", &long));
    }

    #[test]
    fn webhook_urls_follow_the_ssrf_rules() {
        assert!(webhook_url("http://127.0.0.1:9/hook", true).is_ok());
        assert!(webhook_url("http://localhost/hook", true).is_ok());
        assert!(webhook_url("http://127.0.0.1:9/hook", false).is_err());
        assert!(webhook_url("http://localhost/hook", false).is_err());
        assert!(webhook_url("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "https://192.0.0.8/x",
            "https://198.18.0.1/x",
            "https://240.0.0.1/x",
            "https://100.64.0.1/x",
            "http://10.0.0.1/hook",
            "http://hooks.example.com/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest",
            "https://[::1]/x",
            "https://localhost/x",
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
            "not a url",
        ] {
            assert!(webhook_url(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_bodies_are_checked() {
        let ok = create_body(
            br#"{"type":"pull-wake","streams":["b","a","b"],"wake_stream":"w"}"#,
            false,
        )
        .expect("valid");
        assert_eq!(ok.streams, ["a", "b"]);
        assert_eq!(ok.lease_ttl_ms, DEFAULT_LEASE_TTL_MS);
        for bad in [
            &b"[]"[..],
            br#"{"type":"webhook","pattern":"a/*"}"#,
            br#"{"type":"pull-wake","pattern":"a/*"}"#,
            br#"{"type":"pull-wake","wake_stream":"w"}"#,
            br#"{"type":"pull-wake","wake_stream":"w","streams":["__ds/x"]}"#,
            br#"{"type":"pull-wake","wake_stream":"w","streams":["a"],"lease_ttl_ms":5}"#,
            br#"{"type":"other","streams":["a"]}"#,
        ] {
            assert!(
                create_body(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(percent_decode("manual%2Fb").as_deref(), Some("manual/b"));
        assert_eq!(percent_decode("bad%2"), None);
        assert!(subscription_id("sub-1").is_ok());
        assert!(subscription_id("a/b").is_err());
    }
}
