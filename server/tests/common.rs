//! Shared helpers of the server's integration tests: a real server on loopback QUIC over a
//! temporary data directory, and users that register and log in with real OPAQUE.

#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use qpq_client::{IdentityKey, LoginSession, QpqClient};
use qpq_runtime::{ClientOptions, RpcError, StatusCode};
use qpq_schema::proto;
use qpq_server::{Config, RunningServer};

pub(crate) struct TestServer {
    pub(crate) server: Option<RunningServer>,
    pub(crate) dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), dir.path());
        tune(&mut config);
        let server = qpq_server::start(config).await.expect("server starts");
        Self {
            server: Some(server),
            dir,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    pub(crate) async fn client(&self) -> QpqClient {
        let cert = self.server.as_ref().unwrap().identity.cert.clone();
        let connection = qpq_runtime::connect(self.addr(), &ClientOptions::pinned(cert))
            .await
            .unwrap();
        QpqClient::new(connection)
    }

    pub(crate) async fn user(&self, name: &str) -> User {
        let client = self.client().await;
        let identity = IdentityKey::generate();
        qpq_client::register(&client, name, b"password of test", &identity.public())
            .await
            .expect("register");
        let session = qpq_client::login(&client, name, b"password of test", None)
            .await
            .expect("login");
        User {
            name: name.to_owned(),
            client,
            identity,
            session,
        }
    }
}

pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) client: QpqClient,
    pub(crate) identity: IdentityKey,
    pub(crate) session: LoginSession,
}

impl User {
    pub(crate) fn token(&self) -> Bytes {
        self.session.token.clone()
    }

    pub(crate) fn to(&self) -> Option<proto::UserRef> {
        Some(proto::UserRef {
            target: Some(proto::user_ref::Target::IdentityKey(
                Bytes::copy_from_slice(&self.identity.public()),
            )),
        })
    }

    pub(crate) async fn send(&self, to: &User, payload: &[u8]) -> Result<u64, RpcError> {
        self.client
            .enqueue(proto::EnqueueRequest {
                session_token: self.token(),
                recipient: to.to(),
                payload: Bytes::copy_from_slice(payload),
                ttl_secs: 0,
                channel_id: Bytes::new(),
            })
            .await
            .map(|r| r.seq)
    }

    pub(crate) async fn peek(&self) -> Vec<proto::QueuedMessage> {
        self.client
            .peek(proto::PeekRequest {
                session_token: self.token(),
                limit: 1000,
                after_seq: 0,
            })
            .await
            .unwrap()
            .messages
    }
}

pub(crate) fn code<T: std::fmt::Debug>(result: Result<T, RpcError>) -> StatusCode {
    match result {
        Err(RpcError::Status(status)) => status.code(),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// The real `qpq-server` binary, running in the background.
pub(crate) struct ServerProcess {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary in `dir` (its working directory) with `args`, and waits for its
    /// "listening on" line.
    pub(crate) fn spawn(dir: &std::path::Path, args: &[&str]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qpq-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("qpq-server starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("a line on stdout")
            .expect("readable stdout");
        let addr = line
            .strip_prefix("qpq-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// A client pinned to the certificate in `cert`.
    pub(crate) async fn client(&self, cert: &std::path::Path) -> QpqClient {
        let cert = qpq_runtime::tls::load_cert(cert).unwrap();
        let connection = qpq_runtime::connect(self.addr, &ClientOptions::pinned(cert))
            .await
            .unwrap();
        QpqClient::new(connection)
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits up to 10 s for the process to exit.
    pub(crate) fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not stop on SIG{signal}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
