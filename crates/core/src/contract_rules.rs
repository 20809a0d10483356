//! The store contract's rules, written once so every backend applies them identically: which
//! query and reaction ids are valid, which sequences may follow the committed one, and which
//! mutations of a batch take effect (last write wins). The contract itself is the
//! [`ResultStore`](crate::ResultStore) trait; `docs/FORMAT.md`, section "Store contract",
//! describes it in prose.

use crate::error::{SpanDisplay, StoreError};
use crate::model::{RowMutation, SequenceSpan};
use crate::signature_set::SignatureMap;

/// Longest query id the key layouts accept: ids are length-prefixed with a big-endian `u16`.
pub const MAX_QUERY_ID_BYTES: usize = u16::MAX as usize;

/// Rejects ids no backend can store: empty ones, and ones longer than [`MAX_QUERY_ID_BYTES`].
pub fn validate_query_id(query_id: &str) -> Result<(), StoreError> {
    if query_id.is_empty() {
        return Err(StoreError::invalid_query_id(query_id, "must not be empty"));
    }
    if query_id.len() > MAX_QUERY_ID_BYTES {
        return Err(StoreError::invalid_query_id(
            query_id,
            "longer than 65535 bytes",
        ));
    }
    Ok(())
}

/// Rejects empty reaction ids (the key layouts store them after the query prefix).
pub fn validate_reaction_id(reaction_id: &str) -> Result<(), StoreError> {
    if reaction_id.is_empty() {
        return Err(StoreError::invalid_query_id(
            reaction_id,
            "reaction id must not be empty",
        ));
    }
    Ok(())
}

/// Checks that `span` is well formed and starts after the committed sequence.
pub fn check_sequence(
    query_id: &str,
    committed: Option<u64>,
    span: SequenceSpan,
) -> Result<(), StoreError> {
    let follows = committed.is_none_or(|c| span.first > c);
    if span.first > span.last || !follows {
        return Err(StoreError::SequenceRegression {
            query_id: query_id.to_owned(),
            committed,
            attempted: SpanDisplay {
                first: span.first,
                last: span.last,
            },
        });
    }
    Ok(())
}

/// The mutations of a batch that take effect, in batch order: when a signature appears more
/// than once, only its last mutation survives (last write wins).
pub fn last_wins<'b, 'a>(mutations: &'b [RowMutation<'a>]) -> Vec<&'b RowMutation<'a>> {
    if mutations.len() < 2 {
        return mutations.iter().collect();
    }
    let mut last: SignatureMap<usize> = SignatureMap::default();
    last.reserve(mutations.len());
    for (i, m) in mutations.iter().enumerate() {
        last.insert(m.row_signature, i);
    }
    if last.len() == mutations.len() {
        return mutations.iter().collect();
    }
    mutations
        .iter()
        .enumerate()
        .filter(|(i, m)| last.get(&m.row_signature) == Some(i))
        .map(|(_, m)| m)
        .collect()
}

/// A query's row count after a commit that inserted `inserted` rows and deleted `deleted`
/// existing ones.
///
/// The count is a stored number: a count that cannot absorb the commit (a delete of a row the
/// stored count says cannot exist, or growth past `u64::MAX`) means the stored record is
/// wrong, and the commit must fail with [`StoreError::Corrupt`] before anything is written,
/// rather than wrap into a count that looks plausible.
pub fn next_row_count(
    query_id: &str,
    row_count: u64,
    inserted: u64,
    deleted: u64,
) -> Result<u64, StoreError> {
    row_count
        .checked_add(inserted)
        .and_then(|n| n.checked_sub(deleted))
        .ok_or_else(|| {
            StoreError::corrupt_meta(
                query_id,
                format_args!(
                    "row count {row_count} cannot take {inserted} inserted and {deleted} deleted rows"
                ),
            )
        })
}

/// A query's epoch after one more clear; [`StoreError::Corrupt`] (and no clear) when the stored
/// epoch is already `u64::MAX`, since a wrapped epoch would make stale positions look current.
pub fn next_epoch(query_id: &str, epoch: u64) -> Result<u64, StoreError> {
    epoch.checked_add(1).ok_or_else(|| {
        StoreError::corrupt_meta(
            query_id,
            format_args!("epoch {epoch} cannot be incremented"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_count_and_epoch_never_wrap() {
        assert_eq!(next_row_count("q", 5, 2, 3).ok(), Some(4));
        assert_eq!(next_row_count("q", 0, 1, 1).ok(), Some(0));
        for (count, inserted, deleted) in [(0, 0, 1), (u64::MAX, 1, 0), (2, 1, 4)] {
            let err = next_row_count("q", count, inserted, deleted).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            assert!(
                err.to_string().contains("meta record of query \"q\""),
                "{err}"
            );
        }
        assert_eq!(next_epoch("q", 41).ok(), Some(42));
        let err = next_epoch("q", u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
