//! [`Attachment`]: where a query's numbering in Drasi meets ours (see [`crate::reaction`]).

use liveresults_runtime::Position;

/// Where a query's two numberings meet: Drasi's sequence `s` is ours `ours_base + (s - drasi_base)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attachment {
    /// Drasi's `as_of_sequence` of the snapshot we reconciled with.
    pub(crate) drasi_base: u64,
    /// Our committed sequence right after reconciling; `None` when nothing was ever committed
    /// and nothing needed to be, in which case Drasi's numbers are used as they are.
    pub(crate) ours_base: Option<u64>,
    /// The last Drasi sequence taken (starts at `drasi_base`).
    pub(crate) last: u64,
    /// The query's epoch the reconciliation read: a clear since then emptied the query under
    /// us.
    pub(crate) epoch: u64,
}

impl Attachment {
    /// Our sequence for Drasi's `drasi_sequence` (which is after `drasi_base`).
    pub(crate) fn ours(&self, drasi_sequence: u64) -> Option<u64> {
        let delta = drasi_sequence.checked_sub(self.drasi_base)?;
        match self.ours_base {
            None => Some(drasi_sequence),
            Some(base) => base.checked_add(delta),
        }
    }

    /// Whether the runtime's committed `position` is still what this attachment built: no clear
    /// since (same epoch), and nothing committed beyond the last sequence we handed over (our
    /// own commits never get there; another writer's do).
    pub(crate) fn holds(&self, position: Position) -> bool {
        position.epoch == self.epoch && position.sequence <= self.ours(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(drasi_base: u64, ours_base: Option<u64>) -> Attachment {
        Attachment {
            drasi_base,
            ours_base,
            last: drasi_base,
            epoch: 0,
        }
    }

    #[test]
    fn mapping_keeps_our_sequence_growing_across_an_upstream_restart() {
        // First attach: nothing committed, Drasi's numbers are used as they are.
        assert_eq!(attachment(0, None).ours(1), Some(1));
        // Drasi restarted at 0 while we had committed 50 and rebuilt at 51.
        let restarted = attachment(0, Some(51));
        assert_eq!(restarted.ours(1), Some(52));
        assert_eq!(restarted.ours(10), Some(61));
        assert_eq!(attachment(0, Some(u64::MAX)).ours(1), None);
    }

    #[test]
    fn a_clear_or_a_commit_past_ours_breaks_the_attachment() {
        let mut a = attachment(3, Some(10));
        a.last = 5; // ours 12
        let at = |epoch, sequence| Position { epoch, sequence };
        assert!(a.holds(at(0, Some(12))));
        assert!(a.holds(at(0, Some(11))), "ours still in flight");
        assert!(
            !a.holds(at(0, Some(13))),
            "another writer committed past us"
        );
        assert!(!a.holds(at(1, None)), "cleared");
    }
}
