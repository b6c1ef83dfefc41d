//! A client handle that survives a dropped connection.
//!
//! [`ReconnectingClient`] keeps one connection and hands out calls on it. When the connection
//! is known to be closed before a call, it dials a new one first (nothing was sent, so this is
//! safe for every method). When a call fails because the connection was lost (a transport
//! error or no answer in time), it dials again and re-issues the call once, but only for
//! methods the schema marks idempotent ([`MethodDescriptor::idempotent`]): for the others
//! (Enqueue, Fetch, ...) the server may have acted before the connection went, so the error is
//! returned and the connection closed, and the next call dials a fresh one. A call that got no
//! answer in time counts as a lost connection (a crashed server looks like that until QUIC's
//! idle timeout, which [`ClientOptions::idle_timeout`] sets). Session tokens stay valid across
//! connections, so no new login is needed; pushes are per connection, so take the new
//! connection's [`events`](QpqClient::events) after [`reconnects`](ReconnectingClient::reconnects)
//! changes.
//!
//! ```no_run
//! # async fn run(token: bytes::Bytes) -> Result<(), qpq_client::ClientError> {
//! use qpq_client::{MethodId, ReconnectingClient, proto};
//! let client = ReconnectingClient::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await?;
//! let page = client
//!     .call(
//!         MethodId::Peek,
//!         proto::PeekRequest { session_token: token, limit: 10, after_seq: 0 },
//!         |c, r| async move { c.peek(r).await },
//!     )
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`MethodDescriptor::idempotent`]: qpq_runtime::MethodDescriptor

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use qpq_runtime::{ClientOptions, RpcError};
use qpq_schema::{MethodId, QpqClient};

use crate::ClientError;

/// A [`QpqClient`] that re-dials after a dropped connection (see the [module](self) doc).
///
/// ```no_run
/// # async fn run() -> Result<(), qpq_client::ClientError> {
/// let client = qpq_client::ReconnectingClient::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await?;
/// let health = client
///     .call(qpq_client::MethodId::Health, qpq_client::proto::HealthRequest {}, |c, r| async move {
///         c.health(r).await
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReconnectingClient {
    addr: SocketAddr,
    options: ClientOptions,
    /// The current connection and its generation (how many times it was replaced).
    current: Mutex<(u64, QpqClient)>,
    /// Serializes dialing, so concurrent callers that all saw the same dead connection dial
    /// once.
    dialing: tokio::sync::Mutex<()>,
}

/// Whether `error` means the connection (rather than the call) failed.
fn connection_lost(error: &RpcError) -> bool {
    matches!(error, RpcError::Transport(_) | RpcError::Timeout(_))
}

impl ReconnectingClient {
    /// Connects to `server` (host:port), trusting only the certificate in `cert_path` (DER).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), qpq_client::ClientError> {
    /// let client = qpq_client::ReconnectingClient::connect("127.0.0.1:5001", "data/server-cert.der".as_ref()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(server: &str, cert_path: &Path) -> Result<Self, ClientError> {
        let addr = crate::resolve(server)?;
        let cert = qpq_runtime::tls::load_cert(cert_path)?;
        Self::with_options(addr, ClientOptions::pinned(cert)).await
    }

    /// Connects to `addr` with `options` (kept for every later dial).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), qpq_client::ClientError> {
    /// let cert = qpq_runtime::tls::load_cert("data/server-cert.der".as_ref())?;
    /// let mut options = qpq_client::ClientOptions::pinned(cert);
    /// options.idle_timeout = std::time::Duration::from_secs(5);
    /// let client = qpq_client::ReconnectingClient::with_options("127.0.0.1:5001".parse().unwrap(), options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_options(
        addr: SocketAddr,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let connection = qpq_runtime::connect(addr, &options).await?;
        Ok(Self {
            addr,
            options,
            current: Mutex::new((0, QpqClient::new(connection))),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> (u64, QpqClient) {
        let guard = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard.0, guard.1.clone())
    }

    /// The client on the current connection (for calls that need no retry, or its events).
    ///
    /// ```no_run
    /// # fn run(client: &qpq_client::ReconnectingClient) {
    /// let events = client.client().events();
    /// # }
    /// ```
    pub fn client(&self) -> QpqClient {
        self.current().1
    }

    /// How many times the connection was replaced.
    ///
    /// ```no_run
    /// # fn run(client: &qpq_client::ReconnectingClient) {
    /// println!("reconnected {} times", client.reconnects());
    /// # }
    /// ```
    pub fn reconnects(&self) -> u64 {
        self.current().0
    }

    /// Replaces the connection of generation `seen` with a new one, unless another caller
    /// already did; returns the client to use.
    async fn redial(&self, seen: u64) -> Result<QpqClient, ClientError> {
        let _dialing = self.dialing.lock().await;
        let (generation, client) = self.current();
        if generation != seen {
            return Ok(client);
        }
        let connection = qpq_runtime::connect(self.addr, &self.options).await?;
        let client = QpqClient::new(connection);
        let mut guard = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The old connection is dropped with its last clone; calls in flight on it finish
        // or fail on their own.
        *guard = (generation + 1, client.clone());
        Ok(client)
    }

    /// Makes one call of `method` with `request` through `call` (which calls the generated
    /// method on the client it is given). If the connection is already closed, dials first;
    /// if the call fails because the connection was lost, dials again and, when `method` is
    /// idempotent, re-issues it once. `method` must be the method `call` calls: its schema
    /// entry decides whether a retry is harmless.
    ///
    /// ```no_run
    /// # async fn run(client: &qpq_client::ReconnectingClient, token: bytes::Bytes) -> Result<(), qpq_client::ClientError> {
    /// use qpq_client::{MethodId, proto};
    /// let acked = client
    ///     .call(MethodId::Ack, proto::AckRequest { session_token: token, seqs: vec![1, 2] }, |c, r| async move {
    ///         c.ack(r).await
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        method: MethodId,
        request: Req,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(QpqClient, Req) -> Fut,
        Fut: Future<Output = Result<Resp, RpcError>>,
    {
        let (mut generation, mut client) = self.current();
        if client.connection().close_reason().is_some() {
            client = self.redial(generation).await?;
            generation = self.current().0;
        }
        match call(client.clone(), request.clone()).await {
            Ok(response) => Ok(response),
            Err(error) if connection_lost(&error) => {
                if !method.descriptor().idempotent {
                    // The server may have acted on it: no retry. Closing the connection makes
                    // the next call dial a new one.
                    client.connection().close();
                    return Err(ClientError::Rpc(error));
                }
                let client = self.redial(generation).await?;
                Ok(call(client, request).await?)
            }
            Err(error) => Err(ClientError::Rpc(error)),
        }
    }
}
