//! Federation over real QUIC: two servers on loopback with separate data directories, each
//! pinning the other's certificate fingerprint. Their certificates are generated into the
//! data directories and their ports chosen before either starts, so each can be configured
//! with the other's address and fingerprint.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_client::keys::{sign_hybrid_key, verify_hybrid_key};
use qpq_runtime::{ClientOptions, StatusCode, TlsIdentity};
use qpq_schema::{Event, QpqClient, proto};
use qpq_server::{Config, PeerConfig};
use rand::RngCore;

/// One server of the federation: its domain, data directory, port and certificate, and the
/// running server when started.
struct Node {
    domain: String,
    port: u16,
    identity: TlsIdentity,
    server: TestServer,
}

/// Two different free ports below the kernel's ephemeral range (32768 and up on Linux), so
/// no socket bound to port 0 meanwhile (every QUIC client binds one) can take a port while
/// its server is stopped for a restart.
fn free_ports() -> [u16; 2] {
    let mut rng = rand::thread_rng();
    let mut held = Vec::new();
    while held.len() < 2 {
        let port = 20_000 + (rng.next_u32() % 12_000) as u16;
        if let Ok(socket) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            held.push(socket);
        }
    }
    [0, 1].map(|i| held[i].local_addr().unwrap().port())
}

impl Node {
    fn prepare(domain: &str, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let identity = TlsIdentity::generate(&["localhost"]).unwrap();
        identity
            .save(
                &dir.path().join("server-cert.der"),
                &dir.path().join("server-key.der"),
            )
            .unwrap();
        Self {
            domain: domain.to_owned(),
            port,
            identity,
            server: TestServer {
                server: None,
                dir,
                store: common::test_store(),
            },
        }
    }

    fn as_peer(&self) -> PeerConfig {
        PeerConfig {
            domain: self.domain.clone(),
            address: format!("127.0.0.1:{}", self.port),
            cert_sha256: self.identity.cert_sha256(),
        }
    }

    async fn start(&mut self, peers: &[PeerConfig]) {
        let listen = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let mut config = Config::for_data_dir(listen, self.server.dir.path());
        config.store = self.server.store.clone();
        config.domain = Some(self.domain.clone());
        config.peers = peers.to_vec();
        // After an in-process shutdown the old endpoint holds the port until its closed
        // connections have drained; a restart on the same address waits for that.
        let deadline = Instant::now() + Duration::from_secs(20);
        let running = loop {
            match qpq_server::start(config.clone()).await {
                Ok(running) => break running,
                Err(error)
                    if Instant::now() < deadline
                        && format!("{error:#}").contains("Address already in use") =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("server starts: {error:#}"),
            }
        };
        assert_eq!(running.identity.cert_sha256(), self.identity.cert_sha256());
        self.server.server = Some(running);
    }

    async fn stop(&mut self) {
        self.server.server.take().unwrap().shutdown().await;
    }

    async fn user(&self, name: &str) -> User {
        self.server.user(name).await
    }

    /// Logs `user` in again on a new connection (after a restart).
    async fn relogin(&self, user: User) -> User {
        let client = self.server.client().await;
        let session = qpq_client::login(&client, &user.name, b"password of test", None)
            .await
            .unwrap();
        User {
            client,
            session,
            ..user
        }
    }

    /// A client of this server presenting `identity` as its certificate (what a peer does).
    async fn client_as(&self, identity: Option<&TlsIdentity>) -> QpqClient {
        let mut options = ClientOptions::pinned(self.identity.cert.clone());
        if let Some(identity) = identity {
            options = options.with_identity(identity.clone());
        }
        let connection = qpq_runtime::connect(self.server.addr(), &options)
            .await
            .unwrap();
        QpqClient::new(connection)
    }
}

/// Servers `a.example` and `b.example`, each a peer of the other, both running.
async fn pair() -> (Node, Node) {
    let [port_a, port_b] = free_ports();
    let mut a = Node::prepare("a.example", port_a);
    let mut b = Node::prepare("b.example", port_b);
    a.start(&[b.as_peer()]).await;
    b.start(&[a.as_peer()]).await;
    (a, b)
}

fn to(address: &str) -> Option<proto::UserRef> {
    Some(proto::UserRef {
        target: Some(proto::user_ref::Target::Username(address.into())),
    })
}

async fn send(from: &User, address: &str, payload: &[u8]) -> proto::EnqueueResponse {
    from.client
        .enqueue(proto::EnqueueRequest {
            session_token: from.token(),
            recipient: to(address),
            payload: Bytes::copy_from_slice(payload),
            ttl_secs: 0,
            channel_id: Bytes::new(),
        })
        .await
        .unwrap()
}

async fn health(user: &User) -> proto::FederationHealthResponse {
    user.client
        .federation_health(proto::FederationHealthRequest {
            session_token: user.token(),
            domain: String::new(),
        })
        .await
        .unwrap()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn payloads(messages: &[proto::QueuedMessage]) -> Vec<&[u8]> {
    messages.iter().map(|m| &m.payload[..]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_at_a_sends_to_bob_at_b_who_gets_the_push_and_fetches_it() {
    let (a, b) = pair().await;
    let alice = a.user("alice").await;
    let carol = a.user("carol").await;
    let bob = b.user("bob").await;
    let mut events = bob.client.events().unwrap();
    // Any authenticated call ties bob's connection to his identity.
    assert!(bob.peek().await.is_empty());

    let sent = send(&alice, "bob@b.example", b"hello from a").await;
    assert_eq!((sent.seq, sent.relayed), (0, true));

    let event = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("the push reaches bob")
        .unwrap()
        .unwrap();
    let Event::PushNewMessage(pushed) = event else {
        panic!("unexpected event {event:?}");
    };
    assert_eq!(pushed.sender, "alice@a.example");
    assert_eq!(&pushed.payload[..], b"hello from a");
    assert_eq!(&pushed.sender_identity_key[..], &alice.identity.public());

    let page = bob
        .client
        .fetch(proto::FetchRequest {
            session_token: bob.token(),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    let message = &page.messages[0];
    assert_eq!(message.seq, pushed.seq);
    assert_eq!(message.sender, "alice@a.example");
    assert_eq!(&message.sender_identity_key[..], &alice.identity.public());
    assert_eq!(&message.payload[..], b"hello from a");
    assert!(message.expires_at_unix_ms > message.enqueued_at_unix_ms);

    // A batch mixing a local and a remote recipient: the local seq, 0 for the relayed one.
    let batch = alice
        .client
        .batch_enqueue(proto::BatchEnqueueRequest {
            session_token: alice.token(),
            items: vec![
                proto::EnqueueItem {
                    recipient: to("carol"),
                    payload: Bytes::from_static(b"local"),
                    ..Default::default()
                },
                proto::EnqueueItem {
                    recipient: to("bob@b.example"),
                    payload: Bytes::from_static(b"remote"),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(batch.seqs, [1, 0]);
    assert_eq!(payloads(&carol.peek().await), [b"local"]);
    let relayed = eventually(Duration::from_secs(20), "the batch relay", || async {
        let queued = bob.peek().await;
        (!queued.is_empty()).then_some(queued)
    })
    .await;
    assert_eq!(payloads(&relayed), [b"remote"]);
    assert_eq!(relayed[0].sender, "alice@a.example");

    // Bob answers from b: the relay works both ways.
    let back = send(&bob, "alice@a.example", b"hi alice").await;
    assert!(back.relayed);
    let got = eventually(Duration::from_secs(20), "bob's answer", || async {
        let queued = alice.peek().await;
        (!queued.is_empty()).then_some(queued)
    })
    .await;
    assert_eq!(payloads(&got), [b"hi alice"]);
    assert_eq!(got[0].sender, "bob@b.example");

    // Each side sees the other reachable with nothing waiting.
    let view = eventually(Duration::from_secs(20), "a's peer health", || async {
        let view = health(&alice).await;
        (view.peers.len() == 1 && view.peers[0].latency_ms > 0 && view.peers[0].outbox_depth == 0)
            .then_some(view)
    })
    .await;
    assert_eq!(view.local_domain, "a.example");
    let peer = &view.peers[0];
    assert_eq!(peer.domain, "b.example");
    assert!(peer.reachable, "{peer:?}");
    assert!(peer.last_error.is_empty(), "{peer:?}");
    assert!(peer.last_success_unix_ms > 0);
    let unknown = alice
        .client
        .federation_health(proto::FederationHealthRequest {
            session_token: alice.token(),
            domain: "c.example".into(),
        })
        .await;
    assert_eq!(code(unknown), StatusCode::NotFound);

    // Addresses on unknown domains and local-only methods are refused with a reason.
    let result = alice
        .client
        .enqueue(proto::EnqueueRequest {
            session_token: alice.token(),
            recipient: to("dave@c.example"),
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        })
        .await;
    assert_eq!(code(result), StatusCode::NotFound);
    let result = alice
        .client
        .batch_enqueue(proto::BatchEnqueueRequest {
            session_token: alice.token(),
            items: vec![proto::EnqueueItem {
                recipient: to("Not A Name@b.example"),
                payload: Bytes::from_static(b"x"),
                ..Default::default()
            }],
        })
        .await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::BadRequest);
    assert!(
        status.message().starts_with("item 0: username"),
        "{status:?}"
    );
    let result = alice
        .client
        .resolve_user(proto::ResolveUserRequest {
            session_token: alice.token(),
            username: "bob@b.example".into(),
        })
        .await;
    assert_eq!(code(result), StatusCode::BadRequest);
}

/// An ML-KEM-768 encapsulation key that passes the modulus check.
fn mlkem_key() -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let mut key = Vec::with_capacity(1184);
    for _ in 0..384 {
        let a = (rng.next_u32() % 3329) as u16;
        let b = (rng.next_u32() % 3329) as u16;
        key.push((a & 0xff) as u8);
        key.push(((a >> 8) | ((b & 0x0f) << 4)) as u8);
        key.push((b >> 4) as u8);
    }
    key.extend_from_slice(&[7; 32]);
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_fetches_bobs_keys_and_resolves_him_through_her_server() {
    let (a, b) = pair().await;
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    for (package, last_resort) in [(&b"kp-1"[..], false), (b"kp-2", false), (b"kp-last", true)] {
        bob.client
            .upload_key_package(proto::UploadKeyPackageRequest {
                session_token: bob.token(),
                key_package: Bytes::copy_from_slice(package),
                last_resort,
            })
            .await
            .unwrap();
    }
    let hybrid = sign_hybrid_key(&bob.identity, &[5; 32], &mlkem_key(), 1_000);
    bob.client
        .upload_hybrid_key(proto::UploadHybridKeyRequest {
            session_token: bob.token(),
            key: Some(hybrid.clone()),
        })
        .await
        .unwrap();

    let resolved = alice
        .client
        .proxy_resolve_user(proto::ProxyResolveUserRequest {
            session_token: alice.token(),
            target: "bob@b.example".into(),
        })
        .await
        .unwrap();
    assert!(resolved.found);
    assert_eq!(&resolved.identity_key[..], &bob.identity.public());
    let missing = alice
        .client
        .proxy_resolve_user(proto::ProxyResolveUserRequest {
            session_token: alice.token(),
            target: "nobody@b.example".into(),
        })
        .await
        .unwrap();
    assert!(!missing.found && missing.identity_key.is_empty());
    // Her own domain is answered locally.
    let herself = alice
        .client
        .proxy_resolve_user(proto::ProxyResolveUserRequest {
            session_token: alice.token(),
            target: "alice@a.example".into(),
        })
        .await
        .unwrap();
    assert_eq!(&herself.identity_key[..], &alice.identity.public());
    let unknown = alice
        .client
        .proxy_resolve_user(proto::ProxyResolveUserRequest {
            session_token: alice.token(),
            target: "bob@c.example".into(),
        })
        .await;
    assert_eq!(code(unknown), StatusCode::NotFound);

    // KeyPackages are popped on b, oldest first, then the last resort, which stays.
    let mut fetched = Vec::new();
    for _ in 0..4 {
        let answer = alice
            .client
            .proxy_fetch_key_package(proto::ProxyFetchKeyPackageRequest {
                session_token: alice.token(),
                target: "bob@b.example".into(),
            })
            .await
            .unwrap();
        assert_eq!(&answer.identity_key[..], &bob.identity.public());
        fetched.push((answer.key_package.to_vec(), answer.last_resort));
    }
    assert_eq!(
        fetched,
        [
            (b"kp-1".to_vec(), false),
            (b"kp-2".to_vec(), false),
            (b"kp-last".to_vec(), true),
            (b"kp-last".to_vec(), true)
        ]
    );
    let depth = bob
        .client
        .upload_key_package(proto::UploadKeyPackageRequest {
            session_token: bob.token(),
            key_package: Bytes::from_static(b"kp-3"),
            last_resort: false,
        })
        .await
        .unwrap();
    assert_eq!(
        depth.queue_depth, 1,
        "the proxied fetches consumed b's queue"
    );

    let key = alice
        .client
        .proxy_fetch_hybrid_key(proto::ProxyFetchHybridKeyRequest {
            session_token: alice.token(),
            target: "bob@b.example".into(),
        })
        .await
        .unwrap();
    assert!(key.found);
    assert_eq!(&key.identity_key[..], &bob.identity.public());
    let key = key.key.unwrap();
    assert_eq!(key, hybrid);
    assert!(verify_hybrid_key(&bob.identity.public(), &key));
    let none = alice
        .client
        .proxy_fetch_hybrid_key(proto::ProxyFetchHybridKeyRequest {
            session_token: alice.token(),
            target: "nobody@b.example".into(),
        })
        .await
        .unwrap();
    assert!(!none.found && none.key.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_in_the_outbox_while_b_is_down_and_arrive_once_when_it_returns() {
    let (a, mut b) = pair().await;
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    eventually(Duration::from_secs(20), "b seen up", || async {
        health(&alice).await.peers[0].reachable.then_some(())
    })
    .await;
    b.stop().await;

    for i in 0..3 {
        let sent = send(
            &alice,
            "bob@b.example",
            format!("while down {i}").as_bytes(),
        )
        .await;
        assert_eq!((sent.seq, sent.relayed), (0, true));
    }
    let view = eventually(Duration::from_secs(30), "b seen down", || async {
        let view = health(&alice).await;
        (!view.peers[0].reachable).then_some(view)
    })
    .await;
    let peer = &view.peers[0];
    assert_eq!(peer.outbox_depth, 3);
    assert!(!peer.last_error.is_empty());

    // b comes back on the same address with the same data; a's worker finds it on its own.
    b.start(&[a.as_peer()]).await;
    let bob = b.relogin(bob).await;
    let queued = eventually(Duration::from_secs(60), "the outbox to drain", || async {
        let queued = bob.peek().await;
        (queued.len() >= 3).then_some(queued)
    })
    .await;
    assert_eq!(
        payloads(&queued),
        [&b"while down 0"[..], b"while down 1", b"while down 2"]
    );
    let seqs: Vec<u64> = queued.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    eventually(Duration::from_secs(20), "an empty outbox", || async {
        let view = health(&alice).await;
        (view.peers[0].outbox_depth == 0 && view.peers[0].reachable).then_some(())
    })
    .await;
    // Nothing arrives twice, and later messages follow the same way.
    send(&alice, "bob@b.example", b"after").await;
    let queued = eventually(Duration::from_secs(20), "the next message", || async {
        let queued = bob.peek().await;
        (queued.len() >= 4).then_some(queued)
    })
    .await;
    assert_eq!(queued.len(), 4);
    assert_eq!(&queued[3].payload[..], b"after");

    // The outbox survives a restart of a itself.
    b.stop().await;
    send(&alice, "bob@b.example", b"across a restart of a").await;
    let mut a = a;
    a.stop().await;
    a.start(&[b.as_peer()]).await;
    b.start(&[a.as_peer()]).await;
    let bob = b.relogin(bob).await;
    let queued = eventually(Duration::from_secs(60), "the resumed outbox", || async {
        let queued = bob.peek().await;
        (queued.len() >= 5).then_some(queued)
    })
    .await;
    assert_eq!(queued.len(), 5);
    assert_eq!(&queued[4].payload[..], b"across a restart of a");
}

fn relayed(
    relay_id: u8,
    sender: &str,
    sender_key: &[u8],
    recipient: &str,
) -> proto::RelayedMessage {
    proto::RelayedMessage {
        relay_id: Bytes::from(vec![relay_id; 16]),
        sender: sender.into(),
        sender_identity_key: Bytes::copy_from_slice(sender_key),
        recipient: to(recipient),
        payload: Bytes::from(format!("relay {relay_id}")),
        ttl_secs: 3600,
        enqueued_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        channel_id: Bytes::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_foreign_senders_and_replays_are_refused_and_store_nothing() {
    // Only b runs; the tests call it as a would, with a's certificate.
    let [port_a, port_b] = free_ports();
    let a = Node::prepare("a.example", port_a);
    let mut b = Node::prepare("b.example", port_b);
    b.start(&[a.as_peer()]).await;
    let bob = b.user("bob").await;
    let alice_key = qpq_client::IdentityKey::generate().public();
    let good = || relayed(1, "alice@a.example", &alice_key, "bob@b.example");

    // No certificate: Unauthorized. A certificate b does not pin: Forbidden.
    let anonymous = b.client_as(None).await;
    let result = anonymous
        .relay_enqueue(proto::RelayEnqueueRequest {
            message: Some(good()),
        })
        .await;
    assert_eq!(code(result), StatusCode::Unauthorized);
    let stranger = TlsIdentity::generate(&["localhost"]).unwrap();
    let stranger = b.client_as(Some(&stranger)).await;
    let result = stranger
        .relay_enqueue(proto::RelayEnqueueRequest {
            message: Some(good()),
        })
        .await;
    assert_eq!(code(result), StatusCode::Forbidden);
    let result = stranger
        .peer_resolve_user(proto::PeerResolveUserRequest {
            target: "bob".into(),
            requester: "mallory@a.example".into(),
        })
        .await;
    assert_eq!(code(result), StatusCode::Forbidden);
    assert!(bob.peek().await.is_empty());

    // The pinned peer a, relaying for another domain: Forbidden, for a whole batch too.
    let peer_a = b.client_as(Some(&a.identity)).await;
    let result = peer_a
        .relay_enqueue(proto::RelayEnqueueRequest {
            message: Some(relayed(2, "mallory@c.example", &alice_key, "bob@b.example")),
        })
        .await;
    assert_eq!(code(result), StatusCode::Forbidden);
    let result = peer_a
        .relay_batch_enqueue(proto::RelayBatchEnqueueRequest {
            messages: vec![
                relayed(3, "alice@a.example", &alice_key, "bob@b.example"),
                relayed(4, "mallory@b.example", &alice_key, "bob@b.example"),
            ],
        })
        .await;
    assert_eq!(code(result), StatusCode::Forbidden);
    let result = peer_a
        .peer_fetch_key_package(proto::PeerFetchKeyPackageRequest {
            target: "bob".into(),
            requester: "mallory@c.example".into(),
        })
        .await;
    assert_eq!(code(result), StatusCode::Forbidden);
    assert!(bob.peek().await.is_empty(), "nothing was stored");

    // A good relay is stored once; its replay is a duplicate and stores nothing.
    let first = peer_a
        .relay_enqueue(proto::RelayEnqueueRequest {
            message: Some(good()),
        })
        .await
        .unwrap();
    assert!(!first.duplicate);
    let replay = peer_a
        .relay_enqueue(proto::RelayEnqueueRequest {
            message: Some(good()),
        })
        .await
        .unwrap();
    assert!(replay.duplicate);
    assert_eq!(replay.seq, first.seq);
    let batch = peer_a
        .relay_batch_enqueue(proto::RelayBatchEnqueueRequest {
            messages: vec![
                good(),
                relayed(5, "alice@a.example", &alice_key, "bob@b.example"),
                relayed(6, "alice@a.example", &alice_key, "nobody@b.example"),
                relayed(7, "alice@a.example", &alice_key, "bob@c.example"),
                proto::RelayedMessage {
                    enqueued_at_unix_ms: 1_000,
                    ..relayed(8, "alice@a.example", &alice_key, "bob")
                },
                proto::RelayedMessage {
                    relay_id: Bytes::from_static(b"short"),
                    ..relayed(9, "alice@a.example", &alice_key, "bob")
                },
            ],
        })
        .await
        .unwrap();
    let outcomes: Vec<_> = batch
        .results
        .iter()
        .map(|r| proto::RelayOutcome::try_from(r.outcome).unwrap())
        .collect();
    use proto::RelayOutcome::{Duplicate, Rejected, Stored};
    assert_eq!(
        outcomes,
        [Duplicate, Stored, Rejected, Rejected, Rejected, Rejected]
    );
    assert_eq!(batch.results[0].seq, first.seq);
    assert_eq!(batch.results[0].relay_id, good().relay_id);
    assert!(
        batch.results[2..].iter().all(|r| !r.error.is_empty()),
        "{batch:?}"
    );
    let queued = bob.peek().await;
    assert_eq!(payloads(&queued), [&b"relay 1"[..], b"relay 5"]);
    assert_eq!(queued[0].sender, "alice@a.example");
    // Replaying the stored batch item once more still stores nothing.
    let again = peer_a
        .relay_batch_enqueue(proto::RelayBatchEnqueueRequest {
            messages: vec![relayed(5, "alice@a.example", &alice_key, "bob@b.example")],
        })
        .await
        .unwrap();
    assert_eq!(again.results[0].outcome, Duplicate as i32);
    assert_eq!(bob.peek().await.len(), 2);

    // The peer-facing lookups answer the pinned peer.
    let resolved = peer_a
        .peer_resolve_user(proto::PeerResolveUserRequest {
            target: "bob@b.example".into(),
            requester: "alice@a.example".into(),
        })
        .await
        .unwrap();
    assert_eq!(&resolved.identity_key[..], &bob.identity.public());
    let result = peer_a
        .peer_resolve_user(proto::PeerResolveUserRequest {
            target: "bob@a.example".into(),
            requester: "alice@a.example".into(),
        })
        .await;
    assert_eq!(code(result), StatusCode::BadRequest);
}
