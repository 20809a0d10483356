//! How the store's numbers and ids become PostgreSQL values, and back.
//!
//! PostgreSQL has no unsigned 64-bit type. Two mappings, both lossless and checked:
//!
//! - **Full-range `u64`s** (sequences, row signatures, config hashes) are stored as `BIGINT`
//!   holding `u - 2^63`: the same 64 bits with the top bit flipped. Every `u64` has exactly
//!   one image, and BIGINT order is `u64` order, so the SQL can compare sequences (`first >
//!   committed`, `last_seq > after`) and sort rows by signature directly.
//! - **Counters** (epochs, row counts, byte counts, fencing tokens) are plain non-negative
//!   `BIGINT`s, readable in `psql`. They can reach at most `i64::MAX`: a stored value that is
//!   negative is [`StoreError::Corrupt`], and a counter that would pass `i64::MAX` is refused
//!   the same way (`u64::MAX` is where the other backends refuse, for the same reason).

use liveresults_core::StoreError;

/// `u - 2^63`, bit for bit: order-preserving and lossless.
pub(crate) fn u64_to_sql(u: u64) -> i64 {
    (u ^ (1 << 63)) as i64
}

/// The inverse of [`u64_to_sql`]; total, since every BIGINT is some `u64`'s image.
pub(crate) fn u64_from_sql(i: i64) -> u64 {
    (i as u64) ^ (1 << 63)
}

/// A stored counter back as `u64`; a negative one is corrupt (`what` names the record).
pub(crate) fn counter_from_sql(what: impl FnOnce() -> String, i: i64) -> Result<u64, StoreError> {
    u64::try_from(i).map_err(|_| StoreError::corrupt(what(), format_args!("negative count {i}")))
}

/// A count or limit handed to SQL: values past `i64::MAX` are clamped, which is exact for
/// limits (no stored sum can exceed `i64::MAX` without the database refusing it first).
pub(crate) fn limit_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The query id as it appears in a commit notice: `%` → `%25` and NUL → `%00` (a NOTIFY
/// payload is text, which cannot hold NUL), or empty when the escaped id would not fit in
/// a notice (PostgreSQL's limit is 8000 bytes). An empty id is the lost-notices marker of
/// [`ResultStore::commit_notices`](liveresults_core::ResultStore::commit_notices): receivers
/// then re-read every query, which is correct for the long id too, only less precise.
pub(crate) fn notice_id(query_id: &str) -> String {
    let escaped_len = query_id.len()
        + 2 * query_id
            .bytes()
            .filter(|b| matches!(b, b'%' | b'\0'))
            .count();
    if escaped_len > MAX_NOTICE_ID_BYTES {
        return String::new();
    }
    let mut out = String::with_capacity(escaped_len);
    for c in query_id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

/// Room left for the id in a notice after `<epoch>:<16 hex digits>:`.
pub(crate) const MAX_NOTICE_ID_BYTES: usize = 7900;

/// The inverse of [`notice_id`]; `None` for text it cannot produce.
pub(crate) fn notice_id_decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "00" => '\0',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_range_mapping_is_lossless_and_ordered() {
        let values = [
            0,
            1,
            2,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in values.windows(2) {
            assert!(u64_to_sql(pair[0]) < u64_to_sql(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(u64_from_sql(u64_to_sql(v)), v);
        }
        assert_eq!(u64_to_sql(0), i64::MIN);
        assert_eq!(u64_to_sql(u64::MAX), i64::MAX);
        assert_eq!(u64_to_sql(1 << 63), 0);
    }

    #[test]
    fn counters_are_checked() {
        assert_eq!(counter_from_sql(String::new, 7).ok(), Some(7));
        let err = counter_from_sql(|| "meta record of query \"q\"".into(), -1).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(limit_to_sql(u64::MAX), i64::MAX);
        assert_eq!(limit_to_sql(5), 5);
    }

    #[test]
    fn notice_ids_round_trip() {
        for id in ["q", "a:b:c", "100%", "a\0b", "%00", "ü{}"] {
            let text = notice_id(id);
            assert!(!text.contains('\0'));
            assert_eq!(notice_id_decode(&text).as_deref(), Some(id), "{id:?}");
        }
        assert_eq!(notice_id("a%\0"), "a%25%00");
        assert_eq!(
            notice_id(&"x".repeat(MAX_NOTICE_ID_BYTES)).len(),
            MAX_NOTICE_ID_BYTES
        );
        assert!(notice_id(&"x".repeat(MAX_NOTICE_ID_BYTES + 1)).is_empty());
        assert!(notice_id(&"%".repeat(3000)).is_empty());
        for bad in ["%", "%2", "%zz", "a%41"] {
            assert_eq!(notice_id_decode(bad), None, "{bad:?}");
        }
    }
}
