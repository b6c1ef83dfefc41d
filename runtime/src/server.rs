//! The QUIC server: accept loop, one task per connection, one task per stream.
//!
//! Per stream, in order: read the 10-byte request header (bounded by
//! [`ServerOptions::header_timeout`]); an unknown method ID answers UnknownMethod without
//! reading the body; a declared length over the method's `max_request_bytes` answers
//! BadRequest before anything is allocated; then the body is read and the call dispatched,
//! all under the method's `timeout_ms` (→ DeadlineExceeded). A handler panic answers
//! Internal with no panic text on the wire. If the client stops the stream (it gave up), the
//! handler's future is dropped at once.
//!
//! Architecture invariant: nothing a peer does can stop the accept loop; every per-connection
//! and per-stream error ends only that connection or stream.

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::VarInt;
use quinn::crypto::rustls::QuicServerConfig;
use tracing::Instrument;

use crate::push::start_push_writer;
use crate::service::{CallInfo, ConnectionInfo, Dispatch, MethodDescriptor};
use crate::tls::{self, TlsError, TlsIdentity};
use crate::wire::{self, RequestHeader, Status, StatusCode};

/// Receives what the server does, for metrics. Called inline on the hot path: keep it cheap
/// (atomic counters, no locks held long, no I/O).
pub trait Observer: Send + Sync + 'static {
    /// A call finished (answered, or abandoned by the client: `status` is `None`).
    fn call_finished(
        &self,
        method: &'static MethodDescriptor,
        status: Option<StatusCode>,
        latency: Duration,
    );

    /// A request named a method ID that is not registered.
    fn unknown_method(&self, method_id: u16) {
        let _ = method_id;
    }

    /// A connection finished its handshake.
    fn connection_opened(&self) {}

    /// A connection closed.
    fn connection_closed(&self) {}

    /// A new client was asked to prove its address with a stateless retry, because more
    /// handshakes than [`ServerOptions::retry_above_pending_handshakes`] were in progress.
    fn stateless_retry(&self) {}

    /// A connection was closed for abandoning too many streams before their request
    /// header (see [`ServerOptions::abandoned_streams_burst`]).
    fn connection_closed_for_abuse(&self) {}
}

/// Limits and timeouts of a server. The defaults are safe for the open internet.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Connections beyond this are refused.
    pub max_connections: usize,
    /// Calls in flight per connection (QUIC bidirectional stream limit).
    pub max_concurrent_streams: u32,
    /// Flow-control window per stream (bytes the client may send before the server reads).
    pub stream_receive_window: u32,
    /// Flow-control window per connection.
    pub connection_receive_window: u32,
    /// Bytes the server may have in flight per connection.
    pub send_window: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// A handshake not finished in this time is abandoned.
    pub handshake_timeout: Duration,
    /// Time a new stream has to deliver its request header.
    pub header_timeout: Duration,
    /// Pushes buffered per connection before new ones are dropped.
    pub push_buffer: usize,
    /// When more handshakes than this are in progress, new clients must prove their address
    /// with a stateless retry first.
    pub retry_above_pending_handshakes: usize,
    /// New clients a second (and at once) that may handshake without first proving their
    /// address. Every such client counts, retried or not, and the count may run up to ten
    /// seconds' worth in debt: while Initials from unproven addresses keep arriving faster
    /// than this, every one gets a stateless retry (even below
    /// `retry_above_pending_handshakes`), so a flood buys no TLS work at all; when it
    /// stops, handshakes without a retry resume.
    pub unvalidated_handshakes_per_sec: u32,
    /// UDP socket send and receive buffer size requested from the kernel.
    pub socket_buffer_bytes: usize,
    /// Streams a connection may abandon before sending a complete request header (opened
    /// and then reset, finished early, or silent past `header_timeout`), as a token bucket
    /// holding this many; see `abandoned_streams_per_sec`. A connection that runs it dry is
    /// closed with [`CLOSE_ABUSE`](crate::CLOSE_ABUSE): clients never need to do this, and
    /// a stream flood consists of nothing else.
    pub abandoned_streams_burst: u32,
    /// How fast the abandoned-stream bucket refills, per second.
    pub abandoned_streams_per_sec: u32,
    /// After a connection is closed for abuse, new connections from its address (IPv6 by
    /// /64) are admitted at most `abuse_penalty_connections_per_sec` a second for this long;
    /// the others are refused. A flood then costs the attacker a handshake per few hundred
    /// streams, at most that many times a second.
    pub abuse_penalty: Duration,
    /// New connections a second admitted from an address serving an abuse penalty.
    pub abuse_penalty_connections_per_sec: u32,
    /// Where calls and connections are reported (metrics); none by default.
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("max_connections", &self.max_connections)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("stream_receive_window", &self.stream_receive_window)
            .field("connection_receive_window", &self.connection_receive_window)
            .field("send_window", &self.send_window)
            .field("idle_timeout", &self.idle_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("push_buffer", &self.push_buffer)
            .field(
                "retry_above_pending_handshakes",
                &self.retry_above_pending_handshakes,
            )
            .field(
                "unvalidated_handshakes_per_sec",
                &self.unvalidated_handshakes_per_sec,
            )
            .field("abandoned_streams_burst", &self.abandoned_streams_burst)
            .field("abandoned_streams_per_sec", &self.abandoned_streams_per_sec)
            .field("abuse_penalty", &self.abuse_penalty)
            .field(
                "abuse_penalty_connections_per_sec",
                &self.abuse_penalty_connections_per_sec,
            )
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_concurrent_streams: 512,
            stream_receive_window: 8 << 20,
            connection_receive_window: 16 << 20,
            send_window: 16 << 20,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            push_buffer: 256,
            retry_above_pending_handshakes: 128,
            unvalidated_handshakes_per_sec: 32,
            socket_buffer_bytes: 2 << 20,
            abandoned_streams_burst: 64,
            abandoned_streams_per_sec: 16,
            abuse_penalty: Duration::from_secs(30),
            abuse_penalty_connections_per_sec: 2,
            observer: None,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
    /// An option is out of range.
    #[error("invalid server option: {0}")]
    Option(String),
}

/// A bound quicproquo server. Call [`Server::serve`] to run it.
pub struct Server {
    endpoint: quinn::Endpoint,
    dispatch: Arc<dyn Dispatch>,
    options: ServerOptions,
}

/// A handle that stops a running server.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    endpoint: quinn::Endpoint,
}

impl ServerHandle {
    /// Closes every connection and stops accepting new ones.
    pub fn shutdown(&self) {
        self.endpoint.close(
            VarInt::from_u32(crate::CLOSE_SHUTDOWN),
            b"server shutting down",
        );
    }

    /// Number of open connections.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }
}

pub(crate) fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped traffic too when bound to [::].
        let _ = socket.set_only_v6(false);
    }
    // Larger buffers matter for bulk transfer; the kernel may clamp them, which is fine.
    if buffer_bytes > 0 {
        let _ = socket.set_recv_buffer_size(buffer_bytes);
        let _ = socket.set_send_buffer_size(buffer_bytes);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn var(value: u64, name: &str) -> Result<VarInt, ServerError> {
    VarInt::from_u64(value).map_err(|_| ServerError::Option(format!("{name} is too large")))
}

impl Server {
    /// Binds the UDP socket and prepares TLS. Nothing is accepted until [`Server::serve`].
    pub fn bind(
        addr: SocketAddr,
        identity: &TlsIdentity,
        dispatch: Arc<dyn Dispatch>,
        options: ServerOptions,
    ) -> Result<Self, ServerError> {
        let crypto = tls::server_crypto(identity)?;
        let crypto = QuicServerConfig::try_from(crypto)
            .map_err(|e| ServerError::Tls(TlsError::Config(e.to_string())))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(var(
                options.max_concurrent_streams.into(),
                "max_concurrent_streams",
            )?)
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(var(
                options.stream_receive_window.into(),
                "stream_receive_window",
            )?)
            .receive_window(var(
                options.connection_receive_window.into(),
                "connection_receive_window",
            )?)
            .send_window(options.send_window)
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(options.idle_timeout)
                    .map_err(|_| ServerError::Option("idle_timeout is too large".into()))?,
            ));
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport));
        let socket = bind_udp(addr, options.socket_buffer_bytes)
            .map_err(|source| ServerError::Bind { addr, source })?;
        let runtime = quinn::default_runtime().ok_or_else(|| {
            ServerError::Option("Server::bind must run inside a tokio runtime".into())
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            dispatch,
            options,
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// A handle to shut the server down from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            endpoint: self.endpoint.clone(),
        }
    }

    /// Serves until the endpoint is closed through a [`ServerHandle`].
    pub async fn serve(self) {
        let pending = Arc::new(AtomicUsize::new(0));
        let next_id = Arc::new(AtomicU64::new(1));
        let penalties = Arc::new(PenaltyBox::new(&self.options));
        // Token bucket of new clients from unvalidated addresses: (tokens, when counted).
        let rate = f64::from(self.options.unvalidated_handshakes_per_sec);
        let mut unvalidated = (rate, Instant::now());
        while let Some(incoming) = self.endpoint.accept().await {
            if self.endpoint.open_connections() >= self.options.max_connections {
                tracing::warn!(remote = %incoming.remote_address(), "connection limit reached; refusing");
                incoming.refuse();
                continue;
            }
            if !penalties.admit(incoming.remote_address().ip()) {
                tracing::debug!(remote = %incoming.remote_address(), "address serving an abuse penalty; refusing");
                incoming.refuse();
                continue;
            }
            let over_rate = !incoming.remote_address_validated() && {
                let now = Instant::now();
                let tokens = (unvalidated.0
                    + now.saturating_duration_since(unvalidated.1).as_secs_f64() * rate)
                    .min(rate);
                unvalidated = ((tokens - 1.0).max(-10.0 * rate), now);
                tokens < 1.0
            };
            if !incoming.remote_address_validated()
                && (over_rate
                    || pending.load(Ordering::Relaxed)
                        >= self.options.retry_above_pending_handshakes)
            {
                // Under handshake load a client first proves it owns its address.
                if incoming.retry().is_ok()
                    && let Some(observer) = &self.options.observer
                {
                    observer.stateless_retry();
                }
                continue;
            }
            let dispatch = self.dispatch.clone();
            let options = self.options.clone();
            let pending = pending.clone();
            let penalties = penalties.clone();
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            // Counted here, not in the task, so a burst of Initials sees its own handshakes.
            pending.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let connecting = incoming.accept();
                let connected = match connecting {
                    Ok(connecting) => {
                        tokio::time::timeout(options.handshake_timeout, connecting).await
                    }
                    Err(error) => {
                        pending.fetch_sub(1, Ordering::Relaxed);
                        tracing::debug!(%remote, %error, "could not accept connection");
                        return;
                    }
                };
                pending.fetch_sub(1, Ordering::Relaxed);
                match connected {
                    Ok(Ok(connection)) => {
                        let span = tracing::info_span!("conn", id, %remote);
                        handle_connection(id, connection, dispatch, options, penalties)
                            .instrument(span)
                            .await;
                    }
                    Ok(Err(error)) => tracing::debug!(%remote, %error, "handshake failed"),
                    Err(_) => tracing::debug!(%remote, "handshake timed out"),
                }
            });
        }
    }

    /// Serves until `shutdown` resolves, then closes all connections and waits (briefly) for
    /// them to drain.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        let handle = self.handle();
        let endpoint = self.endpoint.clone();
        tokio::select! {
            () = self.serve() => {}
            () = shutdown => handle.shutdown(),
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    }
}

fn peer_cert_sha256(connection: &quinn::Connection) -> Option<[u8; 32]> {
    let identity: Box<dyn Any> = connection.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|cert| tls::cert_sha256(cert.as_ref()))
}

async fn handle_connection(
    id: u64,
    connection: quinn::Connection,
    dispatch: Arc<dyn Dispatch>,
    options: ServerOptions,
    penalties: Arc<PenaltyBox>,
) {
    tracing::debug!("connection established");
    let observer = options.observer.clone();
    if let Some(observer) = &observer {
        observer.connection_opened();
    }
    // Reports the close however this function ends.
    struct Closed(Option<Arc<dyn Observer>>);
    impl Drop for Closed {
        fn drop(&mut self) {
            if let Some(observer) = &self.0 {
                observer.connection_closed();
            }
        }
    }
    let _closed = Closed(observer.clone());
    let push = start_push_writer(connection.clone(), options.push_buffer);
    let info = ConnectionInfo::new(id, connection.clone(), peer_cert_sha256(&connection), push);
    let shared = Arc::new(StreamGuard::new(
        connection.clone(),
        dispatch,
        &options,
        observer.clone(),
        penalties,
    ));
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                // Boxed: the task then holds a pointer, and the stream's state (about 1 KiB,
                // kept under the allocator's fast size classes) is written once instead of
                // being moved through every layer of `spawn`.
                tokio::spawn(Box::pin(handle_stream(
                    send,
                    recv,
                    info.clone(),
                    shared.clone(),
                )));
            }
            Err(error) => {
                tracing::debug!(%error, "connection closed");
                return;
            }
        }
    }
}

/// What the streams of one connection share (kept here rather than in each stream's
/// future), and the guard that closes a connection abandoning too many streams before their
/// request header: a token bucket of [`ServerOptions::abandoned_streams_burst`] tokens
/// refilled at [`ServerOptions::abandoned_streams_per_sec`].
struct StreamGuard {
    connection: quinn::Connection,
    dispatch: Arc<dyn Dispatch>,
    header_timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
    burst: f64,
    per_sec: f64,
    /// Tokens and when they were counted.
    bucket: std::sync::Mutex<(f64, Instant)>,
    /// Set once the connection was closed for abuse (it is reported once).
    closed: std::sync::atomic::AtomicBool,
    penalties: Arc<PenaltyBox>,
}

impl StreamGuard {
    fn new(
        connection: quinn::Connection,
        dispatch: Arc<dyn Dispatch>,
        options: &ServerOptions,
        observer: Option<Arc<dyn Observer>>,
        penalties: Arc<PenaltyBox>,
    ) -> Self {
        let burst = f64::from(options.abandoned_streams_burst.max(1));
        Self {
            connection,
            dispatch,
            header_timeout: options.header_timeout,
            observer,
            burst,
            per_sec: f64::from(options.abandoned_streams_per_sec),
            bucket: std::sync::Mutex::new((burst, Instant::now())),
            closed: std::sync::atomic::AtomicBool::new(false),
            penalties,
        }
    }

    /// Counts one abandoned stream; closes the connection when the bucket is empty.
    fn abandoned(&self) {
        let now = Instant::now();
        let exhausted = {
            let mut bucket = self
                .bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (tokens, at) = *bucket;
            let refilled = (tokens
                + now.saturating_duration_since(at).as_secs_f64() * self.per_sec)
                .min(self.burst);
            *bucket = ((refilled - 1.0).max(0.0), now);
            refilled < 1.0
        };
        if exhausted && !self.closed.swap(true, Ordering::Relaxed) {
            // Debug, not warn: under a flood this happens many times a second; the
            // `connection_closed_for_abuse` observer (a metric) is the operator's signal.
            tracing::debug!(
                remote = %self.connection.remote_address(),
                "closing a connection that abandons streams before their request header"
            );
            self.connection.close(
                VarInt::from_u32(crate::CLOSE_ABUSE),
                b"too many streams abandoned before their request header",
            );
            self.penalties.punish(self.connection.remote_address().ip());
            if let Some(observer) = &self.observer {
                observer.connection_closed_for_abuse();
            }
        }
    }
}

/// Most addresses serving an abuse penalty at once; past it, a new one is not recorded.
const MAX_PENALIZED: usize = 10_000;

/// Per address: penalty end, connection tokens (at most one), when they were counted.
type Penalties = std::collections::HashMap<std::net::IpAddr, (Instant, f64, Instant)>;

/// Addresses recently closed for abuse, and how many new connections each may still open
/// (see [`ServerOptions::abuse_penalty`]).
struct PenaltyBox {
    duration: Duration,
    per_sec: f64,
    entries: std::sync::Mutex<Penalties>,
}

/// IPv4 as is (IPv4-mapped IPv6 too), other IPv6 by its /64: one host usually owns one.
fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl PenaltyBox {
    fn new(options: &ServerOptions) -> Self {
        Self {
            duration: options.abuse_penalty,
            per_sec: f64::from(options.abuse_penalty_connections_per_sec),
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Penalties> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts (or restarts) the penalty of `ip`, with no connection token left.
    fn punish(&self, ip: std::net::IpAddr) {
        self.punish_at(ip, Instant::now());
    }

    fn punish_at(&self, ip: std::net::IpAddr, now: Instant) {
        if self.duration.is_zero() {
            return;
        }
        let key = address_key(ip);
        let mut entries = self.entries();
        if entries.len() >= MAX_PENALIZED && !entries.contains_key(&key) {
            entries.retain(|_, (until, _, _)| *until > now);
            if entries.len() >= MAX_PENALIZED {
                return;
            }
        }
        entries.insert(key, (now + self.duration, 0.0, now));
    }

    /// Whether a new connection from `ip` may be accepted now.
    fn admit(&self, ip: std::net::IpAddr) -> bool {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        let mut entries = self.entries();
        if entries.is_empty() {
            return true;
        }
        let key = address_key(ip);
        let Some((until, tokens, at)) = entries.get_mut(&key) else {
            return true;
        };
        if *until <= now {
            entries.remove(&key);
            return true;
        }
        let refilled =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec).min(1.0);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            true
        } else {
            *tokens = refilled;
            false
        }
    }
}

/// The outcome of one stream before it is written back.
enum Outcome {
    Respond(u32, Result<Bytes, Status>),
    /// The client went away or reset; nothing to write.
    Abandon,
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    connection: ConnectionInfo,
    shared: Arc<StreamGuard>,
) {
    let started = Instant::now();
    let mut header = [0u8; wire::REQUEST_HEADER_LEN];
    // The header usually arrives with the stream: a timer is armed only when it has not.
    let read = {
        let mut read = pin!(recv.read_exact(&mut header));
        match poll_once(read.as_mut()).await {
            Poll::Ready(read) => Ok(read),
            // Boxed: the timer's state is then kept out of every stream's future.
            Poll::Pending => Box::pin(tokio::time::timeout(shared.header_timeout, read)).await,
        }
    };
    match read {
        Ok(Ok(())) => {}
        Ok(Err(quinn::ReadExactError::FinishedEarly(received))) => {
            shared.abandoned();
            let status = Status::bad_request(format!(
                "stream ended after {received} of the {} request header bytes",
                wire::REQUEST_HEADER_LEN
            ));
            write_response(&mut send, 0, Err(status)).await;
            return;
        }
        Ok(Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(_)))) => {
            shared.abandoned();
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            shared.abandoned();
            let _ = recv.stop(VarInt::from_u32(crate::STREAM_CANCELLED));
            let _ = send.reset(VarInt::from_u32(crate::STREAM_CANCELLED));
            return;
        }
    }
    let header = RequestHeader::parse(&header);
    let Some(method) = shared.dispatch.method(header.method_id) else {
        let _ = recv.stop(VarInt::from_u32(crate::STREAM_REFUSED));
        tracing::debug!(method_id = header.method_id, "unknown method");
        if let Some(observer) = &shared.observer {
            observer.unknown_method(header.method_id);
        }
        write_response(
            &mut send,
            header.req_id,
            Err(Status::unknown_method(header.method_id)),
        )
        .await;
        return;
    };
    let span = tracing::info_span!(
        "call",
        method = method.name,
        id = method.id,
        req_id = header.req_id,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    );
    let outcome = run_call(
        &mut send,
        recv,
        &shared.dispatch,
        connection,
        method,
        header,
        started,
    )
    .instrument(span.clone())
    .await;
    let code = match outcome {
        Outcome::Respond(req_id, result) => {
            let code = match &result {
                Ok(_) => StatusCode::Ok,
                Err(status) => status.code(),
            };
            write_response(&mut send, req_id, result).await;
            Some(code)
        }
        Outcome::Abandon => None,
    };
    if shared.observer.is_none() && span.is_disabled() {
        return;
    }
    let latency = started.elapsed();
    if let Some(observer) = &shared.observer {
        observer.call_finished(method, code, latency);
    }
    span.record("status", code.map_or("Cancelled", StatusCode::name));
    span.record("latency_us", latency.as_micros() as u64);
    tracing::debug!(parent: &span, "call finished");
}

/// Polls `future` once: calls that finish at once (the common case for small ones) then
/// never arm a timer or a stop watch.
fn poll_once<F: Future + Unpin>(mut future: F) -> impl Future<Output = Poll<F::Output>> {
    std::future::poll_fn(move |cx| Poll::Ready(Pin::new(&mut future).poll(cx)))
}

async fn run_call(
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    dispatch: &Arc<dyn Dispatch>,
    connection: ConnectionInfo,
    method: &'static MethodDescriptor,
    header: RequestHeader,
    started: Instant,
) -> Outcome {
    if let Err(error) = wire::check_len(header.len, method.max_request_bytes) {
        let _ = recv.stop(VarInt::from_u32(crate::STREAM_REFUSED));
        let status = Status::bad_request(format!(
            "request body for {} ({}) is {} bytes, over the method's limit of {} bytes ({error})",
            method.name, method.id, header.len, method.max_request_bytes
        ));
        return Outcome::Respond(header.req_id, Err(status));
    }
    let deadline = started + method.timeout();
    let call = CallInfo::new(method, header.req_id, deadline, connection);
    let len = header.len as usize;
    let work = pin!(async move {
        // The length was checked against the method's limit above; the body is taken as QUIC
        // hands it over (one chunk, the usual case: no copy and no allocation), and never more
        // than `len` bytes are buffered.
        let mut first = Bytes::new();
        let mut joined: Option<BytesMut> = None;
        let mut received = 0;
        while received < len {
            match recv.read_chunk(len - received, true).await {
                Ok(Some(chunk)) => {
                    received += chunk.bytes.len();
                    if first.is_empty() && joined.is_none() {
                        first = chunk.bytes;
                    } else {
                        let joined = joined.get_or_insert_with(|| {
                            let mut joined = BytesMut::with_capacity(len);
                            joined.extend_from_slice(&first);
                            joined
                        });
                        joined.extend_from_slice(&chunk.bytes);
                    }
                }
                Ok(None) => {
                    return Err(CallFailure::Status(Status::bad_request(format!(
                        "stream ended after {received} of the {len} request body bytes the header announced"
                    ))));
                }
                Err(_) => return Err(CallFailure::Gone),
            }
        }
        let body = match joined {
            Some(joined) => joined.freeze(),
            None => first,
        };
        dispatch.call(call, body).await.map_err(CallFailure::Status)
    });
    let mut work = CatchUnwind(work);
    // A handler that is done at the first poll needs neither the deadline timer nor the
    // watch for the client stopping the stream.
    let result = match poll_once(&mut work).await {
        Poll::Ready(result) => Ok(result),
        Poll::Pending => {
            // Boxed, as the header timer: only calls that wait carry this state.
            let waited = Box::pin(async {
                let stopped = send.stopped();
                tokio::select! {
                    result = tokio::time::timeout_at(deadline.into(), work) => Some(result),
                    _ = stopped => None,
                }
            })
            .await;
            let Some(result) = waited else {
                tracing::debug!("client stopped the stream; handler dropped");
                return Outcome::Abandon;
            };
            result
        }
    };
    match result {
        Ok(Ok(Ok(body))) => Outcome::Respond(header.req_id, Ok(body)),
        Ok(Ok(Err(CallFailure::Status(status)))) => Outcome::Respond(header.req_id, Err(status)),
        Ok(Ok(Err(CallFailure::Gone))) => Outcome::Abandon,
        Ok(Err(panic)) => {
            tracing::error!(panic = panic_message(&panic), "handler panicked");
            Outcome::Respond(header.req_id, Err(Status::internal()))
        }
        Err(_) => Outcome::Respond(
            header.req_id,
            Err(Status::deadline_exceeded(format!(
                "{} ({}) did not finish within its {} ms timeout",
                method.name, method.id, method.timeout_ms
            ))),
        ),
    }
}

enum CallFailure {
    Status(Status),
    Gone,
}

async fn write_response(send: &mut quinn::SendStream, req_id: u32, result: Result<Bytes, Status>) {
    let (code, body) = match result {
        Ok(body) => (StatusCode::Ok, body),
        Err(status) => (status.code(), Bytes::from(status.encode_body())),
    };
    let Ok(len) = u32::try_from(body.len()) else {
        tracing::error!(len = body.len(), "response too large to frame");
        let status = Status::internal();
        let body = Bytes::from(status.encode_body());
        let header = wire::ResponseHeader {
            status: status.code(),
            req_id,
            len: body.len() as u32,
        };
        let mut chunks = [Bytes::copy_from_slice(&header.to_bytes()), body];
        if send.write_all_chunks(&mut chunks).await.is_ok() {
            let _ = send.finish();
        }
        return;
    };
    let header = wire::ResponseHeader {
        status: code,
        req_id,
        len,
    };
    // The body goes to QUIC as the same buffer the handler produced: no copy into a frame.
    let mut chunks = [Bytes::copy_from_slice(&header.to_bytes()), body];
    if send.write_all_chunks(&mut chunks).await.is_ok() {
        let _ = send.finish();
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(text) = panic.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(non-string panic payload)"
    }
}

/// Polls a future inside `catch_unwind`, turning a panic into an `Err` with its payload.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stream's future is allocated once per call; kept within 1 KiB it stays in the
    /// allocator's fast size classes (glibc caches chunks up to 1032 bytes per thread), and
    /// the timers only slow calls need are boxed apart (see `handle_stream`).
    #[test]
    #[cfg(not(debug_assertions))]
    fn a_stream_future_stays_within_one_kibibyte() {
        fn future_size<A, B, C, D, F>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(handle_stream);
        assert!(size <= 1024, "handle_stream's future grew to {size} bytes");
    }

    #[test]
    fn an_abusive_address_gets_few_connections_until_its_penalty_ends() {
        let options = ServerOptions {
            abuse_penalty: Duration::from_secs(30),
            abuse_penalty_connections_per_sec: 2,
            ..ServerOptions::default()
        };
        let penalties = PenaltyBox::new(&options);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let abuser: std::net::IpAddr = "2001:db8:1:2::7".parse().unwrap();
        let neighbour: std::net::IpAddr = "2001:db8:1:2::8".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::7".parse().unwrap();
        assert!(penalties.admit_at(abuser, t0));
        penalties.punish_at(abuser, t0);
        // No token right after; the same /64 shares the penalty; another /64 does not.
        assert!(!penalties.admit_at(abuser, at(100)));
        assert!(!penalties.admit_at(neighbour, at(200)));
        assert!(penalties.admit_at(other, at(200)));
        // 2 a second: one connection each half second, no more.
        assert!(penalties.admit_at(abuser, at(700)));
        assert!(!penalties.admit_at(abuser, at(800)));
        assert!(penalties.admit_at(abuser, at(1_300)));
        // After the penalty, all are admitted and the entry is gone.
        for _ in 0..10 {
            assert!(penalties.admit_at(abuser, at(30_001)));
        }
        assert!(penalties.entries().is_empty());
    }
}
