//! What a server is configured with and reports: [`ServerOptions`] (limits and timeouts,
//! safe defaults for the open internet), the [`Observer`] that receives metrics events, and
//! [`ServerError`] (why a server could not start).
//!
//! Plain data only: this module neither enforces the limits (see `admission` and `stream`)
//! nor touches a socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::service::MethodDescriptor;
use crate::tls::TlsError;
use crate::wire::StatusCode;

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
