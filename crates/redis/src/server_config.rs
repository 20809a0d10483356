//! Server settings the store cannot work around, checked once at connect.

use redis::aio::ConnectionManager;

/// Warns when the server may evict keys on its own: an `allkeys-*` policy would silently drop
/// rows, outbox entries or a meta hash under memory pressure, and the exact count, the
/// sequence and the atomicity of commits would all be lost with them. The store needs
/// `noeviction` (or a `volatile-*` policy: none of its durable keys has a TTL).
///
/// Only a warning: managed services often refuse `CONFIG`, and the setting can change later
/// anyway; an error here would lock out servers that are configured correctly.
pub(crate) async fn warn_on_eviction(con: &mut ConnectionManager) {
    let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(con)
        .await;
    match policy.as_deref() {
        Ok([_, policy]) if policy.starts_with("allkeys") => tracing::warn!(
            %policy,
            "the Redis server may evict any key under memory pressure, which loses committed \
             rows and breaks exact counts: set maxmemory-policy to noeviction"
        ),
        Ok(_) => {}
        Err(err) => tracing::debug!(%err, "cannot read maxmemory-policy; not checked"),
    }
}
