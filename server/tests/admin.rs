//! The operator's views (ListUsers 951, StorageStats 952) over real QUIC: accounts paged in
//! username order with their bans, queues and devices; counts that follow accounts,
//! messages, blobs, channels, sessions and the federation outbox; and neither for anyone but
//! a server admin.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::proto;
use sha2::{Digest, Sha256};

const PASSWORD: &[u8] = b"password of test";

async fn list_users(
    by: &User,
    after: &str,
    limit: u32,
) -> Result<proto::ListUsersResponse, RpcError> {
    by.client
        .list_users(proto::ListUsersRequest {
            session_token: by.token(),
            limit,
            after: after.into(),
        })
        .await
}

async fn stats(by: &User) -> proto::StorageStatsResponse {
    by.client
        .storage_stats(proto::StorageStatsRequest {
            session_token: by.token(),
        })
        .await
        .unwrap()
}

fn names(page: &proto::ListUsersResponse) -> Vec<&str> {
    page.users.iter().map(|u| u.username.as_str()).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn upload(user: &User, data: &[u8]) -> Bytes {
    user.client
        .upload_blob(proto::UploadBlobRequest {
            session_token: user.token(),
            upload_id: Bytes::new(),
            offset: 0,
            chunk: Bytes::copy_from_slice(data),
            finish: true,
            expected_sha256: Bytes::copy_from_slice(&Sha256::digest(data)),
            total_size: data.len() as u64,
            mime_type: "application/octet-stream".into(),
        })
        .await
        .unwrap()
        .blob_id
}

#[tokio::test]
async fn users_are_listed_in_pages_by_username_with_bans_queues_and_devices() {
    let started = now_ms();
    let server = TestServer::with_admin("root").await;
    // Registered out of order: the listing is by name, not by age.
    let dave = server.user("dave").await;
    let root = server.user("root").await;
    let bob = server.user("bob").await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;

    // Five accounts, two a page: three pages, every name once, in order.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = list_users(&root, &after, 2).await.unwrap();
        pages += 1;
        assert!(page.users.len() <= 2, "{:?}", names(&page));
        seen.extend(page.users.iter().map(|u| u.username.clone()));
        if page.next_after.is_empty() {
            break;
        }
        assert_eq!(page.next_after, seen.last().unwrap().as_str());
        after = page.next_after;
        assert!(pages < 10, "the listing does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "root"]);

    // A page that holds exactly the rest says it was the last.
    let all = list_users(&root, "", 5).await.unwrap();
    assert_eq!(names(&all), ["alice", "bob", "carol", "dave", "root"]);
    assert_eq!(all.next_after, "");
    // 0 is the server's default page (100), which holds them all.
    assert_eq!(list_users(&root, "", 0).await.unwrap().users.len(), 5);
    // `after` is exclusive and need not be a registered name.
    let page = list_users(&root, "bob", 2).await.unwrap();
    assert_eq!(names(&page), ["carol", "dave"]);
    let page = list_users(&root, "c", 0).await.unwrap();
    assert_eq!(names(&page), ["carol", "dave", "root"]);
    let page = list_users(&root, "zz", 0).await.unwrap();
    assert!(page.users.is_empty() && page.next_after.is_empty());

    // What each entry says: identity key, creation time, queue, devices, online, bans.
    alice.send(&bob, b"first").await.unwrap();
    alice.send(&bob, b"second message").await.unwrap();
    bob.client
        .register_device(proto::RegisterDeviceRequest {
            session_token: bob.token(),
            device_id: Bytes::from(vec![9; 16]),
            name: "bob's phone".into(),
            device_key: Bytes::copy_from_slice(&qpq_client::IdentityKey::generate().public()),
        })
        .await
        .unwrap();
    for (who, secs) in [(&dave, 0), (&carol, 3600)] {
        root.client
            .ban_user(proto::BanUserRequest {
                session_token: root.token(),
                target: who.to(),
                channel_id: Bytes::new(),
                reason: "spam".into(),
                duration_secs: secs,
            })
            .await
            .unwrap();
    }
    let page = list_users(&root, "", 0).await.unwrap();
    let user = |name: &str| page.users.iter().find(|u| u.username == name).unwrap();
    let b = user("bob");
    assert_eq!(&b.identity_key[..], &bob.identity.public()[..]);
    assert!(b.created_at_unix_ms >= started && b.created_at_unix_ms <= now_ms());
    assert_eq!((b.queued_messages, b.queued_bytes), (2, 5 + 14));
    assert_eq!(b.devices, 1);
    assert!(b.online, "bob's connection is authenticated");
    assert!(!b.banned);
    assert_eq!(user("alice").queued_messages, 0);
    assert_eq!(user("alice").devices, 0);
    let d = user("dave");
    assert!(d.banned);
    assert_eq!(d.banned_until_unix_ms, 0, "permanent");
    assert!(!d.online, "the ban closed dave's connection");
    let c = user("carol");
    assert!(c.banned);
    assert!(c.banned_until_unix_ms > now_ms() + 3_000_000);
    // Lifting the ban shows at once.
    root.client
        .unban_user(proto::UnbanUserRequest {
            session_token: root.token(),
            target: dave.to(),
            channel_id: Bytes::new(),
        })
        .await
        .unwrap();
    let page = list_users(&root, "carol", 1).await.unwrap();
    assert_eq!(names(&page), ["dave"]);
    assert!(!page.users[0].banned);
    assert_eq!(page.next_after, "dave");

    // An oversized cursor is a clear BadRequest.
    let error = list_users(&root, &"a".repeat(65), 0).await.unwrap_err();
    assert_eq!(error.code(), Some(StatusCode::BadRequest));
    assert!(error.to_string().contains("next_after"), "{error}");
}

#[tokio::test]
async fn only_server_admins_list_users_and_read_storage_stats() {
    let server = TestServer::with_admin("root").await;
    let alice = server.user("alice").await;
    let root = server.user("root").await;
    let refused = list_users(&alice, "", 0).await;
    assert_eq!(code(refused), StatusCode::Forbidden);
    let refused = alice
        .client
        .storage_stats(proto::StorageStatsRequest {
            session_token: alice.token(),
        })
        .await;
    let status = match refused {
        Err(RpcError::Status(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(status.code(), StatusCode::Forbidden);
    assert!(status.message().contains("administrators"), "{status}");
    let anonymous = server
        .client()
        .await
        .storage_stats(proto::StorageStatsRequest::default())
        .await;
    assert_eq!(code(anonymous), StatusCode::Unauthorized);
    // The same calls work for the admin.
    assert_eq!(list_users(&root, "", 0).await.unwrap().users.len(), 2);
    assert_eq!(stats(&root).await.accounts, 2);
}

#[tokio::test]
async fn storage_stats_follow_accounts_messages_blobs_and_channels() {
    let server = TestServer::with_admin("root").await;
    let root = server.user("root").await;
    let first = stats(&root).await;
    assert_eq!(first.accounts, 1);
    assert_eq!(first.live_sessions, 1);
    assert_eq!(first.online_users, 1, "the caller itself");
    assert_eq!(first.kt_log_size, 1, "one binding per account");
    assert_eq!(
        (
            first.queued_messages,
            first.queued_bytes,
            first.nonempty_queues
        ),
        (0, 0, 0)
    );
    assert_eq!((first.blobs, first.blob_bytes, first.channels), (0, 0, 0));
    assert_eq!(
        (
            first.federation_outbox_messages,
            first.federation_outbox_bytes
        ),
        (0, 0)
    );
    assert!(first.disk_bytes > 0);
    assert!(first.journal_syncs > 0, "registration and login wrote");

    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let s = stats(&root).await;
    assert_eq!((s.accounts, s.live_sessions, s.kt_log_size), (3, 3, 3));
    assert!(s.journal_syncs > first.journal_syncs);

    // Queued messages and their bytes go up on enqueue and back down on ack.
    let one = alice.send(&bob, &[1; 100]).await.unwrap();
    let two = alice.send(&bob, &[2; 250]).await.unwrap();
    let three = bob.send(&alice, &[3; 50]).await.unwrap();
    let s = stats(&root).await;
    assert_eq!(
        (s.queued_messages, s.queued_bytes, s.nonempty_queues),
        (3, 400, 2)
    );
    assert_eq!(s.online_users, 3);
    bob.client
        .ack(proto::AckRequest {
            session_token: bob.token(),
            seqs: vec![one, two],
        })
        .await
        .unwrap();
    let s = stats(&root).await;
    assert_eq!(
        (s.queued_messages, s.queued_bytes, s.nonempty_queues),
        (1, 50, 1)
    );
    alice
        .client
        .ack(proto::AckRequest {
            session_token: alice.token(),
            seqs: vec![three],
        })
        .await
        .unwrap();
    let s = stats(&root).await;
    assert_eq!((s.queued_messages, s.queued_bytes), (0, 0));

    // Blobs count each content once, however many accounts upload it.
    let photo = vec![0x42u8; 3000];
    let id = upload(&alice, &photo).await;
    let s = stats(&root).await;
    assert_eq!((s.blobs, s.blob_bytes), (1, 3000));
    assert_eq!(upload(&bob, &photo).await, id);
    upload(&bob, &[7u8; 1000]).await;
    let s = stats(&root).await;
    assert_eq!((s.blobs, s.blob_bytes), (2, 4000));

    alice
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: alice.token(),
            name: "room".into(),
            initial_members: vec![bob.to().unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stats(&root).await.channels, 1);

    // Deleting an account takes its queue, sessions and blob references with it; its
    // transparency log leaf stays (the log is append-only).
    alice.send(&bob, &[4; 10]).await.unwrap();
    bob.client
        .delete_account(proto::DeleteAccountRequest {
            session_token: bob.token(),
        })
        .await
        .unwrap();
    let s = stats(&root).await;
    assert_eq!((s.accounts, s.live_sessions, s.kt_log_size), (2, 2, 3));
    assert_eq!((s.queued_messages, s.queued_bytes), (0, 0));
    assert_eq!((s.blobs, s.blob_bytes), (1, 3000), "bob's own blob went");
    assert!(s.disk_bytes > 0);
}

#[tokio::test]
async fn expired_sessions_are_not_live() {
    let server = TestServer::start_with(|c| {
        c.admins = vec!["root".into()];
        c.session_ttl_secs = 1;
    })
    .await;
    server.user("alice").await;
    server.user("bob").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Every session above has expired; the admin logs in again.
    let client = server.client().await;
    let identity = qpq_client::IdentityKey::generate();
    qpq_client::register(&client, "root", PASSWORD, &identity.public())
        .await
        .unwrap();
    let session = qpq_client::login(&client, "root", PASSWORD, None)
        .await
        .unwrap();
    let s = client
        .storage_stats(proto::StorageStatsRequest {
            session_token: session.token,
        })
        .await
        .unwrap();
    assert_eq!((s.accounts, s.live_sessions), (3, 1));
}

#[tokio::test]
async fn messages_waiting_for_a_federation_peer_are_counted() {
    // A peer that is configured but never answers: what is sent to it stays in the outbox.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    drop(silent);
    let server = TestServer::start_with(|c| {
        c.admins = vec!["root".into()];
        c.domain = Some("a.example".into());
        c.peers = vec![qpq_server::PeerConfig {
            domain: "b.example".into(),
            address,
            cert_sha256: [7; 32],
        }];
    })
    .await;
    let root = server.user("root").await;
    for payload in [&b"to bob"[..], b"to bob again"] {
        let sent = root
            .client
            .enqueue(proto::EnqueueRequest {
                session_token: root.token(),
                recipient: Some(proto::UserRef {
                    target: Some(proto::user_ref::Target::Username("bob@b.example".into())),
                }),
                payload: Bytes::copy_from_slice(payload),
                ttl_secs: 0,
                channel_id: Bytes::new(),
            })
            .await
            .unwrap();
        assert!(sent.relayed);
    }
    let s = stats(&root).await;
    assert_eq!(
        (s.federation_outbox_messages, s.federation_outbox_bytes),
        (2, 6 + 12)
    );
    assert_eq!((s.queued_messages, s.queued_bytes), (0, 0), "nothing local");
}
