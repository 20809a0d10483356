//! Fixed-layout records a backend stores next to the rows: query metadata, outbox entries and
//! reaction checkpoints.
//!
//! Each record starts with a version byte so a future layout can be told apart from this one;
//! all integers are big-endian. Layouts are built from the named offsets below.
//!
//! ```text
//! meta (34 bytes)        [ver=1][flags][sequence u64][row_count u64][epoch u64][evicted_through u64]
//!                         flags bit 0: sequence present, bit 1: evicted_through present
//! outbox (9+n bytes)     [ver=1][first_sequence u64][payload ...]      (last sequence is in the key)
//! checkpoint (18 bytes)  [ver=1][flags][sequence u64][config_hash u64]  flags bit 0: sequence present
//! removed (9 bytes)      [ver=1][next_epoch u64]   marker left by removing a query (see below)
//! ```
//!
//! The removed marker is what stays of a removed query: the epoch its next incarnation starts
//! at. Change-feed offsets are `(epoch, sequence)`, so a query re-created under the same id
//! must never reuse an epoch of the removed one, or an old reader's offset would look valid.

use crate::model::Checkpoint;

/// Version of every record layout in this module.
pub const RECORD_VERSION: u8 = 1;

const FLAG_SEQUENCE: u8 = 0b01;
const FLAG_EVICTED: u8 = 0b10;

const META_LEN: usize = 34;
const META_SEQUENCE: usize = 2;
const META_ROW_COUNT: usize = 10;
const META_EPOCH: usize = 18;
const META_EVICTED: usize = 26;

const OUTBOX_FIRST: usize = 1;
const OUTBOX_PAYLOAD: usize = 9;

const REMOVED_LEN: usize = 9;
const REMOVED_EPOCH: usize = 1;

const CHECKPOINT_LEN: usize = 18;
const CHECKPOINT_SEQUENCE: usize = 2;
const CHECKPOINT_HASH: usize = 10;

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record was written by a layout version this build does not know.
    #[error("unknown {record} record version {found}")]
    UnknownVersion {
        /// Which record kind.
        record: &'static str,
        /// The version byte found.
        found: u8,
    },
    /// The record has the wrong size for its layout.
    #[error("{record} record is {found} bytes, expected {expected}")]
    Length {
        /// Which record kind.
        record: &'static str,
        /// The layout's size.
        expected: usize,
        /// The size found.
        found: usize,
    },
    /// The flags byte has bits this layout does not define.
    #[error("{record} record has unknown flags {flags:#04x}")]
    Flags {
        /// Which record kind.
        record: &'static str,
        /// The flags byte found.
        flags: u8,
    },
}

/// Per-query metadata, rewritten in the same atomic batch as every commit to the query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaRecord {
    /// Last committed sequence.
    pub sequence: Option<u64>,
    /// Exact number of live rows.
    pub row_count: u64,
    /// Number of clears so far.
    pub epoch: u64,
    /// Last sequence evicted from the outbox.
    pub evicted_through: Option<u64>,
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(buf)
}

fn check_header(record: &'static str, bytes: &[u8], min_len: usize) -> Result<(), RecordError> {
    match bytes.first() {
        None => Err(RecordError::Length {
            record,
            expected: min_len,
            found: 0,
        }),
        Some(&v) if v != RECORD_VERSION => Err(RecordError::UnknownVersion { record, found: v }),
        Some(_) if bytes.len() < min_len => Err(RecordError::Length {
            record,
            expected: min_len,
            found: bytes.len(),
        }),
        Some(_) => Ok(()),
    }
}

fn check_exact(record: &'static str, bytes: &[u8], len: usize) -> Result<(), RecordError> {
    check_header(record, bytes, len)?;
    if bytes.len() != len {
        return Err(RecordError::Length {
            record,
            expected: len,
            found: bytes.len(),
        });
    }
    Ok(())
}

fn check_flags(record: &'static str, flags: u8, known: u8) -> Result<(), RecordError> {
    if flags & !known != 0 {
        return Err(RecordError::Flags { record, flags });
    }
    Ok(())
}

/// Encodes a meta record.
pub fn encode_meta(meta: &MetaRecord) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[0] = RECORD_VERSION;
    let mut flags = 0;
    if let Some(seq) = meta.sequence {
        flags |= FLAG_SEQUENCE;
        out[META_SEQUENCE..META_SEQUENCE + 8].copy_from_slice(&seq.to_be_bytes());
    }
    if let Some(evicted) = meta.evicted_through {
        flags |= FLAG_EVICTED;
        out[META_EVICTED..META_EVICTED + 8].copy_from_slice(&evicted.to_be_bytes());
    }
    out[1] = flags;
    out[META_ROW_COUNT..META_ROW_COUNT + 8].copy_from_slice(&meta.row_count.to_be_bytes());
    out[META_EPOCH..META_EPOCH + 8].copy_from_slice(&meta.epoch.to_be_bytes());
    out
}

/// Decodes a meta record.
pub fn decode_meta(bytes: &[u8]) -> Result<MetaRecord, RecordError> {
    check_exact("meta", bytes, META_LEN)?;
    let flags = bytes[1];
    check_flags("meta", flags, FLAG_SEQUENCE | FLAG_EVICTED)?;
    Ok(MetaRecord {
        sequence: (flags & FLAG_SEQUENCE != 0).then(|| read_u64(bytes, META_SEQUENCE)),
        row_count: read_u64(bytes, META_ROW_COUNT),
        epoch: read_u64(bytes, META_EPOCH),
        evicted_through: (flags & FLAG_EVICTED != 0).then(|| read_u64(bytes, META_EVICTED)),
    })
}

/// Encodes an outbox entry value: the span's first sequence, then the payload.
pub fn encode_outbox(first_sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OUTBOX_PAYLOAD + payload.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&first_sequence.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes an outbox entry value into its first sequence and payload.
pub fn decode_outbox(bytes: &[u8]) -> Result<(u64, &[u8]), RecordError> {
    check_header("outbox", bytes, OUTBOX_PAYLOAD)?;
    Ok((read_u64(bytes, OUTBOX_FIRST), &bytes[OUTBOX_PAYLOAD..]))
}

/// Number of payload bytes in an encoded outbox value (what retention counts).
pub fn outbox_payload_len(encoded_len: usize) -> u64 {
    encoded_len.saturating_sub(OUTBOX_PAYLOAD) as u64
}

/// Encodes a reaction checkpoint.
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> [u8; CHECKPOINT_LEN] {
    let mut out = [0u8; CHECKPOINT_LEN];
    out[0] = RECORD_VERSION;
    if let Some(seq) = checkpoint.sequence {
        out[1] = FLAG_SEQUENCE;
        out[CHECKPOINT_SEQUENCE..CHECKPOINT_SEQUENCE + 8].copy_from_slice(&seq.to_be_bytes());
    }
    out[CHECKPOINT_HASH..CHECKPOINT_HASH + 8]
        .copy_from_slice(&checkpoint.config_hash.to_be_bytes());
    out
}

/// Decodes a reaction checkpoint.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, RecordError> {
    check_exact("checkpoint", bytes, CHECKPOINT_LEN)?;
    let flags = bytes[1];
    check_flags("checkpoint", flags, FLAG_SEQUENCE)?;
    Ok(Checkpoint {
        sequence: (flags & FLAG_SEQUENCE != 0).then(|| read_u64(bytes, CHECKPOINT_SEQUENCE)),
        config_hash: read_u64(bytes, CHECKPOINT_HASH),
    })
}

/// Encodes the marker of a removed query: the epoch its next incarnation starts at.
pub fn encode_removed(next_epoch: u64) -> [u8; REMOVED_LEN] {
    let mut out = [0u8; REMOVED_LEN];
    out[0] = RECORD_VERSION;
    out[REMOVED_EPOCH..].copy_from_slice(&next_epoch.to_be_bytes());
    out
}

/// Decodes the marker of a removed query into the epoch its next incarnation starts at.
pub fn decode_removed(bytes: &[u8]) -> Result<u64, RecordError> {
    check_exact("removed", bytes, REMOVED_LEN)?;
    Ok(read_u64(bytes, REMOVED_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_is_pinned() {
        let meta = MetaRecord {
            sequence: Some(7),
            row_count: 3,
            epoch: 1,
            evicted_through: None,
        };
        let bytes = encode_meta(&meta);
        assert_eq!(decode_meta(&bytes), Ok(meta));
        let mut golden = vec![1u8, 0b01, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3];
        golden.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes.to_vec(), golden);
        let none = MetaRecord::default();
        assert_eq!(decode_meta(&encode_meta(&none)), Ok(none));
    }

    #[test]
    fn corrupt_records_are_rejected_not_guessed() {
        let mut bytes = encode_meta(&MetaRecord::default());
        bytes[0] = 9;
        assert!(matches!(
            decode_meta(&bytes),
            Err(RecordError::UnknownVersion { found: 9, .. })
        ));
        assert!(matches!(
            decode_meta(&[1, 0, 0]),
            Err(RecordError::Length { .. })
        ));
        assert!(matches!(
            decode_meta(&[]),
            Err(RecordError::Length { found: 0, .. })
        ));
        let mut flagged = encode_meta(&MetaRecord::default());
        flagged[1] = 0x80;
        assert!(matches!(
            decode_meta(&flagged),
            Err(RecordError::Flags { .. })
        ));
        assert!(decode_outbox(&[1, 0, 0]).is_err());
        assert!(decode_checkpoint(&[2; CHECKPOINT_LEN]).is_err());
    }

    #[test]
    fn outbox_and_checkpoint_round_trip() {
        let encoded = encode_outbox(41, b"payload");
        assert_eq!(decode_outbox(&encoded), Ok((41, &b"payload"[..])));
        assert_eq!(outbox_payload_len(encoded.len()), 7);
        let cp = Checkpoint {
            sequence: Some(99),
            config_hash: 0xDEAD_BEEF,
        };
        assert_eq!(decode_checkpoint(&encode_checkpoint(&cp)), Ok(cp));
        let empty = Checkpoint {
            sequence: None,
            config_hash: 5,
        };
        assert_eq!(decode_checkpoint(&encode_checkpoint(&empty)), Ok(empty));
    }

    #[test]
    fn removed_marker_round_trips_and_is_pinned() {
        let bytes = encode_removed(3);
        assert_eq!(bytes, [1, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(decode_removed(&bytes), Ok(3));
        assert_eq!(decode_removed(&encode_removed(u64::MAX)), Ok(u64::MAX));
        assert!(matches!(
            decode_removed(&bytes[..8]),
            Err(RecordError::Length { .. })
        ));
        assert!(matches!(
            decode_removed(&[2, 0, 0, 0, 0, 0, 0, 0, 3]),
            Err(RecordError::UnknownVersion { found: 2, .. })
        ));
    }
}
