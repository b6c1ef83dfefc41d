//! `/metrics` after some calls shows the call counters, latency histograms, connections,
//! queue depth and storage sync latency.

mod common;

use common::{TestServer, scrape};
use qpq_schema::proto;

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample `{prefix}` in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_show_calls_histograms_connections_queues_and_syncs() {
    let server =
        TestServer::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = server.server.as_ref().unwrap().metrics_addr.unwrap();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    for _ in 0..3 {
        alice.send(&bob, b"counted").await.unwrap();
    }
    let _ = alice
        .client
        .peek(proto::PeekRequest {
            session_token: bytes::Bytes::from_static(b"forged"),
            limit: 1,
            after_seq: 0,
        })
        .await;
    alice.client.health(proto::HealthRequest {}).await.unwrap();

    let response = scrape(metrics_addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("text/plain; version=0.0.4"));
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        sample(
            body,
            "qpq_calls_total{method=\"Enqueue\",id=\"200\",status=\"Ok\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            body,
            "qpq_calls_total{method=\"Peek\",id=\"203\",status=\"Unauthorized\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            body,
            "qpq_calls_total{method=\"Health\",id=\"802\",status=\"Ok\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(body, "qpq_call_duration_seconds_count{method=\"Enqueue\"}"),
        3.0
    );
    assert_eq!(
        sample(
            body,
            "qpq_call_duration_seconds_bucket{method=\"Enqueue\",le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(sample(body, "qpq_open_connections ") >= 2.0);
    assert_eq!(sample(body, "qpq_queued_messages "), 3.0);
    assert_eq!(sample(body, "qpq_nonempty_queues "), 1.0);
    // Registration, logins and enqueues each synced the journal.
    assert!(sample(body, "qpq_storage_sync_duration_seconds_count ") >= 3.0);
    assert!(body.contains("qpq_storage_sync_duration_seconds_bucket{le=\"+Inf\"}"));

    let missing = scrape(metrics_addr, "/other").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
