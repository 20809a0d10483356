//! Several `liveresults serve --redis` hosts on one real `redis-server` child: a client that
//! follows the hosts' answers (409 not-owner names the owner's address) keeps ingesting
//! through a SIGKILL of the owner, and an owner paused with SIGSTOP past its lease commits
//! nothing after SIGCONT. The final result set, read from every host, equals the model.
//!
//! Leases last 1.5 s (renewed every 0.5 s), so a dead owner's query is written again within
//! about that long.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use liveresults_redis::testing::RedisServer;
use serde_json::{json, Value};
use support::hosts::{self, line, liveresults, model, signal, snapshot, Client, LEASE_TTL};
use support::serve::Serve;

/// Each host commits every `CHUNK_LINES` lines of a POST (`hosts::BATCH` lines).
const CHUNK_LINES: u64 = 5;

fn start_host(redis: &RedisServer, name: &str) -> Serve {
    support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--redis", &redis.url(), "--host-name", name])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--lease-ttl-ms", &LEASE_TTL.as_millis().to_string()])
            .args(["--chunk-lines", &CHUNK_LINES.to_string()])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_owner_mid_stream_fails_over_within_the_lease_and_loses_nothing() {
    let redis = RedisServer::start();
    let a = start_host(&redis, "a");
    let b = start_host(&redis, "b");
    let mut client = Client::new(vec![a.url.clone(), b.url.clone()]);
    // Kill the owner mid-stream, once event 200 is acknowledged; the client keeps posting.
    client.kill_after = Some((200, a.child.id()));
    client.ingest(1, 600, "x", Duration::from_secs(60)).await;
    let killed_at = client.killed_at.lock().unwrap().expect("a was killed");
    let acks = &client.acks;
    let first_on_b = acks
        .iter()
        .find(|(at, host)| *host == 1 && *at > killed_at)
        .expect("b acknowledged events after the kill")
        .0;
    let takeover = first_on_b - killed_at;
    eprintln!("b took over {takeover:?} after a was killed (lease {LEASE_TTL:?})");
    assert!(
        takeover <= LEASE_TTL + Duration::from_secs(1),
        "b took over {takeover:?} after the kill (lease {LEASE_TTL:?})"
    );
    // b wrote nothing while a lived (a answers POSTs still in flight when the kill is sent).
    assert!(
        acks.iter().all(|(at, host)| *host == 0 || *at > killed_at),
        "b acknowledged events before a was killed"
    );

    // The result set, read from b and from a restarted a (which does not take q back by
    // reading it), is the model's.
    let expected = model(600, |_| "x");
    let http = reqwest::Client::new();
    assert_eq!(snapshot(&http, &b.url).await, (Some(600), expected.clone()));
    drop(a);
    let a = start_host(&redis, "a");
    assert_eq!(snapshot(&http, &a.url).await, (Some(600), expected));
    let health: Value = http
        .get(format!("{}/healthz", b.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["host"]["owned_queries"], json!(["q"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_commits_nothing_after_its_lease_moved() {
    let redis = RedisServer::start();
    hosts::a_paused_old_owner_commits_nothing(|name| start_host(&redis, name)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_work_on_the_shared_store_and_leave_owned_queries_to_their_owner() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A host without a name cannot share the store.
    let (ok, _, stderr) = liveresults(&["serve", "--redis", &url, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(stderr.contains("--host-name"), "{stderr}");

    let mut a = start_host(&redis, "a");
    let mut client = Client::new(vec![a.url.clone()]);
    client.ingest(1, 30, "x", Duration::from_secs(30)).await;

    let (ok, stdout, stderr) = liveresults(&["stats", "--redis", &url, "--json"]);
    assert!(ok, "{stderr}");
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats[0]["query_id"], "q");
    assert_eq!(stats[0]["sequence"], 30);
    let (ok, stdout, stderr) = liveresults(&["dump", "q", "--redis", &url]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1 + model(30, |_| "x").len());
    // a owns q: an offline clear would change it under a's feet.
    let (ok, _, stderr) = liveresults(&["clear", "q", "--redis", &url]);
    assert!(!ok);
    assert!(stderr.contains("owned by host \"a\""), "{stderr}");
    // So would an offline replay: the store fences its unfenced commits.
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), line(31, "replay")).unwrap();
    let replay_input = input.path().to_str().unwrap();
    let (ok, _, stderr) = liveresults(&["replay", replay_input, "--redis", &url]);
    assert!(!ok, "a replay committed under a live owner");
    assert!(stderr.contains("fenced"), "{stderr}");

    // Stopped cleanly, a gives its lease back: the offline tools may write again.
    signal(&a, "TERM");
    assert!(a.child.wait().unwrap().success());
    let (ok, stdout, stderr) = liveresults(&["replay", replay_input, "--redis", &url]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 events committed"), "{stdout}");
    let (ok, stdout, stderr) = liveresults(&["clear", "q", "--redis", &url]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("epoch 0 -> 1"), "{stdout}");
}
