//! The webhook wakes this host issued and has yet to deliver: `(subscription id, generation)`.
//!
//! The delivery task prunes the set against a snapshot of the record cache taken just before.
//! Requests on other threads (an ack with `done`, a callback) issue the next generation and
//! add it to the set after updating the cache, and a shared store's reload may install a copy
//! older than what this host just wrote, so the snapshot can lag an entry. An entry therefore
//! goes only when its subscription is gone from the snapshot or has moved past its generation;
//! one the snapshot lags must stay, else its wake is delivered only after its lease expires.

use std::collections::{BTreeSet, HashMap};

/// Webhook wakes issued here and not yet handed to a delivery.
pub(crate) type InFlight = BTreeSet<(String, u64)>;

/// Drops the entries `generations` (each cached subscription's generation) shows are over.
pub(crate) fn prune(in_flight: &mut InFlight, generations: &HashMap<&str, u64>) {
    in_flight.retain(|(id, generation)| {
        (generations.get(id.as_str())).is_some_and(|cached| cached <= generation)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_the_snapshot_lags_is_kept() {
        let mut in_flight: InFlight = [("a".to_owned(), 3), ("b".to_owned(), 1)].into();
        // `a` issued generation 3 after the snapshot (which still says 2) was taken.
        let generations = HashMap::from([("a", 2), ("b", 1)]);
        prune(&mut in_flight, &generations);
        assert!(in_flight.contains(&("a".to_owned(), 3)));
        assert!(in_flight.contains(&("b".to_owned(), 1)));
    }

    #[test]
    fn finished_and_deleted_wakes_are_dropped() {
        let mut in_flight: InFlight = [("a".to_owned(), 3), ("gone".to_owned(), 1)].into();
        let generations = HashMap::from([("a", 4)]);
        prune(&mut in_flight, &generations);
        assert!(in_flight.is_empty(), "{in_flight:?}");
    }
}
