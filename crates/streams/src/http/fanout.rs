//! One rendered answer for all the long-polls a commit wakes together. Readers parked at a
//! stream's tail all ask for the same bytes when the next append lands; the first one reads
//! and renders them (body, offsets, ETag) and the others answer with clones of those, so each
//! woken reader costs a response, not a store read, a JSON rendering and a set of formatted
//! headers.
//!
//! An answer is a function of the stream's id, the reader's position and the stream's tail
//! and closure at the read (a stream's bytes never change; a re-created name has a new id),
//! so entries never go stale: they only drop out of a few recent places. Large answers are
//! not kept (catch-up from far behind is not a fan-out).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;

use super::headers::*;
use crate::meta::StreamMeta;
use crate::offset::format_offset;
use crate::read::Chunk;

/// Answers kept (streams woken at about the same moment each find theirs).
const WAYS: usize = 8;
/// Largest body kept.
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// What an answer depends on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    id: u64,
    from: u64,
    tail: u64,
    closed: bool,
}

impl Key {
    fn of(meta: &StreamMeta, from: u64) -> Key {
        Key {
            id: meta.id,
            from,
            tail: meta.tail,
            closed: meta.closed,
        }
    }
}

/// The parts of a long-poll's 200 that every reader of the same read shares.
pub(crate) struct Rendered {
    key: Key,
    body: Bytes,
    content_type: Option<HeaderValue>,
    next_offset: Option<HeaderValue>,
    etag: Option<HeaderValue>,
    up_to_date: bool,
    closed: bool,
}

impl Rendered {
    /// Renders `chunk` (read from `from` with `meta`, the stream the reader woke with).
    pub(crate) fn new(meta: &StreamMeta, from: u64, chunk: &Chunk) -> Rendered {
        Rendered {
            key: Key::of(meta, from),
            body: super::read::body_bytes(chunk),
            content_type: HeaderValue::from_str(&chunk.meta.content_type).ok(),
            next_offset: HeaderValue::from_str(&format_offset(chunk.next)).ok(),
            etag: HeaderValue::from_str(&super::read::etag(chunk)).ok(),
            up_to_date: chunk.up_to_date(),
            closed: chunk.closed(),
        }
    }

    /// The 200 with `cursor` (the only per-reader part), the headers of a chunk answer.
    pub(crate) fn response(&self, cursor: u64) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        let h = response.headers_mut();
        h.reserve(12);
        if let Some(v) = &self.content_type {
            h.insert(header::CONTENT_TYPE, v.clone());
        }
        if let Some(v) = &self.next_offset {
            h.insert(HeaderName::from_static(STREAM_NEXT_OFFSET), v.clone());
        }
        if self.up_to_date {
            h.insert(
                HeaderName::from_static(STREAM_UP_TO_DATE),
                HeaderValue::from_static("true"),
            );
        }
        if self.closed {
            h.insert(
                HeaderName::from_static(STREAM_CLOSED),
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.etag {
            h.insert(header::ETAG, v.clone());
        }
        let cache = if self.up_to_date {
            super::read::CACHE_TAIL
        } else {
            super::read::CACHE_HISTORY
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        if !self.closed {
            h.insert(
                HeaderName::from_static(STREAM_CURSOR),
                HeaderValue::from(cursor),
            );
        }
        response
    }
}

/// The recently rendered answers.
#[derive(Default)]
pub(crate) struct Fanout {
    kept: Mutex<[Option<Arc<Rendered>>; WAYS]>,
    next: AtomicUsize,
}

impl Fanout {
    /// The answer for a reader at `from` of `meta`, if one was rendered.
    pub(crate) fn get(&self, meta: &StreamMeta, from: u64) -> Option<Arc<Rendered>> {
        let key = Key::of(meta, from);
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().flatten().find(|r| r.key == key).cloned()
    }

    /// Keeps `rendered` for the readers that come next (replacing the oldest).
    pub(crate) fn keep(&self, rendered: Arc<Rendered>) {
        if rendered.body.len() > MAX_KEPT_BYTES {
            return;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % WAYS;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept[at] = Some(rendered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(tail: u64, closed: bool) -> StreamMeta {
        StreamMeta {
            id: 7,
            content_type: "application/json".into(),
            created_ms: 0,
            ttl_secs: None,
            expires_at_ms: None,
            last_access_ms: 0,
            base: 0,
            tail,
            closed,
            closed_by: None,
            last_seq: None,
            fork: None,
            forks: 0,
            soft_deleted: false,
        }
    }

    #[test]
    fn answers_are_found_only_for_the_same_read() {
        let fanout = Fanout::default();
        let m = Arc::new(meta(10, false));
        let chunk = Chunk {
            meta: Arc::clone(&m),
            from: 4,
            next: 10,
            parts: vec![Bytes::from_static(b"1,2")],
        };
        fanout.keep(Arc::new(Rendered::new(&m, 4, &chunk)));
        let found = fanout.get(&m, 4).map(|r| r.response(99));
        let h = found
            .as_ref()
            .map(|r| r.headers().clone())
            .unwrap_or_default();
        assert_eq!(
            h.get(STREAM_NEXT_OFFSET).map(|v| v.as_bytes()),
            Some(format_offset(10).as_bytes())
        );
        assert_eq!(h.get(STREAM_CURSOR).map(|v| v.as_bytes()), Some(&b"99"[..]));
        assert_eq!(
            h.get("etag").map(|v| v.as_bytes()),
            Some(&b"\"7:4:10\""[..])
        );
        assert_eq!(
            h.get(STREAM_UP_TO_DATE).map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        assert!(fanout.get(&m, 5).is_none());
        assert!(fanout.get(&meta(11, false), 4).is_none());
        assert!(fanout.get(&meta(10, true), 4).is_none());
        // Older answers make room for newer ones.
        for from in 0..WAYS as u64 {
            let m = Arc::new(meta(20, false));
            let chunk = Chunk {
                meta: Arc::clone(&m),
                from,
                next: 20,
                parts: Vec::new(),
            };
            fanout.keep(Arc::new(Rendered::new(&m, from, &chunk)));
        }
        assert!(fanout.get(&m, 4).is_none());
    }
}
