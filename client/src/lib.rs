//! The quicproquo client library: connects to a server with its pinned certificate,
//! registers and logs in with OPAQUE, and exposes the generated [`QpqClient`].
//!
//! ```no_run
//! # async fn run() -> Result<(), qpq_client::ClientError> {
//! let client = qpq_client::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await?;
//! let health = client.health(qpq_client::proto::HealthRequest {}).await?;
//! println!("server {} up for {} s", health.version, health.uptime_secs);
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`profile`] (the directory the `qpq` tool keeps keys and session in), [`keys`]
//! (hybrid post-quantum keys), [`kt`] (key-transparency verification), [`blob`] (chunked,
//! verified transfers), [`recovery`] (client-side encryption of the recovery bundle), and
//! [`ReconnectingClient`] (re-dials after a dropped connection).

mod auth;
pub mod blob;
pub mod keys;
pub mod kt;
pub mod profile;
mod reconnect;
pub mod recovery;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

pub use auth::OpaqueError;
use bytes::Bytes;
pub use profile::{Profile, ProfileError, SavedSession, Settings};
pub use qpq_runtime::{ClientOptions, RpcError, Status, StatusCode};
pub use qpq_schema::{Event, MethodId, QpqClient, proto};
pub use reconnect::ReconnectingClient;

/// Why a client operation failed.
///
/// ```no_run
/// # async fn run() {
/// match qpq_client::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await {
///     Ok(_) => println!("connected"),
///     Err(qpq_client::ClientError::Certificate(e)) => eprintln!("fix --ca-cert: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server address did not resolve.
    #[error("cannot resolve server address `{0}`: use host:port, e.g. 127.0.0.1:5001")]
    Address(String),
    /// The pinned certificate could not be read.
    #[error(
        "cannot read the server certificate: {0}; pass the server's server-cert.der with --ca-cert"
    )]
    Certificate(#[from] qpq_runtime::tls::TlsError),
    /// The connection failed.
    #[error(transparent)]
    Connect(#[from] qpq_runtime::ConnectError),
    /// A call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The OPAQUE exchange failed on this side (e.g. a wrong password).
    #[error(transparent)]
    Opaque(#[from] OpaqueError),
}

/// Resolves `host:port` to a socket address.
///
/// ```
/// let addr = qpq_client::resolve("127.0.0.1:5001").unwrap();
/// assert_eq!(addr.port(), 5001);
/// assert!(qpq_client::resolve("no port").is_err());
/// ```
pub fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    server
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::Address(server.to_owned()))
}

/// Connects to `server` (host:port), trusting only the certificate in `cert_path` (DER).
///
/// ```no_run
/// # async fn run() -> Result<(), qpq_client::ClientError> {
/// let client = qpq_client::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect(server: &str, cert_path: &Path) -> Result<QpqClient, ClientError> {
    let addr = resolve(server)?;
    let cert = qpq_runtime::tls::load_cert(cert_path)?;
    let connection = qpq_runtime::connect(addr, &ClientOptions::pinned(cert)).await?;
    Ok(QpqClient::new(connection))
}

/// Registers `username` with `password` (OPAQUE: the password never leaves this process) and
/// binds the account to `identity_key` (an Ed25519 public key).
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient) -> Result<(), qpq_client::ClientError> {
/// let identity = qpq_client::IdentityKey::generate();
/// qpq_client::register(&client, "alice", b"correct horse", &identity.public()).await?;
/// # Ok(())
/// # }
/// ```
pub async fn register(
    client: &QpqClient,
    username: &str,
    password: &[u8],
    identity_key: &[u8; 32],
) -> Result<(), ClientError> {
    let (registration, request) = auth::registration_start(password)?;
    let response = client
        .opaque_register_start(proto::OpaqueRegisterStartRequest {
            username: username.to_owned(),
            registration_request: Bytes::from(request),
        })
        .await?;
    let upload =
        auth::registration_finish(registration, password, &response.registration_response)?;
    client
        .opaque_register_finish(proto::OpaqueRegisterFinishRequest {
            username: username.to_owned(),
            registration_upload: Bytes::from(upload),
            identity_key: Bytes::copy_from_slice(identity_key),
        })
        .await?;
    Ok(())
}

/// A completed login: the session it created (its bearer token and expiry) and the
/// password's export key.
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient) -> Result<(), qpq_client::ClientError> {
/// let session = qpq_client::login(&client, "alice", b"correct horse", None).await?;
/// println!("token valid until {}", session.expires_at_unix_ms);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Login {
    /// The bearer token for `session_token` fields.
    pub token: Bytes,
    /// When the token expires (Unix ms).
    pub expires_at_unix_ms: u64,
    /// A stable secret derived from the password; encrypts client-side secrets such as the
    /// recovery bundle. Never send it anywhere.
    pub export_key: Vec<u8>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("expires_at_unix_ms", &self.expires_at_unix_ms)
            .finish_non_exhaustive()
    }
}

/// Logs in with OPAQUE and returns the session.
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient) -> Result<(), qpq_client::ClientError> {
/// let session = qpq_client::login(&client, "alice", b"correct horse", None).await?;
/// let page = client
///     .fetch(qpq_client::proto::FetchRequest { session_token: session.token.clone(), limit: 0 })
///     .await?;
/// # Ok(())
/// # }
/// ```
pub async fn login(
    client: &QpqClient,
    username: &str,
    password: &[u8],
    device_id: Option<&[u8]>,
) -> Result<Login, ClientError> {
    let (login, request) = auth::login_start(password)?;
    let start = client
        .opaque_login_start(proto::OpaqueLoginStartRequest {
            username: username.to_owned(),
            credential_request: Bytes::from(request),
        })
        .await?;
    let finish = auth::login_finish(login, password, &start.credential_response)?;
    let done = client
        .opaque_login_finish(proto::OpaqueLoginFinishRequest {
            username: username.to_owned(),
            login_id: start.login_id,
            credential_finalization: Bytes::from(finish.finalization),
            identity_key: Bytes::new(),
            device_id: device_id.map(Bytes::copy_from_slice).unwrap_or_default(),
        })
        .await?;
    Ok(Login {
        token: done.session_token,
        expires_at_unix_ms: done.expires_at_unix_ms,
        export_key: finish.export_key,
    })
}

/// An Ed25519 identity key pair.
///
/// ```
/// let key = qpq_client::IdentityKey::generate();
/// let again = qpq_client::IdentityKey::from_secret(&key.secret());
/// assert_eq!(again.public(), key.public());
/// ```
pub struct IdentityKey {
    signing: ed25519_dalek::SigningKey,
}

impl IdentityKey {
    /// A fresh random key pair.
    ///
    /// ```
    /// let key = qpq_client::IdentityKey::generate();
    /// ```
    pub fn generate() -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Restores a key pair from its 32-byte secret.
    ///
    /// ```
    /// let key = qpq_client::IdentityKey::from_secret(&[7; 32]);
    /// ```
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret (store it with mode 0600).
    ///
    /// ```
    /// assert_eq!(qpq_client::IdentityKey::from_secret(&[7; 32]).secret(), [7; 32]);
    /// ```
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The 32-byte public key: the identity others address.
    ///
    /// ```
    /// let public = qpq_client::IdentityKey::generate().public();
    /// println!("{}", qpq_client::profile::to_hex(&public));
    /// ```
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message`.
    ///
    /// ```
    /// let signature = qpq_client::IdentityKey::generate().sign(b"hello");
    /// assert_eq!(signature.len(), 64);
    /// ```
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public", &qpq_runtime::tls::hex(&self.public()))
            .finish_non_exhaustive()
    }
}
