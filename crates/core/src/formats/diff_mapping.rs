//! The diff-to-mutation mapping: which row-store operations apply one [`Diff`].
//!
//! The rules (and why `UPDATE` may become a delete plus an upsert) are described in
//! `docs/FORMAT.md`, section "Input formats and the diff mapping".

use super::event::Diff;
use crate::row::Value;
use crate::signature::{columns_signature, row_signature, KeyColumns};

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
    /// Appends the store operations that apply this diff to `out` (`docs/FORMAT.md`, section
    /// "Input formats and the diff mapping").
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
