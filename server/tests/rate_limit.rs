//! Rate limits over real QUIC: token buckets per `rate_class`, per account and per source
//! address, answering RateLimited with `retry_after_ms`; another account or another address
//! keeps its own budget. The server listens on `[::]` so one client can come from
//! 127.0.0.1 and another from ::1: two source addresses on one machine.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use qpq_client::{IdentityKey, Login, QpqClient};
use qpq_runtime::{RpcError, Status, StatusCode};
use qpq_schema::proto;

const PASSWORD: &[u8] = b"rate limit password";

fn settings(values: &[&str]) -> Vec<qpq_server::RateLimitSetting> {
    values.iter().map(|v| v.parse().unwrap()).collect()
}

async fn start(limits: &[&str]) -> TestServer {
    let limits = settings(limits);
    TestServer::start_with(move |c| {
        c.listen = "[::]:0".parse().unwrap();
        c.rate_limit = limits;
    })
    .await
}

/// A client of `server` from `ip` (127.0.0.1 or ::1).
async fn client_from(server: &TestServer, ip: &str) -> QpqClient {
    let addr = SocketAddr::new(ip.parse().unwrap(), server.addr().port());
    server.client_with(addr, &server.pinned()).await
}

async fn user(client: &QpqClient, name: &str) -> (IdentityKey, Login) {
    let identity = IdentityKey::generate();
    qpq_client::register(client, name, PASSWORD, &identity.public())
        .await
        .unwrap();
    let session = qpq_client::login(client, name, PASSWORD, None)
        .await
        .unwrap();
    (identity, session)
}

async fn resolve(client: &QpqClient, token: &Bytes) -> Result<(), RpcError> {
    client
        .resolve_user(proto::ResolveUserRequest {
            session_token: token.clone(),
            username: "nobody".into(),
        })
        .await
        .map(|_| ())
}

fn limited(result: Result<(), RpcError>) -> Status {
    match result {
        Err(RpcError::Status(status)) if status.code() == StatusCode::RateLimited => status,
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

/// Whether this machine can use IPv6 loopback (the second source address).
fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_is_limited_per_account_and_per_address_with_a_retry_hint() {
    if !has_ipv6_loopback() {
        common::skip(
            "a_class_is_limited_per_account_and_per_address_with_a_retry_hint",
            "no IPv6 loopback here (::1), so no second source address",
        );
        return;
    }
    let server = start(&["resolve.account=4/min", "resolve.address=6/min"]).await;
    let v4 = client_from(&server, "127.0.0.1").await;
    let v6 = client_from(&server, "::1").await;
    let (_, alice) = user(&v4, "alice").await;
    let (_, bob) = user(&v4, "bob").await;
    let (_, carol) = user(&v6, "carol").await;

    // Alice's account: 4 calls, then RateLimited with a hint of about 15 s (60 s / 4).
    for _ in 0..4 {
        resolve(&v4, &alice.token).await.unwrap();
    }
    let status = limited(resolve(&v4, &alice.token).await);
    let hint = status.retry_after_ms().unwrap();
    println!("account limit reached after 4 calls: {status} (retry_after_ms {hint})");
    assert!((14_000..=15_001).contains(&hint), "{hint}");
    assert!(status.message().contains("this account"), "{status}");

    // Bob shares alice's address: his account is fresh, the address has 2 of its 6 left.
    resolve(&v4, &bob.token).await.unwrap();
    resolve(&v4, &bob.token).await.unwrap();
    let status = limited(resolve(&v4, &bob.token).await);
    let hint = status.retry_after_ms().unwrap();
    println!(
        "address limit reached after 6 calls from 127.0.0.1: {status} (retry_after_ms {hint})"
    );
    assert!(status.message().contains("this address"), "{status}");
    assert!((9_000..=10_001).contains(&hint), "{hint}");

    // Carol, another account from another address, is unaffected; so is alice's token used
    // from there for a method of another class.
    for _ in 0..4 {
        resolve(&v6, &carol.token).await.unwrap();
    }
    v6.peek(proto::PeekRequest {
        session_token: alice.token.clone(),
        limit: 1,
        after_seq: 0,
    })
    .await
    .unwrap();
    println!("another account from ::1: 4 calls answered Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_the_hint_is_enough() {
    let server = start(&["key_fetch.account=2/s"]).await;
    let client = client_from(&server, "127.0.0.1").await;
    let (identity, alice) = user(&client, "alice").await;
    let fetch = || {
        client.fetch_hybrid_key(proto::FetchHybridKeyRequest {
            session_token: alice.token.clone(),
            identity_key: Bytes::copy_from_slice(&identity.public()),
        })
    };
    fetch().await.unwrap();
    fetch().await.unwrap();
    let status = fetch().await.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::RateLimited);
    let hint = Duration::from_millis(status.retry_after_ms().unwrap().into());
    println!("2/s class: third call refused with retry_after {hint:?}");
    assert!(hint > Duration::ZERO && hint <= Duration::from_millis(501));
    let waited = Instant::now();
    tokio::time::sleep(hint).await;
    fetch().await.unwrap();
    println!("after waiting {:?} the call is answered", waited.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_is_limited_per_sender_and_recipient() {
    let server = start(&["enqueue.pair=3/min"]).await;
    let client = client_from(&server, "127.0.0.1").await;
    let (alice_id, alice) = user(&client, "alice").await;
    let (bob, bob_session) = user(&client, "bob").await;
    let (carol, _) = user(&client, "carol").await;
    let send = |from: &Login, to: &IdentityKey| {
        client.enqueue(proto::EnqueueRequest {
            session_token: from.token.clone(),
            recipient: Some(proto::UserRef {
                target: Some(proto::user_ref::Target::IdentityKey(
                    Bytes::copy_from_slice(&to.public()),
                )),
            }),
            payload: Bytes::from_static(b"hello"),
            ttl_secs: 0,
            channel_id: Bytes::new(),
        })
    };
    for _ in 0..3 {
        send(&alice, &bob).await.unwrap();
    }
    let status = send(&alice, &bob)
        .await
        .unwrap_err()
        .status()
        .cloned()
        .unwrap();
    println!("alice→bob refused after 3: {status}");
    assert_eq!(status.code(), StatusCode::RateLimited);
    assert!(status.retry_after_ms().unwrap() > 0);
    // A batch holding one more item for bob is refused whole: nothing of it is queued.
    let batch = client
        .batch_enqueue(proto::BatchEnqueueRequest {
            session_token: alice.token.clone(),
            items: [&carol, &bob]
                .iter()
                .map(|to| proto::EnqueueItem {
                    recipient: Some(proto::UserRef {
                        target: Some(proto::user_ref::Target::IdentityKey(
                            Bytes::copy_from_slice(&to.public()),
                        )),
                    }),
                    payload: Bytes::from_static(b"batched"),
                    ttl_secs: 0,
                    channel_id: Bytes::new(),
                })
                .collect(),
        })
        .await;
    assert_eq!(common::code(batch), StatusCode::RateLimited);
    // Alice to carol and bob to alice have their own buckets.
    send(&alice, &carol).await.unwrap();
    send(&bob_session, &alice_id).await.unwrap();
    let queued = client
        .peek(proto::PeekRequest {
            session_token: bob_session.token.clone(),
            limit: 100,
            after_seq: 0,
        })
        .await
        .unwrap()
        .messages;
    assert_eq!(queued.len(), 3, "bob's queue holds the 3 admitted messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_registration_limit_applies_per_address() {
    let server = start(&[]).await;
    let client = client_from(&server, "127.0.0.1").await;
    // Refused registrations count too (the limit is checked before the handler): 60 calls
    // pass the limiter, the 61st does not.
    let mut answered = 0;
    let status = loop {
        let result = client
            .opaque_register_start(proto::OpaqueRegisterStartRequest {
                username: String::new(),
                registration_request: Bytes::new(),
            })
            .await;
        match result {
            Err(RpcError::Status(status)) if status.code() == StatusCode::BadRequest => {
                answered += 1;
            }
            Err(RpcError::Status(status)) => break status,
            other => panic!("{other:?}"),
        }
        assert!(answered <= 60, "no limit after {answered} registrations");
    };
    println!("default register limit: {answered} calls, then {status}");
    assert_eq!(answered, 60);
    assert_eq!(status.code(), StatusCode::RateLimited);
    // 60 per hour: the next token in about a minute.
    let hint = status.retry_after_ms().unwrap();
    assert!((59_000..=60_001).contains(&hint), "{hint}");
}
