//! The conformance cases of [`ResultStore::remove_query`](crate::ResultStore::remove_query):
//! a removed query is gone everywhere, others are untouched, and a query re-created under the
//! same id starts at an epoch above every epoch the removed one had, so that a change-feed
//! offset taken before the removal can never look valid again. Every backend runs them
//! through [`conformance_suite!`](crate::conformance_suite).
//! (rustfmt does not format inside a macro invocation: keep the layout by hand.)

use super::helpers::{commit_at, count, map, open, rows_of, Q};
use super::Harness;
use crate::{Checkpoint, LiveResultsWriter, QueryInfo, ResultStore, RowMutation};

/// A checkpoint for the cases that save some.
const CP: Checkpoint = Checkpoint {
    sequence: Some(1),
    config_hash: 7,
};

/// The ids `list_queries` reports, in its order.
async fn listed<S: ResultStore + ?Sized>(store: &S) -> Vec<String> {
    let all = store.list_queries().await.unwrap();
    all.into_iter().map(|q| q.query_id).collect()
}

/// Asserts that `query_id` reads as a query the store never saw, in every read.
async fn assert_gone<S: ResultStore + ?Sized>(store: &S, query_id: &str) {
    assert_eq!(
        store.query_info(query_id).await.unwrap(),
        QueryInfo::empty(query_id)
    );
    assert!(
        rows_of(store, query_id).await.is_empty(),
        "{query_id:?} kept rows"
    );
    assert_eq!(store.row_count(query_id).await.unwrap(), 0);
    assert!(store
        .read_outbox(query_id, None, 10)
        .await
        .unwrap()
        .is_empty());
    let snap = store.snapshot(query_id, 10).await.unwrap();
    assert_eq!(snap.info(), &QueryInfo::empty(query_id));
    assert!(
        !listed(store).await.iter().any(|id| id == query_id),
        "{query_id:?} still listed"
    );
}

conformance_cases! { remove_conformance_cases;
    /// A removed query reads as unknown everywhere and is no longer listed, also after a
    /// reopen.
    pub async fn remove_forgets_the_query<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, Q, 1, &[RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")]).await;
        commit_at(&s, Q, 2, &[RowMutation::delete(1)]).await;
        s.save_checkpoint("r", Q, CP).await.unwrap();
        assert_eq!(listed(&s).await, [Q]);
        s.remove_query(Q).await.unwrap();
        assert_gone(&s, Q).await;
        assert_eq!(s.checkpoint("r", Q).await.unwrap(), None);
        let s = h.reopen(s).await;
        assert_gone(&s, Q).await;
        assert!(s.list_queries().await.unwrap().is_empty());
    }

    /// Removing one query leaves every other one whole, ids that share a prefix included.
    pub async fn remove_leaves_other_queries_alone<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        for id in ["a", "ab", "a\u{0}", "b"] {
            commit_at(&s, id, 1, &[RowMutation::upsert(1, b"x"), RowMutation::upsert(2, b"y")])
                .await;
            s.save_checkpoint("r", id, CP).await.unwrap();
        }
        let before: Vec<_> = s.list_queries().await.unwrap();
        s.remove_query("a").await.unwrap();
        assert_gone(&s, "a").await;
        let s = h.reopen(s).await;
        let after: Vec<_> = s.list_queries().await.unwrap();
        let expected: Vec<_> = before.into_iter().filter(|q| q.query_id != "a").collect();
        assert_eq!(after, expected);
        for id in ["ab", "a\u{0}", "b"] {
            assert_eq!(rows_of(&s, id).await, map(&[(1, b"x"), (2, b"y")]), "query {id:?}");
            assert_eq!(count(&s, id).await, 2);
            assert_eq!(s.read_outbox(id, None, 10).await.unwrap().len(), 1);
            assert_eq!(s.checkpoint("r", id).await.unwrap(), Some(CP), "query {id:?}");
        }
    }

    /// A query re-created after a removal starts at an epoch strictly above every epoch the
    /// removed one had (its clears included), with nothing of it: any sequence is accepted,
    /// and its rows, outbox and count are its own. The epoch floor survives a reopen and
    /// keeps growing over repeated removals.
    pub async fn recreated_query_starts_above_the_removed_epochs<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, Q, 10, &[RowMutation::upsert(1, b"old")]).await;
        s.clear_query(Q).await.unwrap();
        commit_at(&s, Q, 20, &[RowMutation::upsert(2, b"old")]).await;
        s.clear_query(Q).await.unwrap();
        commit_at(&s, Q, 30, &[RowMutation::upsert(3, b"old")]).await;
        let removed = s.query_info(Q).await.unwrap();
        assert_eq!(removed.epoch, 2);
        s.remove_query(Q).await.unwrap();
        let s = h.reopen(s).await;
        commit_at(&s, Q, 1, &[RowMutation::upsert(9, b"new")]).await;
        let info = s.query_info(Q).await.unwrap();
        assert!(info.epoch > removed.epoch, "re-created at epoch {} <= {}", info.epoch, removed.epoch);
        assert_eq!((info.sequence, info.row_count), (Some(1), 1));
        assert_eq!(rows_of(&s, Q).await, map(&[(9, b"new")]));
        let outbox = s.read_outbox(Q, None, 10).await.unwrap();
        assert_eq!(outbox.iter().map(|e| e.span.last).collect::<Vec<_>>(), [1]);
        assert_eq!(listed(&s).await, [Q]);
        assert_eq!(s.snapshot(Q, 10).await.unwrap().info(), &info);
        // Once re-created it is an ordinary query: its epoch survives a reopen and a clear
        // counts on from it.
        let s = h.reopen(s).await;
        assert_eq!(s.query_info(Q).await.unwrap(), info);
        let cleared = s.clear_query(Q).await.unwrap();
        assert_eq!(cleared.epoch, info.epoch + 1);
        // Removed again, re-created by a rows-only commit (the seed trait's way): above again.
        s.remove_query(Q).await.unwrap();
        s.apply_mutations(Q, &[RowMutation::upsert(4, b"again")]).await.unwrap();
        let again = s.query_info(Q).await.unwrap();
        assert!(again.epoch > cleared.epoch, "{} <= {}", again.epoch, cleared.epoch);
        assert_eq!((again.sequence, again.row_count), (None, 1));
        // An epoch-0 query removed and re-created does not start at 0 either.
        commit_at(&s, "fresh", 5, &[]).await;
        s.remove_query("fresh").await.unwrap();
        commit_at(&s, "fresh", 5, &[]).await;
        assert!(s.query_info("fresh").await.unwrap().epoch > 0);
    }

    /// Removing a query the store does not know (never written, or removed already) is fine
    /// and creates nothing; a clear of a removed query is the no-op a clear of an unknown
    /// one is.
    pub async fn remove_unknown_query_is_a_no_op<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        s.remove_query("never").await.unwrap();
        assert_gone(&s, "never").await;
        commit_at(&s, Q, 1, &[RowMutation::upsert(1, b"a")]).await;
        s.remove_query(Q).await.unwrap();
        s.remove_query(Q).await.unwrap();
        assert_gone(&s, Q).await;
        let info = s.clear_query(Q).await.unwrap();
        assert_eq!((info.sequence, info.row_count), (None, 0));
        assert_gone(&s, Q).await;
        assert!(s.list_queries().await.unwrap().is_empty());
    }

    /// Every reaction checkpoint of the removed query goes, also ones saved for a query that
    /// was never committed to; a re-created query starts without any.
    pub async fn remove_deletes_checkpoints<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, Q, 1, &[RowMutation::upsert(1, b"a")]).await;
        for reaction in ["r1", "r2", "r1/more"] {
            s.save_checkpoint(reaction, Q, CP).await.unwrap();
        }
        s.save_checkpoint("r1", "other", CP).await.unwrap();
        s.save_checkpoint("r1", "only-checkpoints", CP).await.unwrap();
        s.remove_query(Q).await.unwrap();
        s.remove_query("only-checkpoints").await.unwrap();
        let s = h.reopen(s).await;
        for reaction in ["r1", "r2", "r1/more"] {
            assert_eq!(s.checkpoint(reaction, Q).await.unwrap(), None, "{reaction:?}");
        }
        assert_eq!(s.checkpoint("r1", "only-checkpoints").await.unwrap(), None);
        assert_eq!(s.checkpoint("r1", "other").await.unwrap(), Some(CP));
        commit_at(&s, Q, 1, &[]).await;
        assert_eq!(s.checkpoint("r1", Q).await.unwrap(), None);
    }
}
