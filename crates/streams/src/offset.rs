//! Stream offsets: the text form clients see, and the positions behind them.
//!
//! A position is the number of payload bytes that precede it in the stream (inherited bytes of
//! a fork included), so positions of one stream — and of a fork and its source, which share one
//! offset space — are ordered as the bytes are, every append moves the tail forward by at least
//! one byte, and a fork can divide a record at any byte. The text form is
//! `0000000000000000_PPPPPPPPPPPPPPPP`: a reserved field (always sixteen zeros in this version)
//! and the position, both sixteen decimal digits, so comparing two offsets as strings orders
//! them like their positions, and they contain none of the characters the protocol reserves
//! (`,` `&` `=` `?` `/`). They stay valid across restarts: nothing in them depends on the
//! process.

use std::fmt::Write as _;

/// Largest position an offset can carry (sixteen decimal digits).
pub const MAX_POSITION: u64 = 9_999_999_999_999_999;

/// Length of an offset's text form.
const OFFSET_LEN: usize = 33;

/// The reserved first field of every offset this version writes.
const RESERVED: &str = "0000000000000000";

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `-1` (or no offset): the first byte of the stream.
    Beginning,
    /// `now`: the tail at the time of the request.
    Now,
    /// A position the server returned earlier.
    At(u64),
}

/// Why an offset was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// The parameter was present but empty.
    #[error("the offset is empty")]
    Empty,
    /// Not `-1`, `now` or an offset of the form this server writes.
    #[error("{0:?} is not an offset: expected -1, now, or a Stream-Next-Offset value")]
    Malformed(String),
}

/// The text form of `position`.
pub fn format_offset(position: u64) -> String {
    let mut text = String::with_capacity(OFFSET_LEN);
    // Writing to a String cannot fail.
    let _ = write!(text, "{RESERVED}_{position:016}");
    text
}

/// Parses a read offset: `-1`, `now` or a returned offset.
pub fn parse_start(text: &str) -> Result<Start, OffsetError> {
    match text {
        "" => Err(OffsetError::Empty),
        "-1" => Ok(Start::Beginning),
        "now" => Ok(Start::Now),
        _ => parse_position(text).map(Start::At),
    }
}

/// Parses an offset of the exact form [`format_offset`] writes (no sentinels).
pub fn parse_position(text: &str) -> Result<u64, OffsetError> {
    let malformed = || OffsetError::Malformed(text.chars().take(64).collect());
    if text.len() != OFFSET_LEN {
        return Err(malformed());
    }
    let (reserved, rest) = text.split_at(RESERVED.len());
    let position = rest.strip_prefix('_').ok_or_else(malformed)?;
    if reserved != RESERVED || !position.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    position.parse().map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_sort_like_positions() {
        let positions = [0, 1, 9, 10, 255, 1 << 40, MAX_POSITION];
        for window in positions.windows(2) {
            assert!(format_offset(window[0]) < format_offset(window[1]));
        }
        for p in positions {
            assert_eq!(parse_start(&format_offset(p)), Ok(Start::At(p)));
        }
        assert_eq!(
            format_offset(42),
            "0000000000000000_0000000000000042".to_owned()
        );
    }

    #[test]
    fn sentinels_and_garbage() {
        assert_eq!(parse_start("-1"), Ok(Start::Beginning));
        assert_eq!(parse_start("now"), Ok(Start::Now));
        assert_eq!(parse_start(""), Err(OffsetError::Empty));
        for bad in [
            "0,1",
            "0 1",
            "abc",
            "../x",
            "0000000000000000_000000000000004",
            "0000000000000001_0000000000000042",
            "0000000000000000-0000000000000042",
            "0000000000000000_00000000000000x2",
            "0000000000000000_+000000000000042",
        ] {
            assert!(parse_start(bad).is_err(), "{bad:?} accepted");
        }
    }
}
