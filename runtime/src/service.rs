//! What a generated service plugs into: method descriptors, call contexts, the
//! authenticator, and the object-safe [`Dispatch`] the server loop drives.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::push::PushSink;
use crate::wire::Status;

/// A boxed, sendable future (what [`Dispatch::call`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthLevel {
    /// Anyone, no token (login, registration, health).
    None,
    /// A valid session token in field 1 of the request.
    Session,
    /// A valid session token of a server administrator.
    Admin,
    /// A federation peer: the connection presented a pinned peer certificate.
    Federation,
}

impl AuthLevel {
    /// The name used in `methods.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Session => "session",
            Self::Admin => "admin",
            Self::Federation => "federation",
        }
    }
}

impl fmt::Display for AuthLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the schema says about one method. Generated code holds a static table of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// Wire method ID.
    pub id: u16,
    /// Method name, e.g. `Enqueue`.
    pub name: &'static str,
    /// Group name from the schema, e.g. `delivery`.
    pub group: &'static str,
    /// Who may call it.
    pub auth: AuthLevel,
    /// Largest request body accepted, checked before the body is read.
    pub max_request_bytes: u32,
    /// Server-side deadline for reading the request and running the handler.
    pub timeout_ms: u32,
    /// Whether retrying the call is harmless.
    pub idempotent: bool,
    /// Rate-limit bucket name, if the method has one.
    pub rate_class: Option<&'static str>,
    /// One-line description from the schema.
    pub doc: &'static str,
}

impl MethodDescriptor {
    /// The server-side timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
}

/// Everything the schema says about one push event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventDescriptor {
    /// Wire event type.
    pub id: u16,
    /// Event name, e.g. `PushNewMessage`.
    pub name: &'static str,
    /// One-line description from the schema.
    pub doc: &'static str,
}

/// The connection a call arrived on: its peer, its TLS client certificate (if any), its push
/// sink, and a way to close it.
#[derive(Clone)]
pub struct ConnectionInfo {
    inner: Arc<ConnectionInner>,
}

struct ConnectionInner {
    id: u64,
    remote: SocketAddr,
    peer_cert_sha256: Option<[u8; 32]>,
    push: PushSink,
    quic: quinn::Connection,
}

impl ConnectionInfo {
    pub(crate) fn new(
        id: u64,
        quic: quinn::Connection,
        peer_cert_sha256: Option<[u8; 32]>,
        push: PushSink,
    ) -> Self {
        Self {
            inner: Arc::new(ConnectionInner {
                id,
                remote: quic.remote_address(),
                peer_cert_sha256,
                push,
                quic,
            }),
        }
    }

    /// A process-unique number for this connection (for logs and registries).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's UDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote
    }

    /// SHA-256 of the certificate the peer presented, if it presented one (federation).
    pub fn peer_certificate_sha256(&self) -> Option<[u8; 32]> {
        self.inner.peer_cert_sha256
    }

    /// The sink for server pushes to this connection.
    pub fn push(&self) -> &PushSink {
        &self.inner.push
    }

    /// Resolves when the connection has closed, for whatever reason.
    pub async fn closed(&self) {
        self.inner.quic.closed().await;
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.quic.close_reason().is_some()
    }

    /// Closes the connection at once (e.g. its session was revoked). Calls in flight fail.
    pub fn close(&self, reason: &str) {
        self.inner.quic.close(
            quinn::VarInt::from_u32(crate::CLOSE_BY_APPLICATION),
            reason.as_bytes(),
        );
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("id", &self.inner.id)
            .field("remote", &self.inner.remote)
            .finish_non_exhaustive()
    }
}

/// One call as the server sees it before authentication.
#[derive(Clone, Debug)]
pub struct CallInfo {
    method: &'static MethodDescriptor,
    req_id: u32,
    deadline: Instant,
    connection: ConnectionInfo,
}

impl CallInfo {
    pub(crate) fn new(
        method: &'static MethodDescriptor,
        req_id: u32,
        deadline: Instant,
        connection: ConnectionInfo,
    ) -> Self {
        Self {
            method,
            req_id,
            deadline,
            connection,
        }
    }

    /// The method's descriptor.
    pub fn method(&self) -> &'static MethodDescriptor {
        self.method
    }

    /// The client's request id.
    pub fn req_id(&self) -> u32 {
        self.req_id
    }

    /// When the server stops waiting for this call.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The connection the call came in on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.connection.remote_addr()
    }
}

/// The caller of a method whose auth level is `none`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anonymous;

/// An authenticated session (auth level `session`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The account's username.
    pub username: String,
    /// The account's identity key (Ed25519 public key in quicproquo).
    pub identity_key: Bytes,
    /// The device the session was opened for, if any.
    pub device_id: Option<Bytes>,
    /// A stable id of the session (quicproquo uses the SHA-256 of the token).
    pub session_id: [u8; 32],
    /// When the session was created by a login.
    pub login_at: SystemTime,
    /// When the session expires.
    pub expires_at: SystemTime,
}

/// An authenticated server administrator (auth level `admin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// The administrator's session.
    pub session: Session,
}

/// A federation peer (auth level `federation`), identified by its pinned certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationPeer {
    /// The peer's domain, from the server's federation configuration.
    pub domain: String,
    /// SHA-256 of the certificate the peer presented.
    pub certificate_sha256: [u8; 32],
}

/// Who is calling, as passed to [`Authenticator::rate_limit`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Principal<'a> {
    /// No authentication (auth level `none`).
    Anonymous,
    /// A session (auth level `session` or `admin`).
    Session(&'a Session),
    /// A federation peer.
    Peer(&'a FederationPeer),
}

/// Turns credentials into a principal. Supplied by the application, called by the generated
/// dispatch **before** the handler, so a handler never runs for an unauthenticated caller.
///
/// Errors are returned to the caller as they are: use Unauthorized for a missing, unknown or
/// expired token and Forbidden for a valid caller without the right (e.g. not an admin).
pub trait Authenticator: Send + Sync + 'static {
    /// Validates the `session_token` of a `session` method.
    fn session(
        &self,
        call: &CallInfo,
        token: &[u8],
    ) -> impl Future<Output = Result<Session, Status>> + Send;

    /// Validates the `session_token` of an `admin` method and checks the caller is an admin.
    fn admin(
        &self,
        call: &CallInfo,
        token: &[u8],
    ) -> impl Future<Output = Result<Admin, Status>> + Send;

    /// Identifies the federation peer of the connection (by its certificate).
    fn federation_peer(
        &self,
        call: &CallInfo,
    ) -> impl Future<Output = Result<FederationPeer, Status>> + Send;

    /// Rate-limit hook run after authentication and before the handler; return
    /// [`Status::rate_limited`] to refuse. The default admits everything.
    fn rate_limit(&self, call: &CallInfo, principal: Principal<'_>) -> Result<(), Status> {
        let _ = (call, principal);
        Ok(())
    }
}

/// An authenticator for services whose methods are all `none`: it refuses every other level
/// with Unauthorized.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    async fn session(&self, call: &CallInfo, _token: &[u8]) -> Result<Session, Status> {
        Err(no_auth(call))
    }

    async fn admin(&self, call: &CallInfo, _token: &[u8]) -> Result<Admin, Status> {
        Err(no_auth(call))
    }

    async fn federation_peer(&self, call: &CallInfo) -> Result<FederationPeer, Status> {
        Err(no_auth(call))
    }
}

fn no_auth(call: &CallInfo) -> Status {
    Status::unauthorized(format!(
        "{} ({}) requires {} authentication, which this server does not offer",
        call.method.name, call.method.id, call.method.auth
    ))
}

/// The context a handler receives: the authenticated principal `A` and the call's details.
#[derive(Clone, Debug)]
pub struct Ctx<A> {
    auth: A,
    call: CallInfo,
}

impl<A> Ctx<A> {
    /// Pairs a principal with its call (used by generated dispatch and by tests).
    pub fn new(call: CallInfo, auth: A) -> Self {
        Self { auth, call }
    }

    /// The authenticated principal.
    pub fn auth(&self) -> &A {
        &self.auth
    }

    /// The call's details.
    pub fn call(&self) -> &CallInfo {
        &self.call
    }

    /// The method's descriptor.
    pub fn method(&self) -> &'static MethodDescriptor {
        self.call.method
    }

    /// The client's request id.
    pub fn req_id(&self) -> u32 {
        self.call.req_id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.call.peer_addr()
    }

    /// When the server gives up on this call.
    pub fn deadline(&self) -> Instant {
        self.call.deadline
    }

    /// The connection the call came in on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.call.connection
    }

    /// Push sink of the calling connection.
    pub fn push(&self) -> &PushSink {
        self.call.connection.push()
    }
}

/// The object-safe face of a generated server: what the QUIC loop calls for each stream.
///
/// Generated code implements it; applications normally do not.
pub trait Dispatch: Send + Sync + 'static {
    /// The descriptor of a method ID, or `None` if it is not registered (→ UnknownMethod).
    fn method(&self, id: u16) -> Option<&'static MethodDescriptor>;

    /// Decodes, authenticates, rate-limits and runs one call, returning the encoded response.
    /// The transport applies the deadline, catches panics and handles cancellation.
    fn call(&self, call: CallInfo, body: Bytes) -> BoxFuture<'static, Result<Bytes, Status>>;
}
