//! The real `qpq-server` binary, started the way the README says, on a fresh directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qpq_runtime::{ClientOptions, tls};
use qpq_schema::QpqClient;
use qpq_schema::proto::{HealthRequest, ServingStatus};

/// Starts the binary in `dir` and waits for its "listening on" line.
fn spawn_server(dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qpq-server"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
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
    (child, addr)
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn fresh_directory_generates_a_certificate_and_answers_health() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(dir.path());
    let cert_path = dir.path().join("data/server-cert.der");
    let cert = tls::load_cert(&cert_path).expect("certificate generated in ./data");
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("data/server-key.der"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);

    let connection = qpq_runtime::connect(addr, &ClientOptions::pinned(cert.clone()))
        .await
        .unwrap();
    let client = QpqClient::new(connection);
    let health = client.health(HealthRequest {}).await.unwrap();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    assert!(health.server_time_unix_ms > 1_700_000_000_000);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = client.health(HealthRequest {}).await.unwrap();
    assert!(later.uptime_secs >= 1, "uptime advances: {later:?}");

    let status = terminate(&mut child);
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    // A restart keeps the same certificate, so pinned clients keep working.
    let (mut child, addr) = spawn_server(dir.path());
    let connection = qpq_runtime::connect(addr, &ClientOptions::pinned(cert))
        .await
        .unwrap();
    QpqClient::new(connection)
        .health(HealthRequest {})
        .await
        .unwrap();
    terminate(&mut child);
}
