//! PostgreSQL going away under load, over real QUIC: while the database is down
//! (`pg_ctl stop -m immediate`, as a crash would stop it) every Enqueue answers Unavailable,
//! none answers Ok and none hangs; when PostgreSQL is back the same server serves again by
//! itself, with no restart; and every message that was acknowledged is stored.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::proto;
use qpq_server::StoreChoice;
use qpq_server::testing::PgCluster;

/// Longer than any call may take, outage or not: a call past it is a hang.
const HANG: Duration = Duration::from_secs(20);
const SENDERS: usize = 8;

#[derive(Default)]
struct Log {
    acknowledged: Vec<String>,
    unavailable: usize,
    /// Anything else: a wrong status, or a hang.
    wrong: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_postgres_stop_answers_unavailable_and_the_server_recovers_by_itself() {
    let test = "an_immediate_postgres_stop_answers_unavailable_and_the_server_recovers_by_itself";
    // A cluster of its own: this test stops it.
    let cluster = match tokio::task::spawn_blocking(PgCluster::start).await.unwrap() {
        Ok(c) => c,
        Err(e) => return common::skip(test, &e),
    };
    let url = cluster.postgres_url(&cluster.create_database());
    let server = TestServer::start_with(|c| {
        c.store = StoreChoice::Postgres(url.clone());
        c.rate_limit = vec!["all=off".parse().unwrap()];
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for task in 0..SENDERS {
        let client = alice.client.clone();
        let token = alice.token();
        let to = bob.to();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut log = Log::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let payload = format!("t{task}-{n}");
                let call = client.enqueue(proto::EnqueueRequest {
                    session_token: token.clone(),
                    recipient: to.clone(),
                    payload: Bytes::from(payload.clone()),
                    ttl_secs: 0,
                    channel_id: Bytes::new(),
                });
                match tokio::time::timeout(HANG, call).await {
                    Ok(Ok(_)) => log.acknowledged.push(payload),
                    Ok(Err(RpcError::Status(s))) if s.code() == StatusCode::Unavailable => {
                        log.unavailable += 1;
                        // Honour a short backoff, as a client would.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(Err(e)) => log.wrong.push(format!("{payload}: {e}")),
                    Err(_) => log
                        .wrong
                        .push(format!("{payload}: no answer within {HANG:?}")),
                }
            }
            log
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.stop_immediate().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart().unwrap();
    // The server finds PostgreSQL again by itself: calls succeed within a few seconds.
    let back = Instant::now();
    loop {
        match alice.send(&bob, b"probe after restart").await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(30),
                    "the server did not recover within 30 s after PostgreSQL came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let recovered_in = back.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut log = Log::default();
    for s in senders {
        let l = s.await.unwrap();
        log.acknowledged.extend(l.acknowledged);
        log.unavailable += l.unavailable;
        log.wrong.extend(l.wrong);
    }
    eprintln!(
        "acknowledged {}, unavailable {}, recovered in {recovered_in:?}",
        log.acknowledged.len(),
        log.unavailable
    );
    assert!(
        log.wrong.is_empty(),
        "calls answered wrongly: {:?}",
        log.wrong
    );
    assert!(
        log.unavailable > 0,
        "no call met the outage: the test did not test it"
    );
    assert!(!log.acknowledged.is_empty());

    let stored: BTreeSet<String> = common::all_messages(&bob.client, &bob.token())
        .await
        .into_iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    let lost: Vec<&String> = log
        .acknowledged
        .iter()
        .filter(|p| !stored.contains(*p))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}
