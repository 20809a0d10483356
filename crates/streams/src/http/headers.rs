//! The protocol's request headers and query parameters, parsed strictly: a value the protocol
//! does not allow is a 400 naming the header, never a guess.

use axum::http::HeaderMap;

use crate::error::StreamError;
use crate::meta::ProducerTuple;
use crate::offset::{parse_position, parse_start, Start};
use crate::time::parse_rfc3339;

/// The `Stream-Next-Offset` header.
pub const STREAM_NEXT_OFFSET: &str = "stream-next-offset";
/// The `Stream-Up-To-Date` header.
pub const STREAM_UP_TO_DATE: &str = "stream-up-to-date";
/// The `Stream-Cursor` header.
pub const STREAM_CURSOR: &str = "stream-cursor";
/// The `Stream-Closed` header.
pub const STREAM_CLOSED: &str = "stream-closed";
/// The `Stream-Seq` header.
pub const STREAM_SEQ: &str = "stream-seq";
/// The `Stream-TTL` header.
pub const STREAM_TTL: &str = "stream-ttl";
/// The `Stream-Expires-At` header.
pub const STREAM_EXPIRES_AT: &str = "stream-expires-at";
/// The `Stream-Forked-From` header.
pub const STREAM_FORKED_FROM: &str = "stream-forked-from";
/// The `Stream-Fork-Offset` header.
pub const STREAM_FORK_OFFSET: &str = "stream-fork-offset";
/// The `Stream-Fork-Sub-Offset` header.
pub const STREAM_FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
/// The `Stream-SSE-Data-Encoding` header.
pub const STREAM_SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
/// The `Producer-Id` header.
pub const PRODUCER_ID: &str = "producer-id";
/// The `Producer-Epoch` header.
pub const PRODUCER_EPOCH: &str = "producer-epoch";
/// The `Producer-Seq` header.
pub const PRODUCER_SEQ: &str = "producer-seq";
/// The `Producer-Expected-Seq` header.
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
/// The `Producer-Received-Seq` header.
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";

/// The path prefix streams live under.
pub const PREFIX: &str = "/v1/stream/";

/// Longest stream name, `Producer-Id` and `Stream-Seq`, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
const MAX_PRODUCER_ID_BYTES: usize = 256;
const MAX_STREAM_SEQ_BYTES: usize = 256;
/// Largest producer epoch or sequence: 2^53 - 1, what JavaScript numbers hold exactly.
const MAX_PRODUCER_NUMBER: u64 = (1 << 53) - 1;
/// Largest `Stream-TTL`: 100 years, far beyond any use, and small enough that no expiry
/// computation overflows.
const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

fn bad(detail: impl Into<String>) -> StreamError {
    StreamError::BadRequest(detail.into())
}

/// A header's value as text, if present.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, StreamError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| bad(format!("{name} is not visible ASCII")))
        })
        .transpose()
}

/// `Stream-Closed: true` (any case); any other value counts as absent, as the protocol says.
pub fn closed(headers: &HeaderMap) -> bool {
    headers
        .get(STREAM_CLOSED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A non-negative decimal integer without sign, leading zeros, fraction or exponent.
pub fn strict_uint(name: &str, value: &str, max: u64) -> Result<u64, StreamError> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    let parsed = canonical.then(|| value.parse::<u64>().ok()).flatten();
    parsed.filter(|&v| v <= max).ok_or_else(|| {
        bad(format!(
            "{name} must be a whole number from 0 to {max}, not {value:?}"
        ))
    })
}

/// The stream name of a request path (`/v1/stream/{name}`), as sent (not percent-decoded,
/// so it matches `Stream-Forked-From` values byte for byte).
pub fn stream_name(path: &str) -> Result<&str, StreamError> {
    let name = path.strip_prefix(PREFIX).unwrap_or(path);
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(bad(format!("a stream name is 1 to {MAX_NAME_BYTES} bytes")));
    }
    if name.split('/').next() == Some("__ds") {
        return Err(StreamError::NotFound(format!(
            "{name} (the __ds prefix is reserved for the subscription API)"
        )));
    }
    Ok(name)
}

/// `Stream-TTL` and `Stream-Expires-At` (milliseconds): at most one of them.
pub fn expiry(headers: &HeaderMap) -> Result<(Option<u64>, Option<u64>), StreamError> {
    let ttl = text(headers, STREAM_TTL)?
        .map(|v| strict_uint("Stream-TTL", v.trim(), MAX_TTL_SECS))
        .transpose()?;
    let expires = text(headers, STREAM_EXPIRES_AT)?
        .map(|v| {
            parse_rfc3339(v.trim()).ok_or_else(|| {
                bad(format!(
                    "Stream-Expires-At {v:?} is not an RFC 3339 timestamp"
                ))
            })
        })
        .transpose()?;
    if ttl.is_some() && expires.is_some() {
        return Err(bad("send Stream-TTL or Stream-Expires-At, not both"));
    }
    Ok((ttl, expires))
}

/// `Producer-Id`, `-Epoch` and `-Seq`: all three or none.
pub fn producer(headers: &HeaderMap) -> Result<Option<ProducerTuple>, StreamError> {
    let id = text(headers, PRODUCER_ID)?;
    let epoch = text(headers, PRODUCER_EPOCH)?;
    let seq = text(headers, PRODUCER_SEQ)?;
    match (id, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(id), Some(epoch), Some(seq)) => {
            if id.is_empty() || id.len() > MAX_PRODUCER_ID_BYTES {
                return Err(bad(format!(
                    "Producer-Id must be 1 to {MAX_PRODUCER_ID_BYTES} bytes"
                )));
            }
            Ok(Some(ProducerTuple {
                id: id.to_owned(),
                epoch: strict_uint("Producer-Epoch", epoch.trim(), MAX_PRODUCER_NUMBER)?,
                seq: strict_uint("Producer-Seq", seq.trim(), MAX_PRODUCER_NUMBER)?,
            }))
        }
        _ => Err(bad(
            "Producer-Id, Producer-Epoch and Producer-Seq go together: send all three or none",
        )),
    }
}

/// `Stream-Seq`, if sent.
pub fn stream_seq(headers: &HeaderMap) -> Result<Option<String>, StreamError> {
    match text(headers, STREAM_SEQ)? {
        None => Ok(None),
        Some(seq) if !seq.is_empty() && seq.len() <= MAX_STREAM_SEQ_BYTES => {
            Ok(Some(seq.to_owned()))
        }
        Some(_) => Err(bad(format!(
            "Stream-Seq must be 1 to {MAX_STREAM_SEQ_BYTES} bytes"
        ))),
    }
}

/// The fork headers of a create: `(source name, offset, sub-offset)`.
pub fn fork(headers: &HeaderMap) -> Result<Option<(String, Option<u64>, u64)>, StreamError> {
    let source = text(headers, STREAM_FORKED_FROM)?;
    let offset = text(headers, STREAM_FORK_OFFSET)?;
    let sub = text(headers, STREAM_FORK_SUB_OFFSET)?;
    let Some(source) = source else {
        if offset.is_some() || sub.is_some() {
            return Err(bad(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    let source = source.trim();
    let name = source
        .strip_prefix(PREFIX)
        .unwrap_or(source.trim_start_matches('/'));
    let name = stream_name(name)
        .map_err(|_| bad(format!("Stream-Forked-From {source:?} names no stream")))?;
    let offset = offset.map(|o| parse_position(o.trim())).transpose()?;
    let sub = sub
        .map(|s| strict_uint("Stream-Fork-Sub-Offset", s.trim(), u64::MAX))
        .transpose()?;
    Ok(Some((name.to_owned(), offset, sub.unwrap_or(0))))
}

/// How a GET reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Catch-up: what is there now.
    No,
    /// Long-poll: wait for data when there is none.
    LongPoll,
    /// Server-sent events.
    Sse,
}

/// The query of a GET.
#[derive(Clone, Copy, Debug)]
pub struct ReadQuery {
    /// Where to start (`-1` when absent).
    pub start: Start,
    /// Whether `offset` was given.
    pub offset_given: bool,
    /// The read mode.
    pub live: Live,
    /// `cursor`, if numeric.
    pub cursor: Option<u64>,
}

/// Decodes `%XX` escapes and `+` (as space) of a query value.
fn percent_decode(value: &str) -> Result<String, StreamError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("malformed %-escape in the query"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad("the query is not UTF-8"))
}

/// Parses a GET's query: `offset` (once), `live`, `cursor`; other parameters are ignored.
pub fn read_query(query: Option<&str>) -> Result<ReadQuery, StreamError> {
    let mut offset = None;
    let mut live = Live::No;
    let mut cursor = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "offset" => {
                if offset.is_some() {
                    return Err(bad("offset is given more than once"));
                }
                offset = Some(parse_start(&percent_decode(value)?)?);
            }
            "live" => {
                live = match percent_decode(value)?.as_str() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    "" | "false" => Live::No,
                    other => return Err(bad(format!("live={other:?}: expected long-poll or sse"))),
                }
            }
            "cursor" => cursor = percent_decode(value)?.parse().ok(),
            _ => {}
        }
    }
    if live != Live::No && offset.is_none() {
        return Err(bad(
            "live reads need an offset (-1 for the beginning, now for the tail)",
        ));
    }
    Ok(ReadQuery {
        start: offset.unwrap_or(Start::Beginning),
        offset_given: offset.is_some(),
        live,
        cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_numbers() {
        assert_eq!(strict_uint("n", "0", 10).ok(), Some(0));
        assert_eq!(strict_uint("n", "3600", 4000).ok(), Some(3600));
        for bad in ["", "-1", "+1", "01", "1.5", "1e3", "abc", "1abc", " 1"] {
            assert!(strict_uint("n", bad, u64::MAX).is_err(), "{bad:?}");
        }
        assert!(strict_uint("n", "11", 10).is_err());
    }

    #[test]
    fn queries() {
        let q = read_query(Some("offset=-1&foo=bar&live=sse")).ok();
        assert_eq!(
            q.map(|q| (q.start, q.live)),
            Some((Start::Beginning, Live::Sse))
        );
        assert!(read_query(Some("offset=a&offset=b")).is_err());
        assert!(read_query(Some("offset=")).is_err());
        assert!(read_query(Some("offset=0%201")).is_err());
        assert!(read_query(Some("live=long-poll")).is_err());
        let q = read_query(Some("offset=now&live=long-poll&cursor=12")).ok();
        assert_eq!(q.map(|q| (q.start, q.cursor)), Some((Start::Now, Some(12))));
        assert_eq!(read_query(None).ok().map(|q| q.offset_given), Some(false));
    }

    #[test]
    fn names() {
        assert_eq!(stream_name("/v1/stream/a/b").ok(), Some("a/b"));
        assert!(stream_name("/v1/stream/").is_err());
        assert!(stream_name("/v1/stream/__ds/subscriptions/x").is_err());
    }
}
