//! Devices over real QUIC: registration, listing, revocation ending a device's sessions (its
//! parked FetchWait and its connection with the push stream), push tokens, and the
//! content-free wake-up reaching a local HTTP endpoint.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_client::{IdentityKey, Login, QpqClient};
use qpq_runtime::StatusCode;
use qpq_schema::proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const PASSWORD: &[u8] = b"password of test";

/// A connection logged in as `name` with `device` as its device id.
async fn login(server: &TestServer, name: &str, device: [u8; 16]) -> (QpqClient, Login) {
    let client = server.client().await;
    let session = qpq_client::login(&client, name, PASSWORD, Some(&device))
        .await
        .expect("login");
    (client, session)
}

async fn register(
    client: &QpqClient,
    session: &Login,
    device: [u8; 16],
    name: &str,
) -> Result<proto::RegisterDeviceResponse, qpq_runtime::RpcError> {
    client
        .register_device(proto::RegisterDeviceRequest {
            session_token: session.token.clone(),
            device_id: Bytes::copy_from_slice(&device),
            name: name.into(),
            device_key: Bytes::copy_from_slice(&IdentityKey::generate().public()),
        })
        .await
}

async fn list(client: &QpqClient, token: &Bytes) -> Vec<proto::Device> {
    client
        .list_devices(proto::ListDevicesRequest {
            session_token: token.clone(),
        })
        .await
        .unwrap()
        .devices
}

async fn push_token(
    client: &QpqClient,
    token: &Bytes,
    device: &[u8],
    platform: proto::PushPlatform,
    value: &str,
) -> Result<proto::RegisterPushTokenResponse, qpq_runtime::RpcError> {
    client
        .register_push_token(proto::RegisterPushTokenRequest {
            session_token: token.clone(),
            device_id: Bytes::copy_from_slice(device),
            platform: platform.into(),
            token: value.into(),
        })
        .await
}

#[tokio::test]
async fn register_list_and_bind_a_device_less_session() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let phone = [1u8; 16];
    let key = IdentityKey::generate().public();
    let request = proto::RegisterDeviceRequest {
        session_token: alice.token(),
        device_id: Bytes::copy_from_slice(&phone),
        name: "Alice's phone".into(),
        device_key: Bytes::copy_from_slice(&key),
    };
    let first = alice.client.register_device(request.clone()).await.unwrap();
    assert!(first.created_at_unix_ms > 0);
    // A retry with the same key is harmless; another key for the same id is refused.
    let again = alice.client.register_device(request.clone()).await.unwrap();
    assert_eq!(again.created_at_unix_ms, first.created_at_unix_ms);
    let other_key = proto::RegisterDeviceRequest {
        device_key: Bytes::copy_from_slice(&IdentityKey::generate().public()),
        ..request.clone()
    };
    assert_eq!(
        code(alice.client.register_device(other_key).await),
        StatusCode::Conflict
    );
    // The device-less session that registered it is now bound to it.
    let devices = list(&alice.client, &alice.token()).await;
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(&d.device_id[..], &phone);
    assert_eq!(d.name, "Alice's phone");
    assert_eq!(&d.device_key[..], &key);
    assert!(d.current, "the calling session's device");
    assert!(d.last_seen_unix_ms >= first.created_at_unix_ms);
    assert!(!d.has_push_token);
    // A second device, from a session logged in with its id.
    let laptop = [2u8; 16];
    let (client, session) = login(&server, "alice", laptop).await;
    register(&client, &session, laptop, "laptop").await.unwrap();
    let devices = list(&client, &session.token).await;
    let names: Vec<_> = devices
        .iter()
        .map(|d| (d.name.as_str(), d.current))
        .collect();
    assert_eq!(names, [("Alice's phone", false), ("laptop", true)]);
    // Bob sees only his own (none).
    let bob = server.user("bob").await;
    assert!(list(&bob.client, &bob.token()).await.is_empty());
    // Malformed requests name the problem.
    for bad in [
        proto::RegisterDeviceRequest {
            device_id: Bytes::from_static(b"short"),
            ..request.clone()
        },
        proto::RegisterDeviceRequest {
            name: String::new(),
            ..request.clone()
        },
        proto::RegisterDeviceRequest {
            name: "x".repeat(65),
            ..request.clone()
        },
        proto::RegisterDeviceRequest {
            device_key: Bytes::from_static(&[0u8; 31]),
            ..request.clone()
        },
    ] {
        assert_eq!(
            code(alice.client.register_device(bad).await),
            StatusCode::BadRequest
        );
    }
}

#[tokio::test]
async fn revoke_device_ends_its_sessions_within_a_second_and_others_keep_working() {
    let server = TestServer::start().await;
    let bob = server.user("bob").await;
    server.user("alice").await;
    let (phone, phone_session) = login(&server, "alice", [1u8; 16]).await;
    register(&phone, &phone_session, [1u8; 16], "phone")
        .await
        .unwrap();
    let laptop_id = [2u8; 16];
    let (laptop, laptop_session) = login(&server, "alice", laptop_id).await;
    register(&laptop, &laptop_session, laptop_id, "laptop")
        .await
        .unwrap();
    // A second session of the laptop, on another connection, parks in FetchWait.
    let (parked_client, parked_session) = login(&server, "alice", laptop_id).await;
    let mut laptop_events = laptop.events().unwrap();
    let parked = tokio::spawn(async move {
        let result = parked_client
            .fetch_wait(proto::FetchWaitRequest {
                session_token: parked_session.token.clone(),
                limit: 10,
                timeout_ms: 30_000,
                peek: true,
                after_seq: 0,
            })
            .await;
        (result, Instant::now(), parked_client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let revoked_at = Instant::now();
    let answer = phone
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: phone_session.token.clone(),
            device_id: Bytes::copy_from_slice(&laptop_id),
        })
        .await
        .unwrap();
    assert_eq!(answer.sessions_ended, 2);

    // The parked FetchWait ends within a second.
    let (result, ended_at, parked_client) = tokio::time::timeout(Duration::from_secs(1), parked)
        .await
        .expect("parked FetchWait ended within a second")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    assert!(ended_at.duration_since(revoked_at) < Duration::from_secs(1));
    // Both laptop connections are closed, which ends the push stream.
    for client in [&laptop, &parked_client] {
        let reason = tokio::time::timeout(Duration::from_secs(1), client.connection().closed())
            .await
            .expect("connection closed within a second");
        assert!(reason.contains("device revoked"), "{reason}");
    }
    let next = tokio::time::timeout(Duration::from_secs(1), laptop_events.next())
        .await
        .expect("push stream ended");
    assert!(!matches!(next, Some(Ok(_))), "{next:?}");
    // Its tokens no longer work, from any connection.
    let fresh = server.client().await;
    let peek = fresh
        .peek(proto::PeekRequest {
            session_token: laptop_session.token.clone(),
            limit: 1,
            after_seq: 0,
        })
        .await;
    assert_eq!(code(peek), StatusCode::Unauthorized);

    // The phone keeps working and still receives messages.
    let seq = bob.send_to_name("alice", b"still here").await;
    let page = phone
        .peek(proto::PeekRequest {
            session_token: phone_session.token.clone(),
            limit: 10,
            after_seq: 0,
        })
        .await
        .unwrap();
    assert_eq!(page.messages.last().unwrap().seq, seq);
    let devices = list(&phone, &phone_session.token).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].name, "phone");

    // A revoked id cannot come back, neither by registration nor by login.
    assert_eq!(
        code(register(&phone, &phone_session, laptop_id, "laptop again").await),
        StatusCode::Conflict
    );
    let client = server.client().await;
    let relogin = qpq_client::login(&client, "alice", PASSWORD, Some(&laptop_id)).await;
    assert!(
        relogin.is_err(),
        "login with a revoked device id is refused"
    );
    // Revoking again is a harmless retry; an unknown id is NotFound.
    let again = phone
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: phone_session.token.clone(),
            device_id: Bytes::copy_from_slice(&laptop_id),
        })
        .await
        .unwrap();
    assert_eq!(again.sessions_ended, 0);
    let unknown = phone
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: phone_session.token.clone(),
            device_id: Bytes::copy_from_slice(&[9u8; 16]),
        })
        .await;
    assert_eq!(code(unknown), StatusCode::NotFound);
}

#[tokio::test]
async fn a_device_can_revoke_itself_and_gets_the_answer() {
    let server = TestServer::start().await;
    server.user("alice").await;
    let id = [5u8; 16];
    let (client, session) = login(&server, "alice", id).await;
    register(&client, &session, id, "old phone").await.unwrap();
    let answer = client
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: session.token.clone(),
            device_id: Bytes::copy_from_slice(&id),
        })
        .await
        .unwrap();
    assert_eq!(answer.sessions_ended, 1);
    // Its connection closes shortly after the answer.
    let reason = tokio::time::timeout(Duration::from_secs(1), client.connection().closed())
        .await
        .expect("connection closed within a second");
    assert!(reason.contains("device revoked"), "{reason}");
    let client = server.client().await;
    let after = client
        .list_devices(proto::ListDevicesRequest {
            session_token: session.token.clone(),
        })
        .await;
    assert_eq!(code(after), StatusCode::Unauthorized);
}

/// An HTTP server that records every request it gets and answers 201.
async fn push_endpoint() -> (String, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (base, requests) = push_server().await;
    (format!("{base}/up/device-token-1"), requests)
}

/// [`push_endpoint`]'s server, as its base URL (any path is accepted).
async fn push_server() -> (String, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as many body bytes as Content-Length says.
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if complete(&request) {
                        break;
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = tx.send(request);
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn an_offline_device_gets_a_content_free_wake_up_over_http() {
    let server = TestServer::start_with(|c| c.push_allow_private_endpoints = true).await;
    let (url, mut requests) = push_endpoint().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let device = [7u8; 16];
    let (bob, session) = login(&server, "bob", device).await;
    register(&bob, &session, device, "bob's phone")
        .await
        .unwrap();
    push_token(
        &bob,
        &session.token,
        &[],
        proto::PushPlatform::UnifiedPush,
        &url,
    )
    .await
    .unwrap();
    let devices = list(&bob, &session.token).await;
    assert!(devices[0].has_push_token);
    assert_eq!(
        devices[0].push_platform,
        i32::from(proto::PushPlatform::UnifiedPush)
    );

    // While bob is connected, the message is pushed on his connection; no wake-up.
    alice.send_to_name("bob", b"first secret text").await;
    let none = tokio::time::timeout(Duration::from_millis(500), requests.recv()).await;
    assert!(none.is_err(), "no wake-up while a device is connected");

    // Bob goes offline; the next message wakes his device.
    bob.connection().close();
    bob.connection().closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.send_to_name("bob", b"second secret text").await;
    let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .expect("wake-up arrives")
        .unwrap();
    let text = String::from_utf8_lossy(&request);
    assert!(
        text.starts_with("POST /up/device-token-1 HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nTTL: "), "{text}");
    let body = &request[request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body, b"qpq:wake");
    // Nothing about the message: no payload, no sender, no identity key.
    for secret in [
        &b"secret"[..],
        b"alice",
        &alice.identity.public()[..8],
        b"second",
    ] {
        assert!(
            !request.windows(secret.len()).any(|w| w == secret),
            "wake-up leaks {:?}: {text}",
            String::from_utf8_lossy(secret)
        );
    }
}

/// Messages to many offline accounts in quick succession: each account's device is woken
/// once, at its own endpoint (the worker reads the push tokens of waiting wake-ups together,
/// and must not mix them up).
#[tokio::test]
async fn a_burst_to_many_offline_accounts_wakes_each_device() {
    let server = TestServer::start_with(|c| c.push_allow_private_endpoints = true).await;
    let (base, mut requests) = push_server().await;
    let alice = server.user("alice").await;
    const USERS: usize = 12;
    for i in 0..USERS {
        let name = format!("user{i}");
        server.user(&name).await;
        let device = [i as u8 + 1; 16];
        let (client, session) = login(&server, &name, device).await;
        register(&client, &session, device, "phone").await.unwrap();
        let url = format!("{base}/up/{name}");
        push_token(
            &client,
            &session.token,
            &[],
            proto::PushPlatform::UnifiedPush,
            &url,
        )
        .await
        .unwrap();
        client.connection().close();
        client.connection().closed().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..USERS {
        alice.send_to_name(&format!("user{i}"), b"hello").await;
    }
    let mut woken = std::collections::BTreeMap::new();
    while woken.len() < USERS {
        let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .unwrap_or_else(|_| panic!("wake-ups of {woken:?} only"))
            .unwrap();
        let text = String::from_utf8_lossy(&request);
        let path = text.split(' ').nth(1).unwrap_or_default().to_string();
        *woken.entry(path).or_insert(0) += 1;
    }
    let expected: std::collections::BTreeMap<String, i32> =
        (0..USERS).map(|i| (format!("/up/user{i}"), 1)).collect();
    assert_eq!(woken, expected);
}

/// An HTTPS server (certificate for `localhost` from a test CA) that records requests; returns
/// its URL, the CA's PEM and the recorded requests.
fn tls_push_endpoint() -> (String, String, mpsc::UnboundedReceiver<Vec<u8>>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::PrivateKeyDer;
    use std::io::{Read, Write};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}/up/tls-token",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(connection, socket);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                if complete(&request) {
                    break;
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
            stream.conn.send_close_notify();
            let _ = stream.flush();
            let _ = tx.send(request);
        }
    });
    (url, ca_pem, rx)
}

/// Whether `request` holds a whole HTTP request (head and Content-Length body).
fn complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + len
}

#[tokio::test]
async fn the_wake_up_also_reaches_an_https_endpoint() {
    let (url, ca_pem, mut requests) = tls_push_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("push-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let server = TestServer::start_with(|c| {
        c.push_allow_private_endpoints = true;
        c.push_ca_file = Some(ca_file.clone());
    })
    .await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let device = [8u8; 16];
    let (bob, session) = login(&server, "bob", device).await;
    register(&bob, &session, device, "bob's laptop")
        .await
        .unwrap();
    push_token(
        &bob,
        &session.token,
        &device,
        proto::PushPlatform::UnifiedPush,
        &url,
    )
    .await
    .unwrap();
    bob.connection().close();
    bob.connection().closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.send_to_name("bob", b"over tls").await;
    let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .expect("wake-up arrives over TLS")
        .unwrap();
    let text = String::from_utf8_lossy(&request);
    assert!(
        text.starts_with("POST /up/tls-token HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(request.ends_with(b"\r\n\r\nqpq:wake"), "{text}");
    assert!(!text.contains("over tls"));
}

#[tokio::test]
async fn push_tokens_are_checked_and_can_be_removed() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let device = [3u8; 16];
    // A device-less session must name the device, and it must be registered.
    let none = push_token(
        &alice.client,
        &alice.token(),
        &[],
        proto::PushPlatform::Fcm,
        "token",
    )
    .await;
    assert!(
        none.unwrap_err()
            .status()
            .unwrap()
            .message()
            .contains("not bound to a device")
    );
    let unregistered = push_token(
        &alice.client,
        &alice.token(),
        &device,
        proto::PushPlatform::Fcm,
        "token",
    )
    .await;
    assert_eq!(code(unregistered), StatusCode::NotFound);
    register(&alice.client, &alice.session, device, "tablet")
        .await
        .unwrap();
    let cases: [(proto::PushPlatform, &str, &str); 5] = [
        (proto::PushPlatform::Unspecified, "x", "platform"),
        (proto::PushPlatform::UnifiedPush, "https://", "no host"),
        (
            proto::PushPlatform::WebPush,
            "http://127.0.0.1:9/x",
            "private",
        ),
        (proto::PushPlatform::UnifiedPush, "ftp://x", "http://"),
        (proto::PushPlatform::Apns, "not hex", "hex"),
    ];
    for (platform, value, expect) in cases {
        let result = push_token(&alice.client, &alice.token(), &device, platform, value).await;
        let status = result.unwrap_err().status().cloned().unwrap();
        assert_eq!(status.code(), StatusCode::BadRequest, "{value}");
        assert!(status.message().contains(expect), "{}", status.message());
    }
    let long = "a".repeat(4097);
    assert_eq!(
        code(
            push_token(
                &alice.client,
                &alice.token(),
                &device,
                proto::PushPlatform::Fcm,
                &long
            )
            .await
        ),
        StatusCode::BadRequest
    );
    // APNs tokens are stored (delivery to Apple needs credentials this server lacks).
    push_token(
        &alice.client,
        &alice.token(),
        &device,
        proto::PushPlatform::Apns,
        &"ab".repeat(32),
    )
    .await
    .unwrap();
    let devices = list(&alice.client, &alice.token()).await;
    assert_eq!(
        devices[0].push_platform,
        i32::from(proto::PushPlatform::Apns)
    );
    // An empty token removes it.
    push_token(
        &alice.client,
        &alice.token(),
        &device,
        proto::PushPlatform::Unspecified,
        "",
    )
    .await
    .unwrap();
    let devices = list(&alice.client, &alice.token()).await;
    assert!(!devices[0].has_push_token);
}

/// Sends to a user by name.
trait SendTo {
    async fn send_to_name(&self, name: &str, payload: &[u8]) -> u64;
}

impl SendTo for User {
    async fn send_to_name(&self, name: &str, payload: &[u8]) -> u64 {
        self.client
            .enqueue(proto::EnqueueRequest {
                session_token: self.token(),
                recipient: Some(proto::UserRef {
                    target: Some(proto::user_ref::Target::Username(name.into())),
                }),
                payload: Bytes::copy_from_slice(payload),
                ttl_secs: 0,
                channel_id: Bytes::new(),
            })
            .await
            .unwrap()
            .seq
    }
}
