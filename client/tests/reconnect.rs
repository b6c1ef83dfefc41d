//! `ReconnectingClient` against the real `qpq-server` binary, stopped and restarted (on the
//! same port and data directory) between calls.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use qpq_client::{ClientError, ClientOptions, MethodId, ReconnectingClient, RpcError, proto};

/// The server binary of this workspace (built by `cargo test --workspace`), found beside the
/// `deps/` directory this test runs from.
fn server_binary() -> PathBuf {
    let test = std::env::current_exe().unwrap();
    let server = test
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .join("qpq-server");
    assert!(
        server.exists(),
        "{} is missing; run the tests with `cargo test --workspace` (or `cargo build -p qpq-server` first)",
        server.display()
    );
    server
}

/// A server process on `listen` with its data in `dir`; returns it and its address.
fn spawn(dir: &Path, listen: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(server_binary())
        .args(["--listen", listen, "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("qpq-server listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line}"))
        .parse()
        .unwrap();
    (child, addr)
}

struct Server {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = spawn(dir.path(), "127.0.0.1:0");
        Self { child, addr, dir }
    }

    /// SIGKILL: the process vanishes without closing its connections.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: the server closes its connections and exits.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }

    fn restart(&mut self) {
        let (child, addr) = spawn(self.dir.path(), &self.addr.to_string());
        assert_eq!(addr, self.addr);
        self.child = child;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peek(token: &Bytes) -> proto::PeekRequest {
    proto::PeekRequest {
        session_token: token.clone(),
        limit: 10,
        after_seq: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_restarts_and_retries_only_idempotent_calls() {
    let mut server = Server::start();
    let cert = qpq_runtime::tls::load_cert(&server.dir.path().join("server-cert.der")).unwrap();
    // Short timeouts so a dead connection is noticed in seconds, not the default 30 s.
    let mut options = ClientOptions::pinned(cert);
    options.idle_timeout = std::time::Duration::from_secs(3);
    options.keep_alive = Some(std::time::Duration::from_millis(500));
    options.connect_timeout = std::time::Duration::from_secs(5);
    let client = ReconnectingClient::with_options(server.addr, options)
        .await
        .unwrap();
    let identity = qpq_client::IdentityKey::generate();
    qpq_client::register(
        &client.client(),
        "alice",
        b"a long passphrase",
        &identity.public(),
    )
    .await
    .unwrap();
    let session = qpq_client::login(&client.client(), "alice", b"a long passphrase", None)
        .await
        .unwrap();
    let token = session.token.clone();
    let to_self = || proto::EnqueueRequest {
        session_token: token.clone(),
        recipient: Some(proto::UserRef {
            target: Some(proto::user_ref::Target::IdentityKey(
                Bytes::copy_from_slice(&identity.public()),
            )),
        }),
        payload: Bytes::from_static(b"note to self"),
        ttl_secs: 0,
        channel_id: Bytes::new(),
    };
    let enqueue = |c: qpq_client::QpqClient, r| async move { c.enqueue(r).await };
    let peek_call = |c: qpq_client::QpqClient, r| async move { c.peek(r).await };

    client
        .call(MethodId::Enqueue, to_self(), enqueue)
        .await
        .unwrap();
    assert_eq!(client.reconnects(), 0);

    // A clean stop closes the connection: the next call dials first.
    server.terminate();
    server.restart();
    let page = client
        .call(MethodId::Peek, peek(&token), peek_call)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "the session and the queue survived");
    assert_eq!(client.reconnects(), 1);

    // A crash leaves the connection looking open: the call gets no answer until the idle
    // timeout, and the idempotent call is then re-issued once on a new connection (to the
    // server restarted meanwhile).
    server.kill();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        server.restart();
        server
    });
    let page = client
        .call(MethodId::Peek, peek(&token), peek_call)
        .await
        .unwrap();
    let mut server = restarter.join().unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(client.reconnects(), 2);

    // A non-idempotent call is not re-issued: the error comes back, and the next call goes
    // over a new connection.
    server.kill();
    let error = client
        .call(MethodId::Enqueue, to_self(), enqueue)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Rpc(RpcError::Timeout(_) | RpcError::Transport(_))
        ),
        "{error:?}"
    );
    assert_eq!(
        client.reconnects(),
        2,
        "no dial for a call that is not retried"
    );
    server.restart();
    client
        .call(MethodId::Enqueue, to_self(), enqueue)
        .await
        .unwrap();
    assert_eq!(client.reconnects(), 3);
    let page = client
        .call(MethodId::Peek, peek(&token), peek_call)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2, "the failed Enqueue was not re-sent");

    // A server that stays down is an error, not a hang.
    server.kill();
    let error = client
        .call(MethodId::Peek, peek(&token), peek_call)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Connect(_) | ClientError::Rpc(RpcError::Timeout(_))
        ),
        "{error:?}"
    );
}
