//! The quicproquo client library: connects to a server with its pinned certificate and
//! exposes the generated [`QpqClient`].
//!
//! ```no_run
//! # async fn run() -> Result<(), qpq_client::ClientError> {
//! let client = qpq_client::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await?;
//! let health = client.health(qpq_client::proto::HealthRequest {}).await?;
//! println!("server {} up for {} s", health.version, health.uptime_secs);
//! # Ok(())
//! # }
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

pub use qpq_runtime::{ClientOptions, RpcError, Status, StatusCode};
pub use qpq_schema::{Event, QpqClient, proto};

/// Why a client operation failed.
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
}

/// Resolves `host:port` to a socket address.
pub fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    server
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::Address(server.to_owned()))
}

/// Connects to `server` (host:port), trusting only the certificate in `cert_path` (DER).
pub async fn connect(server: &str, cert_path: &Path) -> Result<QpqClient, ClientError> {
    let addr = resolve(server)?;
    let cert = qpq_runtime::tls::load_cert(cert_path)?;
    let connection = qpq_runtime::connect(addr, &ClientOptions::pinned(cert)).await?;
    Ok(QpqClient::new(connection))
}
