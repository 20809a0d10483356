//! Key names of the stream store. Every key carries the one hash tag `{s}` (after the
//! namespace and `:streams:`), so all of them share one Redis Cluster slot:
//!
//! ```text
//! <ns>:streams:{s}:format          the stream store's format version ("1")
//! <ns>:streams:{s}:meta            hash: stream name -> meta record (docs/FORMAT.md)
//! <ns>:streams:{s}:next_id         string: the next stream id, decimal
//! <ns>:streams:{s}:records:<id>    sorted set, all scores 0: start (8 B BE) ++ the record
//! <ns>:streams:{s}:producers:<id>  hash: producer id -> producer state record
//! <ns>:streams:{s}:subscriptions   hash: subscription id -> subscription record (JSON)
//! <ns>:streams:{s}:signing_key     string: the 32-byte seed of the webhook signing key
//! <ns>:streams:notices             Pub/Sub channel (not a key): `<sender>:<stream name>`
//! ```
//!
//! Why one tag for every stream rather than one per stream: a write set is one script and may
//! touch several streams (a fork's creation bumps its source's fork count; a delete may take
//! hidden sources up the chain with it) as well as the id counter, and a script in a cluster
//! may only touch one slot. So one stream's keys share a slot, and so do all streams' — the
//! streams of a namespace live on one node; spread them with several namespaces.
//!
//! The query store's keys are `<ns>:{<query id>}:…` (a brace right after the namespace) or
//! `<ns>:queries`, `<ns>:format`, …: none starts with `<ns>:streams:`, so the two stores
//! share a namespace (and a server) without touching each other's keys.

/// The key names of one namespace.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `<ns>:streams:{s}:`.
    base: String,
    channel: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Keys {
        Keys {
            base: format!("{namespace}:streams:{{s}}:"),
            channel: format!("{namespace}:streams:notices"),
        }
    }

    pub(super) fn format(&self) -> String {
        format!("{}format", self.base)
    }

    pub(super) fn meta(&self) -> String {
        format!("{}meta", self.base)
    }

    pub(super) fn next_id(&self) -> String {
        format!("{}next_id", self.base)
    }

    pub(super) fn records(&self, id: u64) -> String {
        format!("{}records:{id}", self.base)
    }

    pub(super) fn producers(&self, id: u64) -> String {
        format!("{}producers:{id}", self.base)
    }

    pub(super) fn subscriptions(&self) -> String {
        format!("{}subscriptions", self.base)
    }

    pub(super) fn signing_key(&self) -> String {
        format!("{}signing_key", self.base)
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_one_hash_tag() {
        let keys = Keys::new("lr");
        for key in [
            keys.format(),
            keys.meta(),
            keys.next_id(),
            keys.records(7),
            keys.producers(u64::MAX),
        ] {
            let open = key.find('{').expect("tag");
            assert_eq!(&key[open..open + 3], "{s}", "{key}");
            assert!(key.starts_with("lr:streams:"), "{key}");
        }
    }
}
