//! Load benchmark over loopback (MemoryStore, so it measures the server and runtime, not
//! the disk): HTTP ingest throughput in diffs/s, and commit-to-long-poll wake-up latency with
//! 200 parked readers. Bounded in requests and time; talks to 127.0.0.1 only.
//!
//! `cargo bench -p liveresults-server --bench load`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liveresults_core::MemoryStore;
use liveresults_runtime::{Runtime, RuntimeConfig};
use liveresults_server::{serve, AppState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Ingest: requests, lines per request, diffs per line.
const POSTS: u64 = 40;
const LINES_PER_POST: u64 = 5_000;
const DIFFS_PER_LINE: u64 = 10;
/// Wake-up: parked readers and commits they wait for.
const READERS: usize = 200;
const ROUNDS: usize = 30;
/// Hard stop for each phase.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn line(query: &str, sequence: u64) -> String {
    let diffs: Vec<String> = (0..DIFFS_PER_LINE)
        .map(|k| {
            let id = sequence * DIFFS_PER_LINE + k;
            format!(r#"{{"type":"ADD","data":{{"id":{id},"name":"row {id}","value":{k}}},"row_signature":{id}}}"#)
        })
        .collect();
    format!(
        r#"{{"query_id":"{query}","sequence":{sequence},"timestamp":0,"results":[{}]}}"#,
        diffs.join(",")
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let runtime = Runtime::start(
        Arc::new(MemoryStore::new()),
        RuntimeConfig::new(),
        Vec::new(),
    )
    .await
    .expect("runtime");
    let state = AppState::new(runtime.handle()).long_poll_timeout(Duration::from_secs(30));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let server = tokio::spawn(serve(listener, state.clone(), async move {
        signal.cancelled().await;
    }));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(READERS + 8)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    // --- Ingest throughput -------------------------------------------------------------
    let bodies: Vec<String> = (0..POSTS)
        .map(|p| {
            let first = p * LINES_PER_POST + 1;
            (first..first + LINES_PER_POST)
                .map(|s| line("ingest", s) + "\n")
                .collect()
        })
        .collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    let started = Instant::now();
    let mut lines = 0;
    for body in bodies {
        if started.elapsed() > PHASE_LIMIT {
            break;
        }
        let r = http
            .post(format!("{url}/queries/ingest/events"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        lines += LINES_PER_POST;
    }
    let secs = started.elapsed().as_secs_f64();
    let diffs = lines * DIFFS_PER_LINE;
    println!(
        "ingest: {lines} lines / {diffs} diffs ({:.1} MiB) in {secs:.2} s over loopback: \
         {:.0} diffs/s, {:.0} lines/s, {:.1} MiB/s (chunks of 1000 lines, one atomic commit each)",
        bytes as f64 / (1 << 20) as f64,
        diffs as f64 / secs,
        lines as f64 / secs,
        bytes as f64 / (1 << 20) as f64 / secs
    );

    // --- Commit-to-long-poll wake-up ----------------------------------------------------
    let r = http
        .post(format!("{url}/queries/feed/events"))
        .header("content-type", "application/x-ndjson")
        .body(line("feed", 1))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let stats: serde_json::Value = http
        .get(format!("{url}/queries/feed"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    let offset = stats["offset"].as_str().expect("offset").to_owned();
    let received: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (http, url, received, mut offset) =
            (http.clone(), url.clone(), received.clone(), offset.clone());
        readers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let r = http
                    .get(format!(
                        "{url}/queries/feed/changes?offset={offset}&live=long-poll"
                    ))
                    .send()
                    .await
                    .expect("long-poll");
                let at = Instant::now();
                assert_eq!(r.status(), 200);
                offset = r.headers()["stream-next-offset"]
                    .to_str()
                    .expect("offset")
                    .to_owned();
                received.lock().expect("lock").push((round, at));
            }
        }));
    }
    let mut sent = Vec::with_capacity(ROUNDS);
    let mut acks = Vec::with_capacity(ROUNDS);
    let phase = Instant::now();
    for round in 0..ROUNDS {
        // Every reader has its answer to the last commit (so no parked-gauge guard of the last
        // round is still alive: a woken reader counts as parked until its answer is rendered)
        // and has parked again; otherwise one answer could cover two commits and that reader
        // would wait for a commit that never comes.
        while received.lock().expect("lock").len() < READERS * round
            || state.metrics().long_polls_open() < READERS as u64
        {
            assert!(phase.elapsed() < PHASE_LIMIT, "readers did not park");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let t0 = Instant::now();
        let r = http
            .post(format!("{url}/queries/feed/events"))
            .header("content-type", "application/x-ndjson")
            .body(line("feed", round as u64 + 2))
            .send()
            .await
            .expect("post");
        acks.push(t0.elapsed());
        assert_eq!(r.status(), 200);
        sent.push(t0);
    }
    for reader in readers {
        reader.await.expect("reader");
    }
    let mut latencies: Vec<Duration> = received
        .lock()
        .expect("lock")
        .iter()
        .map(|(round, at)| at.saturating_duration_since(sent[*round]))
        .collect();
    latencies.sort_unstable();
    acks.sort_unstable();
    println!(
        "wake-up: {READERS} long-poll readers x {ROUNDS} commits ({} wake-ups), POST sent -> \
         reader has the response: median {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         (POST acknowledged: median {:.2} ms)",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&acks, 0.5).as_secs_f64() * 1e3,
    );

    stop.cancel();
    let _ = server.await;
    let _ = runtime.shutdown().await;
}
