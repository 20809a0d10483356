//! Stored row bytes: a version byte, then bincode of the row.
//!
//! This encoding is part of the on-disk format. Every stored row starts with
//! [`ROW_FORMAT_VERSION`]; a reader that meets another version refuses the row
//! ([`RowCodecError::UnknownVersion`]) instead of guessing. Golden tests pin the bytes of
//! fixed rows so that an accidental change fails a test rather than corrupting stores.
//!
//! # Layout (version 1)
//!
//! ```text
//! +---------+---------------------------------------------------------------+
//! | 1 byte  | rest                                                          |
//! | version | bincode 2, config::standard(), of StoredValue (below)         |
//! +---------+---------------------------------------------------------------+
//! ```
//!
//! The payload is byte for byte what `#[derive(bincode::Encode)]` produces under
//! `bincode::config::standard()` for this mirror of [`Value`] (a test checks exactly that):
//!
//! ```text
//! enum StoredValue {
//!     Null,                                  // 0
//!     Bool(bool),                            // 1, then 0x00 or 0x01
//!     Int(i64),                              // 2, then zigzag varint
//!     Float(f64),                            // 3, then 8 bytes little-endian IEEE-754 bits
//!     String(String),                        // 4, then varint byte length + UTF-8 bytes
//!     List(Vec<StoredValue>),                // 5, then varint count + elements
//!     Object(Vec<(String, StoredValue)>),    // 6, then varint count + (key, value) pairs
//!     UInt(u64),                             // 7, then varint (version 2 only)
//! }
//! ```
//!
//! Version 2 added `UInt` for integers above `i64::MAX`. A row is written as version 1 unless it
//! holds a `Value::UInt` (JSON parsing makes one only for such an integer), so every row an older build could write is still byte for byte the
//! same, and an older build meeting a version 2 row says so instead of misreading it.
//!
//! Variant tags and lengths are bincode varints: values below 251 take one byte; 251, 252 and
//! 253 announce a little-endian `u16`, `u32` or `u64`. Object keys are written in ascending
//! order of their UTF-8 bytes with no repeats, so equal rows always have equal bytes.
//!
//! # Why the decoder is hand-written
//!
//! Stored bytes can be damaged, and decoding must never panic or abort on them. A derived
//! decoder would pre-allocate `Vec::with_capacity(len)` for any length the bytes claim, and
//! recurse as deep as the bytes nest. This decoder caps pre-allocation (every element costs at
//! least one input byte, so a lying length runs out of input instead of memory), refuses nesting
//! deeper than [`MAX_NESTING_DEPTH`], and reports where in the input a problem sits. It still
//! uses bincode for every primitive, so the two cannot drift apart.

use bincode::de::read::{BorrowReader, Reader};
use bincode::de::{Decoder, DecoderImpl};
use bincode::enc::{Encoder, EncoderImpl};
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use std::cell::Cell;

use crate::row::{Map, Value};

/// The newest row format version this build writes (for rows holding a [`Value::UInt`]) and
/// reads.
pub const ROW_FORMAT_VERSION: u8 = 2;
/// The version written for rows without a [`Value::UInt`]: the original layout.
const ROW_FORMAT_V1: u8 = 1;

/// The deepest nesting of lists and objects the decoder accepts (a scalar has depth 0,
/// `[[1]]` depth 2).
///
/// Rows parsed from JSON nest at most 128 levels (`serde_json`'s limit), far inside this bound;
/// it exists so that damaged bytes cannot recurse the decoder off its stack. Rows built in code
/// must stay within it to be readable again (the encoder checks this in debug builds).
pub const MAX_NESTING_DEPTH: usize = 256;

const TAG_NULL: u32 = 0;
const TAG_BOOL: u32 = 1;
const TAG_INT: u32 = 2;
const TAG_FLOAT: u32 = 3;
const TAG_STRING: u32 = 4;
const TAG_LIST: u32 = 5;
const TAG_OBJECT: u32 = 6;
const TAG_UINT: u32 = 7;

/// Pre-allocation cap for decoded lists, whatever length the bytes claim.
const MAX_PREALLOC: usize = 1024;

/// Why stored row bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowCodecError {
    /// There were no bytes at all, not even the version byte.
    #[error("empty row bytes")]
    Empty,
    /// The version byte is not one this build reads (written by a newer build, or not a row).
    #[error(
        "unknown row format version {found} (this build reads versions 1 to {ROW_FORMAT_VERSION})"
    )]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// The bytes end in the middle of a value.
    #[error("row bytes end early at offset {offset}")]
    Truncated {
        /// Offset (from the version byte) at which more bytes were needed.
        offset: usize,
    },
    /// The bytes are not a valid encoding (bad tag, bad UTF-8, unordered keys, ...).
    #[error("malformed row bytes at offset {offset}: {reason}")]
    Malformed {
        /// Offset (from the version byte) just past the bytes that were rejected.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// Lists and objects nest deeper than [`MAX_NESTING_DEPTH`].
    #[error("row nests deeper than {limit} levels at offset {offset}")]
    TooDeep {
        /// Offset (from the version byte) of the container that went too deep.
        offset: usize,
        /// The limit, [`MAX_NESTING_DEPTH`].
        limit: usize,
    },
    /// A complete value was decoded but bytes remain after it.
    #[error("{count} trailing bytes after the row")]
    TrailingBytes {
        /// How many bytes remain.
        count: usize,
    },
}

/// Encodes `value` as stored row bytes (version byte included).
pub fn encode_row(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_row_into(value, &mut out);
    out
}

/// Appends the stored row bytes of `value` to `out`, so callers can reuse one buffer.
pub fn encode_row_into(value: &Value, out: &mut Vec<u8>) {
    debug_assert!(
        nesting_depth(value) <= MAX_NESTING_DEPTH,
        "row nests deeper than MAX_NESTING_DEPTH and could not be decoded again"
    );
    let version_at = out.len();
    out.push(ROW_FORMAT_V1);
    let needs_v2 = Cell::new(false);
    let mut encoder = EncoderImpl::new(VecWriter(out), bincode::config::standard());
    // Every write goes to a Vec and cannot fail, and no `Value` is rejected by the encoding:
    // there is no error for input to cause.
    if let Err(err) = Stored(value, &needs_v2).encode(&mut encoder) {
        unreachable!("encoding a row into memory failed: {err}");
    }
    if needs_v2.get() {
        out[version_at] = ROW_FORMAT_VERSION;
    }
}

/// Decodes stored row bytes. Never panics, whatever `bytes` hold.
pub fn decode_row(bytes: &[u8]) -> Result<Value, RowCodecError> {
    let (&version, payload) = bytes.split_first().ok_or(RowCodecError::Empty)?;
    if !(ROW_FORMAT_V1..=ROW_FORMAT_VERSION).contains(&version) {
        return Err(RowCodecError::UnknownVersion { found: version });
    }
    let mut decoder = DecoderImpl::new(
        Cursor {
            input: payload,
            pos: 0,
        },
        bincode::config::standard(),
        (),
    );
    let result = read_value(
        &mut decoder,
        MAX_NESTING_DEPTH,
        version >= ROW_FORMAT_VERSION,
    );
    let cursor = decoder.reader();
    // Offsets count the version byte, so they index `bytes` directly.
    let offset = cursor.pos + 1;
    match result {
        Ok(value) => match cursor.remaining() {
            0 => Ok(value),
            count => Err(RowCodecError::TrailingBytes { count }),
        },
        Err(Problem::TooDeep) => Err(RowCodecError::TooDeep {
            offset,
            limit: MAX_NESTING_DEPTH,
        }),
        Err(Problem::Malformed(reason)) => Err(RowCodecError::Malformed { offset, reason }),
        Err(Problem::Bincode(DecodeError::UnexpectedEnd { .. })) => {
            Err(RowCodecError::Truncated { offset })
        }
        Err(Problem::Bincode(err)) => Err(RowCodecError::Malformed {
            offset,
            reason: describe(&err),
        }),
    }
}

/// Nesting depth as [`MAX_NESTING_DEPTH`] counts it.
fn nesting_depth(value: &Value) -> usize {
    match value {
        Value::List(items) => 1 + items.iter().map(nesting_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Encodes a borrowed [`Value`] as `StoredValue` (see the module docs), noting whether it
/// needed the version 2 `UInt` tag.
struct Stored<'a>(&'a Value, &'a Cell<bool>);

impl Encode for Stored<'_> {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        match self.0 {
            Value::Null => TAG_NULL.encode(e),
            Value::Bool(b) => {
                TAG_BOOL.encode(e)?;
                b.encode(e)
            }
            Value::Int(i) => {
                TAG_INT.encode(e)?;
                i.encode(e)
            }
            Value::UInt(u) => {
                self.1.set(true);
                TAG_UINT.encode(e)?;
                u.encode(e)
            }
            Value::Float(f) => {
                TAG_FLOAT.encode(e)?;
                f.encode(e)
            }
            Value::String(s) => {
                TAG_STRING.encode(e)?;
                s.as_str().encode(e)
            }
            Value::List(items) => {
                TAG_LIST.encode(e)?;
                encode_len(items.len(), e)?;
                items
                    .iter()
                    .try_for_each(|item| Stored(item, self.1).encode(e))
            }
            Value::Object(map) => {
                TAG_OBJECT.encode(e)?;
                encode_len(map.len(), e)?;
                map.iter().try_for_each(|(key, item)| {
                    key.as_str().encode(e)?;
                    Stored(item, self.1).encode(e)
                })
            }
        }
    }
}

/// Container lengths as bincode writes them for `Vec` and `str`: a `u64` varint.
fn encode_len<E: Encoder>(len: usize, e: &mut E) -> Result<(), EncodeError> {
    (len as u64).encode(e)
}

/// Appends to a `Vec`; cannot fail.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// A slice reader that knows its position, for error offsets and trailing-byte counts.
struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        // `pos` never passes the end; `get` keeps even a broken invariant from panicking.
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn remaining(&self) -> usize {
        self.rest().len()
    }

    /// The next `len` bytes, borrowed; `UnexpectedEnd` (and no allocation) if there are fewer.
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest();
        match rest.get(..len) {
            Some(taken) => {
                self.pos += len;
                Ok(taken)
            }
            None => Err(DecodeError::UnexpectedEnd {
                additional: len - rest.len(),
            }),
        }
    }
}

impl Reader for Cursor<'_> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), DecodeError> {
        let taken = self.take(bytes.len())?;
        bytes.copy_from_slice(taken);
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.rest().get(..n)
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.input.len());
    }
}

impl<'a> BorrowReader<'a> for Cursor<'a> {
    fn take_bytes(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        self.take(length)
    }
}

/// Decoding failures before they are given an offset.
enum Problem {
    Bincode(DecodeError),
    TooDeep,
    Malformed(String),
}

impl From<DecodeError> for Problem {
    fn from(err: DecodeError) -> Self {
        Problem::Bincode(err)
    }
}

/// Human wording for the bincode errors a damaged row can produce.
fn describe(err: &DecodeError) -> String {
    match err {
        DecodeError::InvalidBooleanValue(byte) => format!("invalid boolean byte {byte:#04x}"),
        DecodeError::Utf8 { .. } => "string is not valid utf-8".to_owned(),
        DecodeError::InvalidIntegerType { .. } => "varint wider than its field".to_owned(),
        DecodeError::OutsideUsizeRange(n) => format!("length {n} does not fit in memory"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn read_len<'a, D: Decoder<R = Cursor<'a>, Context = ()>>(d: &mut D) -> Result<usize, Problem> {
    let len = u64::decode(d)?;
    usize::try_from(len).map_err(|_| Problem::Bincode(DecodeError::OutsideUsizeRange(len)))
}

fn read_string<'a, D: Decoder<R = Cursor<'a>, Context = ()>>(d: &mut D) -> Result<String, Problem> {
    let len = read_len(d)?;
    let bytes = d.reader().take(len)?;
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(inner) => Err(Problem::Bincode(DecodeError::Utf8 { inner })),
    }
}

/// Reads one value; `uint` says whether the row's version has the `UInt` tag.
fn read_value<'a, D: Decoder<R = Cursor<'a>, Context = ()>>(
    d: &mut D,
    depth_left: usize,
    uint: bool,
) -> Result<Value, Problem> {
    match u32::decode(d)? {
        TAG_NULL => Ok(Value::Null),
        TAG_BOOL => Ok(Value::Bool(bool::decode(d)?)),
        TAG_INT => Ok(Value::Int(i64::decode(d)?)),
        TAG_UINT if uint => Ok(Value::UInt(u64::decode(d)?)),
        TAG_FLOAT => Ok(Value::Float(f64::decode(d)?)),
        TAG_STRING => Ok(Value::String(read_string(d)?)),
        TAG_LIST => {
            let depth_left = depth_left.checked_sub(1).ok_or(Problem::TooDeep)?;
            let len = read_len(d)?;
            let mut items = Vec::with_capacity(len.min(MAX_PREALLOC));
            for _ in 0..len {
                items.push(read_value(d, depth_left, uint)?);
            }
            Ok(Value::List(items))
        }
        TAG_OBJECT => {
            let depth_left = depth_left.checked_sub(1).ok_or(Problem::TooDeep)?;
            let len = read_len(d)?;
            let mut map = Map::new();
            for _ in 0..len {
                let key = read_string(d)?;
                if map.last_key_value().is_some_and(|(last, _)| *last >= key) {
                    return Err(Problem::Malformed(format!(
                        "object key {key:?} is out of order or repeated"
                    )));
                }
                let item = read_value(d, depth_left, uint)?;
                map.insert(key, item);
            }
            Ok(Value::Object(map))
        }
        other => Err(Problem::Malformed(format!("unknown value tag {other}"))),
    }
}
