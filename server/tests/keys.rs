//! Keys (300-304) over real QUIC: the KeyPackage queue (atomic pops, last resort, caps, rate
//! limit) and signed hybrid public keys.

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_client::IdentityKey;
use qpq_client::keys::{sign_hybrid_key, verify_hybrid_key};
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::proto;
use rand::RngCore;

async fn upload(
    user: &User,
    package: &[u8],
    last_resort: bool,
) -> Result<proto::UploadKeyPackageResponse, RpcError> {
    user.client
        .upload_key_package(proto::UploadKeyPackageRequest {
            session_token: user.token(),
            key_package: Bytes::copy_from_slice(package),
            last_resort,
        })
        .await
}

async fn fetch(requester: &User, owner: &[u8]) -> Result<proto::FetchKeyPackageResponse, RpcError> {
    requester
        .client
        .fetch_key_package(proto::FetchKeyPackageRequest {
            session_token: requester.token(),
            identity_key: Bytes::copy_from_slice(owner),
        })
        .await
}

/// An ML-KEM-768 encapsulation key that passes the modulus check: random coefficients
/// below 3329, then 32 random bytes.
fn mlkem_key() -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let mut key = Vec::with_capacity(1184);
    for _ in 0..384 {
        let a = (rng.next_u32() % 3329) as u16;
        let b = (rng.next_u32() % 3329) as u16;
        key.push((a & 0xff) as u8);
        key.push(((a >> 8) | ((b & 0x0f) << 4)) as u8);
        key.push((b >> 4) as u8);
    }
    let mut rho = [0u8; 32];
    rng.fill_bytes(&mut rho);
    key.extend_from_slice(&rho);
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_fetches_over_thirty_packages_get_each_once_then_the_last_resort() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut uploaded = HashSet::new();
    for i in 0..30 {
        let package = format!("key-package-{i}");
        let r = upload(&alice, package.as_bytes(), false).await.unwrap();
        assert_eq!(r.queue_depth, i + 1);
        uploaded.insert(package.into_bytes());
    }
    let r = upload(&alice, b"last-resort", true).await.unwrap();
    assert_eq!((r.queue_depth, r.has_last_resort), (30, true));

    let owner = alice.identity.public();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = bob.client.clone();
        let token = bob.token();
        tasks.push(tokio::spawn(async move {
            client
                .fetch_key_package(proto::FetchKeyPackageRequest {
                    session_token: token,
                    identity_key: Bytes::copy_from_slice(&owner),
                })
                .await
                .unwrap()
        }));
    }
    let mut single_use = Vec::new();
    let mut last_resort = 0;
    for task in tasks {
        let got = task.await.unwrap();
        if got.last_resort {
            assert_eq!(&got.key_package[..], b"last-resort");
            last_resort += 1;
        } else {
            single_use.push(got.key_package.to_vec());
        }
    }
    assert_eq!(
        single_use.len(),
        30,
        "every queued KeyPackage is handed out once"
    );
    let distinct: HashSet<_> = single_use.into_iter().collect();
    assert_eq!(distinct, uploaded, "no KeyPackage is handed out twice");
    assert_eq!(last_resort, 20);

    // The last-resort KeyPackage stays.
    let again = fetch(&bob, &owner).await.unwrap();
    assert!(again.last_resort);
    let state = upload(&alice, b"fresh", false).await.unwrap();
    assert_eq!((state.queue_depth, state.has_last_resort), (1, true));
    let fresh = fetch(&bob, &owner).await.unwrap();
    assert_eq!(
        (&fresh.key_package[..], fresh.last_resort),
        (&b"fresh"[..], false)
    );
}

#[tokio::test]
async fn uploads_are_checked_and_fetches_answer_for_unknown_and_empty_identities() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    assert_eq!(
        code(upload(&alice, b"", false).await),
        StatusCode::BadRequest
    );
    let too_big = vec![7u8; 16 * 1024 + 1];
    let err = upload(&alice, &too_big, false).await.unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::BadRequest));
    assert!(err.to_string().contains("at most 16384 bytes"), "{err}");
    upload(&alice, &vec![7u8; 16 * 1024], false).await.unwrap();

    // Nothing stored: an empty answer, not an error.
    let none = fetch(&alice, &bob.identity.public()).await.unwrap();
    assert!(none.key_package.is_empty() && !none.last_resort);
    // An identity nobody registered.
    assert_eq!(
        code(fetch(&alice, &IdentityKey::generate().public()).await),
        StatusCode::NotFound
    );
    assert_eq!(
        code(fetch(&alice, &[1, 2, 3]).await),
        StatusCode::BadRequest
    );

    // A later last-resort upload replaces the earlier one.
    upload(&bob, b"lr-1", true).await.unwrap();
    upload(&bob, b"lr-2", true).await.unwrap();
    let got = fetch(&alice, &bob.identity.public()).await.unwrap();
    assert_eq!(
        (&got.key_package[..], got.last_resort),
        (&b"lr-2"[..], true)
    );
}

#[tokio::test]
async fn fetches_are_rate_limited_per_requester() {
    let server = TestServer::start_with(|c| c.key_package_fetches_per_minute = 3).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    upload(&alice, b"lr", true).await.unwrap();
    for _ in 0..3 {
        fetch(&bob, &alice.identity.public()).await.unwrap();
    }
    let err = fetch(&bob, &alice.identity.public()).await.unwrap_err();
    let status = err.status().expect("a status");
    assert_eq!(status.code(), StatusCode::RateLimited);
    assert!(
        status.message().contains("3 per minute"),
        "{}",
        status.message()
    );
    let retry = status.retry_after_ms().expect("a retry hint");
    assert!(retry > 10_000 && retry <= 20_000, "{retry}");
    // Another requester has its own budget.
    fetch(&carol, &alice.identity.public()).await.unwrap();
}

#[tokio::test]
async fn hybrid_keys_are_checked_stored_replaced_and_fetched() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mlkem = mlkem_key();
    let put = |user: &User, key: proto::HybridPublicKey| {
        let client = user.client.clone();
        let token = user.token();
        async move {
            client
                .upload_hybrid_key(proto::UploadHybridKeyRequest {
                    session_token: token,
                    key: Some(key),
                })
                .await
        }
    };

    // Signed by someone else: refused.
    let forged = sign_hybrid_key(&bob.identity, &[5; 32], &mlkem, 1_000);
    let err = put(&alice, forged).await.unwrap_err();
    assert_eq!(err.code(), Some(StatusCode::BadRequest));
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
    // Wrong sizes.
    let short = sign_hybrid_key(&alice.identity, &[5; 32], &mlkem[..1183], 1_000);
    assert_eq!(code(put(&alice, short).await), StatusCode::BadRequest);
    let mut bad_sig = sign_hybrid_key(&alice.identity, &[5; 32], &mlkem, 1_000);
    bad_sig.signature = Bytes::from_static(&[1; 63]);
    assert_eq!(code(put(&alice, bad_sig).await), StatusCode::BadRequest);
    // Not an ML-KEM key (a coefficient of 4095).
    let mut not_mlkem = mlkem.clone();
    not_mlkem[0] = 0xff;
    not_mlkem[1] |= 0x0f;
    let err = put(
        &alice,
        sign_hybrid_key(&alice.identity, &[5; 32], &not_mlkem, 1_000),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("modulus check"), "{err}");
    assert_eq!(
        code(
            alice
                .client
                .upload_hybrid_key(proto::UploadHybridKeyRequest {
                    session_token: alice.token(),
                    key: None,
                })
                .await
        ),
        StatusCode::BadRequest
    );

    let key = sign_hybrid_key(&alice.identity, &[5; 32], &mlkem, 1_000);
    put(&alice, key.clone()).await.unwrap();
    // The same upload again is harmless.
    put(&alice, key.clone()).await.unwrap();

    let fetched = bob
        .client
        .fetch_hybrid_key(proto::FetchHybridKeyRequest {
            session_token: bob.token(),
            identity_key: Bytes::copy_from_slice(&alice.identity.public()),
        })
        .await
        .unwrap();
    assert!(fetched.found);
    let got = fetched.key.unwrap();
    assert_eq!(got, key);
    assert!(verify_hybrid_key(&alice.identity.public(), &got));

    let missing = bob
        .client
        .fetch_hybrid_key(proto::FetchHybridKeyRequest {
            session_token: bob.token(),
            identity_key: Bytes::copy_from_slice(&carol.identity.public()),
        })
        .await
        .unwrap();
    assert!(!missing.found && missing.key.is_none());

    // An older key cannot replace a newer one; a newer one can.
    let older = sign_hybrid_key(&alice.identity, &[6; 32], &mlkem, 999);
    assert_eq!(code(put(&alice, older).await), StatusCode::Conflict);
    let newer = sign_hybrid_key(&alice.identity, &[7; 32], &mlkem, 2_000);
    put(&alice, newer.clone()).await.unwrap();
    put(
        &carol,
        sign_hybrid_key(&carol.identity, &[8; 32], &mlkem, 5),
    )
    .await
    .unwrap();

    let many = bob
        .client
        .fetch_hybrid_keys(proto::FetchHybridKeysRequest {
            session_token: bob.token(),
            identity_keys: vec![
                Bytes::copy_from_slice(&carol.identity.public()),
                Bytes::copy_from_slice(&bob.identity.public()),
                Bytes::copy_from_slice(&IdentityKey::generate().public()),
                Bytes::copy_from_slice(&alice.identity.public()),
            ],
        })
        .await
        .unwrap();
    let owners: Vec<_> = many
        .entries
        .iter()
        .map(|e| e.identity_key.to_vec())
        .collect();
    assert_eq!(
        owners,
        vec![
            carol.identity.public().to_vec(),
            alice.identity.public().to_vec()
        ],
        "in request order, without the identities that have none"
    );
    assert_eq!(many.entries[1].key.as_ref(), Some(&newer));

    let too_many = bob
        .client
        .fetch_hybrid_keys(proto::FetchHybridKeysRequest {
            session_token: bob.token(),
            identity_keys: vec![Bytes::copy_from_slice(&[1; 32]); 257],
        })
        .await;
    assert_eq!(code(too_many), StatusCode::BadRequest);
}

#[tokio::test]
async fn deleting_an_account_deletes_its_keys() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    upload(&alice, b"kp", false).await.unwrap();
    upload(&alice, b"lr", true).await.unwrap();
    alice
        .client
        .delete_account(proto::DeleteAccountRequest {
            session_token: alice.token(),
        })
        .await
        .unwrap();
    assert_eq!(
        code(fetch(&bob, &alice.identity.public()).await),
        StatusCode::NotFound
    );
}
