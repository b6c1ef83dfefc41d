//! Accounts, sessions and store-and-forward delivery over real QUIC, with real OPAQUE and a
//! real fjall directory.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, code};
use qpq_runtime::StatusCode;
use qpq_schema::{Event, proto};

#[tokio::test]
async fn enqueue_fetch_peek_ack_between_two_users() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    let s1 = alice.send(&bob, b"one").await.unwrap();
    // Addressed by username this time.
    let s2 = alice
        .client
        .enqueue(proto::EnqueueRequest {
            session_token: alice.token(),
            recipient: Some(proto::UserRef {
                target: Some(proto::user_ref::Target::Username("bob".into())),
            }),
            payload: Bytes::from_static(b"two"),
            ttl_secs: 60,
            channel_id: Bytes::new(),
        })
        .await
        .unwrap()
        .seq;
    let s3 = alice.send(&bob, b"three").await.unwrap();
    assert_eq!((s1, s2, s3), (1, 2, 3));

    // Peek returns without removing, in order, with sender and times.
    let peeked = bob.peek().await;
    assert_eq!(peeked.len(), 3);
    assert_eq!(&peeked[0].payload[..], b"one");
    assert_eq!(peeked[0].sender, "alice");
    assert_eq!(&peeked[0].sender_identity_key[..], &alice.identity.public());
    assert!(peeked[0].enqueued_at_unix_ms > 0);
    assert!(peeked[1].expires_at_unix_ms <= peeked[1].enqueued_at_unix_ms + 60_000);
    assert_eq!(bob.peek().await.len(), 3);

    // Ack removes what it names; unknown seqs are reported, not an error.
    let acked = bob
        .client
        .ack(proto::AckRequest {
            session_token: bob.token(),
            seqs: vec![s2, 99],
        })
        .await
        .unwrap();
    assert_eq!(acked.removed, [s2]);
    assert_eq!(acked.unknown, [99]);

    // Fetch drains in FIFO order with a page limit.
    let page = bob
        .client
        .fetch(proto::FetchRequest {
            session_token: bob.token(),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(&page.messages[0].payload[..], b"one");
    assert!(page.more);
    let page = bob
        .client
        .fetch(proto::FetchRequest {
            session_token: bob.token(),
            limit: 0,
        })
        .await
        .unwrap();
    let payloads: Vec<_> = page.messages.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [&b"three"[..]]);
    assert!(!page.more);
    assert!(bob.peek().await.is_empty());

    // Sequence numbers are never reused.
    assert_eq!(alice.send(&bob, b"four").await.unwrap(), 4);
}

#[tokio::test]
async fn batch_enqueue_is_all_or_nothing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let item = |to: &common::User, payload: &'static [u8]| proto::EnqueueItem {
        recipient: to.to(),
        payload: Bytes::from_static(payload),
        ttl_secs: 0,
        channel_id: Bytes::new(),
    };
    let seqs = alice
        .client
        .batch_enqueue(proto::BatchEnqueueRequest {
            session_token: alice.token(),
            items: vec![item(&bob, b"b1"), item(&carol, b"c1"), item(&bob, b"b2")],
        })
        .await
        .unwrap()
        .seqs;
    assert_eq!(seqs, [1, 1, 2]);
    // One bad item (an unknown recipient) fails the whole batch: nothing is stored.
    let stranger = qpq_client::IdentityKey::generate();
    let result = alice
        .client
        .batch_enqueue(proto::BatchEnqueueRequest {
            session_token: alice.token(),
            items: vec![
                item(&bob, b"b3"),
                proto::EnqueueItem {
                    recipient: Some(proto::UserRef {
                        target: Some(proto::user_ref::Target::IdentityKey(
                            Bytes::copy_from_slice(&stranger.public()),
                        )),
                    }),
                    payload: Bytes::from_static(b"x"),
                    ttl_secs: 0,
                    channel_id: Bytes::new(),
                },
            ],
        })
        .await;
    assert_eq!(code(result), StatusCode::NotFound);
    assert_eq!(bob.peek().await.len(), 2);
    assert_eq!(carol.peek().await.len(), 1);
}

#[tokio::test]
async fn fetch_wait_wakes_on_an_enqueue_from_another_connection() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let waiter = {
        let client = bob.client.clone();
        let token = bob.token();
        tokio::spawn(async move {
            let started = Instant::now();
            let page = client
                .fetch_wait(proto::FetchWaitRequest {
                    session_token: token,
                    limit: 10,
                    timeout_ms: 20_000,
                    peek: false,
                    after_seq: 0,
                })
                .await
                .unwrap();
            (page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    alice.send(&bob, b"wake up").await.unwrap();
    let (page, waited) = waiter.await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(&page.messages[0].payload[..], b"wake up");
    assert!(
        waited < Duration::from_secs(5),
        "woken, not timed out: {waited:?}"
    );
    assert!(sent_at.elapsed() < Duration::from_secs(2));

    // With nothing to deliver it returns empty at its own timeout.
    let started = Instant::now();
    let page = bob
        .client
        .fetch_wait(proto::FetchWaitRequest {
            session_token: bob.token(),
            limit: 10,
            timeout_ms: 300,
            peek: false,
            after_seq: 0,
        })
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn connected_recipient_gets_push_new_message() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut events = bob.client.events().unwrap();
    // Any authenticated call ties the connection to bob's identity.
    bob.peek().await;
    let seq = alice.send(&bob, b"hello bob").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("push arrives")
        .unwrap()
        .unwrap();
    match event {
        Event::PushNewMessage(message) => {
            assert_eq!(message.seq, seq);
            assert_eq!(message.sender, "alice");
            assert_eq!(&message.payload[..], b"hello bob");
        }
        other => panic!("unexpected event {other:?}"),
    }
    // Alice's own connection got nothing.
    let mut alice_events = alice.client.events().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), alice_events.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn one_user_cannot_read_or_ack_another_users_queue() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let seq = alice.send(&bob, b"for bob only").await.unwrap();
    // Every read names the caller's own queue (from the session), so alice sees nothing.
    assert!(alice.peek().await.is_empty());
    let page = alice
        .client
        .fetch(proto::FetchRequest {
            session_token: alice.token(),
            limit: 0,
        })
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    let acked = alice
        .client
        .ack(proto::AckRequest {
            session_token: alice.token(),
            seqs: vec![seq],
        })
        .await
        .unwrap();
    assert!(acked.removed.is_empty());
    assert_eq!(acked.unknown, [seq]);
    assert_eq!(bob.peek().await.len(), 1);
}

#[tokio::test]
async fn forged_and_expired_tokens_are_unauthorized() {
    let server = TestServer::start_with(|c| c.session_ttl_secs = 1).await;
    let alice = server.user("alice").await;
    for token in [
        Bytes::new(),
        Bytes::from(vec![7u8; 32]),
        Bytes::from_static(b"short"),
    ] {
        let result = alice
            .client
            .peek(proto::PeekRequest {
                session_token: token,
                limit: 1,
                after_seq: 0,
            })
            .await;
        assert_eq!(code(result), StatusCode::Unauthorized);
    }
    assert!(alice.peek().await.is_empty(), "the real token works");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let result = alice
        .client
        .peek(proto::PeekRequest {
            session_token: alice.token(),
            limit: 1,
            after_seq: 0,
        })
        .await;
    assert_eq!(code(result), StatusCode::Unauthorized);
}

#[tokio::test]
async fn delete_account_ends_sessions_and_removes_the_queue() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.send(&bob, b"queued").await.unwrap();

    // A FetchWait of bob's, parked on a second connection, ends at once.
    let other = server.client().await;
    let parked = {
        let token = bob.token();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = other
                .fetch_wait(proto::FetchWaitRequest {
                    session_token: token,
                    limit: 10,
                    timeout_ms: 30_000,
                    peek: true,
                    after_seq: 1,
                })
                .await;
            (result, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.client
        .delete_account(proto::DeleteAccountRequest {
            session_token: bob.token(),
        })
        .await
        .unwrap();
    let (result, waited) = parked.await.unwrap();
    assert!(result.is_err(), "parked FetchWait ended: {result:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    let result = bob
        .client
        .peek(proto::PeekRequest {
            session_token: bob.token(),
            limit: 1,
            after_seq: 0,
        })
        .await;
    assert_eq!(code(result), StatusCode::Unauthorized);
    assert_eq!(code(alice.send(&bob, b"after").await), StatusCode::NotFound);
    let resolved = alice
        .client
        .resolve_user(proto::ResolveUserRequest {
            session_token: alice.token(),
            username: "bob".into(),
        })
        .await
        .unwrap();
    assert!(!resolved.found);
    // The name is free again, and the new bob starts with an empty queue.
    let new_bob = server.user("bob").await;
    assert!(new_bob.peek().await.is_empty());
}

#[tokio::test]
async fn resolve_user_and_identity() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let user = alice
        .client
        .resolve_user(proto::ResolveUserRequest {
            session_token: alice.token(),
            username: "bob".into(),
        })
        .await
        .unwrap();
    assert!(user.found);
    assert_eq!(&user.identity_key[..], &bob.identity.public());
    let identity = alice
        .client
        .resolve_identity(proto::ResolveIdentityRequest {
            session_token: alice.token(),
            identity_key: user.identity_key,
        })
        .await
        .unwrap();
    assert!(identity.found);
    assert_eq!(identity.username, "bob");
    let missing = alice
        .client
        .resolve_user(proto::ResolveUserRequest {
            session_token: alice.token(),
            username: "nobody".into(),
        })
        .await
        .unwrap();
    assert!(!missing.found);
}

#[tokio::test]
async fn users_of_unknown_domains_are_not_found() {
    // Federation itself is tested in federation.rs; without peers, other domains are unknown.
    let server = TestServer::start_with(|c| c.domain = Some("a.example".into())).await;
    let alice = server.user("alice").await;
    let health = alice
        .client
        .federation_health(proto::FederationHealthRequest {
            session_token: alice.token(),
            domain: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.local_domain, "a.example");
    assert!(health.peers.is_empty());
    let result = alice
        .client
        .enqueue(proto::EnqueueRequest {
            session_token: alice.token(),
            recipient: Some(proto::UserRef {
                target: Some(proto::user_ref::Target::Username("bob@b.example".into())),
            }),
            payload: Bytes::from_static(b"hi"),
            ttl_secs: 0,
            channel_id: Bytes::new(),
        })
        .await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::NotFound);
    assert!(
        status.message().contains("not a federation peer"),
        "{}",
        status.message()
    );
}
