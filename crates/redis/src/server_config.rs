//! Server settings and states the store cannot work around: the eviction policy, checked once
//! at connect, and whether the server accepts writes right now.

use liveresults_core::StoreError;
use redis::aio::ConnectionManager;

use crate::error::from_redis;

/// How long the writability probe key lives.
const PROBE_TTL_MS: u64 = 1000;

/// Writes `probe` (a key nothing reads) with a short expiry. The server refuses it exactly
/// when it refuses commits — `MISCONF` (RDB/AOF writes failing), `OOM` (`maxmemory` reached
/// under `noeviction`; `SET` is refused under memory pressure like a commit script),
/// `READONLY` (a replica), `NOREPLICAS` (`min-replicas-to-write` not met) — and the error
/// carries the server's message. In a cluster it asks the node holding the probe key only.
pub(crate) async fn probe_writable(
    con: &mut ConnectionManager,
    probe: &str,
    value: &str,
) -> Result<(), StoreError> {
    let () = redis::cmd("SET")
        .arg(probe)
        .arg(value)
        .arg("PX")
        .arg(PROBE_TTL_MS)
        .query_async(con)
        .await
        .map_err(from_redis)?;
    Ok(())
}

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
