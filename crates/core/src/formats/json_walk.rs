//! The JSON walker of the slow parsing path: it takes a parsed `serde_json::Value` apart by
//! hand so that every error names the exact JSON path of the offending field
//! (`results[3].type`, `updatedResults[0].after`). Shared by both format modules; the fast
//! path (`fast.rs`) falls back here whenever it meets anything it does not accept.

use std::fmt::Write as _;

use serde_json::{Map as JsonMap, Value as Json};

use super::error::FormatError;
use crate::row::Value;

/// A JSON path, built on the stack while walking and rendered only when an error needs it.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    pub(crate) fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    pub(crate) fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Field(parent, name) => {
                parent.render_into(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Path::Index(parent, index) => {
                parent.render_into(out);
                // Writing to a String cannot fail.
                let _ = write!(out, "[{index}]");
            }
        }
    }
}

/// The JSON name of a value's kind.
pub(crate) fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// What a [`FormatError::WrongType`] says was found: the kind, plus the value for scalars.
fn found(json: &Json) -> String {
    match json {
        Json::Number(n) => format!("number {n}"),
        Json::Bool(b) => format!("boolean {b}"),
        Json::String(s) => format!("string {}", quoted(s)),
        other => json_kind(other).to_owned(),
    }
}

/// `s` as a JSON string literal, cut after 64 characters so a huge input cannot make a huge
/// error message.
pub(crate) fn quoted(s: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", Json::from(&s[..cut])),
        None => Json::from(s).to_string(),
    }
}

pub(crate) fn wrong_type(path: &Path<'_>, expected: &'static str, json: &Json) -> FormatError {
    FormatError::WrongType {
        field: path.render(),
        expected,
        found: found(json),
    }
}

/// Removes field `name`; `null` counts as absent (optional fields may be written either way).
pub(crate) fn take(object: &mut JsonMap<String, Json>, name: &str) -> Option<Json> {
    object.remove(name).filter(|json| !json.is_null())
}

/// Removes required field `name`, which may be `null` only if the caller accepts that.
pub(crate) fn take_required(
    object: &mut JsonMap<String, Json>,
    parent: &Path<'_>,
    name: &str,
) -> Result<Json, FormatError> {
    object.remove(name).ok_or_else(|| FormatError::Missing {
        field: parent.field(name).render(),
    })
}

pub(crate) fn as_u64(json: &Json, path: &Path<'_>) -> Result<u64, FormatError> {
    json.as_u64()
        .ok_or_else(|| wrong_type(path, "an unsigned 64-bit integer", json))
}

pub(crate) fn into_string(json: Json, path: &Path<'_>) -> Result<String, FormatError> {
    match json {
        Json::String(s) => Ok(s),
        other => Err(wrong_type(path, "a string", &other)),
    }
}

pub(crate) fn into_object(
    json: Json,
    path: &Path<'_>,
) -> Result<JsonMap<String, Json>, FormatError> {
    match json {
        Json::Object(object) => Ok(object),
        other => Err(wrong_type(path, "an object", &other)),
    }
}

pub(crate) fn into_array(json: Json, path: &Path<'_>) -> Result<Vec<Json>, FormatError> {
    match json {
        Json::Array(items) => Ok(items),
        other => Err(wrong_type(path, "an array", &other)),
    }
}

/// A row: rows are JSON objects (`docs/FORMAT.md`, section "Rows and the row codec").
pub(crate) fn into_row(json: Json, path: &Path<'_>) -> Result<Value, FormatError> {
    match json {
        Json::Object(_) => Ok(Value::from(json)),
        other => Err(wrong_type(path, "an object (a row)", &other)),
    }
}

/// A list of column names, such as grouping keys.
pub(crate) fn into_columns(json: Json, path: &Path<'_>) -> Result<Vec<String>, FormatError> {
    into_array(json, path)?
        .into_iter()
        .enumerate()
        .map(|(i, item)| into_string(item, &path.index(i)))
        .collect()
}

/// A millisecond timestamp: a number is kept; a string (an RFC 3339 date, as drasi-lib
/// writes) is accepted but not interpreted, so it yields `None` rather than an error.
pub(crate) fn into_timestamp_ms(json: Json, path: &Path<'_>) -> Result<Option<u64>, FormatError> {
    match json {
        Json::String(_) => Ok(None),
        Json::Number(_) => as_u64(&json, path).map(Some),
        other => Err(wrong_type(
            path,
            "milliseconds as an unsigned integer, or a date string",
            &other,
        )),
    }
}
