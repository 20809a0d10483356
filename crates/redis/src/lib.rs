//! The Redis backend of liveresults: the full [`ResultStore`] contract on Redis 7, for reaction
//! hosts that share their state through one server instead of a local disk.
//!
//! ```rust,ignore
//! use liveresults_redis::{RedisStore, RedisStoreOptions};
//! let store = RedisStore::connect("redis://127.0.0.1:6379", RedisStoreOptions::new()).await?;
//! ```
//!
//! # Layout
//!
//! Every key of one query shares the hash tag `{<query id>}` (the id escaped so that any id
//! works), so in a Redis Cluster each query lives in one slot and each script touches one slot.
//! The keys are listed in the `keys` module: a meta hash (sequence, exact row count, epoch,
//! commit version, outbox bytes, evicted-through), a rows hash (field = 8-byte big-endian
//! signature), the outbox as a sorted set ordered by sequence, reaction checkpoints in a hash,
//! and a change log that exists only while snapshots are read; for hosts sharing the store, a
//! lease hash (expiring on the server's clock) and a fence counter that nothing ever deletes.
//! One index key lists every query id, ordered by id.
//!
//! The store talks to one server (or a proxy in front of a cluster) through one multiplexed,
//! self-reconnecting connection, plus one Pub/Sub connection per handle for commit notices.
//! The key layout is ready for Redis Cluster — every script and every MULTI/EXEC touches one
//! slot — but a cluster-routing client is not wired in yet.
//!
//! # Guarantees and how
//!
//! - **Atomic commits.** One commit is one Lua script (EVALSHA, loaded again on NOSCRIPT): the
//!   sequence check, every row `HSET`/`HDEL`, the exact row count, the outbox entry and its
//!   retention trimming (entries and bytes, the newest always kept). A sequence that does not
//!   follow the committed one is refused before anything is written, as a typed
//!   `SequenceRegression` (see the `scripts` module for why a script is all-or-nothing).
//! - **Exact O(1) `row_count`**: the count lives in the meta hash, maintained by the script from
//!   the return values of `HSET` (fields created) and `HDEL` (fields removed) after the batch's
//!   last-write-wins rule, so it never needs a scan, and checked against `HLEN` (O(1)) before
//!   every commit writes anything. `query_info` is one `HMGET`.
//! - **O(1) `clear` for the caller**: a script bumps the epoch, resets the meta hash and
//!   `RENAME`s the rows, outbox, change log and checkpoints to fresh trash keys (O(1) whatever
//!   their size); the caller then `UNLINK`s them, which frees them on a background thread.
//!   Trash a caller could not unlink (it died in between) is unlinked by the next clear, and
//!   every handle sweeps what is left in the background when it connects.
//!   `remove_query` works the same way and leaves only the meta hash's `epoch` (and `ver`),
//!   so a query re-created under the same id starts at an epoch the removed one never used.
//! - **Point-in-time snapshots without blocking the server**: `HSCAN` in batches plus a replay
//!   of the change log, exact at the sequence reported (the `snapshot` module explains why).
//!   The snapshot is assembled in the client's memory before its first chunk is handed out
//!   (the sequence is known only at the end of the scan), so a snapshot of a query costs
//!   about that query's size in client memory while it is read.
//! - **Outbox reads** are one MULTI/EXEC (eviction mark and entries from the same moment), so
//!   evicted entries are `OutboxGap`, never a partial answer.
//! - **Errors**: lost or refused connections, timeouts, `BUSY`, `LOADING`, `MASTERDOWN`,
//!   `TRYAGAIN`, `CLUSTERDOWN` and `NOREPLICAS` are transient (the runtime retries them; the
//!   connection manager reconnects meanwhile); everything else is permanent. Undecodable
//!   stored values are `Corrupt` naming the record.
//! - **Server settings**: `maxmemory-policy` must not evict keys without a TTL (`noeviction`
//!   or `volatile-*`): an evicted row or meta hash would silently break every guarantee above.
//!   `connect` warns when it can see an `allkeys-*` policy.
//! - **Durability** is the server's: see [`FlushMode`] for what `flush` waits for (a round
//!   trip, `WAIT` for replicas, or `WAITAOF`) and which server settings make an acknowledged
//!   commit survive a power loss (`appendonly yes` + `appendfsync always`).
//! - **Lease and fence state must never be lost.** Fencing is exactly as safe as the `:fence`
//!   counters and `:lease` hashes: a server that forgets the latest `INCR` of a counter hands
//!   the same token out again, and then two hosts hold "the" lease with equal tokens and both
//!   write. A restart from an AOF written with `appendfsync everysec` (up to a second lost),
//!   an RDB-only or persistence-less restart, an eviction, or a failover to a replica that had
//!   not received the grant each do that. So, for hosts sharing a store: `appendonly yes` with
//!   `appendfsync always`; `maxmemory-policy noeviction`, never `allkeys-*` (it may evict a
//!   fence counter; `volatile-*` may evict live leases, which have a TTL — safe for fencing,
//!   but their owners lose their queries early); and with replicas, writes must reach them
//!   before they count (`WAIT`). This store sends `WAIT`/`WAITAOF` only in `flush`
//!   ([`FlushMode`]), not after each lease grant, so replication alone does not protect the
//!   tokens: do not let a replica that may lag be promoted automatically (Sentinel, Cluster
//!   failover) while hosts share the store, or make sure it holds every acknowledged write.
//! - **Leases with fencing tokens** ([`Leases`]): a lease is a hash with `PEXPIRE`, so it
//!   expires on the server's clock; acquire, renew and release are small atomic scripts, and
//!   tokens come from `INCR` of a per-query counter that clears and removals never touch, so
//!   a token never repeats for a query id. The commit, clear and removal scripts check the
//!   write's fencing token against the live lease before anything else, in the same atomic
//!   step: a fenced write changes nothing and fails with `StoreError::Fenced` naming the live
//!   holder (the `store::lease` module). The plain `clear_query` and `remove_query` carry no
//!   token, so they are refused while any host holds the query's lease.
//! - **Commit notices across hosts** ([`ResultStore::commit_notices`]): commits, clears and
//!   removals `PUBLISH` a compact notice from inside their script; each handle's background
//!   task reads them on a dedicated Pub/Sub connection, reconnects with backoff when it
//!   drops, and then sends the lost-notices marker (an empty query id), since Pub/Sub does not
//!   keep what was published meanwhile. The task stops when the handle is closed or dropped.
//! - **Readiness** (`check_writable`): a real write of a probe key with a 1 s expiry, so a
//!   server refusing writes (`MISCONF`, `OOM`, `READONLY`, `NOREPLICAS`) makes it fail with
//!   the server's message.
//!
//! # Durable Streams
//!
//! [`RedisStreamStore`] (the [`streams`] module) keeps the Durable Streams of `/v1/stream/*` in
//! the same server and namespace (keys under `<ns>:streams:`), shared by every host: one
//! atomic script per write, checked against what the writing host expected, and change
//! notices that wake readers on the other hosts.
//!
//! # Commands it needs
//!
//! Redis 5.0 or later (scripts replicated by their effects, so a script may read `TIME`
//! before it writes); only Redis 7.0 is tested here. The store keeps to commands
//! Redis-compatible servers (Valkey, Garnet with Lua enabled) provide as well.
//!
//! - Scripting: `EVALSHA`, `EVAL`, `SCRIPT LOAD`; inside the scripts `HMGET`, `HGET`, `HSET`
//!   (several field/value pairs), `HDEL` (several fields), `HLEN`, `HEXISTS`, `EXISTS`, `TIME`,
//!   `ZADD` (with `XX`), `ZCARD`, `ZCOUNT`, `ZSCORE`, `ZPOPMIN`, `ZREMRANGEBYSCORE`, `RENAME`,
//!   `SADD`, `SMEMBERS`, `UNLINK`, and for leases and notices `INCR`, `DEL`, `PEXPIRE`,
//!   `PTTL`, `PUBLISH`.
//! - From the client: `MULTI`/`EXEC`, `HMGET`, `HGET`, `HSET`, `HDEL`, `HSCAN` (with `COUNT`),
//!   `ZADD NX`, `ZREM`, `ZRANGE` (by index), `ZRANGEBYLEX` and `ZRANGEBYSCORE` (with
//!   `LIMIT`), `SET NX`, `SET … PX` (the writability probe), `GET`, `UNLINK`, `SREM`, `PTTL`,
//!   `PING`, `CONFIG GET` (optional, for the eviction-policy warning); `WAIT` or `WAITAOF`
//!   (Redis 7.2+) only when [`FlushMode`] asks for them.
//! - On the Pub/Sub connection: `SUBSCRIBE` and `PING` (in subscribed mode).
//!
//! With ACLs, the store's user also needs the notice channel (`&<ns>:notices`, e.g.
//! `&lr:notices`): Redis 7 gives new ACL users no channels (`acl-pubsub-default
//! resetchannels`), and then every commit script fails ("can't publish to the channel") and
//! `connect` cannot subscribe.
//!
//! Garnet's API-compatibility list named every command of the store before leases and commit
//! notices as implemented except `WAIT` and `WAITAOF` (use [`FlushMode::RoundTrip`] there, and
//! start Garnet with Lua enabled); the lease and notice commands have not been checked
//! against it. Neither Garnet nor Valkey is tested here: how their Lua runs these scripts
//! (`TIME` before writes, `unpack`, `PUBLISH` from a script) is unverified.
//!
//! [`ResultStore`]: liveresults_core::ResultStore
//! [`ResultStore::commit_notices`]: liveresults_core::ResultStore::commit_notices
//! [`Leases`]: liveresults_core::lease::Leases

mod error;
mod keys;
mod options;
mod pubsub;
mod records;
mod reply;
mod scripts;
mod server_config;
mod snapshot;
mod store;
pub mod streams;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::is_transient;
pub use options::{FlushMode, RedisStoreOptions};
pub use snapshot::SnapshotStats;
pub use store::{RedisStore, REDIS_FORMAT_VERSION};
pub use streams::RedisStreamStore;

/// The `redis` client crate this backend is built on, so benchmarks and tests can drive the
/// same version.
pub use redis;
