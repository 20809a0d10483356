//! Key layouts. Every key of a query starts with the query's prefix:
//!
//! ```text
//! prefix      [len: u16 BE][query id: len bytes of UTF-8]
//! rows        prefix ++ [row signature: u64 BE]        -> encoded row
//! outbox      prefix ++ [last sequence: u64 BE]        -> record (first sequence, payload)
//! meta        prefix                                   -> meta record
//! meta        prefix ++ [0x00]                         -> removed marker (next epoch)
//! checkpoints prefix ++ [reaction id: UTF-8, rest]     -> checkpoint record
//! ```
//!
//! The length prefix makes the encoding prefix-free: no query's keys can start with another
//! query's prefix, so `[prefix, successor(prefix))` holds exactly one query's keys and a clear
//! is a single range delete per column family. Big-endian integers keep scans in numeric order.

use liveresults_core::contract_rules::validate_query_id;
use liveresults_core::StoreError;

/// Bytes of the length field that starts every prefix.
const LEN_BYTES: usize = 2;
/// Bytes of a signature or sequence suffix.
const U64_BYTES: usize = 8;
/// What follows the prefix in the key of a removed query's marker (in the meta column
/// family, right after where the query's meta record was).
pub(crate) const REMOVED_SUFFIX: &[u8] = &[0x00];

/// The key prefix shared by all of one query's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryPrefix(Vec<u8>);

impl QueryPrefix {
    /// Encodes a query id; fails for ids the layout cannot hold.
    pub(crate) fn new(query_id: &str) -> Result<Self, StoreError> {
        validate_query_id(query_id)?;
        let len = u16::try_from(query_id.len())
            .map_err(|_| StoreError::invalid_query_id(query_id, "longer than 65535 bytes"))?;
        let mut bytes = Vec::with_capacity(LEN_BYTES + query_id.len() + U64_BYTES);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(query_id.as_bytes());
        Ok(QueryPrefix(bytes))
    }

    /// The prefix bytes (also the query's meta key).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `prefix ++ n` as big-endian: a row key (n = signature) or an outbox key (n = sequence).
    pub(crate) fn with_u64(&self, n: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.0.len() + U64_BYTES);
        key.extend_from_slice(&self.0);
        key.extend_from_slice(&n.to_be_bytes());
        key
    }

    /// Rewrites the suffix of a key built by [`QueryPrefix::with_u64`] in place, so a commit
    /// reuses one buffer for all its row keys.
    pub(crate) fn set_u64(&self, key: &mut Vec<u8>, n: u64) {
        key.truncate(self.0.len());
        key.extend_from_slice(&n.to_be_bytes());
    }

    /// `prefix ++ reaction id`: a checkpoint key.
    pub(crate) fn with_str(&self, suffix: &str) -> Vec<u8> {
        let mut key = self.0.clone();
        key.extend_from_slice(suffix.as_bytes());
        key
    }

    /// `prefix ++ 0x00`: the key of the query's removed marker in the meta column family.
    pub(crate) fn removed_key(&self) -> Vec<u8> {
        let mut key = self.0.clone();
        key.extend_from_slice(REMOVED_SUFFIX);
        key
    }

    /// The smallest key greater than every key starting with this prefix (exclusive upper
    /// bound for scans and range deletes).
    pub(crate) fn successor(&self) -> Vec<u8> {
        let mut end = self.0.clone();
        // UTF-8 never contains 0xFF, and the length field is not all 0xFF for a non-empty
        // prefix that fits, so a byte to increment always exists.
        while let Some(last) = end.pop() {
            if last != u8::MAX {
                end.push(last + 1);
                return end;
            }
        }
        debug_assert!(false, "query prefix made only of 0xFF bytes");
        vec![u8::MAX; LEN_BYTES + 1]
    }
}

/// Splits a key into its query id and the bytes after the prefix.
pub(crate) fn split_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let len_bytes: [u8; LEN_BYTES] = key.get(..LEN_BYTES)?.try_into().ok()?;
    let end = LEN_BYTES + usize::from(u16::from_be_bytes(len_bytes));
    let id = std::str::from_utf8(key.get(LEN_BYTES..end)?).ok()?;
    Some((id, &key[end..]))
}

/// The big-endian `u64` suffix of a row or outbox key.
pub(crate) fn u64_suffix(rest: &[u8]) -> Option<u64> {
    let bytes: [u8; U64_BYTES] = rest.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_prefix_free_and_bounded() {
        let a = QueryPrefix::new("ab").unwrap();
        let ab = QueryPrefix::new("abc").unwrap();
        let row = a.with_u64(u64::MAX);
        assert!(row.as_slice() < a.successor().as_slice());
        assert!(row.as_slice() >= a.as_bytes());
        // "abc" sorts outside "ab"'s range even though the id starts with "ab".
        let other = ab.with_u64(0);
        assert!(!(other.as_slice() >= a.as_bytes() && other.as_slice() < a.successor().as_slice()));
        assert_eq!(split_key(&row), Some(("ab", &u64::MAX.to_be_bytes()[..])));
        assert_eq!(u64_suffix(&7u64.to_be_bytes()), Some(7));
    }

    #[test]
    fn any_characters_are_allowed_and_empty_is_not() {
        let p = QueryPrefix::new("q/\u{0}\u{10FFFF} ünïcödé").unwrap();
        assert_eq!(
            split_key(p.as_bytes()).map(|(id, _)| id),
            Some("q/\u{0}\u{10FFFF} ünïcödé")
        );
        assert!(QueryPrefix::new("").is_err());
        assert!(QueryPrefix::new(&"x".repeat(70_000)).is_err());
        assert!(split_key(&[0, 5, b'a']).is_none());
    }
}
