//! Configuration: a TOML file, overridden by flags; bad files fail at start naming the key.

mod common;

use std::process::Command;

use common::ServerProcess;
use qpq_schema::proto::HealthRequest;
use qpq_server::{Config, ConfigError};

#[tokio::test]
async fn the_server_reads_a_config_file_and_a_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("qpq.toml"),
        "data_dir = \"from-file\"\ndomain = \"file.example\"\nqueue-max-messages = 42\nadmin = [\"root\", \"ops\"]\n",
    )
    .unwrap();
    let server = ServerProcess::spawn(
        dir.path(),
        &["--config", "qpq.toml", "--domain", "flag.example"],
    );
    // The file's data_dir is used (nothing on the command line sets it)…
    let cert = dir.path().join("from-file/server-cert.der");
    assert!(cert.exists(), "data_dir from the file");
    // …and the flag beats the file's domain.
    let health = server
        .client(&cert)
        .await
        .health(HealthRequest {})
        .await
        .unwrap();
    assert_eq!(health.domain, "flag.example");
}

#[test]
fn precedence_is_flag_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qpq.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\nqueue_max_messages = 42\nadmin = [\"root\", \"ops\"]\nsync_each_write = true\n",
    )
    .unwrap();
    let config = Config::load_from([
        "qpq-server",
        "--config",
        file.to_str().unwrap(),
        "--queue-max-messages",
        "7",
    ])
    .unwrap();
    assert_eq!(config.queue_max_messages, 7, "flag wins");
    assert_eq!(
        config.listen,
        "127.0.0.1:7000".parse().unwrap(),
        "file beats default"
    );
    assert_eq!(config.admins, ["root", "ops"]);
    assert!(config.sync_each_write);
    assert_eq!(config.session_ttl_secs, 30 * 24 * 3600, "default");
}

#[test]
fn a_bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qpq.toml");
    let load = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Config::load_from(["qpq-server", "--config", file.to_str().unwrap()])
    };
    match load("listen = \"not an address\"\n") {
        Err(ConfigError::Key { key, message, .. }) => {
            assert_eq!(key, "listen");
            assert!(message.contains("not an address"), "{message}");
        }
        other => panic!("expected a key error, got {other:?}"),
    }
    match load("lisen = \"127.0.0.1:1\"\n") {
        Err(ConfigError::Key { key, message, .. }) => {
            assert_eq!(key, "lisen");
            assert!(message.contains("unknown setting"), "{message}");
        }
        other => panic!("expected a key error, got {other:?}"),
    }
    assert!(matches!(
        load("listen = [1, {}]"),
        Err(ConfigError::Toml { .. }) | Err(ConfigError::Key { .. })
    ));
    assert!(matches!(
        load("this is not toml"),
        Err(ConfigError::Toml { .. })
    ));

    // The binary stops at start with the message.
    std::fs::write(&file, "session_ttl_secs = \"soon\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_qpq-server"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key `session_ttl_secs`"), "{stderr}");
}

/// docs/running.md documents every flag, with its environment variable.
#[test]
fn every_setting_is_documented() {
    use clap::CommandFactory;
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/running.md"),
    )
    .unwrap();
    for arg in Config::command().get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let row = format!("| `--{long}` | `{}` |", env.to_string_lossy());
        assert!(
            docs.contains(&row),
            "docs/running.md lacks the row for --{long}: {row}"
        );
    }
}

#[tokio::test]
async fn the_connection_limit_from_the_configuration_reaches_the_server() {
    let server = common::TestServer::start_with(|config| config.max_connections = 1).await;
    let first = server.client().await;
    first.health(HealthRequest {}).await.unwrap();
    // `--max-connections 1`: a second connection is refused while the first is open…
    let cert = server.server.as_ref().unwrap().identity.cert.clone();
    let options = qpq_runtime::ClientOptions::pinned(cert);
    let second = qpq_runtime::connect(server.addr(), &options).await;
    assert!(second.is_err(), "a second connection was accepted");
    // …and the first one is still served.
    first.health(HealthRequest {}).await.unwrap();
}

/// `--store` takes `embedded` or a PostgreSQL URL, from a flag, the environment or the file;
/// a bad one names what is wrong; the file key works; backup and restore refuse PostgreSQL
/// (they copy the embedded store) and point to pg_dump.
#[test]
fn the_store_setting_chooses_the_backend_and_says_what_is_wrong() {
    use qpq_server::StoreChoice;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qpq.toml");
    std::fs::write(&file, "store = \"postgres://qpq@db.example/qpq\"\n").unwrap();
    let config = Config::load_from(["qpq-server", "--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        config.store,
        StoreChoice::Postgres("postgres://qpq@db.example/qpq".into())
    );
    // The password never shows in the configuration's debug output.
    let with_password = Config::load_from([
        "qpq-server",
        "--store",
        "postgres://qpq:secret-word@db.example/qpq",
    ])
    .unwrap();
    assert!(!format!("{with_password:?}").contains("secret-word"));
    let default = Config::load_from(["qpq-server"]).unwrap();
    assert_eq!(default.store, StoreChoice::Embedded);

    let output = Command::new(env!("CARGO_BIN_EXE_qpq-server"))
        .args(["--store", "mysql://x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PostgreSQL URL"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_qpq-server"))
        .current_dir(dir.path())
        .args([
            "--store",
            "postgres://qpq@db.example/qpq",
            "backup",
            "--to",
            "copy",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!dir.path().join("copy").exists());
}

#[test]
fn the_bus_setting_joins_instances_and_says_what_is_wrong() {
    use qpq_server::BusChoice;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qpq.toml");
    std::fs::write(
        &file,
        "bus = \"nats://127.0.0.1:4222\"\nbus_recheck_ms = 750\n",
    )
    .unwrap();
    let config = Config::load_from(["qpq-server", "--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(config.bus, BusChoice::Nats("nats://127.0.0.1:4222".into()));
    assert_eq!(config.bus_recheck_ms, 750);
    let default = Config::load_from(["qpq-server"]).unwrap();
    assert_eq!(default.bus, BusChoice::Local);
    assert_eq!(default.bus_recheck_ms, 5000);
    // The password never shows in the configuration's debug output.
    let with_password = Config::load_from([
        "qpq-server",
        "--bus",
        "nats://qpq:secret-word@nats.example:4222",
    ])
    .unwrap();
    assert!(!format!("{with_password:?}").contains("secret-word"));

    for (args, expected) in [
        (&["--bus", "redis://x"][..], "NATS URL"),
        (&["--bus", "nats://"][..], "HOST:PORT"),
        (&["--bus-recheck-ms", "9000"][..], "100..=5000"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_qpq-server"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Instances cannot share the embedded store: refused before anything listens.
    let output = Command::new(env!("CARGO_BIN_EXE_qpq-server"))
        .args([
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--bus",
            "nats://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--store postgres://"), "{stderr}");
}
