//! Storage faults over real QUIC: once a journal sync fails (injected into the store as an
//! `fsync` error would be), the write it covered and every call after it answer
//! Unavailable with a retry hint, never Ok; what was acknowledged before survives a restart.

mod common;

use bytes::Bytes;
use common::{TestServer, User};
use qpq_client::IdentityKey;
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::proto;

/// One write of each kind a user makes, named; each must answer Unavailable now.
async fn writes(alice: &User, bob: &User, round: u32) -> Vec<(&'static str, Result<(), RpcError>)> {
    let token = alice.token();
    let c = &alice.client;
    vec![
        (
            "Enqueue",
            alice
                .send(bob, format!("after the fault {round}").as_bytes())
                .await
                .map(|_| ()),
        ),
        (
            "Ack",
            c.ack(proto::AckRequest {
                session_token: token.clone(),
                seqs: vec![1],
            })
            .await
            .map(|_| ()),
        ),
        (
            "UploadKeyPackage",
            c.upload_key_package(proto::UploadKeyPackageRequest {
                session_token: token.clone(),
                key_package: Bytes::from(vec![round as u8; 64]),
                last_resort: false,
            })
            .await
            .map(|_| ()),
        ),
        (
            "StoreRecoveryBundle",
            c.store_recovery_bundle(proto::StoreRecoveryBundleRequest {
                session_token: token.clone(),
                bundle: Bytes::from(vec![7u8; 128]),
            })
            .await
            .map(|_| ()),
        ),
        (
            "RegisterDevice",
            c.register_device(proto::RegisterDeviceRequest {
                session_token: token.clone(),
                device_id: Bytes::from(vec![round as u8; 16]),
                name: "phone".into(),
                device_key: Bytes::copy_from_slice(&IdentityKey::generate().public()),
            })
            .await
            .map(|_| ()),
        ),
        (
            "CreateChannel",
            c.create_channel(proto::CreateChannelRequest {
                session_token: token.clone(),
                name: format!("room {round}"),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_be_made_durable_answers_unavailable_never_ok() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let kept = alice
        .send(&bob, b"acknowledged before the fault")
        .await
        .unwrap();

    server
        .server
        .as_ref()
        .unwrap()
        .inject_sync_failure_for_tests();
    let mut answered = 0;
    for round in 0..3 {
        for (method, result) in writes(&alice, &bob, round).await {
            let status = match result {
                Err(RpcError::Status(status)) => status,
                other => panic!("{method} after a failed sync (round {round}): {other:?}"),
            };
            assert_eq!(
                status.code(),
                StatusCode::Unavailable,
                "{method} (round {round}): {status}"
            );
            assert!(status.retry_after_ms().unwrap_or(0) > 0, "{status}");
            answered += 1;
        }
    }
    // Reads need the store too, and say the same.
    let status = bob
        .client
        .peek(proto::PeekRequest {
            session_token: bob.token(),
            limit: 10,
            after_seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(StatusCode::Unavailable), "{status}");
    println!("after the injected sync failure: {answered} writes of 6 kinds, all Unavailable");

    // Restart on the same data directory: the acknowledged message is there.
    server.restart().await;
    let bob = server.relogin(bob).await;
    let queued = bob
        .client
        .peek(proto::PeekRequest {
            session_token: bob.token(),
            limit: 100,
            after_seq: 0,
        })
        .await
        .unwrap()
        .messages;
    assert_eq!(queued.first().map(|m| m.seq), Some(kept));
    assert_eq!(&queued[0].payload[..], b"acknowledged before the fault");
    // The write whose sync failed was answered Unavailable, not Ok: the client cannot count
    // on it either way. Report whether it reached the disk anyway.
    println!(
        "after restart: {} message(s) in bob's queue (the acknowledged one first; {} unacknowledged write(s) reached the disk anyway)",
        queued.len(),
        queued.len() - 1
    );
    server.server.take().unwrap().shutdown().await;
}
