//! The quicproquo runtime: framing over QUIC streams, for servers and clients.
//!
//! - [`wire`]: the sans-IO frame codec, [`Status`] and the error body. No I/O.
//! - [`Server`]: the QUIC accept loop that drives a generated [`Dispatch`].
//! - [`connect`] / [`Connection`]: the QUIC client that generated clients call through.
//! - [`PushSink`] / [`PushReceiver`]: server push on one uni stream per connection.
//! - [`tls`]: certificates and pinning.
//! - [`limits`]: token buckets, the address key and the clock, pure; for every limiter.
//! - [`codegen`]: the facade generated code imports; not meant for hand-written code.

pub mod codegen;
pub mod limits;
pub mod tls;
pub mod wire;

mod client;
mod dispatch;
mod push;
mod recv;
mod server;
mod service;

/// The QUIC implementation, re-exported for code that opens raw streams.
pub use quinn;

pub use client::{ClientOptions, ConnectError, Connection, Connector, RpcError, connect};
pub use dispatch::{Caller, unary};
pub use push::{PushError, PushReceiver, PushSink};
pub use server::{Observer, Server, ServerError, ServerHandle, ServerOptions};
pub use service::{
    Admin, Anonymous, AuthLevel, Authenticator, BoxFuture, CallInfo, ConnectionInfo, Ctx, Dispatch,
    EventDescriptor, FederationPeer, MethodDescriptor, NoAuth, Principal, Session,
};
pub use tls::{ServerTrust, TlsIdentity};
pub use wire::{Status, StatusCode};

/// Application error code for a graceful close (shutdown).
pub const CLOSE_SHUTDOWN: u32 = 0;
/// Application error code when a peer broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u32 = 1;
/// Application error code when the application closed a connection (e.g. a revoked session).
pub const CLOSE_BY_APPLICATION: u32 = 2;
/// Application error code when the server closed a connection for abuse (e.g. a flood of
/// streams abandoned before their request).
pub const CLOSE_ABUSE: u32 = 3;
/// Stream error code: the peer gave up on the call.
pub const STREAM_CANCELLED: u32 = 1;
/// Stream error code: the server will not read this request (unknown method, too large).
pub const STREAM_REFUSED: u32 = 2;
