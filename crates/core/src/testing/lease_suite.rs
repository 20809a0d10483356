//! The lease and fencing cases of the conformance suite (the rules are in [`crate::lease`]).
//!
//! Two groups: every backend runs the fence case (through [`conformance_suite!`]): a store
//! one process owns (no [`ResultStore::leases`]) must still refuse a commit carrying a
//! fencing token — no lease can be live there. Backends that hosts share (with leases and
//! commit notices) also expand [`lease_suite!`] for the lease cases.
//!
//! [`conformance_suite!`]: crate::conformance_suite
//! [`lease_suite!`]: crate::lease_suite

use std::time::Duration;

use super::helpers::{map, open, rows_of, Q};
use super::Harness;
use crate::lease::{LeaseClaim, LeaseOutcome, Leases};
use crate::{Commit, ResultStore, RowMutation, SequenceSpan, StoreError};

/// Long enough that no case runs out of it by accident.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait out in a test.
const SHORT: Duration = Duration::from_millis(300);

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

fn assert_fenced(result: Result<(), StoreError>) {
    match result {
        Err(StoreError::Fenced { query_id, .. }) => assert_eq!(query_id, Q),
        other => panic!("expected Fenced, got {other:?}"),
    }
}

fn leases_of<S: ResultStore>(s: &S) -> &dyn Leases {
    s.leases()
        .expect("this case needs a backend with leases (see `ResultStore::leases`)")
}

conformance_cases! { fence_conformance_cases;
    /// Without a live lease a fencing token cannot be valid: the fenced commit changes
    /// nothing, while unfenced commits go through.
    pub async fn fence_without_live_lease_is_refused<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        fenced_commit(&s, 1, None).await.unwrap();
        assert_fenced(fenced_commit(&s, 2, Some(1)).await);
        let info = s.query_info(Q).await.unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(1), 1));
        assert_eq!(rows_of(&s, Q).await, map(&[(1, b"r")]));
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
        let token = granted(leases, Q, claim("a", SHORT)).await;
        for _ in 0..4 {
            tokio::time::sleep(SHORT / 3).await;
            assert!(leases.renew(Q, token, SHORT).await.unwrap());
        }
        fenced_commit(&s, 1, Some(token)).await.unwrap();
        leases.release(Q, token).await.unwrap();
        assert_eq!(leases.holder(Q).await.unwrap(), None);
        assert!(!leases.renew(Q, token, SHORT).await.unwrap(), "released");
        let next = granted(leases, Q, claim("b", LONG)).await;
        assert!(next > token);
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
        s.clear_query(Q).await.unwrap();
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
