//! The PostgreSQL backend of liveresults: the full [`ResultStore`] contract in the database
//! teams already run (backups, replicas, monitoring), for reaction hosts that share their
//! state through it.
//!
//! ```rust,ignore
//! use liveresults_postgres::{PgStore, PgStoreOptions};
//! let store = PgStore::connect("postgres://app@db/app", PgStoreOptions::new()).await?;
//! ```
//!
//! # Layout
//!
//! Everything lives in one schema (`liveresults` by default, configurable so several stores
//! share a database), created and migrated by the store itself through a versioned
//! `migrations` table (the `migrations` module). Tables: `queries` (one meta row per query:
//! sequence, exact row count, epoch, outbox bookkeeping; a row with `live = false` is the
//! removed marker), `rows` keyed by (query, epoch, signature), `outbox`, `reclaim` (epochs
//! to free), `checkpoints`, `leases`. `docs/FORMAT.md`, section "PostgreSQL layout", has
//! every column and the number mappings (`u64` sequences and signatures are stored as
//! `BIGINT u - 2^63`, order-preserving and lossless).
//!
//! # Guarantees and how
//!
//! - **Atomic commits.** A commit is one call of the schema's `commit_batch` PL/pgSQL
//!   function, one statement and one round trip, so one transaction: the lease row locked
//!   `FOR SHARE` and the fence checked (`check_fence`'s rule, expiry by the database clock),
//!   the meta row locked `FOR UPDATE`, the sequence checked (a regression writes nothing),
//!   deletes (`= ANY(array)`) and upserts (`unnest` of two arrays, `ON CONFLICT DO UPDATE`),
//!   the exact row count, the outbox entry with retention trimming, the meta row, `NOTIFY`.
//! - **Exact O(1) `row_count`** from the meta row, maintained by every commit from what the
//!   upserts created and the deletes removed.
//! - **O(1) `clear` and `remove_query` for the caller**: the epoch is part of every row's
//!   key; a clear moves the query to the next epoch and lists the old one for the background
//!   reclaimer, which deletes it in small transactions (the `reclaim` module). A removal
//!   turns the meta row into the removed marker holding the next epoch, so a re-created
//!   query starts above every epoch the removed one used.
//! - **Fenced clears and removals**: `clear_query_fenced`/`remove_query_fenced` check the
//!   fence inside the clear's (removal's) own function call, with the lease row locked as a
//!   commit locks it, so a host paused past its lease cannot clear under the next owner; the
//!   plain `clear_query`/`remove_query` are the fenced ones without a token (refused while
//!   any host holds the lease).
//! - **Point-in-time snapshots**: a `REPEATABLE READ, READ ONLY` transaction and a cursor
//!   read in chunks — rows and sequence from one MVCC snapshot, bounded client memory, no
//!   commit blocked; an idle timeout ends a stalled reader's transaction (the `snapshot`
//!   module).
//! - **Outbox reads** are one statement (eviction mark and entries from one snapshot), so
//!   evicted entries are `OutboxGap`, never a partial answer.
//! - **Leases with fencing tokens** ([`Leases`]): a lease row per query, live until its
//!   `expires_at` by the database's `clock_timestamp()`; tokens from a per-query counter
//!   nothing resets. Acquire locks the lease row `FOR UPDATE`, commits, clears and removals
//!   `FOR SHARE`, so a takeover waits for the old owner's in-flight write (the `lease`
//!   module).
//! - **Commit notices across hosts** ([`ResultStore::commit_notices`]): `pg_notify` inside
//!   the writing transaction (delivered only if it commits); one `LISTEN` connection per
//!   handle feeds a broadcast channel, reconnects with backoff and then sends the
//!   lost-notices marker (the `notices` module).
//! - **Durability**: with `synchronous_commit = on` (the server default) every acknowledged
//!   commit is durable; `flush` makes earlier asynchronous commits durable too (see
//!   [`ResultStore::flush`] on [`PgStore`]).
//! - **Readiness** (`check_writable`): a real upsert of a probe row, so a hot standby, a
//!   read-only default or a full disk fails it with the server's message.
//! - **Errors**: lost connections, pool timeouts, serialization failures, deadlocks,
//!   `too_many_connections`, shutdowns and statement timeouts are transient; everything else
//!   is permanent; a stored record no valid history produces is `Corrupt`.
//!
//! # Server requirements
//!
//! PostgreSQL 11 or later (`hashtextextended`, `GENERATED … AS IDENTITY`, PL/pgSQL — which
//! every installation has); only PostgreSQL 15 (Debian 12's) is tested here. The role needs
//! `CREATE` on the database the first time (for the schema), then only rights on the schema.
//!
//! # TLS
//!
//! With the `tls` feature (rustls, ring provider; the `liveresults` CLI enables it) the
//! URL's `sslmode` is honoured: `disable` is plain TCP; `require` is TLS or no connection,
//! the server's certificate verified (chain and host name) against the CA file given by
//! `sslrootcert=FILE` in the URL or [`PgStoreOptions::tls_ca_file`], else the system's roots;
//! `prefer` (the default) uses TLS when the server offers it, verifying the certificate only
//! when a CA file is given (libpq's behaviour). A refused certificate is a permanent error
//! naming the reason. Without the feature, `require` or a CA file fails with
//! [`ConfigError::TlsNotBuilt`] before connecting — never plain text instead — and `prefer`
//! connects in plain text.
//!
//! [`ResultStore`]: liveresults_core::ResultStore
//! [`ResultStore::commit_notices`]: liveresults_core::ResultStore::commit_notices
//! [`ResultStore::flush`]: liveresults_core::ResultStore::flush
//! [`Leases`]: liveresults_core::lease::Leases

mod codec;
mod error;
mod lease;
mod migrations;
mod notices;
mod options;
mod reclaim;
mod snapshot;
mod sql;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
#[cfg(feature = "tls")]
mod tls_rustls;

pub use error::{is_transient, ConfigError};
pub use migrations::PG_FORMAT_VERSION;
pub use options::{PgStoreOptions, MAX_SCHEMA_BYTES};
pub use store::PgStore;

/// The client crates this backend is built on, so benchmarks and tests can drive the same
/// versions.
pub use deadpool_postgres;
pub use tokio_postgres;
