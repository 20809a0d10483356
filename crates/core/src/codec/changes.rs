//! The outbox payload: what one commit changed, batch by batch, so readers catching up (reactions
//! after a restart, the change feed) see exactly what was committed.
//!
//! ```text
//! payload  [ver=1][items: u32][item ...]                     (integers big-endian)
//! item     [tag=0][sequence: u64][ops: u32][op ...]          a batch of row operations
//!          [tag=1][sequence: u64][signal: u8]                a control signal
//! op       [kind=0][signature: u64][len: u32][row bytes]     upsert (row in the row codec)
//!          [kind=1][signature: u64]                          delete
//! signal   0 bootstrapStarted, 1 bootstrapCompleted, 2 running, 3 stopped, 4 deleted
//! ```

use crate::formats::ControlSignal;

/// Version byte of the payload layout.
pub const CHANGES_VERSION: u8 = 1;

const TAG_ROWS: u8 = 0;
const TAG_CONTROL: u8 = 1;
const OP_UPSERT: u8 = 0;
const OP_DELETE: u8 = 1;
const SIGNALS: [ControlSignal; 5] = [
    ControlSignal::BootstrapStarted,
    ControlSignal::BootstrapCompleted,
    ControlSignal::Running,
    ControlSignal::Stopped,
    ControlSignal::Deleted,
];

/// One row operation as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOp {
    /// The row with this signature now has these (row-codec encoded) bytes.
    Upsert {
        /// Row signature.
        signature: u64,
        /// The encoded row.
        row: Vec<u8>,
    },
    /// The row with this signature is gone.
    Delete {
        /// Row signature.
        signature: u64,
    },
}

/// One upstream event as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeItem {
    /// A batch of row operations with its upstream sequence.
    Rows {
        /// Upstream sequence.
        sequence: u64,
        /// The diff mapping's operations in order, before last-write-wins: a signature may
        /// repeat (a delete, then an upsert); applying them in order gives the committed rows.
        ops: Vec<ChangeOp>,
    },
    /// A control signal with its upstream sequence.
    Control {
        /// Upstream sequence.
        sequence: u64,
        /// The signal.
        signal: ControlSignal,
    },
}

impl ChangeItem {
    /// The upstream sequence of the item.
    pub fn sequence(&self) -> u64 {
        match self {
            ChangeItem::Rows { sequence, .. } | ChangeItem::Control { sequence, .. } => *sequence,
        }
    }
}

/// A payload that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangesError {
    /// Unknown version byte.
    #[error("unknown change payload version {found}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// The payload ends inside a field.
    #[error("change payload truncated at byte {offset}")]
    Truncated {
        /// Where the missing bytes should start.
        offset: usize,
    },
    /// A tag, kind or signal byte is not defined.
    #[error("invalid {field} byte {value} at byte {offset}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// The byte found.
        value: u8,
        /// Where.
        offset: usize,
    },
    /// Bytes remain after the last item.
    #[error("{count} trailing bytes after the change payload")]
    Trailing {
        /// How many.
        count: usize,
    },
}

/// Builds a payload item by item, writing straight into one buffer.
#[derive(Debug)]
pub struct ChangeEncoder {
    buf: Vec<u8>,
    items: u32,
}

impl Default for ChangeEncoder {
    fn default() -> Self {
        ChangeEncoder::new()
    }
}

impl ChangeEncoder {
    /// An empty payload.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.push(CHANGES_VERSION);
        buf.extend_from_slice(&0u32.to_be_bytes());
        ChangeEncoder { buf, items: 0 }
    }

    /// Appends a batch of row operations: `(signature, Some(encoded row))` or `(signature, None)`.
    pub fn push_rows<'a>(
        &mut self,
        sequence: u64,
        ops: impl IntoIterator<Item = (u64, Option<&'a [u8]>)>,
    ) {
        self.buf.push(TAG_ROWS);
        self.buf.extend_from_slice(&sequence.to_be_bytes());
        let count_at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_be_bytes());
        let mut count = 0u32;
        for (signature, row) in ops {
            match row {
                Some(row) => {
                    self.buf.push(OP_UPSERT);
                    self.buf.extend_from_slice(&signature.to_be_bytes());
                    // Rows beyond 4 GiB cannot exist: ingest limits line sizes far below that.
                    let len = u32::try_from(row.len()).unwrap_or(u32::MAX);
                    self.buf.extend_from_slice(&len.to_be_bytes());
                    self.buf.extend_from_slice(&row[..len as usize]);
                }
                None => {
                    self.buf.push(OP_DELETE);
                    self.buf.extend_from_slice(&signature.to_be_bytes());
                }
            }
            count += 1;
        }
        self.buf[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
        self.items += 1;
    }

    /// Appends a control signal.
    pub fn push_control(&mut self, sequence: u64, signal: ControlSignal) {
        self.buf.push(TAG_CONTROL);
        self.buf.extend_from_slice(&sequence.to_be_bytes());
        let code = SIGNALS.iter().position(|s| *s == signal).unwrap_or(0) as u8;
        self.buf.push(code);
        self.items += 1;
    }

    /// Number of items so far.
    pub fn items(&self) -> u32 {
        self.items
    }

    /// The finished payload.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..5].copy_from_slice(&self.items.to_be_bytes());
        self.buf
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ChangesError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(ChangesError::Truncated { offset: self.at })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ChangesError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ChangesError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, ChangesError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

/// Decodes a payload written by [`ChangeEncoder`].
pub fn decode_changes(bytes: &[u8]) -> Result<Vec<ChangeItem>, ChangesError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8()?;
    if version != CHANGES_VERSION {
        return Err(ChangesError::UnknownVersion { found: version });
    }
    let items = r.u32()?;
    // Every item takes at least 10 bytes: never reserve more than the input can hold.
    let mut out = Vec::with_capacity((items as usize).min(bytes.len() / 10));
    for _ in 0..items {
        let offset = r.at;
        let tag = r.u8()?;
        let sequence = r.u64()?;
        match tag {
            TAG_ROWS => {
                let count = r.u32()?;
                let mut ops = Vec::with_capacity((count as usize).min(bytes.len() / 9));
                for _ in 0..count {
                    let offset = r.at;
                    let kind = r.u8()?;
                    let signature = r.u64()?;
                    match kind {
                        OP_UPSERT => {
                            let len = r.u32()? as usize;
                            ops.push(ChangeOp::Upsert {
                                signature,
                                row: r.take(len)?.to_vec(),
                            });
                        }
                        OP_DELETE => ops.push(ChangeOp::Delete { signature }),
                        value => {
                            return Err(ChangesError::Invalid {
                                field: "op kind",
                                value,
                                offset,
                            })
                        }
                    }
                }
                out.push(ChangeItem::Rows { sequence, ops });
            }
            TAG_CONTROL => {
                let offset = r.at;
                let code = r.u8()?;
                let signal = *SIGNALS.get(code as usize).ok_or(ChangesError::Invalid {
                    field: "control signal",
                    value: code,
                    offset,
                })?;
                out.push(ChangeItem::Control { sequence, signal });
            }
            value => {
                return Err(ChangesError::Invalid {
                    field: "item tag",
                    value,
                    offset,
                })
            }
        }
    }
    if r.at != bytes.len() {
        return Err(ChangesError::Trailing {
            count: bytes.len() - r.at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_golden_bytes() {
        let mut enc = ChangeEncoder::new();
        enc.push_rows(7, [(1, Some(&b"ab"[..])), (2, None)]);
        enc.push_control(8, ControlSignal::Running);
        let bytes = enc.finish();
        let golden: Vec<u8> = [
            &[1u8, 0, 0, 0, 2][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2],
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, b'a', b'b'],
            &[1, 0, 0, 0, 0, 0, 0, 0, 2],
            &[1, 0, 0, 0, 0, 0, 0, 0, 8, 2],
        ]
        .concat();
        assert_eq!(bytes, golden);
        let items = decode_changes(&bytes).unwrap();
        assert_eq!(
            items,
            [
                ChangeItem::Rows {
                    sequence: 7,
                    ops: vec![
                        ChangeOp::Upsert {
                            signature: 1,
                            row: b"ab".to_vec()
                        },
                        ChangeOp::Delete { signature: 2 }
                    ]
                },
                ChangeItem::Control {
                    sequence: 8,
                    signal: ControlSignal::Running
                },
            ]
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(matches!(
            decode_changes(&[]),
            Err(ChangesError::Truncated { offset: 0 })
        ));
        assert!(matches!(
            decode_changes(&[2]),
            Err(ChangesError::UnknownVersion { found: 2 })
        ));
        let mut enc = ChangeEncoder::new();
        enc.push_control(1, ControlSignal::Deleted);
        let mut bytes = enc.finish();
        *bytes.last_mut().unwrap() = 9;
        assert!(matches!(
            decode_changes(&bytes),
            Err(ChangesError::Invalid {
                field: "control signal",
                ..
            })
        ));
        bytes.push(0);
        assert!(decode_changes(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_changes(&bytes);
        }
    }
}
