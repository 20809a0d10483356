//! Refusals say what happened: a gap inside one body is not reported as a committed sequence,
//! and an offset from an epoch the query never reached is not called "cleared since".

mod common;

use common::{add, Server};

#[tokio::test]
async fn a_gap_inside_one_body_names_the_sequences_and_nothing_committed() {
    let server = Server::start(|s| s).await;
    let body = format!("{}\n{}\n", add("q", 1, 1, 0), add("q", 3, 3, 0));
    let r = server.post("q", body).await;
    assert_eq!(r.status(), 409);
    let problem: serde_json::Value = r.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(problem["committed_sequence"].is_null(), "{problem}");
    assert!(!detail.contains("Some("), "{detail}");
    assert!(detail.contains("received 3 right after 1"), "{detail}");
    assert!(detail.contains("last committed sequence: none"), "{detail}");
    assert_eq!(problem["line"], 2, "{problem}");
    server.stop().await;
}

#[tokio::test]
async fn an_offset_of_a_future_epoch_is_not_called_cleared() {
    let server = Server::start(|s| s).await;
    assert_eq!(
        server.post("q", common::adds("q", 1, 2, 0)).await.status(),
        200
    );
    let r = server
        .http
        .get(server.at("/queries/q/changes?offset=-1"))
        .send()
        .await
        .unwrap();
    let tail = r.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();
    let (epoch, position) = tail.split_once('_').unwrap();
    let future = format!(
        "{:0w$x}_{position}",
        u64::from_str_radix(epoch, 16).unwrap() + 1,
        w = epoch.len()
    );
    let (status, problem) = server
        .get_json(&format!("/queries/q/changes?offset={future}"))
        .await;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(!detail.contains("cleared since"), "{detail}");
    assert!(detail.contains("which it has not reached"), "{detail}");
    server.stop().await;
}

#[tokio::test]
async fn integers_beyond_64_bits_and_duplicate_keys_are_400s_naming_the_field() {
    let server = Server::start(|s| s).await;
    let big = r#"{"query_id":"q","sequence":1,"timestamp":0,"results":[{"type":"ADD","data":{"id":18446744073709551617},"row_signature":1},{"type":"ADD","data":{"id":18446744073709551618},"row_signature":2}]}"#;
    let r = server.post("q", format!("{big}\n")).await;
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("`results[0].data.id`"), "{detail}");
    let duplicate = r#"{"query_id":"q","sequence":1,"sequence":2,"timestamp":0,"results":[]}"#;
    let r = server.post("q", format!("{duplicate}\n")).await;
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("duplicate key `sequence`"), "{detail}");
    // Nothing was stored.
    let (_, info) = server.get_json("/queries/q").await;
    assert!(info["sequence"].is_null(), "{info}");
    server.stop().await;
}
