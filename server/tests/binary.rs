//! The real `qpq-server` binary, started the way the README says, on a fresh directory.

mod common;

use std::time::Duration;

use common::ServerProcess;
use qpq_schema::proto::{HealthRequest, ServingStatus};

#[tokio::test]
async fn fresh_directory_generates_a_certificate_and_answers_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(dir.path(), &[]);
    let cert = dir.path().join("data/server-cert.der");
    assert!(cert.exists(), "certificate generated in ./data");
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("data/server-key.der"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);

    let client = server.client(&cert).await;
    let health = client.health(HealthRequest {}).await.unwrap();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    assert!(health.server_time_unix_ms > 1_700_000_000_000);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = client.health(HealthRequest {}).await.unwrap();
    assert!(later.uptime_secs >= 1, "uptime advances: {later:?}");

    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    // A restart keeps the same certificate, so pinned clients keep working.
    let server = ServerProcess::spawn(dir.path(), &[]);
    server
        .client(&cert)
        .await
        .health(HealthRequest {})
        .await
        .unwrap();
}
