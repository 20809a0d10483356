//! Key names. Every key of one query carries the hash tag `{<encoded id>}`, so a Redis Cluster
//! puts all of them in one slot and a script may touch them together:
//!
//! ```text
//! <ns>:{<id>}:meta         hash: seq, rows, epoch, ver, obytes, lbytes, evicted
//!                          (of a removed query, only epoch = the next epoch to use, and ver)
//! <ns>:{<id>}:rows         hash: 8-byte big-endian signature -> row bytes
//! <ns>:{<id>}:outbox       sorted set, all scores 0: last (8 B BE) ++ first (8 B BE) ++ payload
//! <ns>:{<id>}:log          sorted set, score = commit version: change log for snapshot readers
//! <ns>:{<id>}:snapshots    sorted set: snapshot reader token -> deadline (server ms)
//! <ns>:{<id>}:checkpoints  hash: reaction id -> checkpoint record
//! <ns>:{<id>}:trash        set of renamed-away keys a clear has not unlinked yet
//! <ns>:{<id>}:trash:<token>:<kind>   a renamed-away key, unlinked right after the clear
//! <ns>:{<id>}:lease        hash with PEXPIRE: holder, address, token of the live lease
//! <ns>:{<id>}:fence        string: the last fencing token issued (INCR)
//! <ns>:queries             sorted set, all scores 0: every query id ever committed to
//! <ns>:format              the store format version
//! <ns>:writable            string with a short PX, written by `check_writable`'s probe
//! <ns>:notices             Pub/Sub channel (not a key): commit notices
//! ```
//!
//! The lease and the fence counter are never named by the clear or removal scripts, so they
//! survive both: fencing tokens must never repeat for a query id (see the `store::lease`
//! module), and a lease is the owning host's, not the data's.
//!
//! Redis takes the hash tag from the first `{` to the first `}` after it, so the id is encoded
//! to contain neither: `%` becomes `%25`, `{` becomes `%7B` and `}` becomes `%7D`. The encoding
//! is injective, so two ids never share a key, and any id — braces, colons, NUL, any Unicode —
//! works. The namespace itself may hold no brace (checked when the store connects).

use liveresults_core::contract_rules::{validate_query_id, validate_reaction_id};
use liveresults_core::StoreError;

/// Encodes a query id so it contains no `{` and no `}`.
pub(crate) fn encode_id(query_id: &str) -> String {
    let mut out = String::with_capacity(query_id.len());
    for c in query_id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// The names of every key of one query.
#[derive(Debug, Clone)]
pub(crate) struct QueryKeys {
    /// `<ns>:{<id>}:` — every key of the query starts with it.
    base: String,
}

impl QueryKeys {
    /// The keys of `query_id` in namespace `ns`; fails for ids no backend can store.
    pub(crate) fn new(ns: &str, query_id: &str) -> Result<Self, StoreError> {
        validate_query_id(query_id)?;
        Ok(QueryKeys {
            base: format!("{ns}:{{{}}}:", encode_id(query_id)),
        })
    }

    fn key(&self, kind: &str) -> String {
        format!("{}{kind}", self.base)
    }

    pub(crate) fn meta(&self) -> String {
        self.key("meta")
    }

    pub(crate) fn rows(&self) -> String {
        self.key("rows")
    }

    pub(crate) fn outbox(&self) -> String {
        self.key("outbox")
    }

    pub(crate) fn log(&self) -> String {
        self.key("log")
    }

    pub(crate) fn snapshots(&self) -> String {
        self.key("snapshots")
    }

    pub(crate) fn checkpoints(&self) -> String {
        self.key("checkpoints")
    }

    pub(crate) fn trash(&self) -> String {
        self.key("trash")
    }

    /// The live lease (holder, address, token), expiring by `PEXPIRE`.
    pub(crate) fn lease(&self) -> String {
        self.key("lease")
    }

    /// The fence counter: the last token issued. Never deleted, by anything.
    pub(crate) fn fence(&self) -> String {
        self.key("fence")
    }

    /// Where a clear renames the key of `kind` to; `token` makes the name unique per clear.
    pub(crate) fn trash_item(&self, token: &str, kind: &str) -> String {
        format!("{}trash:{token}:{kind}", self.base)
    }
}

/// The sorted set listing every query id.
pub(crate) fn query_index(ns: &str) -> String {
    format!("{ns}:queries")
}

/// The key holding the store format version.
pub(crate) fn format_key(ns: &str) -> String {
    format!("{ns}:format")
}

/// The key `check_writable` writes (with a short expiry) to find out whether writes work.
pub(crate) fn writable_probe(ns: &str) -> String {
    format!("{ns}:writable")
}

/// The Pub/Sub channel commit notices are published on.
pub(crate) fn notice_channel(ns: &str) -> String {
    format!("{ns}:notices")
}

/// Rejects namespaces that would break the hash-tag layout.
pub(crate) fn validate_namespace(ns: &str) -> Result<(), StoreError> {
    if ns.is_empty() || ns.contains(['{', '}']) {
        return Err(StoreError::invalid_query_id(
            ns,
            "key namespace must be non-empty and hold no '{' or '}'",
        ));
    }
    Ok(())
}

/// Validates both ids of a checkpoint operation and returns the query's keys.
pub(crate) fn checkpoint_keys(
    ns: &str,
    reaction_id: &str,
    query_id: &str,
) -> Result<QueryKeys, StoreError> {
    let keys = QueryKeys::new(ns, query_id)?;
    validate_reaction_id(reaction_id)?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis would compute: between the first `{` and the first `}` after it.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + 1 + key[open + 1..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_query_shares_one_hash_tag() {
        for id in ["q", "a}b", "{x}", "%7D", "ü/ß:\u{0}", "}{"] {
            let keys = QueryKeys::new("lr", id).unwrap();
            let tag = hash_tag(&keys.meta()).to_owned();
            assert!(!tag.is_empty());
            for key in [
                keys.rows(),
                keys.outbox(),
                keys.log(),
                keys.snapshots(),
                keys.checkpoints(),
                keys.trash(),
                keys.trash_item("7", "rows"),
                keys.lease(),
                keys.fence(),
            ] {
                assert_eq!(hash_tag(&key), tag, "{key}");
            }
        }
    }

    #[test]
    fn encoding_is_injective_on_tricky_ids() {
        let ids = ["a}b", "a%7Db", "a%b", "a%25b", "{", "%7B", "}", "%7D"];
        let encoded: std::collections::BTreeSet<_> = ids.iter().map(|id| encode_id(id)).collect();
        assert_eq!(encoded.len(), ids.len());
        assert!(QueryKeys::new("lr", "").is_err());
        assert!(validate_namespace("a{b").is_err());
        assert!(validate_namespace("lr").is_ok());
    }
}
