//! The benchmark service served three ways: quicproquo (generated from `schema/`), a raw
//! quinn echo with the same frame layout and no framework, and tonic (gRPC over HTTP/2, with
//! and without TLS). Each server runs on its own thread with a current-thread runtime, and so
//! does each client: two cores, one per side, the same for every contender.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::{Bytes, BytesMut};
use qpq_runtime::{Anonymous, Ctx, NoAuth, Server, ServerOptions, Status, TlsIdentity};

/// The quicproquo API generated from `schema/methods.toml`.
pub(crate) mod qpqgen {
    #![allow(missing_docs, unreachable_pub, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/qpq_generated.rs"));
}

/// The tonic API generated from the same proto.
pub(crate) mod grpc {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("bench.v1");
}

/// Runs `serve` on a new thread named `name` (so a profile can be split by side) with its own
/// current-thread runtime; returns what it reports once bound (its address).
pub(crate) fn spawn_server<F, Fut>(name: &str, serve: F) -> SocketAddr
where
    F: FnOnce(mpsc::Sender<SocketAddr>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(serve(tx));
        })
        .expect("server thread");
    rx.recv().expect("server reports its address")
}

struct BenchImpl;

impl qpqgen::CallsService for BenchImpl {
    async fn echo(
        &self,
        _ctx: Ctx<Anonymous>,
        request: qpqgen::proto::EchoMsg,
    ) -> Result<qpqgen::proto::EchoMsg, Status> {
        Ok(request)
    }

    async fn put(
        &self,
        _ctx: Ctx<Anonymous>,
        request: qpqgen::proto::PutRequest,
    ) -> Result<qpqgen::proto::PutReply, Status> {
        Ok(qpqgen::proto::PutReply {
            len: request.data.len() as u64,
        })
    }

    async fn get(
        &self,
        _ctx: Ctx<Anonymous>,
        request: qpqgen::proto::GetRequest,
    ) -> Result<qpqgen::proto::GetReply, Status> {
        let len = usize::try_from(request.len)
            .ok()
            .filter(|l| *l <= 16 << 20)
            .ok_or_else(|| Status::bad_request("at most 16 MiB"))?;
        Ok(qpqgen::proto::GetReply {
            data: Bytes::from(vec![0x5a; len]),
        })
    }
}

/// Starts the quicproquo bench server; returns its address.
pub(crate) fn start_qpq(identity: TlsIdentity, options: ServerOptions) -> SocketAddr {
    spawn_server("srv-qpq", move |tx| async move {
        let dispatch =
            qpqgen::BenchServer::new(Arc::new(BenchImpl), Arc::new(NoAuth)).into_dispatch();
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), &identity, dispatch, options)
            .expect("qpq bench server binds");
        tx.send(server.local_addr().unwrap()).unwrap();
        server.serve().await;
    })
}

/// Starts a raw quinn echo server: one stream per call, the qpq request frame in, a response
/// frame with the same body out; no framework, no dispatch, no protobuf.
pub(crate) fn start_raw_quinn(identity: TlsIdentity) -> SocketAddr {
    spawn_server("srv-raw", move |tx| async move {
        let crypto = qpq_runtime::tls::server_crypto(&identity).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(512u32.into())
            .stream_receive_window((1u32 << 20).into())
            .receive_window((8u32 << 20).into())
            .send_window(8 << 20);
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap())
            .expect("raw quinn binds");
        tx.send(endpoint.local_addr().unwrap()).unwrap();
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let mut header = [0u8; 10];
                        if recv.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let req_id =
                            u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
                        let len = u32::from_be_bytes([header[6], header[7], header[8], header[9]])
                            as usize;
                        let mut frame = BytesMut::zeroed(9 + len);
                        if recv.read_exact(&mut frame[9..]).await.is_err() {
                            return;
                        }
                        frame[0] = 0;
                        frame[1..5].copy_from_slice(&req_id.to_be_bytes());
                        frame[5..9].copy_from_slice(&(len as u32).to_be_bytes());
                        if send.write_all(&frame).await.is_ok() {
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    })
}

/// A raw quinn client connection for [`start_raw_quinn`].
pub(crate) async fn raw_quinn_client(addr: SocketAddr, cert: &TlsIdentity) -> quinn::Connection {
    let crypto = qpq_runtime::tls::client_crypto(
        &qpq_runtime::ServerTrust::Pinned(vec![cert.cert.clone()]),
        None,
    )
    .unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window((8u32 << 20).into())
        .receive_window((32u32 << 20).into());
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint.connect(addr, "localhost").unwrap().await.unwrap()
}

/// One raw quinn call: a request frame out, the response frame's body back.
pub(crate) async fn raw_quinn_call(connection: &quinn::Connection, body: &[u8]) -> Bytes {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut frame = BytesMut::with_capacity(10 + body.len());
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&7u32.to_be_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let mut header = [0u8; 9];
    recv.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    let mut out = BytesMut::zeroed(len);
    recv.read_exact(&mut out).await.unwrap();
    out.freeze()
}

struct GrpcImpl;

#[tonic::async_trait]
impl grpc::bench_grpc_server::BenchGrpc for GrpcImpl {
    async fn echo(
        &self,
        request: tonic::Request<grpc::EchoMsg>,
    ) -> Result<tonic::Response<grpc::EchoMsg>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }

    async fn put(
        &self,
        request: tonic::Request<grpc::PutRequest>,
    ) -> Result<tonic::Response<grpc::PutReply>, tonic::Status> {
        Ok(tonic::Response::new(grpc::PutReply {
            len: request.into_inner().data.len() as u64,
        }))
    }

    async fn get(
        &self,
        request: tonic::Request<grpc::GetRequest>,
    ) -> Result<tonic::Response<grpc::GetReply>, tonic::Status> {
        let len = request.into_inner().len.min(16 << 20) as usize;
        Ok(tonic::Response::new(grpc::GetReply {
            data: Bytes::from(vec![0x5a; len]),
        }))
    }
}

/// A CA and a `localhost` certificate it signed, as PEM, for tonic's TLS.
pub(crate) struct GrpcTls {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl GrpcTls {
    pub(crate) fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

const GRPC_MAX: usize = 32 << 20;

/// Starts the tonic server, with TLS when `tls` is given.
pub(crate) fn start_tonic(tls: Option<&GrpcTls>) -> SocketAddr {
    let identity = tls.map(|t| tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem));
    spawn_server(
        if tls.is_some() {
            "srv-tonic-tls"
        } else {
            "srv-tonic"
        },
        move |tx| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let mut builder = tonic::transport::Server::builder();
            if let Some(identity) = identity {
                builder = builder
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .unwrap();
            }
            let service = grpc::bench_grpc_server::BenchGrpcServer::new(GrpcImpl)
                .max_decoding_message_size(GRPC_MAX)
                .max_encoding_message_size(GRPC_MAX);
            builder
                .serve_with_incoming(service, tokio_stream_listener(listener))
                .await
                .unwrap();
        },
    )
}

/// Accepted connections with Nagle's algorithm off, as tonic's own listener would set.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl tonic::codegen::tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tonic::codegen::tokio_stream::StreamExt;
    tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// A tonic client for [`start_tonic`].
pub(crate) async fn tonic_client(
    addr: SocketAddr,
    tls: Option<&GrpcTls>,
) -> grpc::bench_grpc_client::BenchGrpcClient<tonic::transport::Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://localhost:{}", addr.port()))
            .unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                    .domain_name("localhost"),
            )
            .unwrap();
    }
    let channel = endpoint.connect().await.unwrap();
    grpc::bench_grpc_client::BenchGrpcClient::new(channel)
        .max_decoding_message_size(GRPC_MAX)
        .max_encoding_message_size(GRPC_MAX)
}
