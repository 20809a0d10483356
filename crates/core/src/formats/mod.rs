//! The two Drasi result formats, parsed into one model.
//!
//! Upstream continuous queries speak one of two dialects (DESIGN §5):
//!
//! - **drasi-lib** `QueryResult` ([`drasi_lib`]): `{"query_id", "sequence", "timestamp",
//!   "results": [ResultDiff], "metadata"}`, each diff tagged by `"type"` and carrying a
//!   `row_signature`;
//! - **Drasi platform** events ([`platform`]): `{"kind": "change" | "control", "queryId",
//!   "sequence", "sourceTimeMs", ...}`, rows without signatures.
//!
//! [`parse_event`] tells them apart and returns an [`Event`]; [`Diff::mutations`] turns a diff
//! into the row operations a store applies. Parsing goes through `serde_json::Value` and walks
//! it by hand so that every error names the JSON path of the offending field
//! (`results[3].type`, `updatedResults[0].after`); fields this crate does not know are ignored,
//! so newer upstream versions that add fields still parse.

pub mod drasi_lib;
mod fast;
pub mod platform;

use std::fmt::Write as _;

use serde_json::{Map as JsonMap, Value as Json};

use crate::row::Value;
use crate::signature::{columns_signature, row_signature, KeyColumns};

/// One committed-to-be batch of result diffs of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultBatch {
    /// The continuous query that produced the batch.
    pub query_id: String,
    /// Upstream's per-query sequence number of this batch.
    pub sequence: u64,
    /// Source time in milliseconds since the Unix epoch, when upstream gave one as a number.
    pub timestamp_ms: Option<u64>,
    /// The diffs, in the order they must be applied.
    pub diffs: Vec<Diff>,
    /// Upstream metadata, passed through untouched.
    pub metadata: Option<Json>,
}

/// One change to a query's result set.
///
/// `signature` is the upstream row signature when the input carried one; otherwise
/// [`Diff::mutations`] computes it from the row.
#[derive(Debug, Clone, PartialEq)]
pub enum Diff {
    /// A row entered the result set.
    Add {
        /// The row.
        data: Value,
        /// Upstream signature, if given.
        signature: Option<u64>,
    },
    /// A row left the result set.
    Delete {
        /// The row as it was.
        data: Value,
        /// Upstream signature, if given.
        signature: Option<u64>,
    },
    /// A row changed.
    Update {
        /// The row before the change.
        before: Value,
        /// The row after the change.
        after: Value,
        /// Columns identifying the row (aggregation groups), if upstream named them.
        grouping_keys: Option<Vec<String>>,
        /// Upstream signature (the same for `before` and `after`), if given.
        signature: Option<u64>,
    },
    /// An aggregate row was created (`before` is `None`) or changed.
    Aggregation {
        /// The aggregate before the change, if it existed.
        before: Option<Value>,
        /// The aggregate after the change.
        after: Value,
        /// Columns identifying the aggregate group, if upstream named them.
        grouping_keys: Option<Vec<String>>,
        /// Upstream signature, if given.
        signature: Option<u64>,
    },
    /// Upstream evaluated a change that left the result set as it was.
    Noop,
}

/// A Drasi platform control signal: the query's lifecycle, not its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlSignal {
    /// The query started loading its initial result set.
    BootstrapStarted,
    /// The initial result set is complete.
    BootstrapCompleted,
    /// The query is running and emitting changes.
    Running,
    /// The query stopped.
    Stopped,
    /// The query was deleted; its results can be dropped.
    Deleted,
}

impl ControlSignal {
    /// The wire spelling (`"bootstrapStarted"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlSignal::BootstrapStarted => "bootstrapStarted",
            ControlSignal::BootstrapCompleted => "bootstrapCompleted",
            ControlSignal::Running => "running",
            ControlSignal::Stopped => "stopped",
            ControlSignal::Deleted => "deleted",
        }
    }
}

/// One parsed input event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A batch of result diffs.
    Change(ResultBatch),
    /// A lifecycle signal of a query.
    Control {
        /// The query the signal is about.
        query_id: String,
        /// Upstream's sequence number of the signal.
        sequence: u64,
        /// Source time in milliseconds since the Unix epoch, if given.
        timestamp_ms: Option<u64>,
        /// The signal.
        signal: ControlSignal,
    },
}

impl Event {
    /// The query this event belongs to.
    pub fn query_id(&self) -> &str {
        match self {
            Event::Change(batch) => &batch.query_id,
            Event::Control { query_id, .. } => query_id,
        }
    }

    /// Upstream's sequence number of this event.
    pub fn sequence(&self) -> u64 {
        match self {
            Event::Change(batch) => batch.sequence,
            Event::Control { sequence, .. } => *sequence,
        }
    }
}

/// Why an input event could not be parsed. Field paths are JSON paths from the event root,
/// such as `results[3].type` or `updatedResults[0].after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The text is not JSON.
    #[error("invalid json at column {column}: {message}")]
    InvalidJson {
        /// 1-based column (in bytes) where the JSON parser gave up.
        column: usize,
        /// The parser's description of the problem.
        message: String,
    },
    /// The JSON is neither a drasi-lib query result nor a Drasi platform event.
    #[error(
        "unrecognised event format ({found}): expected an object with \"kind\" (drasi platform) \
         or with \"query_id\" and \"results\" (drasi-lib)"
    )]
    UnknownFormat {
        /// What was found instead.
        found: String,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    Missing {
        /// Path of the missing field.
        field: String,
    },
    /// A field holds the wrong kind of JSON value.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// Path of the field.
        field: String,
        /// What the field must hold.
        expected: &'static str,
        /// What it held.
        found: String,
    },
    /// A tag field holds a value this crate does not know.
    #[error("field `{field}` has unknown value {value}, expected one of {expected}")]
    UnknownVariant {
        /// Path of the tag field.
        field: String,
        /// The value found, as JSON.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
}

impl FormatError {
    /// The JSON path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            FormatError::Missing { field }
            | FormatError::WrongType { field, .. }
            | FormatError::UnknownVariant { field, .. } => Some(field),
            FormatError::InvalidJson { .. } | FormatError::UnknownFormat { .. } => None,
        }
    }
}

/// A [`FormatError`] on a numbered line of NDJSON input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct LineError {
    /// The 1-based line number, as the caller counts lines.
    pub line: usize,
    /// What was wrong with the line.
    pub source: FormatError,
}

/// Parses one event, in either format, from JSON text.
///
/// Detection: an object with `"kind"` is a Drasi platform event; an object with `"query_id"`
/// and `"results"` is a drasi-lib query result; anything else is
/// [`FormatError::UnknownFormat`]. Never panics, whatever `text` holds.
pub fn parse_event(text: &str) -> Result<Event, FormatError> {
    if let Some(event) = fast::try_parse(text) {
        return Ok(event);
    }
    let json: Json = serde_json::from_str(text).map_err(|err| invalid_json(&err))?;
    parse_event_value(json)
}

/// Like [`parse_event`], for JSON that is already parsed (an HTTP body, a stream entry).
pub fn parse_event_value(json: Json) -> Result<Event, FormatError> {
    let object = match json {
        Json::Object(object) => object,
        other => {
            return Err(FormatError::UnknownFormat {
                found: format!("a json {}", json_kind(&other)),
            })
        }
    };
    if object.contains_key("kind") {
        platform::parse_platform_event(object)
    } else if object.contains_key("query_id") && object.contains_key("results") {
        drasi_lib::parse_query_result(object).map(Event::Change)
    } else {
        Err(FormatError::UnknownFormat {
            found: "an object without \"kind\", \"query_id\" or \"results\"".to_owned(),
        })
    }
}

/// [`parse_event`] for line `line_no` of NDJSON input; the error carries the line number.
pub fn parse_ndjson_line(line_no: usize, line: &str) -> Result<Event, LineError> {
    parse_event(line).map_err(|source| LineError {
        line: line_no,
        source,
    })
}

fn invalid_json(err: &serde_json::Error) -> FormatError {
    // serde_json appends " at line L column C"; the column is reported as a field instead,
    // and the line is the caller's business (one NDJSON line is one event).
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    FormatError::InvalidJson {
        column: err.column(),
        message,
    }
}

/// A row-store operation derived from a [`Diff`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowOp<'a> {
    /// Insert or replace the row stored under `signature`.
    Upsert {
        /// The row's signature.
        signature: u64,
        /// The row's new content.
        row: &'a Value,
    },
    /// Remove the row stored under `signature` (absent is fine).
    Delete {
        /// The row's signature.
        signature: u64,
    },
}

impl Diff {
    /// Appends the store operations that apply this diff to `out` (DESIGN §5).
    ///
    /// - `Add` → upsert; `Delete` → delete; `Noop` → nothing.
    /// - `Update` → delete the `before` signature, then upsert `after`; a single upsert when
    ///   both signatures agree (always the case with an upstream signature, which names the
    ///   row across the change).
    /// - `Aggregation` → upsert `after`. Without an upstream signature it is treated like an
    ///   update when `before` is present, so that an aggregate identified by its whole row
    ///   does not leave its previous value behind.
    ///
    /// Signatures: the upstream one when given; otherwise [`row_signature`] under `keys`,
    /// except that diffs naming `grouping_keys` are identified by those columns.
    pub fn mutations<'a>(&'a self, keys: &KeyColumns, out: &mut Vec<RowOp<'a>>) {
        match self {
            Diff::Add { data, signature } => out.push(RowOp::Upsert {
                signature: signature.unwrap_or_else(|| row_signature(data, keys)),
                row: data,
            }),
            Diff::Delete { data, signature } => out.push(RowOp::Delete {
                signature: signature.unwrap_or_else(|| row_signature(data, keys)),
            }),
            Diff::Update {
                before,
                after,
                grouping_keys,
                signature,
            } => replace(
                Some(before),
                after,
                grouping_keys.as_deref(),
                *signature,
                keys,
                out,
            ),
            Diff::Aggregation {
                before,
                after,
                grouping_keys,
                signature,
            } => replace(
                before.as_ref(),
                after,
                grouping_keys.as_deref(),
                *signature,
                keys,
                out,
            ),
            Diff::Noop => {}
        }
    }
}

/// `before` (if any) is replaced by `after`: see [`Diff::mutations`].
fn replace<'a>(
    before: Option<&Value>,
    after: &'a Value,
    grouping_keys: Option<&[String]>,
    upstream: Option<u64>,
    keys: &KeyColumns,
    out: &mut Vec<RowOp<'a>>,
) {
    if let Some(signature) = upstream {
        out.push(RowOp::Upsert {
            signature,
            row: after,
        });
        return;
    }
    let signature_of = |row: &Value| match grouping_keys {
        Some(columns) => columns_signature(row, columns),
        None => row_signature(row, keys),
    };
    let after_signature = signature_of(after);
    if let Some(before) = before {
        let before_signature = signature_of(before);
        if before_signature != after_signature {
            out.push(RowOp::Delete {
                signature: before_signature,
            });
        }
    }
    out.push(RowOp::Upsert {
        signature: after_signature,
        row: after,
    });
}

// ---------------------------------------------------------------------------------------------
// Walking parsed JSON with exact error paths (shared by both format modules).

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

/// A row: rows are JSON objects (DESIGN §4).
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
