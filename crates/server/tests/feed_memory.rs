//! Change-feed responses are bounded in bytes, so clients that ask and never read cannot
//! make the server hold the outbox once per connection.
//!
//! The whole test binary counts its heap (a counting global allocator), so the figures are
//! the server's allocations, not the allocator's or the kernel's socket buffers.

// Counting allocations means implementing `GlobalAlloc`, which is unsafe by definition; the
// implementation only forwards to the system allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::Server;
use liveresults_server::DEFAULT_CHANGES_MAX_BYTES;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_mib() -> f64 {
    ALLOCATED.load(Ordering::Relaxed) as f64 / f64::from(1 << 20)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// An ingest line adding row `id` with a `pad` of `pad` bytes.
fn line(query: &str, sequence: u64, pad: usize) -> String {
    format!(
        r#"{{"query_id":"{query}","sequence":{sequence},"timestamp":0,"results":[{{"type":"ADD","data":{{"id":{sequence},"pad":"{}"}},"row_signature":{sequence}}}]}}"#,
        "x".repeat(pad)
    ) + "\n"
}

/// Commits `count` events of one `pad`-byte row each, one commit (outbox entry) per event.
async fn load(server: &Server, query: &str, count: u64, pad: usize) {
    for sequence in 1..=count {
        let r = server
            .http
            .post(server.at(&format!("/queries/{query}/events")))
            .header("content-type", "application/x-ndjson")
            .body(line(query, sequence, pad))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
}

async fn catch_up(server: &Server, query: &str, offset: &str) -> (Vec<serde_json::Value>, String) {
    let r = server
        .http
        .get(server.at(&format!("/queries/{query}/changes?offset={offset}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let next = r.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();
    (r.json().await.unwrap(), next)
}

#[tokio::test]
async fn a_response_stops_at_the_byte_limit_but_always_carries_one_message() {
    let server = Server::start(|s| s.changes_max_bytes(10_000)).await;
    load(&server, "q", 20, 3000).await;
    // About 3 KB per message: three fit in 10,000 bytes, the fourth would not.
    let (messages, mut offset) = catch_up(&server, "q", "-1").await;
    assert_eq!(messages.len(), 3, "{offset}");
    let mut seen = messages.len();
    while seen < 20 {
        let (messages, next) = catch_up(&server, "q", &offset).await;
        assert!(!messages.is_empty() && messages.len() <= 3);
        seen += messages.len();
        offset = next;
    }
    assert_eq!(seen, 20, "every batch, each once");
    server.stop().await;

    // A limit below one message still returns one message per read.
    let server = Server::start(|s| s.changes_max_bytes(100)).await;
    load(&server, "q", 2, 3000).await;
    let (messages, offset) = catch_up(&server, "q", "-1").await;
    assert_eq!(messages.len(), 1);
    let (messages, _) = catch_up(&server, "q", &offset).await;
    assert_eq!(messages.len(), 1);
    server.stop().await;
}

/// Clients that never read: catch-up, long-poll and SSE.
const CLIENTS: usize = 50;
/// Entries in the outbox and the row bytes of each: about 50 MB of history, which an
/// unbounded response would carry whole.
const ENTRIES: u64 = 250;
const PAD: usize = 200 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_that_never_read_hold_bounded_memory() {
    let server = Server::start(|s| s).await;
    load(&server, "q", ENTRIES, PAD).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (base, base_rss) = (allocated_mib(), rss_mib());

    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let path = match i % 5 {
            0..=2 => "/queries/q/changes?offset=-1".to_owned(),
            3 => "/queries/q/changes?offset=-1&live=long-poll".to_owned(),
            _ => "/queries/q/changes?offset=-1&live=sse".to_owned(),
        };
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        clients.push(stream); // never read
    }
    // Let every response be produced and pushed until the sockets are full; keep the peak.
    let mut peak = allocated_mib();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(allocated_mib());
    }
    let growth = peak - base;
    let per_client_bound = 2.0 * DEFAULT_CHANGES_MAX_BYTES as f64 / f64::from(1 << 20);
    let bound = per_client_bound * CLIENTS as f64;
    eprintln!(
        "{CLIENTS} non-reading clients over {} MiB of history: heap {base:.0} -> peak \
         {peak:.0} MiB (+{growth:.0} MiB, bound {bound:.0} MiB); RSS {base_rss:.0} -> {:.0} MiB",
        (ENTRIES as usize * PAD) >> 20,
        rss_mib()
    );
    assert!(
        growth < bound,
        "{CLIENTS} clients that never read grew the heap by {growth:.0} MiB (bound {bound:.0})"
    );
    // The server still answers.
    let (messages, _) = catch_up(&server, "q", "-1").await;
    assert!(!messages.is_empty());
    drop(clients);
    server.stop().await;
}
