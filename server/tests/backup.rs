//! Backup under load, then restore: the restored server serves every message that was
//! acknowledged before the backup started.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::ServerProcess;
use qpq_client::IdentityKey;
use qpq_schema::proto;

const PASSWORD: &[u8] = b"backup test password";

fn run_server_command(dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(ServerProcess::BINARY)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "qpq-server {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ServerProcess::cert_path(dir.path());
    // The senders below enqueue without pause, past the default per-account enqueue limit.
    let server = ServerProcess::spawn(dir.path(), &["--rate-limit", "all=off"]);
    let client = server.client(&cert).await;
    let alice_key = IdentityKey::generate();
    let bob_key = IdentityKey::generate();
    qpq_client::register(&client, "alice", PASSWORD, &alice_key.public())
        .await
        .unwrap();
    qpq_client::register(&client, "bob", PASSWORD, &bob_key.public())
        .await
        .unwrap();
    let alice = qpq_client::login(&client, "alice", PASSWORD, None)
        .await
        .unwrap();

    // Load: 8 senders enqueue until told to stop, recording what was acknowledged.
    let acknowledged: Arc<Mutex<BTreeMap<u64, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..8u32 {
        let (client, token, acknowledged, stop) = (
            client.clone(),
            alice.token.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        let to = Bytes::copy_from_slice(&bob_key.public());
        senders.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("{sender}:{n}").into_bytes();
                n += 1;
                let response = client
                    .enqueue(proto::EnqueueRequest {
                        session_token: token.clone(),
                        recipient: Some(proto::UserRef {
                            target: Some(proto::user_ref::Target::IdentityKey(to.clone())),
                        }),
                        payload: Bytes::from(payload.clone()),
                        ttl_secs: 0,
                        channel_id: Bytes::new(),
                    })
                    .await
                    .unwrap();
                acknowledged.lock().unwrap().insert(response.seq, payload);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Everything acknowledged before the backup starts must be in it.
    let before = acknowledged.lock().unwrap().clone();
    assert!(!before.is_empty());
    let backup_dir = dir.path().join("backup");
    let dir_path = dir.path().to_owned();
    let backup_arg = backup_dir.to_str().unwrap().to_owned();
    let report = tokio::task::spawn_blocking(move || {
        run_server_command(
            &dir_path,
            &["--data-dir", "data", "backup", "--to", &backup_arg],
        )
    })
    .await
    .unwrap();
    assert!(report.starts_with("online backup:"), "{report}");
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    drop(server);

    // Restore into a fresh directory and serve from it.
    let restored = tempfile::tempdir().unwrap();
    let out = run_server_command(
        restored.path(),
        &[
            "--data-dir",
            "data",
            "restore",
            "--from",
            backup_dir.to_str().unwrap(),
        ],
    );
    assert!(out.contains("restored"), "{out}");
    let server = ServerProcess::spawn(restored.path(), &[]);
    // The certificate came back too, so pinned clients keep working.
    let client = server.client(&cert).await;
    let bob = qpq_client::login(&client, "bob", PASSWORD, None)
        .await
        .unwrap();
    let mut stored = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = client
            .peek(proto::PeekRequest {
                session_token: bob.token.clone(),
                limit: 1000,
                after_seq: after,
            })
            .await
            .unwrap();
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.seq;
        for message in page.messages {
            stored.insert(message.seq, message.payload.to_vec());
        }
    }
    println!(
        "acknowledged before the backup: {}, restored: {}",
        before.len(),
        stored.len()
    );
    for (seq, payload) in &before {
        assert_eq!(
            stored.get(seq),
            Some(payload),
            "message {seq} lost by backup/restore"
        );
    }

    // Restoring over an existing database is refused.
    let refused = Command::new(ServerProcess::BINARY)
        .args([
            "--data-dir",
            "data",
            "restore",
            "--from",
            backup_dir.to_str().unwrap(),
        ])
        .current_dir(restored.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already holds a database"));
}
