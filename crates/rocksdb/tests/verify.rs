//! `verify` on deliberately damaged stores: each test writes a store through `RocksStore`,
//! damages it with raw RocksDB writes (keys built here from the documented layout, not from
//! the crate's helpers), and asserts the exact findings.

use std::path::Path;

#[path = "verify/support.rs"]
mod support;

use liveresults_core::codec::records;
use liveresults_core::codec::row::decode_row;
use liveresults_core::{Checkpoint, OutboxRetention, ResultStore, StoreError};
use liveresults_rocksdb::rocksdb::{Options, DB};
use liveresults_rocksdb::{
    verify, verify_with, Column, Finding, Problem, Record, RocksStore, RocksStoreOptions,
    VerifyOptions, STORE_FORMAT_BASE_VERSION, STORE_FORMAT_VERSION,
};
use support::*;

#[test]
fn a_clean_store_reports_clean_and_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.format_version, Some(STORE_FORMAT_BASE_VERSION));
    assert!(report.records_checked);
    assert_eq!(
        (
            report.queries,
            report.rows,
            report.outbox_entries,
            report.checkpoints
        ),
        (2, 4, 4, 2)
    );
    assert_eq!(
        report.to_string(),
        "format version 1\nchecked 2 queries: 4 rows, 4 outbox entries, 2 checkpoints\n\
         clean: no problems found\n"
    );
    // One query alone.
    let one = verify(dir.path(), Some("users")).unwrap();
    assert!(one.is_clean(), "{one}");
    assert_eq!((one.queries, one.rows, one.outbox_entries), (1, 1, 1));
    // The check changed nothing: the store opens and reads as before.
    let count = block_on(async {
        let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
            .await
            .unwrap();
        let info = store.query_info("orders").await.unwrap();
        store.close().await.unwrap();
        info.row_count
    });
    assert_eq!(count, 3);
    assert!(verify(dir.path(), None).unwrap().is_clean());
}

#[test]
fn an_undecodable_row_is_named_by_signature() {
    let bad = [9u8, 0];
    let (_dir, report) = damaged_store(|db| put(db, "rows", &key_n("orders", 3), &bad));
    let detail = decode_row(&bad).unwrap_err().to_string();
    let record = Record::Row { signature: 3 };
    let expected = finding("orders", Problem::Undecodable { record, detail });
    assert_eq!(report.findings, [expected]);
    assert!(
        report.findings[0]
            .to_string()
            .starts_with("query \"orders\": row 3 does not decode: unknown row format version 9"),
        "{report}"
    );
}

#[test]
fn opaque_rows_are_not_decoded_but_still_counted() {
    // Rows written through the seed trait are the writer's own bytes.
    let (dir, report) = damaged_store(|db| put(db, "rows", &key_n("orders", 3), &[9u8, 0]));
    assert_eq!(report.problems(), 1, "{report}");
    let opaque = VerifyOptions::new().opaque_rows(true);
    let report = verify_with(dir.path(), None, &opaque).unwrap();
    assert!(report.is_clean(), "{report}");
    // An extra row is still a count mismatch when rows are opaque.
    damage(dir.path(), |db| put(db, "rows", &key_n("orders", 77), b"x"));
    let report = verify_with(dir.path(), None, &opaque).unwrap();
    assert_eq!(report.problems(), 1, "{report}");
    assert!(report.to_string().contains("row count"), "{report}");
}

#[test]
fn a_wrong_stored_row_count_shows_stored_and_found() {
    let (_dir, report) = damaged_store(|db| edit_meta(db, "orders", |m| m.row_count = 5));
    let expected = finding(
        "orders",
        Problem::RowCountMismatch {
            stored: 5,
            found: 3,
        },
    );
    assert_eq!(report.findings, [expected]);
    assert_eq!(
        report.findings[0].to_string(),
        "query \"orders\": meta record: row count 5, rows found 3"
    );
}

#[test]
fn an_outbox_hole_names_the_missing_sequences() {
    let (_dir, report) = damaged_store(|db| delete(db, "outbox", &key_n("orders", 2)));
    let hole = Problem::OutboxHole {
        after: 1,
        next_first: 3,
    };
    assert_eq!(report.findings, [finding("orders", hole)]);
    assert_eq!(
        report.findings[0].to_string(),
        "query \"orders\": outbox hole: next entry after sequence 1 starts at 3, expected 2"
    );
}

#[test]
fn an_outbox_not_ending_at_the_committed_sequence() {
    let (_dir, report) = damaged_store(|db| delete(db, "outbox", &key_n("orders", 3)));
    let end = Problem::OutboxEnd {
        committed: Some(3),
        last_entry: Some(2),
    };
    assert_eq!(report.findings, [finding("orders", end)]);

    // And the other way round: a meta record ahead of every entry.
    let (_dir, report) = damaged_store(|db| edit_meta(db, "users", |m| m.sequence = Some(12)));
    let end = Problem::OutboxEnd {
        committed: Some(12),
        last_entry: Some(11),
    };
    assert_eq!(report.findings, [finding("users", end)]);
}

#[test]
fn a_checkpoint_beyond_the_committed_sequence() {
    let late = records::encode_checkpoint(&Checkpoint {
        sequence: Some(7),
        config_hash: 1,
    });
    let (_dir, report) =
        damaged_store(|db| put(db, "checkpoints", &key_cp("orders", "late"), &late));
    let problem = Problem::CheckpointBeyondSequence {
        reaction: "late".into(),
        checkpoint: 7,
        committed: Some(3),
    };
    assert_eq!(report.findings, [finding("orders", problem)]);
    assert_eq!(
        report.findings[0].to_string(),
        "query \"orders\": checkpoint \"late\": at sequence 7, beyond the committed sequence 3"
    );
}

#[test]
fn a_checkpoint_inside_a_commit_span() {
    // `users` committed 10..=11 as one commit: no reaction can have stopped at 10.
    let mid = records::encode_checkpoint(&Checkpoint {
        sequence: Some(10),
        config_hash: 1,
    });
    let (_dir, report) = damaged_store(|db| put(db, "checkpoints", &key_cp("users", "mid"), &mid));
    let problem = Problem::CheckpointNotAtCommit {
        reaction: "mid".into(),
        checkpoint: 10,
    };
    assert_eq!(report.findings, [finding("users", problem)]);
}

#[test]
fn orphan_records_are_counted_per_column_family() {
    let cp = records::encode_checkpoint(&Checkpoint {
        sequence: Some(5),
        config_hash: 1,
    });
    let (dir, report) = damaged_store(|db| {
        put(db, "rows", &key_n("ghost", 1), &row(1));
        put(db, "rows", &key_n("ghost", 2), &row(2));
        put(
            db,
            "outbox",
            &key_n("ghost", 5),
            &records::encode_outbox(5, b""),
        );
        put(db, "checkpoints", &key_cp("ghost", "r"), &cp);
    });
    let expected = [
        finding(
            "ghost",
            Problem::Orphan {
                column: Column::Rows,
                records: 2,
                first_key: key_n("ghost", 1),
            },
        ),
        finding(
            "ghost",
            Problem::Orphan {
                column: Column::Outbox,
                records: 1,
                first_key: key_n("ghost", 5),
            },
        ),
        finding(
            "ghost",
            Problem::Orphan {
                column: Column::Checkpoints,
                records: 1,
                first_key: key_cp("ghost", "r"),
            },
        ),
    ];
    assert_eq!(report.findings, expected);
    assert_eq!(
        report.findings[0].to_string(),
        "query \"ghost\": rows: records with no meta record: 2 (first key b\"\\x00\\x05ghost\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\")"
    );
    // Asking about the orphaned query alone finds the same; other queries are clean.
    let alone = verify(dir.path(), Some("ghost")).unwrap();
    assert_eq!(alone.findings, expected);
    assert_eq!(alone.queries, 0);
    assert!(verify(dir.path(), Some("orders")).unwrap().is_clean());
}

#[test]
fn a_deleted_meta_record_leaves_orphans() {
    let (_dir, report) = damaged_store(|db| delete(db, "meta", &prefix("users")));
    let problems: Vec<_> = report.findings.iter().map(|f| &f.problem).collect();
    assert!(
        matches!(
            problems[..],
            [
                Problem::Orphan {
                    column: Column::Rows,
                    records: 1,
                    ..
                },
                Problem::Orphan {
                    column: Column::Outbox,
                    records: 1,
                    ..
                }
            ]
        ),
        "{report}"
    );
    assert_eq!(report.queries, 1);
}

#[test]
fn an_unsupported_format_version_stops_the_check() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    damage(dir.path(), |db| {
        db.put(FORMAT_KEY, 7u32.to_be_bytes()).unwrap();
        // Damage that must not be reported: records of another version are not interpreted.
        put(db, "rows", &key_n("orders", 3), &[9]);
    });
    let report = verify(dir.path(), None).unwrap();
    let expected = Finding {
        query: None,
        problem: Problem::UnsupportedFormat {
            found: 7,
            supported: STORE_FORMAT_VERSION,
        },
    };
    assert_eq!(report.findings, [expected]);
    assert!(!report.records_checked);
    assert_eq!((report.format_version, report.queries), (Some(7), 0));
    assert_eq!(
        report.to_string(),
        "format version 7\nrecords not checked\nproblems found: 1\n  store: format version 7 is \
         not supported (this build reads 1 to 2); no record was checked\n"
    );
}

#[test]
fn malformed_keys_with_and_without_a_query() {
    let mut short_suffix = prefix("orders");
    short_suffix.extend_from_slice(&[1, 2, 3]);
    let truncated = vec![0u8, 9, b'o'];
    let no_reaction = prefix("orders");
    let (_dir, report) = damaged_store(|db| {
        put(db, "rows", &short_suffix, &row(1));
        put(db, "rows", &truncated, &row(1));
        put(db, "checkpoints", &no_reaction, &[1; 18]);
    });
    let expected = [
        finding(
            "orders",
            Problem::MalformedKey {
                column: Column::Rows,
                key: short_suffix,
                reason: "3 bytes after the query id, expected 8 (a row signature)".into(),
            },
        ),
        finding(
            "orders",
            Problem::MalformedKey {
                column: Column::Checkpoints,
                key: no_reaction,
                reason: "no reaction id after the query id".into(),
            },
        ),
        Finding {
            query: None,
            problem: Problem::MalformedKey {
                column: Column::Rows,
                key: truncated,
                reason: "length field says 9 bytes of query id, the key holds 1".into(),
            },
        },
    ];
    assert_eq!(report.findings, expected, "{report}");
    // The row count counts well-formed row keys only, as the engine's index does: unchanged.
    assert_eq!(report.rows, 4);
}

#[test]
fn undecodable_meta_outbox_and_checkpoint_records() {
    let (_dir, report) = damaged_store(|db| {
        put(db, "meta", &prefix("users"), &[1, 0, 0]);
        put(db, "outbox", &key_n("orders", 2), &[9; 12]);
        put(db, "checkpoints", &key_cp("orders", "audit"), &[1, 2, 3]);
    });
    let meta_err = records::decode_meta(&[1, 0, 0]).unwrap_err().to_string();
    let outbox_err = records::decode_outbox(&[9; 12]).unwrap_err().to_string();
    let cp_err = records::decode_checkpoint(&[1, 2, 3])
        .unwrap_err()
        .to_string();
    // Meta keys sort by id length first: "users" (5) before "orders" (6).
    let expected = [
        finding(
            "users",
            Problem::Undecodable {
                record: Record::Meta,
                detail: meta_err,
            },
        ),
        finding(
            "orders",
            Problem::Undecodable {
                record: Record::OutboxEntry { last: 2 },
                detail: outbox_err,
            },
        ),
        finding(
            "orders",
            Problem::Undecodable {
                record: Record::Checkpoint {
                    reaction: "audit".into(),
                },
                detail: cp_err,
            },
        ),
    ];
    assert_eq!(report.findings, expected, "{report}");
}

#[test]
fn an_undecodable_payload_unless_payloads_are_opaque() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    damage(dir.path(), |db| {
        let value = records::encode_outbox(3, b"not a change payload");
        put(db, "outbox", &key_n("orders", 3), &value);
    });
    let report = verify(dir.path(), None).unwrap();
    assert_eq!(report.findings.len(), 1, "{report}");
    let Problem::Undecodable { record, detail } = &report.findings[0].problem else {
        panic!("{report}");
    };
    assert_eq!(*record, Record::OutboxEntry { last: 3 });
    assert!(detail.starts_with("payload: "), "{detail}");
    let opaque = VerifyOptions::new().opaque_payloads(true);
    assert!(verify_with(dir.path(), None, &opaque).unwrap().is_clean());
}

#[test]
fn eviction_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let retention = OutboxRetention {
        max_entries: 2,
        max_bytes: 1 << 20,
    };
    block_on(async {
        let options = RocksStoreOptions::new().outbox_retention(retention);
        let store = RocksStore::open(dir.path(), options).await.unwrap();
        for s in 1..=4 {
            commit(&store, "q", s, s, &[(s, true)]).await;
        }
        // At or below the eviction mark: not checkable against entries, and not damage.
        checkpoint(&store, "old", "q", Some(1)).await;
        store.close().await.unwrap();
    });
    let as_written = VerifyOptions::new().outbox_retention(retention);
    assert!(verify_with(dir.path(), None, &as_written)
        .unwrap()
        .is_clean());
    assert!(verify(dir.path(), None).unwrap().is_clean());

    let smaller = VerifyOptions::new().outbox_retention(OutboxRetention {
        max_entries: 1,
        max_bytes: 1 << 20,
    });
    let report = verify_with(dir.path(), None, &smaller).unwrap();
    assert!(
        matches!(
            report.findings[..],
            [Finding {
                problem: Problem::OutboxBeyondRetention {
                    entries: 2,
                    max_entries: 1,
                    ..
                },
                ..
            }]
        ),
        "{report}"
    );

    // Losing the oldest retained entry leaves a hole after the eviction mark (2).
    damage(dir.path(), |db| delete(db, "outbox", &key_n("q", 3)));
    let report = verify_with(dir.path(), None, &as_written).unwrap();
    let hole = Problem::OutboxHole {
        after: 2,
        next_first: 4,
    };
    assert_eq!(report.findings, [finding("q", hole)]);
}

#[test]
fn sequence_gaps_upstream_skipped_can_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
            .await
            .unwrap();
        commit(&store, "q", 1, 1, &[(1, true)]).await;
        commit(&store, "q", 5, 5, &[(2, true)]).await;
        store.close().await.unwrap();
    });
    let report = verify(dir.path(), None).unwrap();
    let hole = Problem::OutboxHole {
        after: 1,
        next_first: 5,
    };
    assert_eq!(report.findings, [finding("q", hole)]);
    let gaps = VerifyOptions::new().allow_sequence_gaps(true);
    assert!(verify_with(dir.path(), None, &gaps).unwrap().is_clean());
}

#[test]
fn findings_beyond_the_limit_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    damage(dir.path(), |db| {
        for sig in [2, 3, 4] {
            put(db, "rows", &key_n("orders", sig), &[9]);
        }
    });
    let report = verify_with(dir.path(), None, &VerifyOptions::new().max_findings(2)).unwrap();
    assert_eq!((report.findings.len(), report.omitted), (2, 1));
    assert_eq!(report.problems(), 3);
    assert!(
        report
            .to_string()
            .ends_with("  ... and 1 more not listed\n"),
        "{report}"
    );
}

#[test]
fn a_locked_or_missing_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    block_on(async {
        let store = RocksStore::open(dir.path(), RocksStoreOptions::new())
            .await
            .unwrap();
        let err = tokio::task::spawn_blocking({
            let path = dir.path().to_owned();
            move || verify(path, None)
        })
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        store.close().await.unwrap();
    });
    let missing = dir.path().join("missing");
    let err = verify(&missing, None).unwrap_err();
    assert!(err.to_string().contains("no store at"), "{err}");
    assert!(!missing.exists(), "verify must not create a store");
    let err = verify(dir.path(), Some("")).unwrap_err();
    assert!(matches!(err, StoreError::InvalidQueryId { .. }), "{err}");
}

#[test]
fn several_kinds_of_damage_are_each_listed() {
    let late = records::encode_checkpoint(&Checkpoint {
        sequence: Some(9),
        config_hash: 1,
    });
    let (_dir, report) = damaged_store(|db| {
        put(db, "rows", &key_n("orders", 3), &[9]);
        edit_meta(db, "users", |m| m.row_count = 2);
        delete(db, "outbox", &key_n("orders", 2));
        put(db, "checkpoints", &key_cp("orders", "late"), &late);
        put(db, "rows", &key_n("ghost", 7), &row(7));
        put(db, "outbox", &[0, 9, b'o'], &[1; 9]);
    });
    println!("{report}");
    let row_err = decode_row(&[9]).unwrap_err();
    let expected = format!(
        "format version 1\n\
         checked 2 queries: 4 rows, 3 outbox entries, 3 checkpoints\n\
         problems found: 6\n  \
         query \"users\": meta record: row count 2, rows found 1\n  \
         query \"orders\": row 3 does not decode: {row_err}\n  \
         query \"orders\": outbox hole: next entry after sequence 1 starts at 3, expected 2\n  \
         query \"orders\": checkpoint \"late\": at sequence 9, beyond the committed sequence 3\n  \
         query \"ghost\": rows: records with no meta record: 1 (first key \
         b\"\\x00\\x05ghost\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07\")\n  \
         store: outbox: malformed key b\"\\x00\\x09o\": length field says 9 bytes of query id, the key holds 1\n"
    );
    assert_eq!(report.to_string(), expected);
}

#[test]
fn missing_and_unexpected_column_families() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    {
        let db = DB::open_cf(&options, dir.path(), ["rows", "outbox", "meta", "extra"]).unwrap();
        db.put(FORMAT_KEY, STORE_FORMAT_VERSION.to_be_bytes())
            .unwrap();
    }
    let report = verify(dir.path(), None).unwrap();
    let expected = [
        Finding {
            query: None,
            problem: Problem::MissingColumnFamily {
                name: "checkpoints".into(),
            },
        },
        Finding {
            query: None,
            problem: Problem::UnexpectedColumnFamily {
                name: "extra".into(),
            },
        },
    ];
    assert_eq!(report.findings, expected, "{report}");
    assert!(report.records_checked);
}

/// The format-v1 fixture, written by an earlier build (a cleared query, a checkpoint, rows
/// updated and deleted), is clean. Checked on a copy: opening takes the lock and may write
/// RocksDB's own bookkeeping files.
#[test]
fn the_format_v1_fixture_is_clean() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let report = verify(dir.path(), None).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (
            report.queries,
            report.rows,
            report.outbox_entries,
            report.checkpoints
        ),
        (2, 2, 2, 1)
    );
}
