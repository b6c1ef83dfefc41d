//! Recovery bundles over real QUIC: store, fetch only after a fresh OPAQUE login, delete.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, code};
use qpq_runtime::StatusCode;
use qpq_schema::proto;

#[tokio::test]
async fn fetch_needs_a_fresh_login() {
    let server = TestServer::start_with(|c| c.recovery_fresh_login_secs = 1).await;
    let alice = server.user("alice").await;
    let bundle = Bytes::from(vec![0xabu8; 60 * 1024]);
    let stored = alice
        .client
        .store_recovery_bundle(proto::StoreRecoveryBundleRequest {
            session_token: alice.token(),
            bundle: bundle.clone(),
        })
        .await
        .unwrap();
    assert!(stored.stored_at_unix_ms > 0);
    tokio::time::sleep(Duration::from_millis(1_300)).await;

    // The session still works, but its login is too old to fetch the bundle.
    let old = alice
        .client
        .fetch_recovery_bundle(proto::FetchRecoveryBundleRequest {
            session_token: alice.token(),
        })
        .await;
    let status = old.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::Forbidden);
    assert!(
        status.message().contains("log in again"),
        "{}",
        status.message()
    );

    // A fresh login gets it, byte for byte.
    let fresh = qpq_client::login(&alice.client, "alice", b"password of test", None)
        .await
        .unwrap();
    let got = alice
        .client
        .fetch_recovery_bundle(proto::FetchRecoveryBundleRequest {
            session_token: fresh.token.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got.bundle, bundle);
    assert_eq!(got.stored_at_unix_ms, stored.stored_at_unix_ms);
}

#[tokio::test]
async fn store_replace_delete_and_limits() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let fetch = |token: Bytes| {
        let client = alice.client.clone();
        async move {
            client
                .fetch_recovery_bundle(proto::FetchRecoveryBundleRequest {
                    session_token: token,
                })
                .await
        }
    };
    assert_eq!(code(fetch(alice.token()).await), StatusCode::NotFound);
    for bundle in [&b"first"[..], b"second"] {
        alice
            .client
            .store_recovery_bundle(proto::StoreRecoveryBundleRequest {
                session_token: alice.token(),
                bundle: Bytes::copy_from_slice(bundle),
            })
            .await
            .unwrap();
    }
    assert_eq!(&fetch(alice.token()).await.unwrap().bundle[..], b"second");
    // Each account has its own.
    assert_eq!(code(fetch(bob.token()).await), StatusCode::NotFound);
    for bad in [Bytes::new(), Bytes::from(vec![1u8; 60 * 1024 + 1])] {
        let result = alice
            .client
            .store_recovery_bundle(proto::StoreRecoveryBundleRequest {
                session_token: alice.token(),
                bundle: bad,
            })
            .await;
        assert_eq!(code(result), StatusCode::BadRequest);
    }
    let delete = || async {
        alice
            .client
            .delete_recovery_bundle(proto::DeleteRecoveryBundleRequest {
                session_token: alice.token(),
            })
            .await
            .unwrap()
            .deleted
    };
    assert!(delete().await);
    assert!(!delete().await);
    assert_eq!(code(fetch(alice.token()).await), StatusCode::NotFound);
}
