//! The QUIC client: a pinned-certificate connection on which many calls run at once, each on
//! its own stream, each with its own timeout. A call that times out stops and resets its
//! stream, which cancels the handler on the server.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::VarInt;
use quinn::crypto::rustls::QuicClientConfig;

use crate::push::{PushReceiver, start_push_reader};
use crate::recv::{RecvError, read_body, read_header};
use crate::server::bind_udp;
use crate::tls::{self, ServerTrust, TlsError, TlsIdentity};
use crate::wire::{self, FrameError, ResponseHeader, Status, StatusCode};

/// How a client connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Which server certificate to trust.
    pub trust: ServerTrust,
    /// A certificate to present (federation peers present theirs).
    pub identity: Option<TlsIdentity>,
    /// The TLS server name to send (SNI). Trust comes from pinning, not from this name.
    pub server_name: String,
    /// How long to wait for the handshake.
    pub connect_timeout: Duration,
    /// Close the connection after this long without traffic.
    pub idle_timeout: Duration,
    /// Send keep-alives this often so an idle connection stays open (e.g. for pushes).
    pub keep_alive: Option<Duration>,
    /// Largest response body accepted.
    pub max_response_bytes: u32,
    /// Largest push body accepted.
    pub max_push_bytes: u32,
    /// Pushes buffered before new ones are dropped.
    pub push_buffer: usize,
    /// Flow-control window per stream (large responses such as blob chunks).
    pub stream_receive_window: u32,
    /// Flow-control window for the connection.
    pub connection_receive_window: u32,
    /// The ALPN protocol to offer; [`ALPN`](crate::tls::ALPN) unless testing refusal.
    pub alpn: Vec<u8>,
}

impl ClientOptions {
    /// Options that trust exactly this server certificate (DER).
    pub fn pinned(cert: rustls::pki_types::CertificateDer<'static>) -> Self {
        Self::with_trust(ServerTrust::Pinned(vec![cert]))
    }

    /// Options that accept any server certificate. Local experiments only.
    pub fn danger_accept_any_certificate() -> Self {
        Self::with_trust(ServerTrust::DangerAcceptAnyCertificate)
    }

    /// Options with the given trust and default limits.
    pub fn with_trust(trust: ServerTrust) -> Self {
        Self {
            trust,
            identity: None,
            server_name: "localhost".to_owned(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            max_response_bytes: 64 << 20,
            max_push_bytes: 1 << 20,
            push_buffer: 1024,
            stream_receive_window: 8 << 20,
            connection_receive_window: 32 << 20,
            alpn: tls::ALPN.to_vec(),
        }
    }

    /// Presents `identity` as the client certificate (mutual TLS).
    pub fn with_identity(mut self, identity: TlsIdentity) -> Self {
        self.identity = Some(identity);
        self
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The local socket could not be opened.
    #[error("could not open a local UDP socket: {0}")]
    Socket(std::io::Error),
    /// QUIC refused the parameters.
    #[error("could not start connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed (wrong certificate, wrong ALPN, server refused, ...).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The server.
        addr: SocketAddr,
        /// Cause.
        source: quinn::ConnectionError,
    },
    /// The handshake did not finish in time.
    #[error(
        "no answer from {0} within the connect timeout; is the server running and the address right?"
    )]
    Timeout(SocketAddr),
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The server answered with a non-Ok status.
    #[error("{0}")]
    Status(Status),
    /// No answer within the call's timeout; the stream was reset.
    #[error("no response within {0:?}; the call was cancelled")]
    Timeout(Duration),
    /// The connection or stream failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The server sent something that is not a valid response frame.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The response body did not decode as the method's response message.
    #[error("could not decode the {method} response: {message}")]
    Decode {
        /// Method name.
        method: &'static str,
        /// Decoder's message.
        message: String,
    },
}

impl RpcError {
    /// The server status, if the server answered.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The status code, if the server answered.
    pub fn code(&self) -> Option<StatusCode> {
        self.status().map(Status::code)
    }
}

/// A connection to a quicproquo server. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    quic: quinn::Connection,
    // Kept so the endpoint's socket lives as long as the connection.
    _endpoint: quinn::Endpoint,
    next_req_id: AtomicU32,
    push: Mutex<Option<PushReceiver>>,
    max_response_bytes: u32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.quic
            .close(VarInt::from_u32(crate::CLOSE_SHUTDOWN), b"client closed");
    }
}

/// Connects to a server at `addr` (a new local UDP socket for this one connection).
pub async fn connect(
    addr: SocketAddr,
    options: &ClientOptions,
) -> Result<Connection, ConnectError> {
    Connector::new(addr.is_ipv6(), options)?.connect(addr).await
}

/// Opens many connections from one local UDP socket (one QUIC endpoint), sharing its TLS and
/// transport configuration: what a process that talks to many servers, or holds many
/// connections, should use. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    options: ClientOptions,
}

impl Connector {
    /// Binds a local UDP socket (IPv6 when `ipv6`, else IPv4) and prepares TLS.
    pub fn new(ipv6: bool, options: &ClientOptions) -> Result<Self, ConnectError> {
        let mut crypto = tls::client_crypto(&options.trust, options.identity.as_ref())?;
        crypto.alpn_protocols = vec![options.alpn.clone()];
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| ConnectError::Tls(TlsError::Config(e.to_string())))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(4))
            .stream_receive_window(VarInt::from_u32(options.stream_receive_window))
            .receive_window(VarInt::from_u32(options.connection_receive_window))
            .keep_alive_interval(options.keep_alive)
            .max_idle_timeout(quinn::IdleTimeout::try_from(options.idle_timeout).ok());
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        let local: SocketAddr = if ipv6 {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = bind_udp(local, 2 << 20).map_err(ConnectError::Socket)?;
        let runtime = quinn::default_runtime().ok_or_else(|| {
            ConnectError::Socket(std::io::Error::other(
                "a Connector must be created inside a tokio runtime",
            ))
        })?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .map_err(ConnectError::Socket)?;
        endpoint.set_default_client_config(config);
        Ok(Self {
            endpoint,
            options: options.clone(),
        })
    }

    /// Connects to the server at `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection, ConnectError> {
        let options = &self.options;
        let connecting = self.endpoint.connect(addr, &options.server_name)?;
        let quic = match tokio::time::timeout(options.connect_timeout, connecting).await {
            Ok(Ok(quic)) => quic,
            Ok(Err(source)) => return Err(ConnectError::Handshake { addr, source }),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        let push = start_push_reader(quic.clone(), options.push_buffer, options.max_push_bytes);
        Ok(Connection {
            inner: Arc::new(Inner {
                quic,
                _endpoint: self.endpoint.clone(),
                next_req_id: AtomicU32::new(1),
                push: Mutex::new(Some(push)),
                max_response_bytes: options.max_response_bytes,
            }),
        })
    }
}

fn transport(error: impl std::fmt::Display) -> RpcError {
    RpcError::Transport(error.to_string())
}

/// What a failed read of the response frame becomes.
fn response_error(error: RecvError) -> RpcError {
    match error {
        RecvError::Frame(FrameError::Truncated { received }) => RpcError::Protocol(format!(
            "stream ended after {received} bytes of the response header"
        )),
        RecvError::Frame(FrameError::BodyTruncated { received, len }) => RpcError::Protocol(
            format!("stream ended after {received} of {len} response body bytes"),
        ),
        RecvError::Frame(other) => RpcError::Protocol(format!("response: {other}")),
        RecvError::Reset | RecvError::Lost(_) => transport(error),
    }
}

impl Connection {
    /// Makes one call: writes the request frame, waits for the response frame.
    ///
    /// On timeout the stream is stopped and reset, so the server drops the handler.
    pub async fn call(
        &self,
        method_id: u16,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        self.call_bytes(method_id, Bytes::copy_from_slice(body), timeout)
            .await
    }

    /// Like [`call`](Self::call), handing the body to QUIC without copying it.
    pub async fn call_bytes(
        &self,
        method_id: u16,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let req_id = self.inner.next_req_id.fetch_add(1, Ordering::Relaxed);
        let len = u32::try_from(body.len()).map_err(|_| {
            RpcError::Protocol(format!(
                "request body of {} bytes cannot be framed",
                body.len()
            ))
        })?;
        let header = wire::RequestHeader {
            method_id,
            req_id,
            len,
        };
        let mut frame = [Bytes::copy_from_slice(&header.to_bytes()), body];
        // One timer for the whole call, registered only when something has to wait: opening
        // a stream usually does not (it is polled first), the response always does.
        let mut expired = pin!(tokio::time::sleep_until(deadline));
        let (mut send, mut recv) = tokio::select! {
            biased;
            streams = self.inner.quic.open_bi() => streams.map_err(transport)?,
            () = &mut expired => return Err(RpcError::Timeout(timeout)),
        };
        let exchange = async {
            send.write_all_chunks(&mut frame).await.map_err(transport)?;
            let _ = send.finish();
            let header = read_header::<ResponseHeader>(&mut recv)
                .await
                .map_err(response_error)?;
            if header.req_id != req_id {
                return Err(RpcError::Protocol(format!(
                    "response carries req_id {} for request {req_id}",
                    header.req_id
                )));
            }
            wire::check_len(header.len, self.inner.max_response_bytes)
                .map_err(|e| RpcError::Protocol(format!("response refused: {e}")))?;
            // A body in one chunk (the usual case) is taken as is: no copy, no allocation.
            let body = read_body(&mut recv, header.len)
                .await
                .map_err(response_error)?;
            Ok((header.status, body))
        };
        let outcome = tokio::select! {
            biased;
            outcome = exchange => Some(outcome),
            () = &mut expired => None,
        };
        match outcome {
            Some(Ok((StatusCode::Ok, body))) => Ok(body),
            Some(Ok((code, body))) => Err(RpcError::Status(Status::decode_body(code, &body))),
            Some(Err(error)) => Err(error),
            None => {
                let _ = recv.stop(VarInt::from_u32(crate::STREAM_CANCELLED));
                let _ = send.reset(VarInt::from_u32(crate::STREAM_CANCELLED));
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// Opens a raw bidirectional stream, for tools and tests that write frames by hand
    /// (e.g. to send a header that lies about its length). Normal code uses [`Connection::call`].
    pub async fn open_raw_stream(
        &self,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), RpcError> {
        self.inner.quic.open_bi().await.map_err(transport)
    }

    /// Takes the stream of raw pushes from the server. There is one per connection: the first
    /// caller gets it, later callers get `None`.
    pub fn take_push_receiver(&self) -> Option<PushReceiver> {
        self.inner
            .push
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.quic.remote_address()
    }

    /// Closes the connection; calls in flight fail.
    pub fn close(&self) {
        self.inner
            .quic
            .close(VarInt::from_u32(crate::CLOSE_SHUTDOWN), b"client closed");
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> String {
        self.inner.quic.closed().await.to_string()
    }

    /// The reason the connection closed, if it has.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.quic.close_reason().map(|e| e.to_string())
    }
}
