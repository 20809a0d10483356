//! Keeping a pattern subscription's links within its cap as matching streams come and go.
//!
//! A glob link outlives its stream (deleted, expired, soft-deleted): the cursor must survive a
//! host's lagging view of the stream. Left alone, though, links to streams long gone would
//! fill the cap ([`super::SubscriptionLimits::max_streams_per_subscription`]) and every new
//! match would be refused for good. So once the cap is reached, glob-only links whose stream
//! is gone make room (explicit links stay until the client unlinks them, as the protocol
//! says); on a shared store their streams are re-read first, so a stream this host merely has
//! not seen yet keeps its link. A match refused all the same is logged once per subscription
//! until it links again (then at debug level: it would repeat on every append).

use super::error::SubscriptionError;
use super::manager::{lock, Subscriptions};
use super::Record;
use crate::engine::expired;

impl Subscriptions {
    /// Links of every subscription but `id`, as this host's cache has them.
    pub(crate) fn links_elsewhere(&self, id: &str) -> usize {
        (lock(&self.cache).iter())
            .filter(|(other, _)| other.as_str() != id)
            .map(|(_, r)| r.links.len())
            .fold(0, usize::saturating_add)
    }

    /// Refuses `links` more links for `id` when all subscriptions together would pass
    /// [`super::SubscriptionLimits::max_total_links`].
    pub(crate) fn check_total_links(
        &self,
        id: &str,
        links: usize,
    ) -> Result<(), SubscriptionError> {
        let max = self.limits.max_total_links;
        if self.links_elsewhere(id).saturating_add(links) > max {
            return Err(SubscriptionError::TooManyLinks(max));
        }
        Ok(())
    }

    /// Whether stream `name` is gone as this host sees it: absent, deleted or expired.
    fn stream_gone(&self, name: &str, now: u64) -> bool {
        let Some(slot) = self.engine.slot(name) else {
            return true;
        };
        slot.meta()
            .is_none_or(|m| m.soft_deleted || expired(&slot, &m, now))
    }

    /// Re-reads, on a shared store, the streams of `record`'s glob-only links this host sees
    /// as gone (so [`Self::drop_dead_glob_links`] never drops a link for a lagging view).
    pub(crate) async fn refresh_glob_links(&self, record: &Record) {
        let now = crate::time::now_ms();
        for (name, link) in &record.links {
            if link.explicit || !self.stream_gone(name, now) {
                continue;
            }
            if let Err(e) = self.engine.refresh(name).await {
                tracing::warn!(subscription = record.id, stream = name, error = %e, "re-reading a linked stream failed");
            }
        }
    }

    /// Removes `record`'s glob-only links whose stream is gone.
    pub(crate) fn drop_dead_glob_links(&self, record: &mut Record, now: u64) {
        let before = record.links.len();
        record
            .links
            .retain(|name, link| link.explicit || !self.stream_gone(name, now));
        let dropped = before.saturating_sub(record.links.len());
        if dropped > 0 {
            tracing::info!(
                subscription = record.id,
                dropped,
                "glob links to streams that are gone removed"
            );
        }
    }

    /// Logs a match `refused` for the cap (once per subscription until one links again).
    pub(crate) fn note_link_cap(&self, id: &str, refused: Option<&str>) {
        let max = self.limits.max_streams_per_subscription;
        let mut warned = lock(&self.link_cap_warned);
        match refused {
            Some(stream) if warned.insert(id.to_owned()) => tracing::warn!(
                subscription = id,
                stream,
                max,
                "stream not linked: the subscription links its maximum (logged once)"
            ),
            Some(stream) => tracing::debug!(
                subscription = id,
                stream,
                max,
                "stream not linked: the subscription links its maximum"
            ),
            None => {
                warned.remove(id);
            }
        }
    }
}
