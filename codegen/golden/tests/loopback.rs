//! The runtime over real loopback QUIC, driven through the generated `Demo` API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use qpq_golden::proto::{
    EchoReply, EchoRequest, Empty, PushTicksRequest, RelayRequest, ResetRequest, SleepReply,
    SleepRequest, TickEvent, WhoamiReply, WhoamiRequest,
};
use qpq_golden::{BasicService, DemoClient, DemoPush, DemoServer, Event, MethodId, SecureService};
use qpq_runtime::wire::{self, RequestHeader};
use qpq_runtime::{
    Admin, Anonymous, Authenticator, CallInfo, ClientOptions, ConnectError, Ctx, FederationPeer,
    RpcError, Server, ServerHandle, ServerOptions, Session, Status, StatusCode, TlsIdentity,
};

#[derive(Default)]
struct Counters {
    sleeps_started: AtomicUsize,
    sleeps_finished: AtomicUsize,
    sleeps_dropped: AtomicUsize,
    secure_calls: AtomicUsize,
}

struct Demo {
    counters: Arc<Counters>,
}

/// Counts a sleep that was dropped before it finished (i.e. cancelled).
struct DropGuard {
    counters: Arc<Counters>,
    finished: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.counters.sleeps_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl BasicService for Demo {
    async fn echo(&self, _ctx: Ctx<Anonymous>, request: EchoRequest) -> Result<EchoReply, Status> {
        Ok(EchoReply {
            text: request.text,
            data: request.data,
        })
    }

    async fn sleep(
        &self,
        _ctx: Ctx<Anonymous>,
        request: SleepRequest,
    ) -> Result<SleepReply, Status> {
        self.counters.sleeps_started.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropGuard {
            counters: self.counters.clone(),
            finished: false,
        };
        tokio::time::sleep(Duration::from_millis(request.millis.into())).await;
        guard.finished = true;
        self.counters.sleeps_finished.fetch_add(1, Ordering::SeqCst);
        Ok(SleepReply {
            slept_millis: request.millis,
        })
    }

    async fn panic(&self, _ctx: Ctx<Anonymous>, _request: Empty) -> Result<Empty, Status> {
        panic!("secret panic text that must not reach the wire");
    }

    async fn push_ticks(
        &self,
        ctx: Ctx<Anonymous>,
        request: PushTicksRequest,
    ) -> Result<Empty, Status> {
        for n in 0..request.count {
            ctx.push()
                .tick(&TickEvent { n })
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Empty {})
    }
}

impl SecureService for Demo {
    async fn whoami(
        &self,
        ctx: Ctx<Session>,
        _request: WhoamiRequest,
    ) -> Result<WhoamiReply, Status> {
        self.counters.secure_calls.fetch_add(1, Ordering::SeqCst);
        Ok(WhoamiReply {
            username: ctx.auth().username.clone(),
        })
    }

    async fn reset(&self, _ctx: Ctx<Admin>, _request: ResetRequest) -> Result<Empty, Status> {
        self.counters.secure_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Empty {})
    }

    async fn relay(
        &self,
        ctx: Ctx<FederationPeer>,
        _request: RelayRequest,
    ) -> Result<Empty, Status> {
        assert_eq!(ctx.auth().domain, "peer.example");
        self.counters.secure_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Empty {})
    }
}

/// Tokens: `alice` is a session, `root` an admin session; one pinned peer certificate.
struct TestAuth {
    peer_cert: [u8; 32],
}

fn session(username: &str) -> Session {
    Session {
        username: username.to_owned(),
        identity_key: Bytes::from_static(&[7; 32]),
        device_id: None,
        session_id: [1; 32],
        login_at: SystemTime::now(),
        expires_at: SystemTime::now() + Duration::from_secs(60),
    }
}

impl Authenticator for TestAuth {
    async fn session(&self, _call: &CallInfo, token: &[u8]) -> Result<Session, Status> {
        match token {
            b"alice" => Ok(session("alice")),
            b"root" => Ok(session("root")),
            _ => Err(Status::unauthorized("invalid or expired session token")),
        }
    }

    async fn admin(&self, call: &CallInfo, token: &[u8]) -> Result<Admin, Status> {
        let session = self.session(call, token).await?;
        if session.username == "root" {
            Ok(Admin { session })
        } else {
            Err(Status::forbidden("administrators only"))
        }
    }

    async fn federation_peer(&self, call: &CallInfo) -> Result<FederationPeer, Status> {
        match call.connection().peer_certificate_sha256() {
            Some(sha) if sha == self.peer_cert => Ok(FederationPeer {
                domain: "peer.example".into(),
                certificate_sha256: sha,
            }),
            Some(_) => Err(Status::forbidden(
                "certificate is not a pinned federation peer",
            )),
            None => Err(Status::unauthorized(
                "federation methods need a peer certificate",
            )),
        }
    }
}

struct Fixture {
    addr: SocketAddr,
    cert: TlsIdentity,
    peer: TlsIdentity,
    counters: Arc<Counters>,
    handle: ServerHandle,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn start() -> Fixture {
    let cert = TlsIdentity::generate(&["localhost"]).unwrap();
    let peer = TlsIdentity::generate(&["peer.example"]).unwrap();
    let counters = Arc::new(Counters::default());
    let dispatch = DemoServer::new(
        Arc::new(Demo {
            counters: counters.clone(),
        }),
        Arc::new(TestAuth {
            peer_cert: peer.cert_sha256(),
        }),
    )
    .into_dispatch();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &cert,
        dispatch,
        ServerOptions::default(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve());
    Fixture {
        addr,
        cert,
        peer,
        counters,
        handle,
    }
}

impl Fixture {
    fn options(&self) -> ClientOptions {
        ClientOptions::pinned(self.cert.cert.clone())
    }

    async fn client(&self) -> DemoClient {
        DemoClient::new(
            qpq_runtime::connect(self.addr, &self.options())
                .await
                .unwrap(),
        )
    }
}

fn code(result: Result<impl std::fmt::Debug, RpcError>) -> StatusCode {
    match result {
        Err(RpcError::Status(status)) => status.code(),
        other => panic!("expected a server status, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_call_round_trip() {
    let fixture = start().await;
    let client = fixture.client().await;
    let reply = client
        .echo(EchoRequest {
            text: "hello".into(),
            data: Bytes::from_static(&[0, 1, 2, 255]),
        })
        .await
        .unwrap();
    assert_eq!(reply.text, "hello");
    assert_eq!(&reply.data[..], &[0, 1, 2, 255]);
}

#[tokio::test]
async fn body_of_many_packets_arrives_whole_and_in_order() {
    // Echo accepts 64 KiB: about 45 QUIC packets, which the server receives as separate
    // chunks and joins. Every byte position is distinct modulo 251, so a chunk joined out of
    // order, twice or not at all would show.
    let fixture = start().await;
    let client = fixture.client().await;
    let data: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let reply = client
        .echo(EchoRequest {
            text: "big".into(),
            data: Bytes::from(data.clone()),
        })
        .await
        .unwrap();
    assert_eq!(reply.data.len(), data.len());
    assert!(reply.data[..] == data[..], "the echoed body differs");
}

#[tokio::test]
async fn unknown_method_is_refused() {
    let fixture = start().await;
    let client = fixture.client().await;
    let result = client
        .connection()
        .call(4242, b"anything", Duration::from_secs(2))
        .await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::UnknownMethod);
    assert!(status.message().contains("4242"), "{status}");
}

#[tokio::test]
async fn body_over_the_method_limit_is_refused_before_it_is_read() {
    let fixture = start().await;
    let client = fixture.client().await;
    // An honest frame one byte over Sleep's 1024-byte limit.
    let result = client
        .connection()
        .call(MethodId::Sleep.id(), &[0u8; 1025], Duration::from_secs(2))
        .await;
    assert_eq!(code(result), StatusCode::BadRequest);

    // A header announcing 4 GiB, with no body at all: the answer comes at once, so the
    // server neither waited for nor allocated the body.
    let (mut send, mut recv) = client.connection().open_raw_stream().await.unwrap();
    let header = RequestHeader {
        method_id: MethodId::Echo.id(),
        req_id: 77,
        len: u32::MAX,
    };
    send.write_all(&header.to_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = vec![0u8; wire::RESPONSE_HEADER_LEN];
    recv.read_exact(&mut response).await.unwrap();
    let response = wire::ResponseHeader::parse(&response.try_into().unwrap());
    assert_eq!(response.status, StatusCode::BadRequest);
    assert_eq!(response.req_id, 77);
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut body = vec![0u8; response.len as usize];
    recv.read_exact(&mut body).await.unwrap();
    let status = Status::decode_body(response.status, &body);
    assert!(
        status
            .message()
            .contains("over the method's limit of 65536"),
        "{status}"
    );
}

#[tokio::test]
async fn malformed_body_is_bad_request() {
    let fixture = start().await;
    let client = fixture.client().await;
    let result = client
        .connection()
        .call(
            MethodId::Echo.id(),
            &[0xff, 0xff, 0xff],
            Duration::from_secs(2),
        )
        .await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::BadRequest);
    assert!(
        status
            .message()
            .contains("malformed request body for Echo (1)"),
        "{status}"
    );
}

#[tokio::test]
async fn truncated_body_is_bad_request() {
    let fixture = start().await;
    let client = fixture.client().await;
    let (mut send, mut recv) = client.connection().open_raw_stream().await.unwrap();
    let header = RequestHeader {
        method_id: MethodId::Echo.id(),
        req_id: 5,
        len: 100,
    };
    send.write_all(&header.to_bytes()).await.unwrap();
    send.write_all(&[1, 2, 3]).await.unwrap();
    send.finish().unwrap();
    let response = recv.read_to_end(1 << 16).await.unwrap();
    let header = wire::ResponseHeader::parse(&response[..9].try_into().unwrap());
    assert_eq!(header.status, StatusCode::BadRequest);
}

#[tokio::test]
async fn slow_handler_gets_deadline_exceeded() {
    let fixture = start().await;
    let client = fixture.client().await;
    let started = Instant::now();
    let result = client.sleep(SleepRequest { millis: 5_000 }).await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::DeadlineExceeded);
    assert!(status.message().contains("300 ms"), "{status}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn client_timeout_cancels_the_server_handler() {
    let fixture = start().await;
    let client = fixture.client().await;
    let result = client
        .with_timeout(Duration::from_millis(50))
        .sleep(SleepRequest { millis: 250 })
        .await;
    assert!(matches!(result, Err(RpcError::Timeout(_))), "{result:?}");
    // The handler started, then was dropped when the client reset the stream, well before
    // its own 250 ms sleep or the 300 ms server deadline.
    let counters = &fixture.counters;
    let deadline = Instant::now() + Duration::from_secs(2);
    while counters.sleeps_dropped.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(counters.sleeps_started.load(Ordering::SeqCst), 1);
    assert_eq!(counters.sleeps_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(counters.sleeps_finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn handler_panic_is_internal_and_the_server_keeps_serving() {
    let fixture = start().await;
    let client = fixture.client().await;
    let status = client
        .panic(Empty {})
        .await
        .unwrap_err()
        .status()
        .cloned()
        .unwrap();
    assert_eq!(status.code(), StatusCode::Internal);
    assert!(!status.message().contains("secret"), "{status}");
    let reply = client
        .echo(EchoRequest {
            text: "still here".into(),
            data: Bytes::new(),
        })
        .await
        .unwrap();
    assert_eq!(reply.text, "still here");
    // A new connection works too.
    fixture
        .client()
        .await
        .echo(EchoRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn five_hundred_concurrent_calls_on_one_connection() {
    let fixture = start().await;
    let client = fixture.client().await;
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let reply = client
                .echo(EchoRequest {
                    text: format!("call {i}"),
                    data: Bytes::from(i.to_be_bytes().to_vec()),
                })
                .await
                .unwrap();
            assert_eq!(reply.text, format!("call {i}"));
            assert_eq!(&reply.data[..], &i.to_be_bytes());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn pushes_arrive_in_order() {
    let fixture = start().await;
    let client = fixture.client().await;
    let mut events = client.events().expect("first taker gets the stream");
    assert!(client.events().is_none());
    client
        .push_ticks(PushTicksRequest { count: 200 })
        .await
        .unwrap();
    for expected in 0..200 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("push in time")
            .expect("connection open")
            .expect("decodes");
        assert_eq!(event, Event::Tick(TickEvent { n: expected }));
        assert_eq!(event.event_type(), 1000);
    }
}

#[tokio::test]
async fn unknown_event_types_decode_as_unknown() {
    let event = Event::decode(1999, Bytes::from_static(b"later")).unwrap();
    assert_eq!(
        event,
        Event::Unknown {
            event_type: 1999,
            payload: Bytes::from_static(b"later")
        }
    );
}

#[tokio::test]
async fn wrong_alpn_is_refused() {
    let fixture = start().await;
    let mut options = fixture.options();
    options.alpn = b"h3".to_vec();
    let result = qpq_runtime::connect(fixture.addr, &options).await;
    assert!(
        matches!(result, Err(ConnectError::Handshake { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn unpinned_server_certificate_is_refused() {
    let fixture = start().await;
    let other = TlsIdentity::generate(&["localhost"]).unwrap();
    let result = qpq_runtime::connect(fixture.addr, &ClientOptions::pinned(other.cert)).await;
    let error = result.unwrap_err();
    assert!(matches!(error, ConnectError::Handshake { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not the pinned certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn server_certificate_pinned_by_sha256() {
    let fixture = start().await;
    let pinned = ClientOptions::with_trust(qpq_runtime::ServerTrust::PinnedSha256(vec![
        fixture.cert.cert_sha256(),
    ]));
    let client = DemoClient::new(qpq_runtime::connect(fixture.addr, &pinned).await.unwrap());
    assert!(client.echo(EchoRequest::default()).await.is_ok());
    let wrong = ClientOptions::with_trust(qpq_runtime::ServerTrust::PinnedSha256(vec![
        fixture.peer.cert_sha256(),
    ]));
    let error = qpq_runtime::connect(fixture.addr, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectError::Handshake { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not the pinned certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn auth_required_methods_never_reach_the_handler_without_valid_credentials() {
    let fixture = start().await;
    let client = fixture.client().await;
    for token in [&b""[..], b"forged", b"alice\0"] {
        let result = client
            .whoami(WhoamiRequest {
                session_token: Bytes::copy_from_slice(token),
            })
            .await;
        assert_eq!(code(result), StatusCode::Unauthorized);
    }
    let result = client
        .reset(ResetRequest {
            session_token: Bytes::from_static(b"alice"),
        })
        .await;
    assert_eq!(code(result), StatusCode::Forbidden);
    // No client certificate: not a federation peer.
    assert_eq!(
        code(client.relay(RelayRequest::default()).await),
        StatusCode::Unauthorized
    );
    // A certificate that is not pinned.
    let stranger = TlsIdentity::generate(&["stranger"]).unwrap();
    let stranger = DemoClient::new(
        qpq_runtime::connect(fixture.addr, &fixture.options().with_identity(stranger))
            .await
            .unwrap(),
    );
    assert_eq!(
        code(stranger.relay(RelayRequest::default()).await),
        StatusCode::Forbidden
    );
    assert_eq!(fixture.counters.secure_calls.load(Ordering::SeqCst), 0);

    // And with valid credentials each one does reach its handler.
    let reply = client
        .whoami(WhoamiRequest {
            session_token: Bytes::from_static(b"alice"),
        })
        .await
        .unwrap();
    assert_eq!(reply.username, "alice");
    client
        .reset(ResetRequest {
            session_token: Bytes::from_static(b"root"),
        })
        .await
        .unwrap();
    let peer = DemoClient::new(
        qpq_runtime::connect(
            fixture.addr,
            &fixture.options().with_identity(fixture.peer.clone()),
        )
        .await
        .unwrap(),
    );
    peer.relay(RelayRequest::default()).await.unwrap();
    assert_eq!(fixture.counters.secure_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn server_survives_a_peer_that_vanishes_mid_call() {
    let fixture = start().await;
    for _ in 0..5 {
        let client = fixture.client().await;
        let (mut send, _recv) = client.connection().open_raw_stream().await.unwrap();
        send.write_all(&[0, 2, 0]).await.unwrap();
        client.connection().close();
    }
    let reply = fixture.client().await.echo(EchoRequest::default()).await;
    assert!(reply.is_ok(), "{reply:?}");
}
