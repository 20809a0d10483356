//! The lease and fencing cases of the conformance suite (the rules are in [`crate::lease`]).
//!
//! Two groups: every backend runs the fence case (through [`conformance_suite!`]): a store
//! one process owns (no [`ResultStore::leases`]) must still refuse a commit, clear or removal
//! carrying a fencing token — no lease can be live there. Backends that hosts share (with
//! leases and commit notices) also expand [`lease_suite!`] for the lease cases.
//!
//! [`conformance_suite!`]: crate::conformance_suite
//! [`lease_suite!`]: crate::lease_suite

use std::time::Duration;

use super::helpers::{map, open, rows_of, Q};
use super::Harness;
use crate::lease::{LeaseClaim, LeaseOutcome, Leases};
use crate::{Checkpoint, Commit, QueryInfo, ResultStore, RowMutation, SequenceSpan, StoreError};

/// Long enough that no case runs out of it by accident.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait out in a test.
const SHORT: Duration = Duration::from_millis(300);
/// The lease of the renewal case: ten times the renewal period below, so only a scheduler
/// stall of seconds (not a slow test machine) could let it expire between two renewals.
const RENEWED_TTL: Duration = Duration::from_secs(2);
/// How often the renewal case renews.
const RENEW_EVERY: Duration = Duration::from_millis(200);
/// A checkpoint, to see that a refused clear or removal left it alone.
const CP: Checkpoint = Checkpoint {
    sequence: Some(1),
    config_hash: 7,
};

fn claim(holder: &'static str, ttl: Duration) -> LeaseClaim<'static> {
    let address = match holder {
        "a" => "http://host-a:1",
        _ => "http://host-b:2",
    };
    LeaseClaim {
        holder,
        address,
        ttl,
    }
}

async fn granted(leases: &dyn Leases, query: &str, claim: LeaseClaim<'_>) -> u64 {
    match leases.acquire(query, claim).await.unwrap() {
        LeaseOutcome::Granted { token } => token,
        LeaseOutcome::Held(h) => panic!("lease of {query} held by {h:?}, expected a grant"),
    }
}

async fn fenced_commit<S: ResultStore + ?Sized>(
    s: &S,
    seq: u64,
    fence: Option<u64>,
) -> Result<(), StoreError> {
    let rows = [RowMutation::upsert(seq, b"r")];
    let mut commit = Commit::sequenced(&rows, SequenceSpan::single(seq), b"p");
    commit.fence = fence;
    s.commit(Q, commit).await.map(|_| ())
}

fn assert_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Fenced { query_id, .. }) => assert_eq!(query_id, Q),
        other => panic!("expected Fenced, got {other:?}"),
    }
}

/// Everything a refused clear or removal must have left as it was.
async fn state_of<S: ResultStore + ?Sized>(
    s: &S,
) -> (
    QueryInfo,
    Vec<(u64, Vec<u8>)>,
    Option<Checkpoint>,
    Vec<QueryInfo>,
) {
    (
        s.query_info(Q).await.unwrap(),
        rows_of(s, Q).await.into_iter().collect(),
        s.checkpoint("r", Q).await.unwrap(),
        s.list_queries().await.unwrap(),
    )
}

fn leases_of<S: ResultStore>(s: &S) -> &dyn Leases {
    s.leases()
        .expect("this case needs a backend with leases (see `ResultStore::leases`)")
}

conformance_cases! { fence_conformance_cases;
    /// Without a live lease a fencing token cannot be valid: the fenced commit, clear and
    /// removal change nothing, while unfenced ones go through.
    pub async fn fence_without_live_lease_is_refused<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        fenced_commit(&s, 1, None).await.unwrap();
        s.save_checkpoint("r", Q, CP).await.unwrap();
        assert_fenced(fenced_commit(&s, 2, Some(1)).await);
        let info = s.query_info(Q).await.unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(1), 1));
        assert_eq!(rows_of(&s, Q).await, map(&[(1, b"r")]));
        let before = state_of(&s).await;
        assert_fenced(s.clear_query_fenced(Q, Some(1)).await);
        assert_fenced(s.remove_query_fenced(Q, Some(1)).await);
        assert_eq!(state_of(&s).await, before, "a refused clear or removal changed nothing");
        let cleared = s.clear_query_fenced(Q, None).await.unwrap();
        assert_eq!((cleared.epoch, cleared.sequence, cleared.row_count), (1, None, 0));
        s.remove_query_fenced(Q, None).await.unwrap();
        assert_eq!(s.query_info(Q).await.unwrap(), QueryInfo::empty(Q));
    }
}

conformance_cases! { lease_conformance_cases;
    /// The holder commits with its token; nobody else (no token, or another) can.
    pub async fn live_lease_admits_only_its_token<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let leases = leases_of(&s);
        let token = granted(leases, Q, claim("a", LONG)).await;
        fenced_commit(&s, 1, Some(token)).await.unwrap();
        assert_fenced(fenced_commit(&s, 2, None).await);
        assert_fenced(fenced_commit(&s, 2, Some(token + 1)).await);
        assert_eq!(s.query_info(Q).await.unwrap().sequence, Some(1));
        let holder = leases.holder(Q).await.unwrap().expect("a live lease");
        assert_eq!((holder.holder.as_str(), holder.token), ("a", token));
        assert_eq!(holder.address, "http://host-a:1");
        assert!(holder.remaining > Duration::ZERO && holder.remaining <= LONG);
    }

    /// A second host sees the live holder and its address instead of a grant.
    pub async fn live_lease_is_reported_to_others<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let leases = leases_of(&s);
        let token = granted(leases, Q, claim("a", LONG)).await;
        match leases.acquire(Q, claim("b", LONG)).await.unwrap() {
            LeaseOutcome::Held(holder) => {
                assert_eq!(holder.holder, "a");
                assert_eq!(holder.address, "http://host-a:1");
                assert_eq!(holder.token, token);
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Other queries are independent.
        granted(leases, "q2", claim("b", LONG)).await;
    }

    /// After expiry another host takes over with a larger token; the old holder is fenced
    /// out of commits and renewals, and its release leaves the new lease alone.
    pub async fn expired_lease_moves_and_fences_the_old_holder<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let leases = leases_of(&s);
        let old = granted(leases, Q, claim("a", SHORT)).await;
        fenced_commit(&s, 1, Some(old)).await.unwrap();
        tokio::time::sleep(SHORT * 2).await;
        assert_eq!(leases.holder(Q).await.unwrap(), None, "expired");
        let new = granted(leases, Q, claim("b", LONG)).await;
        assert!(new > old, "tokens grow: {old} then {new}");
        assert_fenced(fenced_commit(&s, 2, Some(old)).await);
        assert!(!leases.renew(Q, old, LONG).await.unwrap());
        leases.release(Q, old).await.unwrap();
        assert_eq!(leases.holder(Q).await.unwrap().map(|h| h.token), Some(new));
        fenced_commit(&s, 2, Some(new)).await.unwrap();
        assert_eq!(rows_of(&s, Q).await, map(&[(1, b"r"), (2, b"r")]));
    }

    /// Renewing keeps a lease past its first expiry; releasing frees it at once.
    pub async fn renew_extends_and_release_frees<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let leases = leases_of(&s);
        let token = granted(leases, Q, claim("a", RENEWED_TTL)).await;
        let granted_at = tokio::time::Instant::now();
        // Renewed past the first grant's expiry: only the renewals can keep it live.
        while granted_at.elapsed() < RENEWED_TTL + RENEW_EVERY {
            tokio::time::sleep(RENEW_EVERY).await;
            assert!(leases.renew(Q, token, RENEWED_TTL).await.unwrap());
        }
        fenced_commit(&s, 1, Some(token)).await.unwrap();
        leases.release(Q, token).await.unwrap();
        assert_eq!(leases.holder(Q).await.unwrap(), None);
        assert!(!leases.renew(Q, token, RENEWED_TTL).await.unwrap(), "released");
        let next = granted(leases, Q, claim("b", LONG)).await;
        assert!(next > token);
    }

    /// Clears and removals are fenced like commits: while a lease is live, one without a
    /// token or with another token than the live one changes nothing (rows, sequence,
    /// checkpoints, listing); the holder's token clears and removes, and leaves the lease.
    pub async fn clears_and_removals_are_fenced_by_the_live_lease<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let leases = leases_of(&s);
        // The same holder asking again: the first token is now stale.
        let stale = granted(leases, Q, claim("a", LONG)).await;
        let token = granted(leases, Q, claim("a", LONG)).await;
        fenced_commit(&s, 1, Some(token)).await.unwrap();
        s.save_checkpoint("r", Q, CP).await.unwrap();
        let before = state_of(&s).await;
        for fence in [None, Some(stale), Some(token + 1)] {
            assert_fenced(s.clear_query_fenced(Q, fence).await);
            assert_fenced(s.remove_query_fenced(Q, fence).await);
        }
        match s.clear_query_fenced(Q, None).await {
            Err(StoreError::Fenced { live: Some((holder, live)), .. }) => {
                assert_eq!((holder.as_str(), live), ("a", token), "names the live lease");
            }
            other => panic!("expected Fenced naming the lease, got {other:?}"),
        }
        assert_eq!(state_of(&s).await, before, "a refused clear or removal changed nothing");
        let cleared = s.clear_query_fenced(Q, Some(token)).await.unwrap();
        let expected = (before.0.epoch + 1, None, 0);
        assert_eq!((cleared.epoch, cleared.sequence, cleared.row_count), expected);
        assert_eq!(s.checkpoint("r", Q).await.unwrap(), None);
        fenced_commit(&s, 1, Some(token)).await.unwrap();
        s.remove_query_fenced(Q, Some(token)).await.unwrap();
        assert_eq!(s.query_info(Q).await.unwrap(), QueryInfo::empty(Q));
        assert_eq!(leases.holder(Q).await.unwrap().map(|h| h.token), Some(token));
    }

    /// The same holder re-acquiring (a restarted host) gets a new token, which fences out
    /// its previous incarnation.
    pub async fn reacquire_by_same_holder_fences_previous_incarnation<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let leases = leases_of(&s);
        let first = granted(leases, Q, claim("a", LONG)).await;
        let second = granted(leases, Q, claim("a", LONG)).await;
        assert!(second > first);
        assert_fenced(fenced_commit(&s, 1, Some(first)).await);
        fenced_commit(&s, 1, Some(second)).await.unwrap();
    }

    /// Tokens survive a clear (and a reopen, for durable backends): a holder from before can
    /// never be mistaken for a later one.
    pub async fn tokens_never_repeat_across_clear_and_reopen<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let first = granted(leases_of(&s), Q, claim("a", SHORT)).await;
        fenced_commit(&s, 1, Some(first)).await.unwrap();
        s.clear_query_fenced(Q, Some(first)).await.unwrap();
        let s = h.reopen(s).await;
        tokio::time::sleep(SHORT * 2).await;
        let second = granted(leases_of(&s), Q, claim("b", LONG)).await;
        assert!(second > first, "{first} then {second}");
        assert_fenced(fenced_commit(&s, 1, Some(first)).await);
    }

    /// Writes announce themselves: a subscriber sees the commit's and the clear's
    /// (epoch, sequence).
    pub async fn commits_and_clears_are_announced<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let mut notices = s
            .commit_notices()
            .expect("a shared backend announces commits (`ResultStore::commit_notices`)");
        fenced_commit(&s, 7, None).await.unwrap();
        let cleared = s.clear_query(Q).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let notice = tokio::time::timeout(LONG, notices.recv())
                .await
                .expect("a notice within a minute")
                .expect("the channel stays open");
            if notice.query_id == Q {
                seen.push((notice.epoch, notice.sequence));
            }
        }
        assert_eq!(seen, vec![(0, Some(7)), (cleared.epoch, None)]);
    }
}
