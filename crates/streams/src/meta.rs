//! What a stream is: its configuration and state ([`StreamMeta`]), an idempotent producer's
//! state ([`ProducerState`]), and their byte encodings for durable stores.
//!
//! The encodings are versioned and fixed-width where they can be (integers big-endian,
//! strings and options length- or flag-prefixed); docs/FORMAT.md ("Durable Streams store")
//! describes them byte by byte. Decoding never panics: a short or inconsistent record is
//! [`CodecError`].

/// Version byte of an encoded [`StreamMeta`].
pub const META_VERSION: u8 = 1;
/// Version byte of an encoded [`ProducerState`].
pub const PRODUCER_VERSION: u8 = 1;

/// The idempotent-producer request that closed a stream: a retry of it is answered as a
/// duplicate, any other append as "closed".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerTuple {
    /// `Producer-Id`.
    pub id: String,
    /// `Producer-Epoch`.
    pub epoch: u64,
    /// `Producer-Seq`.
    pub seq: u64,
}

/// Where a fork's inherited bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkOf {
    /// The source stream's name.
    pub source: String,
    /// The source's internal id (names are reused after a delete; ids never are).
    pub source_id: u64,
    /// `Stream-Fork-Offset` as requested (the source's tail when it was omitted).
    pub anchor: u64,
    /// Whether the request named the anchor (an idempotent re-create compares it only then).
    pub anchor_given: bool,
    /// `Stream-Fork-Sub-Offset` (0 when absent).
    pub sub_offset: u64,
}

/// A stream's configuration and state; one record per stream name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMeta {
    /// Internal id, never reused: keys the stream's records and producers, and its ETags.
    pub id: u64,
    /// The content type, media type lower-cased (parameters as given).
    pub content_type: String,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: u64,
    /// Sliding time-to-live in seconds.
    pub ttl_secs: Option<u64>,
    /// Absolute expiry, milliseconds since the epoch.
    pub expires_at_ms: Option<u64>,
    /// Last read or write that was persisted (reads are persisted lazily), for the TTL.
    pub last_access_ms: u64,
    /// First position of the stream's own records (the fork point; 0 for a plain stream).
    pub base: u64,
    /// Position after the last byte: the next append starts here.
    pub tail: u64,
    /// Closed streams accept no more appends.
    pub closed: bool,
    /// The producer request that closed the stream, if a producer did.
    pub closed_by: Option<ProducerTuple>,
    /// The last `Stream-Seq` accepted (scope: the stream).
    pub last_seq: Option<String>,
    /// The source of a fork.
    pub fork: Option<ForkOf>,
    /// How many forks read through this stream; while any do, a delete only hides it.
    pub forks: u64,
    /// Deleted while forks still read through it: every direct request gets 410.
    pub soft_deleted: bool,
}

/// An idempotent producer's state on one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerState {
    /// Current epoch.
    pub epoch: u64,
    /// Highest sequence accepted in that epoch.
    pub last_seq: u64,
}

/// A stored record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

impl StreamMeta {
    /// Whether the stream is in JSON mode (`application/json`, whatever its parameters).
    pub fn is_json(&self) -> bool {
        is_json(&self.content_type)
    }

    /// The record bytes ([`META_VERSION`] layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(96 + self.content_type.len()));
        w.u8(META_VERSION);
        w.u64(self.id);
        w.str(&self.content_type);
        w.u64(self.created_ms);
        w.opt_u64(self.ttl_secs);
        w.opt_u64(self.expires_at_ms);
        w.u64(self.last_access_ms);
        w.u64(self.base);
        w.u64(self.tail);
        w.u8(u8::from(self.closed) | (u8::from(self.soft_deleted) << 1));
        match &self.closed_by {
            Some(p) => {
                w.u8(1);
                w.str(&p.id);
                w.u64(p.epoch);
                w.u64(p.seq);
            }
            None => w.u8(0),
        }
        match &self.last_seq {
            Some(seq) => {
                w.u8(1);
                w.str(seq);
            }
            None => w.u8(0),
        }
        match &self.fork {
            Some(f) => {
                w.u8(1 | (u8::from(f.anchor_given) << 1));
                w.str(&f.source);
                w.u64(f.source_id);
                w.u64(f.anchor);
                w.u64(f.sub_offset);
            }
            None => w.u8(0),
        }
        w.u64(self.forks);
        w.0
    }

    /// Decodes [`StreamMeta::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<StreamMeta, CodecError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != META_VERSION {
            return Err(CodecError(format!(
                "stream meta version {version} is unknown"
            )));
        }
        let id = r.u64()?;
        let content_type = r.string()?;
        let created_ms = r.u64()?;
        let ttl_secs = r.opt_u64()?;
        let expires_at_ms = r.opt_u64()?;
        let last_access_ms = r.u64()?;
        let base = r.u64()?;
        let tail = r.u64()?;
        let flags = r.u8()?;
        let closed_by = match r.u8()? {
            0 => None,
            _ => Some(ProducerTuple {
                id: r.string()?,
                epoch: r.u64()?,
                seq: r.u64()?,
            }),
        };
        let last_seq = match r.u8()? {
            0 => None,
            _ => Some(r.string()?),
        };
        let fork = match r.u8()? {
            0 => None,
            tag => Some(ForkOf {
                anchor_given: tag & 2 != 0,
                source: r.string()?,
                source_id: r.u64()?,
                anchor: r.u64()?,
                sub_offset: r.u64()?,
            }),
        };
        let forks = r.u64()?;
        r.end()?;
        if tail < base {
            return Err(CodecError(format!(
                "stream meta tail {tail} is before base {base}"
            )));
        }
        Ok(StreamMeta {
            id,
            content_type,
            created_ms,
            ttl_secs,
            expires_at_ms,
            last_access_ms,
            base,
            tail,
            closed: flags & 1 != 0,
            closed_by,
            last_seq,
            fork,
            forks,
            soft_deleted: flags & 2 != 0,
        })
    }
}

impl ProducerState {
    /// The record bytes: version, epoch, last sequence.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(17));
        w.u8(PRODUCER_VERSION);
        w.u64(self.epoch);
        w.u64(self.last_seq);
        w.0
    }

    /// Decodes [`ProducerState::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<ProducerState, CodecError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != PRODUCER_VERSION {
            return Err(CodecError(format!(
                "producer state version {version} is unknown"
            )));
        }
        let state = ProducerState {
            epoch: r.u64()?,
            last_seq: r.u64()?,
        };
        r.end()?;
        Ok(state)
    }
}

/// Whether `content_type` is `application/json` (any parameters, any case).
pub fn is_json(content_type: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case("application/json")
}

/// The media type of a content type: before any `;`, trimmed.
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// A content type as stored: media type lower-cased, parameters trimmed and kept.
pub fn normalize_content_type(content_type: &str) -> String {
    let mut parts = content_type.split(';');
    let mut out = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    for param in parts.map(str::trim).filter(|p| !p.is_empty()) {
        out.push_str("; ");
        out.push_str(param);
    }
    out
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    /// A string of at most 4 GiB (callers bound theirs far lower): `u32 BE` length, bytes.
    fn str(&mut self, s: &str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..len as usize]);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| CodecError("record is truncated".into()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.u64().map(Some),
        }
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        let len = u32::from_be_bytes(b) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError("string is not UTF-8".into()))
    }
    fn end(&self) -> Result<(), CodecError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(CodecError(format!(
                "{} unexpected trailing bytes",
                self.bytes.len() - self.at
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StreamMeta {
        StreamMeta {
            id: 7,
            content_type: "application/json; charset=utf-8".into(),
            created_ms: 1,
            ttl_secs: Some(60),
            expires_at_ms: None,
            last_access_ms: 2,
            base: 5,
            tail: 99,
            closed: true,
            closed_by: Some(ProducerTuple {
                id: "p".into(),
                epoch: 3,
                seq: 4,
            }),
            last_seq: Some("0009".into()),
            fork: Some(ForkOf {
                source: "a/b".into(),
                source_id: 2,
                anchor: 3,
                anchor_given: true,
                sub_offset: 2,
            }),
            forks: 1,
            soft_deleted: false,
        }
    }

    #[test]
    fn meta_and_producer_round_trip() {
        let meta = sample();
        assert_eq!(StreamMeta::decode(&meta.encode()), Ok(meta.clone()));
        let plain = StreamMeta {
            closed_by: None,
            last_seq: None,
            fork: None,
            ..meta
        };
        assert_eq!(StreamMeta::decode(&plain.encode()), Ok(plain));
        let state = ProducerState {
            epoch: 1,
            last_seq: u64::MAX,
        };
        assert_eq!(ProducerState::decode(&state.encode()), Ok(state));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(StreamMeta::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(StreamMeta::decode(&longer).is_err());
        let mut version = bytes;
        version[0] = 9;
        assert!(StreamMeta::decode(&version).is_err());
    }

    #[test]
    fn content_types() {
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("application/jsonx"));
        assert_eq!(
            normalize_content_type(" TEXT/Plain ;charset=UTF-8"),
            "text/plain; charset=UTF-8"
        );
    }
}
