//! Operator views: the account listing (pages in username order, each with its ban, queue
//! and devices) and the storage figures, computed from what is stored.

use super::{ALICE, BOB, Backend, CAROL, Fixture, T0, account, msg, new_channel, session};
use crate::store::{
    Actor, AdminStore, BanRecord, BanScope, ChannelId, ChannelStore, DeviceRecord, DeviceStore,
    FederationStore, ModerationStore, OutboxLimits, OutboxMessage, QueueDepth, QueueTotals,
    StorageStats, Store,
};

fn device(id: u8) -> DeviceRecord {
    DeviceRecord {
        id: [id; 16],
        name: String::new(),
        device_key: [id; 32],
        created_at_ms: T0,
        last_seen_ms: 0,
        push: None,
        revoked_at_ms: None,
    }
}

/// Alice (two queued messages, one active device of two), bob (one message), carol
/// (banned until T0 + 500), a session each for alice and bob (bob's expires at T0 + 10),
/// alice's channel, a blob, and one outbox message.
async fn furnished<B: Backend>(backend: &B) -> Fixture<'_, B> {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    s.create_account(account("carol", CAROL)).await.unwrap();
    s.enqueue(vec![
        (ALICE, msg("12345")),
        (ALICE, msg("1")),
        (BOB, msg("12")),
    ])
    .await
    .unwrap();
    for id in [1, 2] {
        s.register_device(&ALICE, &[0; 32], device(id), 8)
            .await
            .unwrap();
    }
    s.revoke_device(&ALICE, &[2; 16], T0).await.unwrap();
    s.put_session(session(1, "alice", ALICE, T0 + 60_000))
        .await
        .unwrap();
    s.put_session(session(2, "bob", BOB, T0 + 10))
        .await
        .unwrap();
    let ban = BanRecord {
        scope: BanScope::Server,
        identity: CAROL,
        username: "carol".into(),
        reason: String::new(),
        banned_by: ALICE,
        created_at_ms: T0,
        expires_at_ms: T0 + 500,
    };
    let admin = Actor {
        identity: ALICE,
        server_admin: true,
    };
    s.ban(ban, admin).await.unwrap().unwrap();
    s.create_channel(new_channel(ChannelId([7; 16]), ALICE, vec![BOB]))
        .await
        .unwrap()
        .unwrap();
    super::blobs::put(s, 1, BOB, &[3; 1_000], 1_000).await;
    let out = OutboxMessage {
        relay_id: [1; 16],
        sender: "alice@a.example".into(),
        sender_identity_key: ALICE,
        recipient: "dave@b.example".into(),
        channel_id: None,
        payload: bytes::Bytes::from_static(b"1234567"),
        enqueued_at_ms: T0,
        ttl_ms: 60_000,
    };
    let limits = OutboxLimits {
        max_messages: 10,
        max_bytes: 1_000,
    };
    s.enqueue_with_outbox(Vec::new(), vec![("b.example".into(), out)], limits)
        .await
        .unwrap();
    f
}

pub async fn accounts_are_listed_in_pages_with_their_state<B: Backend>(backend: &B) {
    let f = furnished(backend).await;
    let s = &f.store;
    let first = s.list_accounts("", 2).await.unwrap();
    let names: Vec<&str> = first.accounts.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names, vec!["alice", "bob"]);
    assert_eq!(first.next_after.as_deref(), Some("bob"));
    let alice = &first.accounts[0];
    assert_eq!(alice.identity_key, ALICE);
    assert_eq!(alice.created_at_ms, T0);
    assert_eq!(alice.banned_until_ms, None);
    assert_eq!(
        alice.queue,
        QueueDepth {
            messages: 2,
            bytes: 6
        }
    );
    assert_eq!(alice.devices, 1, "the revoked device is not counted");
    let rest = s.list_accounts("bob", 2).await.unwrap();
    assert_eq!(rest.next_after, None);
    assert_eq!(rest.accounts.len(), 1);
    assert_eq!(rest.accounts[0].username, "carol");
    assert_eq!(rest.accounts[0].banned_until_ms, Some(T0 + 500));
    // "after" is exclusive and need not be a username.
    assert_eq!(s.list_accounts("b", 10).await.unwrap().accounts.len(), 2);
    assert!(
        s.list_accounts("carol", 10)
            .await
            .unwrap()
            .accounts
            .is_empty()
    );
    // An expired ban is no ban.
    f.advance(500);
    let carol = s.list_accounts("bob", 1).await.unwrap().accounts.remove(0);
    assert_eq!(carol.banned_until_ms, None);
}

pub async fn storage_figures_count_what_is_stored<B: Backend>(backend: &B) {
    let f = furnished(backend).await;
    f.advance(10);
    let stats = f.store.storage_stats().await.unwrap();
    let kt_log_size = stats.kt_log_size;
    assert_eq!(
        stats,
        StorageStats {
            accounts: 3,
            live_sessions: 1,
            queued_messages: 3,
            queued_bytes: 8,
            nonempty_queues: 2,
            blobs: 1,
            blob_bytes: 1_000,
            channels: 1,
            kt_log_size,
            outbox_messages: 1,
            outbox_bytes: 7,
        }
    );
    assert!(kt_log_size >= 3, "one binding per account at least");
    assert_eq!(
        f.store.queue_totals().await.unwrap(),
        QueueTotals {
            messages: 3,
            bytes: 8,
            nonempty_queues: 2
        }
    );
    // The figures follow deletions, and survive a reopen.
    f.store.delete_account("alice").await.unwrap();
    let f = f.reopen().await;
    let stats = f.store.storage_stats().await.unwrap();
    assert_eq!(
        (stats.accounts, stats.queued_messages, stats.nonempty_queues),
        (2, 1, 1)
    );
    assert_eq!(stats.channels, 1, "bob owns the channel now");
    assert_eq!(f.store.queue_totals().await.unwrap().messages, 1);
}
