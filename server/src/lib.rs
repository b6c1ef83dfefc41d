//! The quicproquo messenger server: implements the generated [`QpqService`] over a local
//! data directory.
//!
//! - [`Config`]: flags and environment.
//! - [`start`]: opens the data directory, binds QUIC and serves; [`RunningServer`] is the
//!   handle tests and the binary use.
//! - `service.rs`: the one `impl QpqService`, delegating to a module per method group.
//!
//! The server never sees plaintext: message payloads are MLS ciphertext, opaque bytes here.
//!
//! [`QpqService`]: qpq_schema::QpqService

mod clock;
mod config;
mod health;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use qpq_runtime::{NoAuth, Server, ServerHandle, ServerOptions, TlsIdentity};
use qpq_schema::QpqServer;

pub use config::Config;

/// The server's state, shared by every call.
pub struct Messenger {
    config: Config,
    started: Instant,
}

impl Messenger {
    fn is_serving(&self) -> bool {
        true
    }
}

/// A server that is accepting connections.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The server's TLS identity (clients pin `identity.cert`).
    pub identity: TlsIdentity,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, closes connections and waits for the serve loop to end.
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = self.task.await;
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}

/// Opens the data directory, loads or generates the certificate, and starts serving.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "could not create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let names: Vec<&str> = config.cert_names.iter().map(String::as_str).collect();
    let (identity, generated) =
        TlsIdentity::load_or_generate(&config.tls_cert_path(), &config.tls_key_path(), &names)
            .context("could not load or generate the TLS certificate")?;
    if generated {
        tracing::info!(
            cert = %config.tls_cert_path().display(),
            "generated a self-signed TLS certificate; clients pin this file"
        );
    }
    let messenger = Arc::new(Messenger {
        config: config.clone(),
        started: Instant::now(),
    });
    let dispatch = QpqServer::new(messenger, Arc::new(NoAuth)).into_dispatch();
    let server = Server::bind(config.listen, &identity, dispatch, ServerOptions::default())
        .with_context(|| format!("could not listen on {}", config.listen))?;
    let addr = server.local_addr()?;
    let handle = server.handle();
    let task = tokio::spawn(server.serve());
    tracing::info!(
        %addr,
        cert_sha256 = %qpq_runtime::tls::hex(&identity.cert_sha256()),
        "qpq-server listening"
    );
    Ok(RunningServer {
        addr,
        identity,
        handle,
        task,
    })
}
