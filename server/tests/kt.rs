//! Key transparency (510, 511, 520) over real QUIC, checked with the client's verifier:
//! honest answers verify; a tampered leaf, a wrong root, a forked log and a bad signature are
//! rejected; the log and its key survive a restart; revocations are logged and checked.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_client::kt::{KtError, TreeHead, verify_audit};
use qpq_client::{QpqClient, proto};
use qpq_runtime::{ClientOptions, StatusCode};
use qpq_server::{Config, RunningServer, StoreChoice};

use proto::audit_key_transparency_request::Subject;

async fn audit(
    client: &QpqClient,
    token: Bytes,
    subject: Option<Subject>,
    last_seen: u64,
) -> proto::AuditKeyTransparencyResponse {
    client
        .audit_key_transparency(proto::AuditKeyTransparencyRequest {
            session_token: token,
            subject,
            last_seen_tree_size: last_seen,
        })
        .await
        .unwrap()
}

fn log_key(response: &proto::AuditKeyTransparencyResponse) -> [u8; 32] {
    response.log_public_key[..].try_into().unwrap()
}

/// Starts a server on an existing data directory (retrying while the previous process's
/// store is still being released).
async fn start_on(dir: &Path, store: &StoreChoice) -> RunningServer {
    for _ in 0..100 {
        let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), dir);
        config.store = store.clone();
        if let Ok(server) = qpq_server::start(config).await {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not restart on {}", dir.display());
}

async fn connect(server: &RunningServer) -> QpqClient {
    let connection = qpq_runtime::connect(
        server.addr,
        &ClientOptions::pinned(server.identity.cert.clone()),
    )
    .await
    .unwrap();
    QpqClient::new(connection)
}

async fn login(client: &QpqClient, name: &str) -> Bytes {
    qpq_client::login(client, name, b"password of test", None)
        .await
        .unwrap()
        .token
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
        // Sockets and the like belong to the running process, not to the data.
    }
}

#[tokio::test]
async fn honest_audits_verify_and_tampered_ones_are_rejected() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;

    let first = audit(
        &alice.client,
        alice.token(),
        Some(Subject::Username("alice".into())),
        0,
    )
    .await;
    let pinned = log_key(&first);
    let verified = verify_audit(&first, &pinned, None).expect("an honest answer verifies");
    assert_eq!(verified.head.tree_size, 3);
    let (index, leaf) = verified.leaf.unwrap();
    assert_eq!(index, 0);
    assert_eq!(leaf.username, "alice");
    assert_eq!(&leaf.identity_key[..], &alice.identity.public());
    assert_eq!(leaf.kind, proto::KtLeafKind::Binding as i32);
    let seen = verified.head;

    server.user("dave").await;
    server.user("erin").await;
    let later = audit(
        &alice.client,
        alice.token(),
        Some(Subject::IdentityKey(Bytes::copy_from_slice(
            &bob.identity.public(),
        ))),
        seen.tree_size,
    )
    .await;
    let verified = verify_audit(&later, &pinned, Some(&seen)).expect("consistent with before");
    assert_eq!(verified.head.tree_size, 5);
    assert_eq!(verified.leaf.unwrap().1.username, "bob");
    assert!(!later.consistency_path.is_empty());
    // By index, and without a subject.
    let by_index = audit(&alice.client, alice.token(), Some(Subject::LeafIndex(4)), 0).await;
    assert_eq!(
        verify_audit(&by_index, &pinned, None)
            .unwrap()
            .leaf
            .unwrap()
            .1
            .username,
        "erin"
    );
    let head_only = audit(&alice.client, alice.token(), None, 5).await;
    let v = verify_audit(&head_only, &pinned, Some(&verified.head)).unwrap();
    assert!(v.leaf.is_none() && head_only.consistency_path.is_empty());

    // A tampered leaf: another name or time for the same proof.
    let mut tampered = later.clone();
    tampered.leaf.as_mut().unwrap().username = "mallory".into();
    assert_eq!(
        verify_audit(&tampered, &pinned, Some(&seen)),
        Err(KtError::NotIncluded)
    );
    let mut tampered = later.clone();
    tampered.leaf.as_mut().unwrap().timestamp_unix_ms += 1;
    assert_eq!(
        verify_audit(&tampered, &pinned, Some(&seen)),
        Err(KtError::NotIncluded)
    );
    let mut moved = later.clone();
    moved.leaf_index = 2;
    assert_eq!(
        verify_audit(&moved, &pinned, Some(&seen)),
        Err(KtError::NotIncluded)
    );

    // A wrong root: one the client remembers but the log never had, or a root swapped into
    // the signed head.
    let wrong = TreeHead {
        root_hash: [7; 32],
        ..seen
    };
    assert_eq!(
        verify_audit(&later, &pinned, Some(&wrong)),
        Err(KtError::Inconsistent)
    );
    let mut swapped = later.clone();
    swapped.tree_head.as_mut().unwrap().root_hash = Bytes::from_static(&[7; 32]);
    assert_eq!(
        verify_audit(&swapped, &pinned, Some(&seen)),
        Err(KtError::BadSignature)
    );

    // A bad signature, and a head from another log key.
    let mut forged = later.clone();
    let head = forged.tree_head.as_mut().unwrap();
    let mut signature = head.signature.to_vec();
    signature[10] ^= 1;
    head.signature = Bytes::from(signature);
    assert_eq!(
        verify_audit(&forged, &pinned, Some(&seen)),
        Err(KtError::BadSignature)
    );
    let other_key = qpq_client::IdentityKey::generate().public();
    assert_eq!(
        verify_audit(&later, &other_key, Some(&seen)),
        Err(KtError::WrongLog)
    );

    // A head smaller than one seen before.
    let ahead = TreeHead {
        tree_size: 9,
        ..seen
    };
    assert!(matches!(
        verify_audit(&later, &pinned, Some(&ahead)),
        Err(KtError::Rollback { seen: 9, got: 5 })
    ));

    // Subjects the log does not have; a size the log never reached.
    let missing = alice
        .client
        .audit_key_transparency(proto::AuditKeyTransparencyRequest {
            session_token: alice.token(),
            subject: Some(Subject::Username("nobody".into())),
            last_seen_tree_size: 0,
        })
        .await;
    assert_eq!(code(missing), StatusCode::NotFound);
    let beyond = alice
        .client
        .audit_key_transparency(proto::AuditKeyTransparencyRequest {
            session_token: alice.token(),
            subject: Some(Subject::LeafIndex(5)),
            last_seen_tree_size: 0,
        })
        .await;
    assert_eq!(code(beyond), StatusCode::NotFound);
    let future = alice
        .client
        .audit_key_transparency(proto::AuditKeyTransparencyRequest {
            session_token: alice.token(),
            subject: None,
            last_seen_tree_size: 6,
        })
        .await;
    assert_eq!(code(future), StatusCode::BadRequest);
}

#[tokio::test]
async fn a_forked_log_is_caught_by_the_consistency_proof() {
    let mut server = TestServer::start().await;
    server.user("alice").await;
    server.user("bob").await;
    server.server.take().unwrap().shutdown().await;

    // Two servers with the same log key and the same first two leaves, then different ones.
    let fork_dir = tempfile::tempdir().unwrap();
    copy_dir(server.dir.path(), fork_dir.path());
    let fork_store = common::copy_store(&server.store);
    let main = start_on(server.dir.path(), &server.store).await;
    let fork = start_on(fork_dir.path(), &fork_store).await;

    let main_client = connect(&main).await;
    qpq_client::register(
        &main_client,
        "carol",
        b"pw",
        &qpq_client::IdentityKey::generate().public(),
    )
    .await
    .unwrap();
    qpq_client::register(
        &main_client,
        "dave",
        b"pw",
        &qpq_client::IdentityKey::generate().public(),
    )
    .await
    .unwrap();
    let fork_client = connect(&fork).await;
    qpq_client::register(
        &fork_client,
        "mallory",
        b"pw",
        &qpq_client::IdentityKey::generate().public(),
    )
    .await
    .unwrap();

    // A client saw the fork's head of three leaves...
    let fork_token = login(&fork_client, "alice").await;
    let from_fork = audit(&fork_client, fork_token, None, 0).await;
    let pinned = log_key(&from_fork);
    let fork_head = verify_audit(&from_fork, &pinned, None).unwrap().head;
    assert_eq!(fork_head.tree_size, 3);

    // ...and then asks the main log, which signs with the same key, for a proof from it.
    let main_token = login(&main_client, "alice").await;
    let from_main = audit(&main_client, main_token, None, 3).await;
    assert_eq!(log_key(&from_main), pinned);
    assert_eq!(
        verify_audit(&from_main, &pinned, Some(&fork_head)),
        Err(KtError::Inconsistent)
    );
    main.shutdown().await;
    fork.shutdown().await;
}

#[tokio::test]
async fn the_log_survives_a_restart_with_the_same_root_and_key() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let before = audit(
        &alice.client,
        alice.token(),
        Some(Subject::Username("bob".into())),
        0,
    )
    .await;
    let pinned = log_key(&before);
    let head = verify_audit(&before, &pinned, None).unwrap().head;

    server.server.take().unwrap().shutdown().await;
    let restarted = start_on(server.dir.path(), &server.store).await;
    let client = connect(&restarted).await;
    let token = login(&client, "alice").await;
    let after = audit(
        &client,
        token.clone(),
        Some(Subject::Username("bob".into())),
        0,
    )
    .await;
    assert_eq!(log_key(&after), pinned, "the log key is persisted");
    let again = verify_audit(&after, &pinned, Some(&head)).unwrap();
    assert_eq!(
        (again.head.tree_size, again.head.root_hash),
        (head.tree_size, head.root_hash)
    );

    // And it keeps growing consistently.
    qpq_client::register(
        &client,
        "carol",
        b"pw",
        &qpq_client::IdentityKey::generate().public(),
    )
    .await
    .unwrap();
    let grown = audit(&client, token, None, head.tree_size).await;
    assert_eq!(
        verify_audit(&grown, &pinned, Some(&head))
            .unwrap()
            .head
            .tree_size,
        3
    );
    restarted.shutdown().await;
}

async fn revoke(
    user: &User,
    key: &[u8; 32],
    reason: proto::RevocationReason,
) -> Result<proto::RevokeKeyResponse, qpq_runtime::RpcError> {
    user.client
        .revoke_key(proto::RevokeKeyRequest {
            session_token: user.token(),
            identity_key: Bytes::copy_from_slice(key),
            reason: reason as i32,
        })
        .await
}

async fn check(user: &User, key: &[u8; 32]) -> proto::CheckRevocationResponse {
    user.client
        .check_revocation(proto::CheckRevocationRequest {
            session_token: user.token(),
            identity_key: Bytes::copy_from_slice(key),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn revocations_are_logged_checked_and_proven() {
    let server = TestServer::start_with(|c| c.admins = vec!["root".into()]).await;
    let root = server.user("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let alice_key = alice.identity.public();
    let bob_key = bob.identity.public();

    assert!(!check(&bob, &alice_key).await.revoked);
    // Not someone else's key; ADMIN is for admins.
    assert_eq!(
        code(revoke(&bob, &alice_key, proto::RevocationReason::Compromised).await),
        StatusCode::Forbidden
    );
    assert_eq!(
        code(revoke(&alice, &alice_key, proto::RevocationReason::Admin).await),
        StatusCode::BadRequest
    );
    let unknown = qpq_client::IdentityKey::generate().public();
    assert_eq!(
        code(revoke(&root, &unknown, proto::RevocationReason::Admin).await),
        StatusCode::NotFound
    );

    let revoked = revoke(&alice, &alice_key, proto::RevocationReason::Compromised)
        .await
        .unwrap();
    assert_eq!(revoked.leaf_index, 3);
    let again = revoke(&alice, &alice_key, proto::RevocationReason::Lost)
        .await
        .unwrap();
    assert_eq!(again, revoked, "a retry returns the existing revocation");
    let status = check(&bob, &alice_key).await;
    assert!(status.revoked);
    assert_eq!(status.leaf_index, 3);
    assert_eq!(status.reason, proto::RevocationReason::Compromised as i32);
    assert_eq!(status.revoked_at_unix_ms, revoked.revoked_at_unix_ms);

    // An admin revoking someone else's key is logged as ADMIN.
    revoke(&root, &bob_key, proto::RevocationReason::Superseded)
        .await
        .unwrap();
    assert_eq!(
        check(&alice, &bob_key).await.reason,
        proto::RevocationReason::Admin as i32
    );

    // The newest leaf for alice is her revocation, proven in the log.
    let response = audit(
        &bob.client,
        bob.token(),
        Some(Subject::Username("alice".into())),
        0,
    )
    .await;
    let pinned = log_key(&response);
    let (index, leaf) = verify_audit(&response, &pinned, None)
        .unwrap()
        .leaf
        .unwrap();
    assert_eq!(index, 3);
    assert_eq!(leaf.kind, proto::KtLeafKind::Revocation as i32);
    assert_eq!(leaf.reason, proto::RevocationReason::Compromised as i32);
    assert_eq!(leaf.username, "alice");

    // A revoked key cannot be bound again, even after its account is gone.
    alice
        .client
        .delete_account(proto::DeleteAccountRequest {
            session_token: alice.token(),
        })
        .await
        .unwrap();
    let client = server.client().await;
    let err = qpq_client::register(&client, "alice2", b"pw", &alice_key)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_each_get_a_proven_leaf_in_one_consistent_log() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let identity = qpq_client::IdentityKey::generate();
            qpq_client::register(&client, &format!("user{i}"), b"pw", &identity.public())
                .await
                .unwrap();
            identity.public()
        }));
    }
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(task.await.unwrap());
    }
    let auditor = server.user("auditor").await;
    let mut indexes = Vec::new();
    let mut pinned = None;
    for (i, key) in keys.iter().enumerate() {
        let response = audit(
            &auditor.client,
            auditor.token(),
            Some(Subject::Username(format!("user{i}"))),
            0,
        )
        .await;
        let pin = *pinned.get_or_insert(log_key(&response));
        let verified = verify_audit(&response, &pin, None).unwrap();
        assert_eq!(verified.head.tree_size, 13);
        let (index, leaf) = verified.leaf.unwrap();
        assert_eq!(&leaf.identity_key[..], key);
        indexes.push(index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 12, "every binding has its own leaf");
}
