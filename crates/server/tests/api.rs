//! Ingest, snapshot, stats, list, clear, limits and errors against a real server.

mod common;

use common::{add, adds, platform_add, Server};
use liveresults_runtime::run_ndjson;
use serde_json::Value;

fn ndjson_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn ingest_then_snapshot_then_changes() {
    let server = Server::start(|s| s.chunk_lines(2)).await;
    // Both Drasi formats, one blank line in between.
    let body = format!(
        "{}\n{}\n\n{}\n{}\n",
        add("q1", 1, 10, 1),
        platform_add("q1", 2, 20),
        add("q1", 3, 30, 2),
        add("q1", 4, 40, 2)
    );
    let r = server.post("q1", body).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["query_id"], "q1");
    assert_eq!(report["lines"], 5);
    assert_eq!(report["committed_sequence"], 4);
    assert_eq!(report["chunks"], 3);

    let r = server
        .http
        .get(server.at("/queries/q1/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson_lines(&r.text().await.unwrap());
    assert_eq!(lines[0]["query_id"], "q1");
    assert_eq!(lines[0]["sequence"], 4);
    assert_eq!(lines[0]["row_count"], 4);
    assert_eq!(lines[0]["epoch"], 0);
    let snapshot_offset = lines[0]["offset"].as_str().unwrap().to_owned();
    assert_eq!(lines.len(), 5);
    let row = lines.iter().find(|l| l["signature"] == 30).unwrap();
    assert_eq!(row["row"], serde_json::json!({"id": 30, "chunk": 2}));
    assert!(lines
        .iter()
        .any(|l| l["row"] == serde_json::json!({"id": 20})));

    let r = server
        .http
        .get(server.at("/queries/q1/changes?offset=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["stream-up-to-date"], "true");
    let next = r.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(next, snapshot_offset);
    let messages: Vec<Value> = r.json().await.unwrap();
    // Three chunks, three atomic commits, three messages.
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["first_sequence"], 1);
    assert_eq!(messages[0]["sequence"], 2);
    assert_eq!(messages[0]["events"][0]["type"], "rows");
    assert_eq!(messages[0]["events"][0]["changes"][0]["op"], "upsert");
    assert_eq!(messages[0]["events"][0]["changes"][0]["row"]["id"], 10);
    assert_eq!(messages[2]["sequence"], 4);
    assert_eq!(messages[2]["offset"], next.as_str());

    // Reading on from the snapshot's offset: nothing new, up to date.
    let r = server
        .http
        .get(server.at(&format!("/queries/q1/changes?offset={snapshot_offset}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 0);

    let (status, stats) = server.get_json("/queries/q1").await;
    assert_eq!(status, 200);
    assert_eq!(stats["sequence"], 4);
    assert_eq!(stats["row_count"], 4);
    assert_eq!(stats["state"], "running");
    assert_eq!(stats["commits"], 3);
    let (status, list) = server.get_json("/queries").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["query_id"], "q1");
    server.stop().await;
}

#[tokio::test]
async fn bad_line_in_chunk_three_keeps_chunks_one_and_two() {
    let server = Server::start(|s| s.chunk_lines(10)).await;
    let mut lines: Vec<String> = (1..=30).map(|s| add("q", s, s, s.div_ceil(10))).collect();
    lines[24] = r#"{"query_id":"q","sequence":25,"results":[{"type":"ADD"}]}"#.into();
    let r = server.post("q", lines.join("\n")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["line"], 25);
    assert_eq!(problem["committed_sequence"], 20);
    assert!(problem["type"].as_str().unwrap().ends_with("bad-line"));
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("line 25") && detail.contains("results[0].data"),
        "{detail}"
    );
    let (_, stats) = server.get_json("/queries/q").await;
    assert_eq!(stats["row_count"], 20);
    assert_eq!(stats["sequence"], 20);

    // Resending the whole body after fixing the line: committed lines are skipped.
    lines[24] = add("q", 25, 25, 3);
    let r = server.post("q", lines.join("\n")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["committed_sequence"], 30);

    // An event for another query is a bad line too.
    let r = server
        .post(
            "q",
            format!("{}\n{}\n", add("q", 31, 31, 4), add("other", 1, 1, 1)),
        )
        .await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["line"], 2);
    assert_eq!(problem["committed_sequence"], 30);
    assert!(problem["detail"].as_str().unwrap().contains("\"other\""));
    server.stop().await;
}

/// Chunks are cut by bytes too, so a chunk of many long lines never sits in memory whole.
#[tokio::test]
async fn chunks_are_bounded_by_bytes_as_well_as_lines() {
    let server = Server::start(|s| s.chunk_lines(1000).chunk_bytes(1000)).await;
    let body = adds("q", 1, 40, 1);
    assert!(body.len() > 4000);
    let r = server.post("q", body).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert!(report["chunks"].as_u64().unwrap() >= 4, "{report}");
    assert_eq!(report["committed_sequence"], 40);
    server.stop().await;
}

#[tokio::test]
async fn oversize_body_is_413_and_long_line_is_400() {
    let server = Server::start(|s| s.max_body_bytes(4000).max_line_bytes(200).chunk_lines(5)).await;
    let body = adds("q", 1, 100, 1);
    assert!(body.len() > 4000);
    let r = server.post("q", body.clone()).await;
    assert_eq!(r.status(), 413);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["limit"], 4000);
    assert_eq!(problem["committed_sequence"], Value::Null);

    // Without a Content-Length the limit is enforced while streaming; full chunks before it
    // stay committed.
    let stream = futures_util::stream::iter(
        body.lines()
            .map(|l| Ok::<_, std::io::Error>(format!("{l}\n")))
            .collect::<Vec<_>>(),
    );
    let r = server
        .http
        .post(server.at("/queries/q/events"))
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let problem: Value = r.json().await.unwrap();
    let committed = problem["committed_sequence"].as_u64().unwrap();
    assert!(committed > 0 && committed % 5 == 0, "{problem}");

    let long = format!(
        "{}\n{{\"query_id\":\"q\",\"pad\":\"{}\"}}\n",
        add("q", 1000, 1000, 9),
        "x".repeat(300)
    );
    let r = server.post("q", long).await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["line"], 2);
    assert_eq!(problem["limit"], 200);
    assert!(problem["type"].as_str().unwrap().ends_with("line-too-long"));
    server.stop().await;
}

/// HTTP ingest and the runtime's NDJSON source split lines with the same splitter: the same
/// bad bytes get the same error, word for word, with the same line number.
#[tokio::test]
async fn ingest_and_ndjson_source_report_the_same_line_errors() {
    const LIMIT: usize = 200;
    let server = Server::start(|s| s.max_line_bytes(LIMIT).chunk_lines(1)).await;
    let good = add("q", 1, 1, 1);
    let mut invalid_utf8 = format!("{good}\n\n").into_bytes();
    invalid_utf8.extend_from_slice(b"{\"query_id\":\"q\",\xff}\r\n");
    let over_long = format!("{good}\r\n{}\n", "x".repeat(LIMIT + 1)).into_bytes();
    let unterminated = format!("{good}\n{}", "y".repeat(LIMIT + 1)).into_bytes();
    let cases = [
        (
            invalid_utf8,
            3,
            "bad-line",
            "line 3: invalid UTF-8 at byte 17",
        ),
        (
            over_long,
            2,
            "line-too-long",
            "line 2: longer than 200 bytes",
        ),
        (
            unterminated,
            2,
            "line-too-long",
            "line 2: longer than 200 bytes",
        ),
    ];
    for (body, line, kind, message) in cases {
        let source_error = run_ndjson(body.as_slice(), server.state.runtime(), LIMIT, |_| {})
            .await
            .unwrap_err();
        assert_eq!(source_error.to_string(), message);

        let r = server
            .http
            .post(server.at("/queries/q/events"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let problem: Value = r.json().await.unwrap();
        assert!(
            problem["type"].as_str().unwrap().ends_with(kind),
            "{problem}"
        );
        assert_eq!(problem["detail"], message);
        assert_eq!(problem["line"], line);
        // The good first line was committed by both paths (it is its own chunk over HTTP).
        assert_eq!(problem["committed_sequence"], 1);
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_query_is_404() {
    let server = Server::start(|s| s).await;
    for path in [
        "/queries/nope",
        "/queries/nope/snapshot",
        "/queries/nope/changes?offset=-1",
        "/queries/nope/changes?offset=-1&live=long-poll",
        "/queries/nope/changes?offset=-1&live=sse",
    ] {
        let r = server.http.get(server.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["query_id"], "nope");
    }
    let r = server
        .http
        .delete(server.at("/queries/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Looking did not create it.
    let (_, list) = server.get_json("/queries").await;
    assert_eq!(list, serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn clear_resets_the_query_and_stales_old_offsets() {
    let server = Server::start(|s| s).await;
    assert_eq!(server.post("q", adds("q", 1, 3, 1)).await.status(), 200);
    let r = server
        .http
        .get(server.at("/queries/q/changes?offset=-1"))
        .send()
        .await
        .unwrap();
    let old = r.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();

    let r = server
        .http
        .delete(server.at("/queries/q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cleared: Value = r.json().await.unwrap();
    assert_eq!(cleared["epoch"], 1);
    assert_eq!(cleared["row_count"], 0);
    assert_eq!(cleared["sequence"], Value::Null);

    let r = server
        .http
        .get(server.at(&format!("/queries/q/changes?offset={old}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("must-refetch"));
    assert_eq!(problem["offset"], cleared["offset"]);

    // Upstream re-bootstraps from sequence 1 in the new epoch.
    assert_eq!(server.post("q", adds("q", 1, 2, 2)).await.status(), 200);
    let text = server.get_text("/queries/q/snapshot").await;
    let lines = ndjson_lines(&text);
    assert_eq!(lines[0]["epoch"], 1);
    assert_eq!(lines[0]["row_count"], 2);
    server.stop().await;
}

#[tokio::test]
async fn strict_gap_is_409_naming_the_line() {
    let server = Server::start(|s| s.chunk_lines(3)).await;
    let body = format!(
        "{}{}",
        adds("q", 1, 3, 1),
        adds("q", 4, 4, 2) + &add("q", 9, 9, 2)
    );
    let r = server.post("q", body).await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("query-stopped"));
    assert_eq!(problem["line"], 5);
    assert_eq!(problem["chunk_first_line"], 4);
    assert_eq!(problem["committed_sequence"], 3);
    assert!(problem["reason"].as_str().unwrap().contains("gap"));
    let (_, stats) = server.get_json("/queries/q").await;
    assert_eq!(stats["state"], "stopped");
    assert_eq!(stats["row_count"], 3);
    // Clearing restarts it.
    assert_eq!(
        server
            .http
            .delete(server.at("/queries/q"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.post("q", adds("q", 1, 1, 1)).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn metrics_and_health() {
    let server = Server::start(|s| s).await;
    assert_eq!(server.post("m-1", adds("m-1", 1, 2, 1)).await.status(), 200);
    let _ = server.post("m-1", "not json\n".into()).await;
    let (status, health) = server.get_json("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let text = server.get_text("/metrics").await;
    for needle in [
        "liveresults_commits_total 1",
        "liveresults_ingest_lines_total 2",
        "liveresults_ingest_rejections_total 1",
        "liveresults_query_rows{query=\"m-1\"} 2",
        "liveresults_query_sequence{query=\"m-1\"} 2",
        "liveresults_http_responses_total{class=\"4xx\"} 1",
        "liveresults_long_polls_open 0",
        "liveresults_sse_clients 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // The events carried source time 0, so the lag is the age of the Unix epoch.
    let lag: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("liveresults_query_lag_seconds{query=\"m-1\"} "))
        .expect("lag gauge")
        .parse()
        .unwrap();
    assert!(lag > 1.7e9, "{lag}");
    server.stop().await;
}
