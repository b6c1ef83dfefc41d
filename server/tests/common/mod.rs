//! The harness of the server's integration tests, the one copy every test file uses: a real
//! server on loopback QUIC over a temporary data directory (in process, or the real binary),
//! users that register and log in with real OPAQUE, what the tests read off a server
//! (memory, `/metrics`, a whole queue), visible skips, and the runner of the test files that
//! start themselves again as a subprocess ([`harness`]).

// Each test file compiles this module and uses a part of it.
#![allow(dead_code)]

pub(crate) mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use qpq_client::{IdentityKey, Login, QpqClient};
use qpq_runtime::{ClientOptions, RpcError, StatusCode};
use qpq_schema::proto;
use qpq_server::{Config, RunningServer, StoreChoice};

/// The backend the harness's servers store in: `QPQ_TEST_STORE=postgres` puts each server on
/// a new database in the test process's throw-away PostgreSQL cluster
/// ([`qpq_server::testing::PgCluster`]); unset (or `embedded`) keeps the embedded store in
/// the server's temp data directory. Asking for PostgreSQL where it cannot start fails the
/// test: the run asked for that backend.
pub(crate) fn test_store() -> StoreChoice {
    match std::env::var("QPQ_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => StoreChoice::Embedded,
        Ok("postgres") => {
            let cluster = qpq_server::testing::PgCluster::shared()
                .unwrap_or_else(|e| panic!("QPQ_TEST_STORE=postgres: {e}"));
            StoreChoice::Postgres(cluster.postgres_url(&cluster.create_database()))
        }
        Ok(other) => panic!("QPQ_TEST_STORE={other}: use `postgres` or `embedded`"),
    }
}

/// A store holding a copy of what `store` holds now (its server must be stopped): the
/// embedded store is copied with the data directory by the caller; a PostgreSQL database is
/// copied here.
pub(crate) fn copy_store(store: &StoreChoice) -> StoreChoice {
    match store {
        StoreChoice::Embedded => StoreChoice::Embedded,
        StoreChoice::Postgres(url) => {
            let cluster = qpq_server::testing::PgCluster::shared().unwrap();
            let from = qpq_server::testing::PgCluster::database_of(url);
            StoreChoice::Postgres(cluster.postgres_url(&cluster.copy_database(from)))
        }
    }
}

/// Whether the harness's servers run on PostgreSQL (see [`test_store`]).
pub(crate) fn on_postgres() -> bool {
    std::env::var("QPQ_TEST_STORE").as_deref() == Ok("postgres")
}

/// The password of every [`TestServer::user`].
pub(crate) const PASSWORD: &[u8] = b"password of test";

pub(crate) struct TestServer {
    pub(crate) server: Option<RunningServer>,
    pub(crate) dir: tempfile::TempDir,
    /// Where it stores (kept across restarts).
    pub(crate) store: StoreChoice,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), dir.path());
        config.store = test_store();
        tune(&mut config);
        let store = config.store.clone();
        let server = qpq_server::start(config).await.expect("server starts");
        Self {
            server: Some(server),
            dir,
            store,
        }
    }

    /// Another instance of this server's domain: its own data directory holding copies of
    /// this one's certificate, key, OPAQUE setup and KT log key, the same store, and
    /// `tune` on top (the bus, say). Only useful on a shared store (PostgreSQL).
    pub(crate) async fn sibling(&self, tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for file in qpq_server::INSTANCE_FILES {
            std::fs::copy(self.dir.path().join(file), dir.path().join(file))
                .unwrap_or_else(|e| panic!("copying {file} to the sibling: {e}"));
        }
        let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), dir.path());
        config.store = self.store.clone();
        tune(&mut config);
        let store = config.store.clone();
        let server = qpq_server::start(config).await.expect("sibling starts");
        Self {
            server: Some(server),
            dir,
            store,
        }
    }

    /// A server whose configured admin is the user `name` (once registered).
    pub(crate) async fn with_admin(name: &str) -> Self {
        Self::start_with(|c| c.admins = vec![name.into()]).await
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    /// Client options pinned to the server's certificate.
    pub(crate) fn pinned(&self) -> ClientOptions {
        ClientOptions::pinned(self.server.as_ref().unwrap().identity.cert.clone())
    }

    /// A client on its own connection.
    pub(crate) async fn client(&self) -> QpqClient {
        self.client_with(self.addr(), &self.pinned()).await
    }

    /// A client connecting to `addr` (the server's port from another local address, say)
    /// with `options`.
    pub(crate) async fn client_with(&self, addr: SocketAddr, options: &ClientOptions) -> QpqClient {
        QpqClient::new(qpq_runtime::connect(addr, options).await.unwrap())
    }

    /// Shuts the server down and starts it again on the same data directory with the default
    /// configuration, retrying while the old store is released.
    pub(crate) async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        for _ in 0..100 {
            let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), self.dir.path());
            config.store = self.store.clone();
            if let Ok(server) = qpq_server::start(config).await {
                self.server = Some(server);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "the server did not restart on {}",
            self.dir.path().display()
        );
    }

    /// `user` logged in again on a new connection (after a restart, say).
    pub(crate) async fn relogin(&self, user: User) -> User {
        let client = self.client().await;
        let session = qpq_client::login(&client, &user.name, PASSWORD, None)
            .await
            .expect("login");
        User {
            client,
            session,
            ..user
        }
    }

    pub(crate) async fn user(&self, name: &str) -> User {
        let client = self.client().await;
        let identity = IdentityKey::generate();
        qpq_client::register(&client, name, PASSWORD, &identity.public())
            .await
            .expect("register");
        let session = qpq_client::login(&client, name, PASSWORD, None)
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
    pub(crate) session: Login,
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
    /// The binary's path.
    pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_qpq-server");

    /// Starts the binary in `dir` (its working directory) with `args`, and waits for its
    /// "listening on" line. Under `QPQ_TEST_STORE=postgres` it stores in a database of its
    /// own, the same one for every start in `dir` (its URL is kept in `dir/test-store`).
    pub(crate) fn spawn(dir: &Path, args: &[&str]) -> Self {
        Self::spawn_command(std::process::Command::new(Self::BINARY), dir, args)
    }

    /// As [`Self::spawn`], with `command` running the binary (e.g. `ip netns exec <ns>
    /// <binary>`).
    pub(crate) fn spawn_command(
        mut command: std::process::Command,
        dir: &Path,
        args: &[&str],
    ) -> Self {
        use std::io::{BufRead, BufReader};
        let remembered = dir.join("test-store");
        let store = match std::fs::read_to_string(&remembered) {
            Ok(url) => Some(url),
            Err(_) => match test_store() {
                StoreChoice::Embedded => None,
                StoreChoice::Postgres(url) => {
                    std::fs::write(&remembered, &url).unwrap();
                    Some(url)
                }
            },
        };
        if let Some(url) = &store {
            command.args(["--store", url]);
        }
        let mut child = command
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

    /// Where the binary started in `dir` writes its certificate.
    pub(crate) fn cert_path(dir: &Path) -> PathBuf {
        dir.join("data/server-cert.der")
    }

    /// A client pinned to the certificate in `cert`.
    pub(crate) async fn client(&self, cert: &Path) -> QpqClient {
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

/// The real binary in a temporary directory of its own, deleted after it.
pub(crate) struct TempServerProcess {
    pub(crate) process: ServerProcess,
    pub(crate) cert: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

impl TempServerProcess {
    /// Starts the binary with `args` in a new temporary directory.
    pub(crate) fn spawn(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let process = ServerProcess::spawn(dir.path(), args);
        Self {
            process,
            cert: ServerProcess::cert_path(dir.path()),
            dir,
        }
    }

    /// A client pinned to the server's certificate.
    pub(crate) async fn client(&self) -> QpqClient {
        self.process.client(&self.cert).await
    }
}

/// Ends a test early because this machine lacks something it needs: the line goes to the
/// standard error stream directly, past the test harness's capture, so a plain `cargo test`
/// shows it. Every skip of these tests is for something `.ci/run` installs or sets up
/// (nftables, network namespaces as root, IPv6 loopback), so under `CI=true` it panics
/// instead: in CI a skip is a failure.
pub(crate) fn skip(test: &str, reason: &str) {
    qpq_server::store::conformance::skip(test, reason);
}

/// Resident memory of a process, KiB (`VmRSS` in /proc/<pid>/status).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A TCP port free right now on 127.0.0.1 (for `--metrics-listen`).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole HTTP response of `GET path` from the metrics listener at `addr`.
pub(crate) async fn scrape(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Every message in the queue of the session `token`, in order, by paging with Peek.
pub(crate) async fn all_messages(client: &QpqClient, token: &Bytes) -> Vec<proto::QueuedMessage> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .peek(proto::PeekRequest {
                session_token: token.clone(),
                limit: 1000,
                after_seq: after,
            })
            .await
            .unwrap();
        if let Some(last) = page.messages.last() {
            after = last.seq;
        }
        let done = !page.more || page.messages.is_empty();
        out.extend(page.messages);
        if done {
            return out;
        }
    }
}
