//! The QUIC server: bind, the accept loop, one task per connection, one task per stream.
//!
//! - `options`: [`ServerOptions`], [`Observer`], [`ServerError`].
//! - `admission`: who may connect (connection limit, unvalidated-handshake budget, abuse
//!   penalties).
//! - `stream`: the per-stream call pipeline (header, method, length, body, dispatch under
//!   the deadline, response).
//! - `panic`: catching a handler's panic.
//!
//! This file holds the parts that own QUIC objects: binding the endpoint, accepting
//! connections and streams, and spawning their tasks.
//!
//! Architecture invariant: nothing a peer does can stop the accept loop; every per-connection
//! and per-stream error ends only that connection or stream.

mod admission;
mod options;
mod panic;
mod stream;

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quinn::VarInt;
use quinn::crypto::rustls::QuicServerConfig;
use tracing::Instrument;

use self::admission::{Admission, PenaltyBox, Verdict};
pub use self::options::{Observer, ServerError, ServerOptions};
use self::stream::{StreamGuard, handle_stream};
use crate::push::start_push_writer;
use crate::service::{ConnectionInfo, Dispatch};
use crate::tls::{self, TlsError, TlsIdentity};

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
        let mut admission = Admission::new(&self.options, penalties.clone(), Instant::now());
        while let Some(incoming) = self.endpoint.accept().await {
            let remote = incoming.remote_address();
            let verdict = admission.judge(
                remote.ip(),
                incoming.remote_address_validated(),
                self.endpoint.open_connections(),
                pending.load(Ordering::Relaxed),
                Instant::now(),
            );
            match verdict {
                Verdict::Accept => {}
                Verdict::RefuseFull => {
                    tracing::warn!(%remote, "connection limit reached; refusing");
                    incoming.refuse();
                    continue;
                }
                Verdict::RefusePenalized => {
                    tracing::debug!(%remote, "address serving an abuse penalty; refusing");
                    incoming.refuse();
                    continue;
                }
                Verdict::Retry => {
                    // Under handshake load a client first proves it owns its address.
                    if incoming.retry().is_ok()
                        && let Some(observer) = &self.options.observer
                    {
                        observer.stateless_retry();
                    }
                    continue;
                }
            }
            let dispatch = self.dispatch.clone();
            let options = self.options.clone();
            let pending = pending.clone();
            let penalties = penalties.clone();
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            // Counted here, not in the task, so a burst of Initials sees its own handshakes.
            pending.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
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
