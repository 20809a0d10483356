//! Decoding the scripts' replies. A reply that does not have the shape the script returns is
//! a permanent error (another script under the same SHA, or a server that converts replies
//! differently), never a guess.

use liveresults_core::{CommitReceipt, StoreError};
use redis::Value;

use crate::error::permanent;
use crate::records::u64_be;
use crate::scripts::{CORRUPT, FENCED, OK, REGRESSION, UNKNOWN};

/// What a commit script answered.
pub(crate) enum CommitReply {
    Done(CommitReceipt),
    /// Refused; holds the committed sequence.
    Regression(Option<u64>),
    /// Refused by the fence; holds the live lease's holder and token, if a lease is live.
    Fenced(Option<(String, u64)>),
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

fn unexpected(script: &str, value: &Value) -> StoreError {
    permanent(format!(
        "unexpected reply from the {script} script: {value:?}"
    ))
}

/// A sequence as a script returns it: 8 bytes, or empty for none.
fn sequence(raw: &[u8]) -> Option<Option<u64>> {
    if raw.is_empty() {
        Some(None)
    } else {
        u64_be(raw).map(Some)
    }
}

/// Splits `{tag, ...}` replies.
fn tagged<'v>(script: &str, value: &'v Value) -> Result<(&'v [u8], &'v [Value]), StoreError> {
    match value {
        Value::Array(items) => match items.split_first() {
            Some((tag, rest)) => Ok((bytes(tag).ok_or_else(|| unexpected(script, value))?, rest)),
            None => Err(unexpected(script, value)),
        },
        _ => Err(unexpected(script, value)),
    }
}

/// Decodes the commit script's reply.
pub(crate) fn commit(query_id: &str, value: &Value) -> Result<CommitReply, StoreError> {
    let (tag, rest) = tagged("commit", value)?;
    match (tag, rest) {
        (t, [count, inserted, deleted, seq]) if t == OK => {
            let receipt = (|| {
                Some(CommitReceipt {
                    row_count: int(count)?,
                    inserted: int(inserted)?,
                    deleted: int(deleted)?,
                    sequence: sequence(bytes(seq)?)?,
                })
            })();
            receipt
                .map(CommitReply::Done)
                .ok_or_else(|| unexpected("commit", value))
        }
        (t, [seq]) if t == REGRESSION => bytes(seq)
            .and_then(sequence)
            .map(CommitReply::Regression)
            .ok_or_else(|| unexpected("commit", value)),
        (t, [holder, token]) if t == FENCED => live_lease(holder, token)
            .map(CommitReply::Fenced)
            .ok_or_else(|| unexpected("commit", value)),
        (t, [detail]) if t == CORRUPT => Err(corrupt(query_id, detail)),
        _ => Err(unexpected("commit", value)),
    }
}

/// The live lease a `{"fenced", holder, token}` reply names: `Some(None)` for none (both
/// empty), `None` when the parts are not what the scripts send.
fn live_lease(holder: &Value, token: &Value) -> Option<Option<(String, u64)>> {
    match (bytes(holder), bytes(token)) {
        (Some(_), Some([])) => Some(None),
        (Some(holder), Some(_)) => {
            int(token).map(|token| Some((String::from_utf8_lossy(holder).into_owned(), token)))
        }
        _ => None,
    }
}

/// The error of a fenced clear or removal (whose token was `fence`).
fn fenced(
    script: &str,
    query_id: &str,
    fence: Option<u64>,
    holder: &Value,
    token: &Value,
    value: &Value,
) -> StoreError {
    match live_lease(holder, token) {
        Some(live) => StoreError::Fenced {
            query_id: query_id.to_owned(),
            fence,
            live,
        },
        None => unexpected(script, value),
    }
}

/// What a clear did.
pub(crate) struct Cleared {
    /// The query's epoch after the clear.
    pub(crate) epoch: u64,
    /// Renamed-away keys still to unlink (this clear's and any an earlier clear left).
    pub(crate) pending: Vec<Vec<u8>>,
}

/// Decodes the reply of the clear script run with fencing token `fence`: `None` for an
/// unknown query, else the new epoch and the trash keys to unlink; a refusal by the fence is
/// [`StoreError::Fenced`].
pub(crate) fn clear(
    query_id: &str,
    fence: Option<u64>,
    value: &Value,
) -> Result<Option<Cleared>, StoreError> {
    let (tag, rest) = tagged("clear", value)?;
    match (tag, rest) {
        (t, []) if t == UNKNOWN => Ok(None),
        (t, [holder, token]) if t == FENCED => {
            Err(fenced("clear", query_id, fence, holder, token, value))
        }
        // RESP3 servers may answer SMEMBERS with a set.
        (t, [epoch, Value::Array(pending) | Value::Set(pending)]) if t == OK => {
            let epoch = int(epoch).ok_or_else(|| unexpected("clear", value))?;
            let pending = pending
                .iter()
                .map(|p| bytes(p).map(<[u8]>::to_vec))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| unexpected("clear", value))?;
            Ok(Some(Cleared { epoch, pending }))
        }
        (t, [detail]) if t == CORRUPT => Err(corrupt(query_id, detail)),
        _ => Err(unexpected("clear", value)),
    }
}

/// What a removal did.
pub(crate) struct Removed {
    /// Whether the store knew the query (it now holds its removed marker).
    pub(crate) known: bool,
    /// Renamed-away keys still to unlink (this removal's and any an earlier step left).
    pub(crate) pending: Vec<Vec<u8>>,
}

/// Decodes the reply of the removal script run with fencing token `fence`.
pub(crate) fn remove(
    query_id: &str,
    fence: Option<u64>,
    value: &Value,
) -> Result<Removed, StoreError> {
    let (tag, rest) = tagged("remove", value)?;
    match (tag, rest) {
        (t, [holder, token]) if t == FENCED => {
            Err(fenced("remove", query_id, fence, holder, token, value))
        }
        (t, [Value::Array(pending) | Value::Set(pending)]) if t == OK || t == UNKNOWN => {
            let pending = pending
                .iter()
                .map(|p| bytes(p).map(<[u8]>::to_vec))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| unexpected("remove", value))?;
            Ok(Removed {
                known: t == OK,
                pending,
            })
        }
        (t, [detail]) if t == CORRUPT => Err(corrupt(query_id, detail)),
        _ => Err(unexpected("remove", value)),
    }
}

fn corrupt(query_id: &str, detail: &Value) -> StoreError {
    let detail = bytes(detail).map_or_else(
        || format!("{detail:?}"),
        |b| String::from_utf8_lossy(b).into_owned(),
    );
    StoreError::corrupt_meta(query_id, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    #[test]
    fn commit_replies_decode() {
        let ok = Value::Array(vec![
            bulk(b"ok"),
            Value::Int(3),
            Value::Int(2),
            Value::Int(1),
            bulk(&7u64.to_be_bytes()),
        ]);
        let Ok(CommitReply::Done(r)) = commit("q", &ok) else {
            panic!("not done")
        };
        assert_eq!(
            (r.row_count, r.inserted, r.deleted, r.sequence),
            (3, 2, 1, Some(7))
        );
        let refused = Value::Array(vec![bulk(b"regression"), bulk(b"")]);
        assert!(matches!(
            commit("q", &refused),
            Ok(CommitReply::Regression(None))
        ));
        let fenced = Value::Array(vec![bulk(b"fenced"), bulk(b"host-a"), bulk(b"12")]);
        assert!(matches!(
            commit("q", &fenced),
            Ok(CommitReply::Fenced(Some((h, 12)))) if h == "host-a"
        ));
        let unleased = Value::Array(vec![bulk(b"fenced"), bulk(b""), bulk(b"")]);
        assert!(matches!(
            commit("q", &unleased),
            Ok(CommitReply::Fenced(None))
        ));
        let garbled = Value::Array(vec![bulk(b"fenced"), bulk(b"a"), bulk(b"x")]);
        assert!(commit("q", &garbled).is_err());
        let corrupt = Value::Array(vec![bulk(b"corrupt"), bulk(b"why")]);
        assert!(matches!(
            commit("q", &corrupt),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(commit("q", &Value::Int(1)).is_err());
    }

    #[test]
    fn remove_replies_decode() {
        let ok = Value::Array(vec![bulk(b"ok"), Value::Array(vec![bulk(b"t1")])]);
        let removed = remove("q", None, &ok).unwrap();
        assert!(removed.known);
        assert_eq!(removed.pending, [b"t1".to_vec()]);
        let unknown = Value::Array(vec![bulk(b"unknown"), Value::Set(vec![])]);
        let removed = remove("q", None, &unknown).unwrap();
        assert!(!removed.known && removed.pending.is_empty());
        let corrupt = Value::Array(vec![bulk(b"corrupt"), bulk(b"epoch x")]);
        assert!(matches!(
            remove("q", None, &corrupt),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(remove("q", None, &Value::Array(vec![bulk(b"ok")])).is_err());
    }

    /// A fenced clear or removal is `Fenced` with the token it carried and the live lease.
    #[test]
    fn fenced_clear_and_remove_replies_decode() {
        let fenced = Value::Array(vec![bulk(b"fenced"), bulk(b"host-a"), bulk(b"12")]);
        for result in [
            clear("q", Some(3), &fenced).map(|_| ()),
            remove("q", Some(3), &fenced).map(|_| ()),
        ] {
            match result {
                Err(StoreError::Fenced {
                    query_id,
                    fence: Some(3),
                    live: Some((holder, 12)),
                }) => assert_eq!((query_id.as_str(), holder.as_str()), ("q", "host-a")),
                other => panic!("expected Fenced, got {other:?}"),
            }
        }
        let unleased = Value::Array(vec![bulk(b"fenced"), bulk(b""), bulk(b"")]);
        assert!(matches!(
            clear("q", Some(3), &unleased),
            Err(StoreError::Fenced { live: None, .. })
        ));
        let garbled = Value::Array(vec![bulk(b"fenced"), bulk(b"a"), bulk(b"x")]);
        assert!(matches!(
            remove("q", None, &garbled),
            Err(StoreError::Backend { .. })
        ));
    }
}
