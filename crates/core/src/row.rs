//! The row value type: a JSON value that survives a binary codec.
//!
//! Rows arrive as JSON and are stored as bytes. `serde_json::Value` cannot be the stored type:
//! its `Deserialize` needs a self-describing format (`deserialize_any`), which compact binary
//! encodings such as bincode are not, so it does not round-trip through them. [`Value`] mirrors
//! the JSON data model with an explicit variant per kind, which lets [`crate::codec::row`] give
//! it a tagged binary encoding and [`crate::signature`] a canonical hash.
//!
//! # Numbers
//!
//! JSON has one number type; [`Value`] has three, chosen so that every number `serde_json`
//! produces converts without loss:
//!
//! | JSON number | `Value` |
//! |---|---|
//! | integer in `i64` range | [`Value::Int`] |
//! | integer above `i64::MAX` (up to `u64::MAX`) | [`Value::UInt`] (exact: two such ids never merge) |
//! | anything written with a fraction or exponent (`1.0`, `1e3`) | [`Value::Float`] |
//!
//! Going back, `Int` and `UInt` become JSON integers and `Float` a JSON float (so `1.0` stays
//! `1.0`).
//! Non-finite floats have no JSON form and become `null`, as in `serde_json`. Row *identity*
//! does not depend on the variant: signatures hash integral floats as integers.
//!
//! # Objects
//!
//! Objects are a [`BTreeMap`] rather than a list of pairs. Keys are unique and ordered by their
//! UTF-8 bytes by construction, so equal rows always have equal stored bytes, lookups of key
//! columns are logarithmic, and no "duplicate key" state needs a rule. What is given up is
//! the column order of the input; JSON objects are unordered (RFC 8259), and `serde_json`
//! (without `preserve_order`) sorts keys anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON object: column name to value, ordered by key bytes.
pub type Map = BTreeMap<String, Value>;

/// A result row.
///
/// By convention (and as the input formats enforce) a row is a [`Value::Object`]. The codec and
/// the signature functions accept any [`Value`] so that they are total functions.
pub type Row = Value;

/// A JSON value with integers and floats kept apart.
///
/// `PartialEq` follows IEEE semantics for floats (as `serde_json::Value` does): `NaN != NaN` and
/// `-0.0 == 0.0`, and `Int(1) != Float(1.0)`. Compare signatures when identity is what matters.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JSON `null`.
    #[default]
    Null,
    /// JSON `true` or `false`.
    Bool(bool),
    /// A JSON integer that fits in `i64`.
    Int(i64),
    /// A JSON integer above `i64::MAX` (never used for values that fit `Int`).
    UInt(u64),
    /// Any other JSON number (see the module docs on numbers).
    Float(f64),
    /// A JSON string.
    String(String),
    /// A JSON array.
    List(Vec<Value>),
    /// A JSON object.
    Object(Map),
}

impl Value {
    /// The JSON name of this value's kind, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The object's entries, or `None` for any other kind.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    /// The value of column `key` when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|map| map.get(key))
    }

    /// Converts to a `serde_json::Value`, cloning (see the module docs for number mapping).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => float_to_json(*f),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }

    /// Converts to a `serde_json::Value` without cloning strings.
    pub fn into_json(self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Int(i) => serde_json::Value::from(i),
            Value::UInt(u) => serde_json::Value::from(u),
            Value::Float(f) => float_to_json(f),
            Value::String(s) => serde_json::Value::String(s),
            Value::List(items) => {
                serde_json::Value::Array(items.into_iter().map(Value::into_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.into_iter().map(|(k, v)| (k, v.into_json())).collect(),
            ),
        }
    }
}

/// Non-finite floats have no JSON spelling; `null` is what `serde_json` writes for them too.
fn float_to_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The number mapping of the module docs: `i64` when it fits, then `u64`, otherwise `f64`.
fn number_from_json(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Int(i)
    } else if let Some(u) = n.as_u64() {
        Value::UInt(u)
    } else if let Some(f) = n.as_f64() {
        Value::Float(f)
    } else {
        // Only reachable with serde_json's `arbitrary_precision` feature, for numbers no f64
        // can hold; there is nothing faithful to keep.
        Value::Null
    }
}

impl From<serde_json::Value> for Value {
    fn from(json: serde_json::Value) -> Self {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => number_from_json(&n),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => {
                Value::List(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

impl From<&serde_json::Value> for Value {
    fn from(json: &serde_json::Value) -> Self {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => number_from_json(n),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from).collect()),
            serde_json::Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<Value> for serde_json::Value {
    fn from(value: Value) -> Self {
        value.into_json()
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

impl From<Map> for Value {
    fn from(map: Map) -> Self {
        Value::Object(map)
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Value {
    /// Builds an object; a repeated key keeps its last value.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Value::Object(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Parses JSON text (with `serde_json`'s nesting limit of 128).
impl FromStr for Value {
    type Err = serde_json::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s)
    }
}

/// Compact JSON, as `serde_json` writes it.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// Serializes as plain JSON (no variant tags): a row written out looks like the row read in.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::String(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    out.serialize_entry(k, v)?;
                }
                out.end()
            }
        }
    }
}

/// Deserializes from any self-describing format with the number mapping of the module docs.
/// A repeated object key keeps its last value, as `serde_json::Value` does.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::UInt(u), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The size hint comes from the input; cap it so a lying length cannot force a huge
        // allocation before any element is read.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some((k, v)) = access.next_entry::<String, Value>()? {
            map.insert(k, v);
        }
        Ok(Value::Object(map))
    }
}
