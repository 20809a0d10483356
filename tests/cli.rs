//! The `liveresults` binary on a RocksDB directory: replay (with resume), stats, dump, clear,
//! verify.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn liveresults(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_liveresults"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run liveresults")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = liveresults(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    stdout(&o)
}

fn event(query: &str, sequence: u64) -> String {
    format!(
        r#"{{"query_id":"{query}","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{sequence},"q":"{query}"}},"row_signature":{sequence}}}]}}"#
    )
}

fn write_events(path: &Path, events: &[(&str, u64)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (q, s) in events {
        writeln!(f, "{}", event(q, *s)).unwrap();
    }
}

#[test]
fn replay_resumes_then_stats_dump_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let input = dir.path().join("events.ndjson");
    let mut events: Vec<(&str, u64)> = (1..=100).map(|s| ("orders", s)).collect();
    events.extend((1..=10).map(|s| ("users", s)));
    write_events(&input, &events);
    let input = input.to_str().unwrap();

    let out = ok(&["replay", input, "--data", data]);
    assert!(out.contains("replayed 110 lines"), "{out}");
    assert!(out.contains("110 events committed, 0 skipped"), "{out}");

    // A second run skips everything, and says so.
    let out = ok(&["replay", input, "--data", data]);
    assert!(out.contains("0 events committed, 110 skipped"), "{out}");
    assert!(
        out.contains("resumed: 110 events were already in the store"),
        "{out}"
    );

    // More input: only the new events are committed.
    events.extend((101..=120).map(|s| ("orders", s)));
    write_events(Path::new(input), &events);
    let out = ok(&["replay", input, "--data", data]);
    assert!(out.contains("20 events committed, 110 skipped"), "{out}");

    // Stdin works too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveresults"))
        .args(["replay", "-", "--data", data])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", event("users", 11)).as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("1 events committed"), "{}", stdout(&o));

    let out = ok(&["stats", "--data", data]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["QUERY", "SEQUENCE", "ROWS", "EPOCH"]);
    assert_eq!(lines[1], ["orders", "120", "120", "0"]);
    assert_eq!(lines[2], ["users", "11", "11", "0"]);
    let out = ok(&["stats", "users", "--data", data]);
    assert_eq!(out.lines().count(), 2);
    let o = liveresults(&["stats", "nope", "--data", data]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("query \"nope\" not found"),
        "{}",
        stderr(&o)
    );

    let out = ok(&["dump", "users", "--data", data]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["query_id"], "users");
    assert_eq!(lines[0]["sequence"], 11);
    assert_eq!(lines[0]["row_count"], 11);
    assert_eq!(lines.len(), 12);
    let mut ids: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l["row"]["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=11).collect::<Vec<_>>());
    assert_eq!(lines[1]["signature"], lines[1]["row"]["id"]);

    let out = ok(&["clear", "orders", "--data", data]);
    assert_eq!(out.trim(), "cleared orders: 120 rows removed, epoch 0 -> 1");
    let out = ok(&["stats", "orders", "--data", data]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["orders", "-", "0", "1"]);
    let out = ok(&["dump", "orders", "--data", data]);
    assert_eq!(out.lines().count(), 1);
}

#[test]
fn replay_names_the_bad_line_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let input = dir.path().join("bad.ndjson");
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n{{\"query_id\": 5}}\n{}\n",
            event("q", 1),
            event("q", 2),
            event("q", 3)
        ),
    )
    .unwrap();
    let o = liveresults(&["replay", input.to_str().unwrap(), "--data", data]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    let out = ok(&["stats", "q", "--data", data]);
    assert!(
        out.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("2"),
        "{out}"
    );
}

#[test]
fn config_file_rejects_unknown_keys_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lr.toml");
    std::fs::write(
        &config,
        "[defaults]\npolicy = \"strict\"\n\n[queries.q]\nkey_colums = [\"id\"]\n",
    )
    .unwrap();
    let input = dir.path().join("e.ndjson");
    std::fs::write(&input, "").unwrap();
    let o = liveresults(&[
        "replay",
        input.to_str().unwrap(),
        "--data",
        dir.path().join("d").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("lr.toml") && err.contains("line 5") && err.contains("key_colums"),
        "{err}"
    );
}

/// Damages the store in `data` with a raw RocksDB write: an undecodable row 5 of `orders`.
fn damage_a_row(data: &str) {
    use liveresults::rocksdb::rocksdb::{Options, DB};
    let names = ["rows", "outbox", "meta", "checkpoints"];
    let db = DB::open_cf(&Options::default(), data, names).unwrap();
    let mut key = 6u16.to_be_bytes().to_vec();
    key.extend_from_slice(b"orders");
    key.extend_from_slice(&5u64.to_be_bytes());
    db.put_cf(db.cf_handle("rows").unwrap(), key, [9u8])
        .unwrap();
    db.flush_wal(true).unwrap();
}

#[test]
fn verify_exit_codes_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let input = dir.path().join("events.ndjson");
    let mut events: Vec<(&str, u64)> = (1..=5).map(|s| ("orders", s)).collect();
    events.push(("users", 1));
    write_events(&input, &events);
    ok(&["replay", input.to_str().unwrap(), "--data", data]);

    // Clean: exit 0.
    let out = ok(&["verify", "--data", data]);
    assert!(out.contains("checked 2 queries: 6 rows, "), "{out}");
    assert!(out.ends_with("clean: no problems found\n"), "{out}");

    // Cannot check: exit 2, for a missing store, an unknown query, a locked store.
    let missing = dir.path().join("missing");
    let o = liveresults(&["verify", "--data", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no store at"), "{}", stderr(&o));
    assert!(!missing.exists());
    let o = liveresults(&["verify", "nope", "--data", data]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("query \"nope\" not found"),
        "{}",
        stderr(&o)
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(liveresults::RocksStore::open(
            data,
            liveresults::RocksStoreOptions::new(),
        ))
        .unwrap();
    let o = liveresults(&["verify", "--data", data]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    runtime.block_on(store.close()).unwrap();

    // Damaged: exit 1 and the exact finding; the undamaged query alone is clean.
    damage_a_row(data);
    let o = liveresults(&["verify", "--data", data]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("problems found: 1\n"), "{out}");
    assert!(
        out.contains("  query \"orders\": row 5 does not decode: unknown row format version 9"),
        "{out}"
    );
    // The undecodable row is still a row: the count is right, nothing else is reported.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  ")).count(),
        1,
        "{out}"
    );
    let out = ok(&["verify", "users", "--data", data]);
    assert!(out.contains("clean"), "{out}");
}

#[test]
fn stats_cuts_long_ids_in_the_table_and_keeps_them_whole_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let input = dir.path().join("events.ndjson");
    let long = "q".repeat(5000);
    write_events(&input, &[(long.as_str(), 1), ("short", 1), ("short", 2)]);
    ok(&["replay", input.to_str().unwrap(), "--data", data]);

    let out = ok(&["stats", "--data", data]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // Every line is as wide as the 40-character id column allows, not 5,000 characters.
    for line in &lines {
        assert!(line.chars().count() < 100, "{} chars", line.chars().count());
    }
    let cut = format!("{}…", "q".repeat(39));
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [cut.as_str(), "1", "1", "0"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["short", "2", "2", "0"]
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["stats", "--json", "--data", data])).unwrap();
    assert_eq!(json[0]["query_id"], long.as_str());
    assert_eq!(
        (json[0]["sequence"].as_u64(), json[0]["rows"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json[1]["query_id"], "short");
    assert_eq!(json[1]["epoch"], 0);
}
