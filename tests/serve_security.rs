//! `liveresults serve`'s security and limit flags, through the binary: numeric flags are
//! validated at startup, tokens come from a file and the environment, a non-loopback bind
//! without tokens warns.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::serve::Serve;

const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";

fn liveresults() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_liveresults"));
    command
        .env_remove("LIVERESULTS_TOKENS")
        .env("RUST_LOG", "warn");
    command
}

fn refused(args: &[&str]) -> String {
    let Output { status, stderr, .. } = liveresults()
        .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(!status.success(), "{args:?} was accepted");
    stderr
}

#[test]
fn absurd_numeric_flags_are_refused_at_startup() {
    let stderr = refused(&["--long-poll-timeout-secs", "18446744073709551615"]);
    eprintln!("{stderr}");
    assert!(stderr.contains("--long-poll-timeout-secs"), "{stderr}");
    assert!(stderr.contains("0..=3600"), "{stderr}");
    for (flag, value) in [
        ("--shutdown-grace-secs", "99999999999"),
        ("--header-read-timeout-secs", "0"),
        ("--body-read-timeout-secs", "18446744073709551615"),
        ("--max-connections", "0"),
        ("--max-queries", "0"),
        ("--max-query-id-bytes", "65536"),
        ("--chunk-lines", "0"),
        ("--chunk-bytes", "99999999999999"),
        ("--max-body-bytes", "0"),
    ] {
        let stderr = refused(&[flag, value]);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn bad_token_entries_are_refused_without_echoing_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("admin:{ADMIN}\nroot:secret-secret-secret\n")).unwrap();
    let stderr = refused(&["--token-file", file.to_str().unwrap()]);
    assert!(
        stderr.contains("entry 2: unknown role \"root\""),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-secret"), "{stderr}");
}

/// `liveresults serve --memory ARGS` with `tokens` in LIVERESULTS_TOKENS.
fn serve(args: &[&str], tokens: Option<String>) -> Serve {
    let mut command = liveresults();
    if let Some(tokens) = tokens {
        command.env("LIVERESULTS_TOKENS", tokens);
    }
    support::serve::spawn(
        command
            .args(["serve", "--memory"])
            .args(args)
            .stderr(Stdio::piped()),
    )
}

#[tokio::test]
async fn tokens_from_the_file_and_the_environment_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("# operators\nadmin:{ADMIN}\n")).unwrap();
    let server = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            file.to_str().unwrap(),
        ],
        Some(format!("read:{READ}")),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let queries = format!("{}/queries", server.url);
    let r = http.get(&queries).send().await.unwrap();
    assert_eq!(r.status(), 401);
    for token in [READ, ADMIN] {
        let r = http.get(&queries).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{}/queries/q/events", server.url))
        .bearer_auth(READ)
        .header("content-type", "application/x-ndjson")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn a_non_loopback_bind_without_tokens_warns() {
    let mut server = serve(&["--listen", "0.0.0.0:0"], None);
    let stderr = server.child.stderr.take().unwrap();
    let warned = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .take(20)
        .any(|l| l.contains("WARNING") && l.contains("WITHOUT ACCESS CONTROL"));
    assert!(warned);
    drop(server);
    // Loopback, or tokens, and no warning.
    let mut quiet = serve(&["--listen", "0.0.0.0:0"], Some(format!("admin:{ADMIN}")));
    let stderr = quiet.child.stderr.take().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the warning would follow "listening on"
    quiet.child.kill().unwrap();
    let output = std::io::read_to_string(stderr).unwrap();
    assert!(!output.contains("WITHOUT ACCESS CONTROL"), "{output}");
}
