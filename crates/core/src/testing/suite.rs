//! The conformance cases. Each takes a fresh [`Harness`] and panics on a contract violation.
//!
//! The cases are written inside one `conformance_cases!` invocation, which defines each as a
//! public function *and* generates [`conformance_suite!`](crate::conformance_suite) from the
//! same list: a case written here is a test in every backend, with no second list to forget
//! it in. (rustfmt does not format inside a macro invocation: keep the layout by hand.)

use std::sync::Arc;

use super::helpers::{commit_at, count, map, open, rows_of, Q};
use super::Harness;
use crate::{
    Checkpoint, Commit, LiveResultsWriter, OutboxRetention, ResultStore, RowMutation, SequenceSpan,
    StoreError,
};

conformance_cases! { store_conformance_cases;
    /// Upserted rows read back, and the count follows.
    pub async fn upsert_then_read<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        s.apply_mutations(
            Q,
            &[RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")],
        )
        .await
        .unwrap();
        assert_eq!(rows_of(&s, Q).await, map(&[(1, b"a"), (2, b"b")]));
        assert_eq!(s.row_count(Q).await.unwrap(), 2);
    }

    /// Deletes remove rows; deleting an absent row is not an error and counts nothing.
    pub async fn delete_removes_and_absent_delete_is_fine<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        s.apply_mutations(
            Q,
            &[RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")],
        )
        .await
        .unwrap();
        let receipt = s
            .commit(
                Q,
                Commit::rows(&[RowMutation::delete(1), RowMutation::delete(99)]),
            )
            .await
            .unwrap();
        assert_eq!(
            (receipt.inserted, receipt.deleted, receipt.row_count),
            (0, 1, 1)
        );
        assert_eq!(rows_of(&s, Q).await, map(&[(2, b"b")]));
        s.apply_mutations(Q, &[RowMutation::delete(99)])
            .await
            .unwrap();
        assert_eq!(s.row_count(Q).await.unwrap(), 1);
    }

    /// Upserting an existing signature replaces the row and does not change the count.
    pub async fn overwrite_replaces_without_counting_twice<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        s.apply_mutations(Q, &[RowMutation::upsert(7, b"old")])
            .await
            .unwrap();
        let receipt = s
            .commit(Q, Commit::rows(&[RowMutation::upsert(7, b"new")]))
            .await
            .unwrap();
        assert_eq!((receipt.inserted, receipt.row_count), (0, 1));
        assert_eq!(rows_of(&s, Q).await, map(&[(7, b"new")]));
    }

    /// Within one batch the last mutation of a signature wins, and counts are net.
    pub async fn duplicate_signatures_last_wins<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        s.apply_mutations(Q, &[RowMutation::upsert(1, b"x")])
            .await
            .unwrap();
        let batch = [
            RowMutation::upsert(2, b"first"),
            RowMutation::delete(1),
            RowMutation::upsert(2, b"second"),
            RowMutation::upsert(1, b"back"),
            RowMutation::upsert(3, b"gone"),
            RowMutation::delete(3),
        ];
        let receipt = s.commit(Q, Commit::rows(&batch)).await.unwrap();
        assert_eq!(
            (receipt.inserted, receipt.deleted, receipt.row_count),
            (1, 0, 2)
        );
        assert_eq!(rows_of(&s, Q).await, map(&[(1, b"back"), (2, b"second")]));
    }

    /// Batches mixing new rows, overwrites, deletes of present and absent rows count exactly.
    pub async fn mixed_batches_count_exactly<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let first: Vec<_> = (0..50u64).map(|i| RowMutation::upsert(i, b"v1")).collect();
        s.apply_mutations(Q, &first).await.unwrap();
        let mut second: Vec<_> = (25..75u64).map(|i| RowMutation::upsert(i, b"v2")).collect();
        second.extend((0..10u64).map(RowMutation::delete));
        second.extend((1000..1010u64).map(RowMutation::delete));
        let receipt = s.commit(Q, Commit::rows(&second)).await.unwrap();
        assert_eq!(
            (receipt.inserted, receipt.deleted, receipt.row_count),
            (25, 10, 65)
        );
        let rows = rows_of(&s, Q).await;
        assert_eq!(rows.len(), 65);
        assert_eq!(count(&s, Q).await, 65);
        assert_eq!(rows[&30], b"v2");
        assert_eq!(rows[&10], b"v1");
        assert!(!rows.contains_key(&5));
    }

    /// Queries never see each other's rows, even when one id is a prefix of another.
    pub async fn queries_are_isolated<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let ids = ["a", "ab", "a\u{0}", "b", "ü/ß"];
        for (i, id) in ids.iter().enumerate() {
            let data = id.as_bytes();
            let muts: Vec<_> = (0..=i as u64)
                .map(|sig| RowMutation::upsert(sig, data))
                .collect();
            commit_at(&s, id, 1, &muts).await;
        }
        for (i, id) in ids.iter().enumerate() {
            let rows = rows_of(&s, id).await;
            assert_eq!(rows.len(), i + 1, "query {id:?}");
            assert!(
                rows.values().all(|d| d == id.as_bytes()),
                "query {id:?} sees foreign rows"
            );
            assert_eq!(count(&s, id).await, i as u64 + 1);
        }
    }

    /// A clear removes one query's rows, outbox and checkpoints and leaves the others alone.
    pub async fn clear_removes_one_query_only<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        for id in ["a", "ab", "b"] {
            commit_at(
                &s,
                id,
                1,
                &[RowMutation::upsert(1, b"x"), RowMutation::upsert(2, b"y")],
            )
            .await;
            let cp = Checkpoint {
                sequence: Some(1),
                config_hash: 9,
            };
            s.save_checkpoint("r", id, cp).await.unwrap();
        }
        let info = s.clear_query("a").await.unwrap();
        assert_eq!((info.row_count, info.sequence, info.epoch), (0, None, 1));
        assert!(rows_of(&s, "a").await.is_empty());
        assert_eq!(s.row_count("a").await.unwrap(), 0);
        assert!(s.read_outbox("a", None, 10).await.unwrap().is_empty());
        assert_eq!(s.checkpoint("r", "a").await.unwrap(), None);
        for id in ["ab", "b"] {
            assert_eq!(rows_of(&s, id).await.len(), 2, "query {id:?} lost rows");
            assert_eq!(count(&s, id).await, 2);
            assert_eq!(s.read_outbox(id, None, 10).await.unwrap().len(), 1);
            assert!(s.checkpoint("r", id).await.unwrap().is_some());
        }
    }

    /// After a clear the query starts over: any next sequence is accepted, counts restart.
    pub async fn clear_then_reuse<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(
            &s,
            Q,
            40,
            &[RowMutation::upsert(1, b"a"), RowMutation::upsert(2, b"b")],
        )
        .await;
        s.clear(Q).await.unwrap();
        commit_at(
            &s,
            Q,
            3,
            &[RowMutation::upsert(2, b"c"), RowMutation::delete(1)],
        )
        .await;
        let info = s.query_info(Q).await.unwrap();
        assert_eq!((info.sequence, info.row_count, info.epoch), (Some(3), 1, 1));
        assert_eq!(rows_of(&s, Q).await, map(&[(2, b"c")]));
        let s = h.reopen(s).await;
        assert_eq!(s.query_info(Q).await.unwrap(), info);
        commit_at(&s, Q, 4, &[RowMutation::upsert(5, b"d")]).await;
        assert_eq!(s.row_count(Q).await.unwrap(), 2);
    }

    /// Clearing a query the store has never seen changes nothing.
    pub async fn clear_unknown_query_is_a_no_op<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let info = s.clear_query("never").await.unwrap();
        assert_eq!((info.row_count, info.sequence, info.epoch), (0, None, 0));
        assert!(s.list_queries().await.unwrap().is_empty());
    }

    /// Rows, counts, sequences, outboxes and checkpoints survive a reopen.
    pub async fn persistence_across_reopen<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let muts: Vec<_> = (0..100u64)
            .map(|i| RowMutation::upsert(i, b"row"))
            .collect();
        commit_at(&s, Q, 1, &muts).await;
        commit_at(
            &s,
            Q,
            2,
            &[RowMutation::delete(0), RowMutation::upsert(500, b"new")],
        )
        .await;
        let cp = Checkpoint {
            sequence: Some(2),
            config_hash: 77,
        };
        s.save_checkpoint("reaction", Q, cp).await.unwrap();
        let before = rows_of(&s, Q).await;
        let s = h.reopen(s).await;
        assert_eq!(rows_of(&s, Q).await, before);
        let info = s.query_info(Q).await.unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(2), 100));
        assert_eq!(s.checkpoint("reaction", Q).await.unwrap(), Some(cp));
        assert_eq!(
            s.read_outbox(Q, Some(1), 10).await.unwrap()[0].payload,
            b"p2"
        );
        // Counting stays exact after reopen: the existence knowledge was rebuilt correctly.
        commit_at(
            &s,
            Q,
            3,
            &[
                RowMutation::upsert(1, b"again"),
                RowMutation::upsert(600, b"n"),
            ],
        )
        .await;
        assert_eq!(s.row_count(Q).await.unwrap(), 101);
    }

    /// A sequenced commit must start after the committed sequence; a rejected commit changes
    /// nothing.
    pub async fn sequence_must_advance_and_rejection_changes_nothing<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, Q, 5, &[RowMutation::upsert(1, b"a")]).await;
        for span in [
            SequenceSpan::single(5),
            SequenceSpan::single(4),
            SequenceSpan { first: 5, last: 9 },
            SequenceSpan { first: 8, last: 7 },
        ] {
            let err = s
                .commit(
                    Q,
                    Commit::sequenced(&[RowMutation::upsert(2, b"b")], span, b"x"),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::SequenceRegression { .. }),
                "{span:?}: {err}"
            );
        }
        assert_eq!(rows_of(&s, Q).await, map(&[(1, b"a")]));
        assert_eq!(s.query_info(Q).await.unwrap().sequence, Some(5));
        // Gaps are the runtime's business: the store accepts them.
        commit_at(&s, Q, 9, &[]).await;
        assert_eq!(s.query_info(Q).await.unwrap().sequence, Some(9));
    }

    /// The outbox returns the entries after a position, oldest first, spans included.
    pub async fn outbox_reads_after_a_position<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        for seq in 1..=5 {
            commit_at(&s, Q, seq, &[RowMutation::upsert(seq, b"r")]).await;
        }
        let grouped = Commit::sequenced(&[], SequenceSpan { first: 6, last: 8 }, b"g");
        s.commit(Q, grouped).await.unwrap();
        let all = s.read_outbox(Q, None, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.span.last).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 8]
        );
        let after3 = s.read_outbox(Q, Some(3), 2).await.unwrap();
        assert_eq!(
            after3.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            [b"p4".to_vec(), b"p5".to_vec()]
        );
        let mid = s.read_outbox(Q, Some(6), 10).await.unwrap();
        assert_eq!(mid.len(), 1);
        assert_eq!(mid[0].span, SequenceSpan { first: 6, last: 8 });
        assert!(s.read_outbox(Q, Some(8), 10).await.unwrap().is_empty());
        assert!(s.read_outbox("other", None, 10).await.unwrap().is_empty());
    }

    /// Asking for entries the outbox has evicted is `OutboxGap`, never a partial answer.
    pub async fn outbox_gap_is_an_error<H: Harness>(mut h: H) {
        let s = h
            .open(OutboxRetention {
                max_entries: 3,
                max_bytes: u64::MAX,
            })
            .await;
        for seq in 1..=10 {
            commit_at(&s, Q, seq, &[RowMutation::upsert(seq, b"r")]).await;
        }
        let kept = s.read_outbox(Q, Some(7), 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|e| e.span.last).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        for after in [None, Some(0), Some(6)] {
            let err = s.read_outbox(Q, after, 10).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::OutboxGap {
                        evicted_through: 7,
                        ..
                    }
                ),
                "{after:?}: {err}"
            );
        }
        let s = h.reopen(s).await;
        assert!(matches!(
            s.read_outbox(Q, Some(6), 10).await,
            Err(StoreError::OutboxGap { .. })
        ));
        assert_eq!(s.read_outbox(Q, Some(7), 10).await.unwrap().len(), 3);
    }

    /// Byte retention evicts oldest entries but always keeps the newest one.
    pub async fn outbox_byte_retention_keeps_newest<H: Harness>(mut h: H) {
        let s = h
            .open(OutboxRetention {
                max_entries: 100,
                max_bytes: 10,
            })
            .await;
        for seq in 1..=4u64 {
            let payload = vec![b'x'; 4];
            s.commit(
                Q,
                Commit::sequenced(&[], SequenceSpan::single(seq), &payload),
            )
            .await
            .unwrap();
        }
        let kept = s.read_outbox(Q, Some(2), 10).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.span.last).collect::<Vec<_>>(), [3, 4]);
        let big = vec![b'y'; 50];
        s.commit(Q, Commit::sequenced(&[], SequenceSpan::single(5), &big))
            .await
            .unwrap();
        let kept = s.read_outbox(Q, Some(4), 10).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].payload, big);
    }

    /// Checkpoints are stored per (reaction, query), overwritten, deleted and durable.
    pub async fn checkpoints_round_trip<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        assert_eq!(s.checkpoint("r1", Q).await.unwrap(), None);
        let a = Checkpoint {
            sequence: Some(3),
            config_hash: 1,
        };
        let b = Checkpoint {
            sequence: None,
            config_hash: 2,
        };
        s.save_checkpoint("r1", Q, a).await.unwrap();
        s.save_checkpoint("r2", Q, b).await.unwrap();
        s.save_checkpoint("r1", "q2", b).await.unwrap();
        let s = h.reopen(s).await;
        assert_eq!(s.checkpoint("r1", Q).await.unwrap(), Some(a));
        assert_eq!(s.checkpoint("r2", Q).await.unwrap(), Some(b));
        assert_eq!(s.checkpoint("r1", "q2").await.unwrap(), Some(b));
        let a2 = Checkpoint {
            sequence: Some(4),
            config_hash: 1,
        };
        s.save_checkpoint("r1", Q, a2).await.unwrap();
        s.delete_checkpoint("r2", Q).await.unwrap();
        s.delete_checkpoint("absent", Q).await.unwrap();
        assert_eq!(s.checkpoint("r1", Q).await.unwrap(), Some(a2));
        assert_eq!(s.checkpoint("r2", Q).await.unwrap(), None);
    }

    /// Listing shows every query with its sequence and exact count, ordered by id.
    pub async fn list_queries_reports_every_query<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, "b", 2, &[RowMutation::upsert(1, b"x")]).await;
        // "aa" is longer than "b": listing must order by id, not by the key layout.
        s.apply_mutations(
            "aa",
            &[RowMutation::upsert(1, b"x"), RowMutation::upsert(2, b"y")],
        )
        .await
        .unwrap();
        commit_at(&s, "c", 1, &[RowMutation::upsert(1, b"x")]).await;
        s.clear("c").await.unwrap();
        let s = h.reopen(s).await;
        let listed: Vec<_> = s
            .list_queries()
            .await
            .unwrap()
            .into_iter()
            .map(|q| (q.query_id, q.sequence, q.row_count, q.epoch))
            .collect();
        assert_eq!(
            listed,
            [
                ("aa".into(), None, 2, 0),
                ("b".into(), Some(2), 1, 0),
                ("c".into(), None, 0, 1)
            ]
        );
    }

    /// Snapshots come in chunks of at most the requested size and carry their sequence.
    pub async fn snapshot_in_chunks<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let muts: Vec<_> = (0..1000u64)
            .map(|i| RowMutation::upsert(i * 7919, b"0123456789"))
            .collect();
        commit_at(&s, Q, 12, &muts).await;
        let mut snap = s.snapshot(Q, 64).await.unwrap();
        assert_eq!(
            (snap.info().sequence, snap.info().row_count),
            (Some(12), 1000)
        );
        let (mut chunks, mut rows) = (0, 0);
        while let Some(chunk) = snap.next_chunk().await.unwrap() {
            assert!(chunk.len() <= 64 && !chunk.is_empty());
            assert!(chunk
                .iter()
                .all(|(sig, d)| sig % 7919 == 0 && d == b"0123456789"));
            chunks += 1;
            rows += chunk.len();
        }
        assert_eq!((chunks, rows), (16, 1000));
        assert!(snap.next_chunk().await.unwrap().is_none());
    }

    /// The seed trait works through a trait object, as Drasi's callers use it.
    pub async fn seed_trait_through_dyn<H: Harness>(mut h: H) {
        let s: Arc<dyn LiveResultsWriter> = Arc::new(open(&mut h).await);
        s.apply_mutations(
            Q,
            &[RowMutation {
                row_signature: 1,
                data: Some(b"a"),
            }],
        )
        .await
        .unwrap();
        assert_eq!(s.read_snapshot(Q).await.unwrap(), vec![(1, b"a".to_vec())]);
        assert_eq!(s.row_count(Q).await.unwrap(), 1);
        s.clear(Q).await.unwrap();
        assert_eq!(s.row_count(Q).await.unwrap(), 0);
    }

    /// Ids no layout can hold are rejected with a typed error and change nothing.
    pub async fn invalid_ids_are_rejected<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        let long = "x".repeat(70_000);
        for id in ["", long.as_str()] {
            let err = s
                .apply_mutations(id, &[RowMutation::upsert(1, b"a")])
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidQueryId { .. }), "{err}");
            assert!(s.query_info(id).await.is_err());
        }
        let cp = Checkpoint {
            sequence: None,
            config_hash: 0,
        };
        assert!(matches!(
            s.save_checkpoint("", Q, cp).await,
            Err(StoreError::InvalidQueryId { .. })
        ));
        assert!(s.list_queries().await.unwrap().is_empty());
    }

    /// A query the store has never seen reads as empty everywhere.
    pub async fn unknown_query_reads_empty<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        assert!(s.read_snapshot("nope").await.unwrap().is_empty());
        assert_eq!(s.row_count("nope").await.unwrap(), 0);
        let info = s.query_info("nope").await.unwrap();
        assert_eq!((info.sequence, info.epoch), (None, 0));
        assert!(s.read_outbox("nope", None, 10).await.unwrap().is_empty());
    }

    /// The seed trait's rows-only commits leave the sequence and outbox alone.
    pub async fn rows_only_commit_keeps_sequence<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, Q, 3, &[RowMutation::upsert(1, b"a")]).await;
        s.apply_mutations(Q, &[RowMutation::upsert(2, b"b")])
            .await
            .unwrap();
        let info = s.query_info(Q).await.unwrap();
        assert_eq!((info.sequence, info.row_count), (Some(3), 2));
        assert_eq!(s.read_outbox(Q, None, 10).await.unwrap().len(), 1);
    }

    /// Snapshots taken while a writer commits always see one whole commit: every row of batch N
    /// carries N, so a snapshot must show a single N equal to its own sequence.
    pub async fn snapshot_is_point_in_time<H: Harness>(mut h: H) {
        const ROWS: u64 = 300;
        const COMMITS: u64 = 60;
        let s = Arc::new(open(&mut h).await);
        let writer = {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                for n in 1..=COMMITS {
                    let data = n.to_be_bytes();
                    let muts: Vec<_> = (0..ROWS)
                        .map(|sig| RowMutation::upsert(sig, &data))
                        .collect();
                    commit_at(&*s, Q, n, &muts).await;
                }
            })
        };
        let mut seen = std::collections::BTreeSet::new();
        while !writer.is_finished() || seen.len() < 2 {
            let mut snap = s.snapshot(Q, 17).await.unwrap();
            let Some(seq) = snap.info().sequence else {
                tokio::task::yield_now().await;
                continue;
            };
            let mut rows = 0;
            while let Some(chunk) = snap.next_chunk().await.unwrap() {
                for (_, data) in chunk.iter() {
                    assert_eq!(
                        data,
                        seq.to_be_bytes(),
                        "snapshot at {seq} saw another commit's row"
                    );
                }
                rows += chunk.len() as u64;
                tokio::task::yield_now().await;
            }
            assert_eq!(rows, ROWS);
            assert_eq!(snap.info().row_count, ROWS);
            seen.insert(seq);
            if writer.is_finished() && seen.len() < 2 {
                break;
            }
        }
        writer.await.unwrap();
        assert!(!seen.is_empty());
    }

    /// Nothing follows the largest sequence: reading after it is empty, never the entry
    /// itself, and no later commit is accepted.
    pub async fn outbox_after_the_largest_sequence_is_empty<H: Harness>(mut h: H) {
        let s = open(&mut h).await;
        commit_at(&s, Q, u64::MAX - 1, &[RowMutation::upsert(1, b"a")]).await;
        commit_at(&s, Q, u64::MAX, &[RowMutation::upsert(2, b"b")]).await;
        let s = h.reopen(s).await;
        let last = s.read_outbox(Q, Some(u64::MAX - 1), 10).await.unwrap();
        assert_eq!(
            last.iter().map(|e| e.span.last).collect::<Vec<_>>(),
            [u64::MAX]
        );
        assert!(s.read_outbox(Q, Some(u64::MAX), 10).await.unwrap().is_empty());
        let next = SequenceSpan::single(u64::MAX);
        let err = s
            .commit(Q, Commit::sequenced(&[], next, b"x"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::SequenceRegression { .. }), "{err}");
        assert_eq!(s.query_info(Q).await.unwrap().sequence, Some(u64::MAX));
    }
}
