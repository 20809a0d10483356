//! Why an input event could not be parsed, with the JSON path of the offending field.

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
    /// An integer outside the 64-bit range (below `i64::MIN`, above `u64::MAX`): it cannot be
    /// kept exactly, and as the nearest float it would merge with its neighbours.
    #[error(
        "field `{field}` holds the integer {number}, outside the 64-bit range (from \
         -9223372036854775808 to 18446744073709551615): it cannot be kept exactly; send it as a \
         string"
    )]
    NumberOutOfRange {
        /// Path of the field.
        field: String,
        /// The literal as sent (cut after 64 characters).
        number: String,
    },
    /// An object holds the same key twice.
    #[error("duplicate key `{key}` in {}", if object.is_empty() { "the event".to_owned() } else { format!("`{object}`") })]
    DuplicateKey {
        /// Path of the object (empty for the event itself).
        object: String,
        /// The repeated key.
        key: String,
    },
}

impl FormatError {
    /// The JSON path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            FormatError::Missing { field }
            | FormatError::WrongType { field, .. }
            | FormatError::UnknownVariant { field, .. }
            | FormatError::NumberOutOfRange { field, .. } => Some(field),
            FormatError::DuplicateKey { .. } => None,
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

/// Turns a serde_json syntax error into [`FormatError::InvalidJson`].
pub(crate) fn invalid_json(err: &serde_json::Error) -> FormatError {
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
