//! Query ownership when several hosts share one store: leases with fencing tokens, and the
//! commit notices that wake readers on every host.
//!
//! Why fencing and not just leases: a lease only tells a host it *may* write; a host paused
//! by the kernel (SIGSTOP, a long GC-like stall, a partition) cannot know that its lease ran
//! out while it slept, and would commit on waking. So every grant carries a token that grows
//! strictly for the query's whole life (across clears and removals), the holder passes it
//! with each commit ([`Commit::fence`](crate::model::Commit::fence)), and the store checks it
//! *inside* the atomic commit step. A commit whose token is not the live lease's token
//! changes nothing and fails with [`StoreError::Fenced`].
//!
//! The rules every backend with leases applies (the generic suite tests them):
//! - `acquire` grants when no live lease exists, or when the live lease has the same holder
//!   name (a restarted host takes its query back at once — with a new token, so its previous
//!   incarnation is fenced out); otherwise it reports the live holder.
//! - A commit with `fence: Some(t)` succeeds only while a live lease with token `t` exists.
//! - A commit with `fence: None` succeeds only while *no* live lease exists: offline tools
//!   and single-host runs need no lease, but cannot write under a running owner.
//! - Clears and removals are fenced like commits
//!   ([`clear_query_fenced`](crate::ResultStore::clear_query_fenced),
//!   [`remove_query_fenced`](crate::ResultStore::remove_query_fenced)): the owner passes its
//!   token, and the check runs inside the same atomic step as the clear or removal. Checking
//!   the lease first and clearing after would let an owner paused in between clear (or
//!   remove) the query under its next owner. The plain `clear_query` and `remove_query` are
//!   the fenced ones without a token: offline tools cannot clear under a running owner.
//! - Tokens are never reused for a query id, so an old holder cannot be mistaken for a new one.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::StoreError;

/// Who asks for a lease and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LeaseClaim<'a> {
    /// A stable name of the asking host (unique among the hosts sharing the store).
    pub holder: &'a str,
    /// Where other hosts can reach the holder (for example its HTTP base URL), so that a
    /// client sent to the wrong host can be told where to go.
    pub address: &'a str,
    /// How long the lease lasts unless renewed.
    pub ttl: Duration,
}

/// The live lease of a query, as seen by anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's name.
    pub holder: String,
    /// The holder's address.
    pub address: String,
    /// The lease's fencing token.
    pub token: u64,
    /// Time left before the lease expires (as the store saw it when answering).
    pub remaining: Duration,
}

/// The answer to [`Leases::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller now holds the lease with this fencing token.
    Granted {
        /// The token to pass with every commit ([`Commit::fence`](crate::model::Commit::fence)).
        token: u64,
    },
    /// Another holder has a live lease.
    Held(LeaseHolder),
}

/// A store shared by several hosts: per-query leases with fencing tokens.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the query's lease when it is free, expired, or already held under the same
    /// holder name (see the module docs); otherwise reports the live holder.
    async fn acquire(
        &self,
        query_id: &str,
        claim: LeaseClaim<'_>,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Extends the live lease with `token` to `ttl` from now. `Ok(false)` when that lease is
    /// no longer live (expired, or taken over): the caller must stop writing the query.
    async fn renew(&self, query_id: &str, token: u64, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives up the live lease with `token` (a lease not held with that token is left alone),
    /// so another host can take the query at once instead of after expiry.
    async fn release(&self, query_id: &str, token: u64) -> Result<(), StoreError>;

    /// The live lease of a query, if any.
    async fn holder(&self, query_id: &str) -> Result<Option<LeaseHolder>, StoreError>;
}

/// A commit (or clear) that landed in a shared store, announced to every host so that
/// long-poll and SSE readers there wake without polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitNotice {
    /// The query written.
    pub query_id: String,
    /// Its epoch after the write.
    pub epoch: u64,
    /// Its committed sequence after the write.
    pub sequence: Option<u64>,
}

/// The fencing rule of a commit, clear or removal, written once for every backend that checks
/// it in Rust (Lua and SQL backends restate it): `fence` must be the live lease's token, or
/// both absent.
pub fn check_fence(
    query_id: &str,
    fence: Option<u64>,
    live: Option<(&str, u64)>,
) -> Result<(), StoreError> {
    let allowed = match (fence, live) {
        (None, None) => true,
        (Some(token), Some((_, live_token))) => token == live_token,
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    Err(StoreError::Fenced {
        query_id: query_id.to_owned(),
        fence,
        live: live.map(|(holder, token)| (holder.to_owned(), token)),
    })
}
