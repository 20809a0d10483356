//! Change-feed offsets: opaque to clients, ordered, and tied to the query's epoch.
//!
//! An offset names a position *between* committed batches: everything up to and including
//! `sequence` has been read. It is rendered as `{epoch:016x}_{n:020}` where `n` is
//! `sequence + 1` (`0` = before the first batch), so that
//!
//! - offsets of one query sort lexicographically in stream order (fixed widths), and
//! - an offset taken before a clear (an older epoch) is recognisably stale: the reader must
//!   refetch the snapshot instead of silently reading another history.
//!
//! `-1` (the beginning of the current epoch's history) and `now` (the current tail) are the
//! Durable Streams sentinels. Once the outbox has evicted anything, the beginning is gone and
//! `-1` answers must-refetch like any other expired offset: the snapshot is the way in.

use std::fmt;

use liveresults_core::QueryInfo;

/// Width of the epoch part (hex digits).
const EPOCH_DIGITS: usize = 16;
/// Width of the position part (decimal digits; `u64::MAX + 1` has 20).
const POSITION_DIGITS: usize = 20;
/// Total length of a rendered offset: epoch, separator, position.
const OFFSET_LEN: usize = EPOCH_DIGITS + 1 + POSITION_DIGITS;

/// A concrete position in one query's change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    /// The query's epoch when the position was taken.
    pub epoch: u64,
    /// The last sequence read (`None`: nothing of this epoch yet).
    pub sequence: Option<u64>,
}

impl Offset {
    /// The tail of a query: after its last committed batch.
    pub fn tail(info: &QueryInfo) -> Self {
        Offset {
            epoch: info.epoch,
            sequence: info.sequence,
        }
    }

    fn position(self) -> u128 {
        self.sequence.map_or(0, |s| u128::from(s) + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:0ew$x}_{:0pw$}",
            self.epoch,
            self.position(),
            ew = EPOCH_DIGITS,
            pw = POSITION_DIGITS
        )
    }
}

/// Where a read starts, as the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `-1`: the first batch of the current epoch (must-refetch once it has been evicted).
    Beginning,
    /// `now`: the current tail; only what is committed from here on.
    Now,
    /// A position the server handed out earlier.
    At(Offset),
}

/// Why an offset string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed offset {0:?}: expected -1, now, or an offset returned by this server")]
pub struct OffsetError(pub String);

impl Start {
    /// Parses the `offset` query parameter.
    pub fn parse(raw: &str) -> Result<Self, OffsetError> {
        let malformed = || OffsetError(raw.chars().take(64).collect());
        match raw {
            "-1" => return Ok(Start::Beginning),
            "now" => return Ok(Start::Now),
            _ => {}
        }
        if raw.len() != OFFSET_LEN || raw.as_bytes()[EPOCH_DIGITS] != b'_' {
            return Err(malformed());
        }
        let (epoch, position) = (&raw[..EPOCH_DIGITS], &raw[EPOCH_DIGITS + 1..]);
        // `from_str_radix` accepts a leading `+`; offsets are plain digits only.
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if !epoch.bytes().all(hex) || !position.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed());
        }
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| malformed())?;
        let position: u128 = position.parse().map_err(|_| malformed())?;
        let sequence = match position {
            0 => None,
            n => Some(u64::try_from(n - 1).map_err(|_| malformed())?),
        };
        Ok(Start::At(Offset { epoch, sequence }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let offsets = [
            Offset {
                epoch: 0,
                sequence: None,
            },
            Offset {
                epoch: 0,
                sequence: Some(0),
            },
            Offset {
                epoch: 0,
                sequence: Some(9),
            },
            Offset {
                epoch: 0,
                sequence: Some(u64::MAX),
            },
            Offset {
                epoch: 1,
                sequence: None,
            },
            Offset {
                epoch: u64::MAX,
                sequence: Some(3),
            },
        ];
        for pair in offsets.windows(2) {
            assert!(pair[0].to_string() < pair[1].to_string(), "{pair:?}");
        }
        for o in offsets {
            assert_eq!(Start::parse(&o.to_string()), Ok(Start::At(o)));
        }
        assert_eq!(
            Offset {
                epoch: 2,
                sequence: Some(41)
            }
            .to_string(),
            "0000000000000002_00000000000000000042"
        );
    }

    #[test]
    fn sentinels_and_malformed() {
        assert_eq!(Start::parse("-1"), Ok(Start::Beginning));
        assert_eq!(Start::parse("now"), Ok(Start::Now));
        for bad in [
            "",
            "x",
            "0000000000000002-00000000000000000042",
            "000000000000000G_00000000000000000042",
            "0000000000000002_+0000000000000000042",
            "0000000000000002_99999999999999999999",
            "0000000000000002_0000000000000000004",
        ] {
            assert!(Start::parse(bad).is_err(), "{bad}");
        }
    }
}
