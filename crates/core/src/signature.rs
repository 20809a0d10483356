//! Row signatures: the stable `u64` identity of a row inside its query.
//!
//! When upstream supplies a `row_signature` (drasi-lib does) it is used as is. Otherwise the
//! signature is **xxh3-64 with seed 0 of the canonical encoding** of the row's key columns
//! ([`KeyColumns`]; default the whole row). Signatures are stored as row keys, so the canonical
//! encoding is part of the on-disk format: changing it orphans every stored row. It is pinned by
//! golden vectors in the tests, and it is *not* the stored row encoding
//! ([`crate::codec::row`]), which may evolve behind its version byte while signatures may not.
//!
//! # Canonical encoding
//!
//! Every value is a one-byte type tag followed by its payload. All multi-byte integers are
//! **little-endian**. Lengths and counts are `u64`.
//!
//! | value | tag | payload |
//! |---|---|---|
//! | `null` | `0x00` | none |
//! | `false` | `0x01` | none |
//! | `true` | `0x02` | none |
//! | integer | `0x03` | 8 bytes: the `i64`, two's complement |
//! | float | `0x04` | 8 bytes: the IEEE-754 bits of the normalised `f64` |
//! | string | `0x05` | 8 bytes: byte length; then the UTF-8 bytes |
//! | list | `0x06` | 8 bytes: element count; then each element's encoding, in order |
//! | object | `0x07` | 8 bytes: entry count; then per entry, in ascending order of the key's UTF-8 bytes, the key encoded as a string (tag `0x05` included) followed by the value's encoding |
//! | unsigned integer above `i64::MAX` | `0x08` | 8 bytes: the `u64` |
//!
//! Number normalisation, so that numerically equal JSON numbers share one identity:
//!
//! - a float with an integral value in `[-2^63, 2^63)` is encoded **as the integer** (tag
//!   `0x03`): `1.0` and `1` hash alike, and `-0.0` is the integer `0`; one with an integral
//!   value in `[2^63, 2^64)` as the unsigned integer (tag `0x08`);
//! - every NaN is encoded with the bits `0x7FF8_0000_0000_0000`;
//! - other floats (fractions, infinities, NaN, integral values below `-2^63` or from `2^64` on)
//!   keep their bits.
//!
//! Objects are sorted, so key order in the input never changes a signature. Lengths make the
//! encoding prefix-free: `["ab"]` and `["a","b"]` cannot collide by construction.
//!
//! The encoding recurses once per nesting level; values parsed from JSON are at most 128 levels
//! deep (`serde_json`'s limit), and the row decoder refuses anything deeper than
//! [`crate::codec::row::MAX_NESTING_DEPTH`].

use xxhash_rust::xxh3::Xxh3;

use crate::row::Value;

/// The xxh3 seed of computed signatures. Part of the on-disk format.
pub const SIGNATURE_SEED: u64 = 0;

const TAG_NULL: u8 = 0x00;
const TAG_FALSE: u8 = 0x01;
const TAG_TRUE: u8 = 0x02;
const TAG_INT: u8 = 0x03;
const TAG_FLOAT: u8 = 0x04;
const TAG_STRING: u8 = 0x05;
const TAG_LIST: u8 = 0x06;
const TAG_OBJECT: u8 = 0x07;
const TAG_UINT: u8 = 0x08;

/// The one bit pattern every NaN is hashed with (the quiet NaN `f64::NAN` has on x86 and ARM).
const CANONICAL_NAN_BITS: u64 = 0x7FF8_0000_0000_0000;

/// `2^63` as an `f64`, the first float that no longer fits in `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Which columns identify a row inside its query; configured per query.
///
/// Use the whole row when rows have no natural key (every distinct row is its own identity);
/// use the key columns when updates arrive as whole rows and must replace their predecessor;
/// for aggregations the runtime passes the grouping keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum KeyColumns {
    /// The whole row is the identity.
    #[default]
    WholeRow,
    /// Only these columns are the identity. Order and repetitions do not matter.
    Columns(Vec<String>),
}

/// Where canonical bytes go: a buffer, or straight into the hasher so that hashing a row
/// allocates nothing.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Xxh3 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Appends the canonical encoding of `value` (see the module docs) to `out`.
pub fn canonical_bytes(value: &Value, out: &mut Vec<u8>) {
    write_value(value, out);
}

/// xxh3-64 (seed [`SIGNATURE_SEED`]) of the canonical encoding of `value`.
///
/// Equal to hashing the output of [`canonical_bytes`], without building it.
pub fn hash_value(value: &Value) -> u64 {
    let mut hasher = Xxh3::with_seed(SIGNATURE_SEED);
    write_value(value, &mut hasher);
    hasher.digest()
}

/// The computed signature of `row` under `keys`.
///
/// With [`KeyColumns::WholeRow`] this is [`hash_value`] of the row. With
/// [`KeyColumns::Columns`] it is [`hash_value`] of the object made of exactly the named
/// columns, where a column the row lacks counts as `null` (so `{"id": 1}` and
/// `{"id": 1, "other": null}` share a signature under `["id", "other"]`). A row that is not an
/// object has every key column `null`.
pub fn row_signature(row: &Value, keys: &KeyColumns) -> u64 {
    match keys {
        KeyColumns::WholeRow => hash_value(row),
        KeyColumns::Columns(columns) => columns_signature(row, columns),
    }
}

/// [`row_signature`] under `KeyColumns::Columns(columns)`, without building the enum: the
/// signature of the object made of exactly these columns (missing ones as `null`).
pub fn columns_signature(row: &Value, columns: &[String]) -> u64 {
    let mut names: Vec<&str> = columns.iter().map(String::as_str).collect();
    // `str` orders by UTF-8 bytes, which is the canonical object order.
    names.sort_unstable();
    names.dedup();
    let object = row.as_object();
    let mut hasher = Xxh3::with_seed(SIGNATURE_SEED);
    hasher.put(&[TAG_OBJECT]);
    write_len(names.len(), &mut hasher);
    for name in names {
        write_str(name, &mut hasher);
        match object.and_then(|map| map.get(name)) {
            Some(value) => write_value(value, &mut hasher),
            None => hasher.put(&[TAG_NULL]),
        }
    }
    hasher.digest()
}

fn write_len(len: usize, out: &mut impl Sink) {
    // usize is at most 64 bits on every target Rust supports, so this never saturates.
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    out.put(&len.to_le_bytes());
}

fn write_str(s: &str, out: &mut impl Sink) {
    out.put(&[TAG_STRING]);
    write_len(s.len(), out);
    out.put(s.as_bytes());
}

fn write_int(i: i64, out: &mut impl Sink) {
    out.put(&[TAG_INT]);
    out.put(&i.to_le_bytes());
}

/// Integers above `i64::MAX`; an in-range value is hashed as the `i64` it equals, so the
/// two integer variants can never disagree on one number.
fn write_uint(u: u64, out: &mut impl Sink) {
    match i64::try_from(u) {
        Ok(i) => write_int(i, out),
        Err(_) => {
            out.put(&[TAG_UINT]);
            out.put(&u.to_le_bytes());
        }
    }
}

fn write_float(f: f64, out: &mut impl Sink) {
    // The range test is false for NaN and the infinities, so they fall through to the bits.
    if (-TWO_POW_63..TWO_POW_63).contains(&f) && f.fract() == 0.0 {
        // Exact: the value is integral and in range (and `-0.0 as i64` is 0).
        write_int(f as i64, out);
        return;
    }
    if (TWO_POW_63..2.0 * TWO_POW_63).contains(&f) && f.fract() == 0.0 {
        // Integral and beyond i64 but within u64: the unsigned integer it equals.
        write_uint(f as u64, out);
        return;
    }
    let bits = if f.is_nan() {
        CANONICAL_NAN_BITS
    } else {
        f.to_bits()
    };
    out.put(&[TAG_FLOAT]);
    out.put(&bits.to_le_bytes());
}

fn write_value(value: &Value, out: &mut impl Sink) {
    match value {
        Value::Null => out.put(&[TAG_NULL]),
        Value::Bool(false) => out.put(&[TAG_FALSE]),
        Value::Bool(true) => out.put(&[TAG_TRUE]),
        Value::Int(i) => write_int(*i, out),
        Value::UInt(u) => write_uint(*u, out),
        Value::Float(f) => write_float(*f, out),
        Value::String(s) => write_str(s, out),
        Value::List(items) => {
            out.put(&[TAG_LIST]);
            write_len(items.len(), out);
            for item in items {
                write_value(item, out);
            }
        }
        Value::Object(map) => {
            // A BTreeMap<String, _> iterates in ascending key-byte order already.
            out.put(&[TAG_OBJECT]);
            write_len(map.len(), out);
            for (key, item) in map {
                write_str(key, out);
                write_value(item, out);
            }
        }
    }
}
