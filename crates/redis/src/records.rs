//! Stored values and how they decode. Anything that does not decode is
//! [`StoreError::Corrupt`] naming the record, never a panic or a guess.

use liveresults_core::{Checkpoint, OutboxEntry, QueryInfo, SequenceSpan, StoreError};

/// Fields read from a meta hash, in the order [`Meta::decode`] expects them.
pub(crate) const META_FIELDS: [&str; 5] = ["seq", "rows", "epoch", "ver", "evicted"];

/// A raw `HMGET` answer: one optional value per field.
pub(crate) type Fields = Vec<Option<Vec<u8>>>;

/// A query's meta hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) sequence: Option<u64>,
    pub(crate) row_count: u64,
    pub(crate) epoch: u64,
    /// Commits ever applied to the query (clears do not reset it): the change log's clock.
    pub(crate) version: u64,
    pub(crate) evicted_through: Option<u64>,
}

impl Meta {
    /// Decodes the values of [`META_FIELDS`]; `None` when the query has no meta hash, or one
    /// without `rows` (every commit and clear writes `rows`, so its absence means the store
    /// never saw the query, or removed it and keeps only its removed marker).
    pub(crate) fn decode(
        query_id: &str,
        fields: &[Option<Vec<u8>>],
    ) -> Result<Option<Meta>, StoreError> {
        let [seq, rows, epoch, ver, evicted] = fields else {
            return Err(StoreError::corrupt_meta(
                query_id,
                format_args!(
                    "expected {} fields, got {}",
                    META_FIELDS.len(),
                    fields.len()
                ),
            ));
        };
        if rows.is_none() {
            return Ok(None);
        }
        Ok(Some(Meta {
            sequence: sequence_field(query_id, "seq", seq.as_deref())?,
            row_count: int_field(query_id, "rows", rows.as_deref())?,
            epoch: int_field(query_id, "epoch", epoch.as_deref())?,
            version: int_field(query_id, "ver", ver.as_deref())?,
            evicted_through: sequence_field(query_id, "evicted", evicted.as_deref())?,
        }))
    }

    pub(crate) fn info(&self, query_id: &str) -> QueryInfo {
        QueryInfo {
            query_id: query_id.to_owned(),
            sequence: self.sequence,
            row_count: self.row_count,
            epoch: self.epoch,
        }
    }
}

/// A decimal integer field; absent reads as 0.
fn int_field(query_id: &str, name: &str, raw: Option<&[u8]>) -> Result<u64, StoreError> {
    let Some(raw) = raw else { return Ok(0) };
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StoreError::corrupt_meta(
                query_id,
                format_args!("field {name} = {raw:?} is not an integer"),
            )
        })
}

/// A sequence field: 8 bytes big-endian, or absent.
fn sequence_field(
    query_id: &str,
    name: &str,
    raw: Option<&[u8]>,
) -> Result<Option<u64>, StoreError> {
    raw.map(|raw| {
        u64_be(raw).ok_or_else(|| {
            StoreError::corrupt_meta(
                query_id,
                format_args!("field {name} = {raw:?} is not 8 bytes"),
            )
        })
    })
    .transpose()
}

/// An 8-byte big-endian number.
pub(crate) fn u64_be(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

/// Bytes of an encoded checkpoint: presence flag, sequence, config hash.
const CHECKPOINT_BYTES: usize = 17;

/// Encodes a checkpoint record.
pub(crate) fn encode_checkpoint(checkpoint: Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_BYTES);
    out.push(u8::from(checkpoint.sequence.is_some()));
    out.extend_from_slice(&checkpoint.sequence.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&checkpoint.config_hash.to_be_bytes());
    out
}

/// Decodes a checkpoint record.
pub(crate) fn decode_checkpoint(
    reaction_id: &str,
    query_id: &str,
    raw: &[u8],
) -> Result<Checkpoint, StoreError> {
    let corrupt = || {
        StoreError::corrupt(
            format!("checkpoint of reaction {reaction_id:?} in query {query_id:?}"),
            format_args!("{raw:?}"),
        )
    };
    if raw.len() != CHECKPOINT_BYTES {
        return Err(corrupt());
    }
    let sequence = u64_be(&raw[1..9]).ok_or_else(corrupt)?;
    let config_hash = u64_be(&raw[9..17]).ok_or_else(corrupt)?;
    let sequence = match raw[0] {
        0 => None,
        1 => Some(sequence),
        _ => return Err(corrupt()),
    };
    Ok(Checkpoint {
        sequence,
        config_hash,
    })
}

/// Decodes an outbox member: last (8 bytes BE) ++ first (8 bytes BE) ++ payload.
pub(crate) fn decode_outbox(
    query_id: &str,
    mut member: Vec<u8>,
) -> Result<OutboxEntry, StoreError> {
    let (Some(last), Some(first)) = (
        member.get(..8).and_then(u64_be),
        member.get(8..16).and_then(u64_be),
    ) else {
        return Err(StoreError::corrupt_key("outbox", query_id, &member));
    };
    member.drain(..16);
    Ok(OutboxEntry {
        span: SequenceSpan { first, last },
        payload: member,
    })
}

/// One row mutation of a change-log entry, borrowing the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    Upsert(u64, &'a [u8]),
    Delete(u64),
}

/// Decodes a change-log entry: `<version>:` then, per mutation, `u` signature (8 B) length
/// (4 B BE) row, or `d` signature (8 B). Returns the version and the mutations in order.
pub(crate) fn decode_log_entry<'a>(
    query_id: &str,
    entry: &'a [u8],
) -> Result<(u64, Vec<Change<'a>>), StoreError> {
    let corrupt = |at: usize| {
        StoreError::corrupt(
            format!("change-log entry of query {query_id:?}"),
            format_args!("undecodable at byte {at} of {}", entry.len()),
        )
    };
    let colon = entry
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| corrupt(0))?;
    let version = std::str::from_utf8(&entry[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(0))?;
    let mut changes = Vec::new();
    let mut at = colon + 1;
    while at < entry.len() {
        let tag = entry[at];
        let sig = entry
            .get(at + 1..at + 9)
            .and_then(u64_be)
            .ok_or_else(|| corrupt(at))?;
        at += 9;
        match tag {
            b'd' => changes.push(Change::Delete(sig)),
            b'u' => {
                let len = entry
                    .get(at..at + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| corrupt(at))?;
                let end = at + 4 + len as usize;
                let row = entry.get(at + 4..end).ok_or_else(|| corrupt(at))?;
                changes.push(Change::Upsert(sig, row));
                at = end;
            }
            _ => return Err(corrupt(at - 9)),
        }
    }
    Ok((version, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_garbage_is_corrupt() {
        for cp in [
            Checkpoint {
                sequence: None,
                config_hash: 7,
            },
            Checkpoint {
                sequence: Some(u64::MAX),
                config_hash: 0,
            },
        ] {
            assert_eq!(
                decode_checkpoint("r", "q", &encode_checkpoint(cp)).unwrap(),
                cp
            );
        }
        let mut bad = encode_checkpoint(Checkpoint {
            sequence: None,
            config_hash: 1,
        });
        bad[0] = 2;
        assert!(matches!(
            decode_checkpoint("r", "q", &bad),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode_checkpoint("r", "q", b"short").is_err());
    }

    #[test]
    fn log_entries_decode_and_truncation_is_corrupt() {
        let mut entry = b"42:".to_vec();
        entry.push(b'u');
        entry.extend_from_slice(&5u64.to_be_bytes());
        entry.extend_from_slice(&3u32.to_be_bytes());
        entry.extend_from_slice(b"abc");
        entry.push(b'd');
        entry.extend_from_slice(&6u64.to_be_bytes());
        let (version, changes) = decode_log_entry("q", &entry).unwrap();
        assert_eq!(version, 42);
        assert_eq!(changes, [Change::Upsert(5, b"abc"), Change::Delete(6)]);
        assert!(decode_log_entry("q", &entry[..entry.len() - 1]).is_err());
        assert!(decode_log_entry("q", b"x:").is_err());
    }

    #[test]
    fn meta_decodes_and_rejects_bad_numbers() {
        let fields = |rows: &[u8]| -> Fields {
            vec![
                Some(9u64.to_be_bytes().to_vec()),
                Some(rows.to_vec()),
                Some(b"2".to_vec()),
                None,
                None,
            ]
        };
        let meta = Meta::decode("q", &fields(b"5")).unwrap().unwrap();
        assert_eq!(
            (meta.sequence, meta.row_count, meta.epoch, meta.version),
            (Some(9), 5, 2, 0)
        );
        assert!(Meta::decode("q", &fields(b"-1")).is_err());
        assert_eq!(
            Meta::decode("q", &[None, None, None, None, None]).unwrap(),
            None
        );
    }
}
