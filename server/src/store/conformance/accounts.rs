//! Accounts and sessions ([`Store`]'s account half), account deletion, reopening, and the
//! durability policy (a failed commit never answers `Ok`).

use super::{ALICE, BOB, Backend, Fixture, T0, account, msg, session};
use crate::store::{DeviceStore, P2pStore, RecoveryStore, Seq, Store, StoreError};

pub async fn store_is_shareable_across_tasks<B: Backend>(_backend: &B) {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<B::Store>();
}

pub async fn account_uniqueness_and_lookup<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    assert!(matches!(
        s.create_account(account("alice", BOB)).await,
        Err(StoreError::UsernameTaken)
    ));
    assert!(matches!(
        s.create_account(account("alice2", ALICE)).await,
        Err(StoreError::IdentityTaken)
    ));
    assert!(matches!(
        s.create_account(account("", BOB)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    s.create_account(account("bob", BOB)).await.unwrap();
    assert_eq!(
        s.account_by_username("alice").await.unwrap(),
        Some(account("alice", ALICE))
    );
    assert_eq!(
        s.account_by_identity(&BOB).await.unwrap(),
        Some(account("bob", BOB))
    );
    assert_eq!(s.account_by_username("carol").await.unwrap(), None);
    assert_eq!(s.account_by_identity(&[9; 32]).await.unwrap(), None);
}

pub async fn concurrent_registrations_of_one_name_admit_one<B: Backend>(backend: &B) {
    let f = Fixture::new(backend).await;
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_account(account("zed", [i; 32])).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert!(matches!(e, StoreError::UsernameTaken), "{e}"),
        }
    }
    assert_eq!(ok, 1);
}

pub async fn sessions_put_get_expire_delete<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let before = f.census().await;
    // No account, or the wrong identity: refused.
    assert!(matches!(
        s.put_session(session(1, "carol", BOB, T0 + 10)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.put_session(session(1, "alice", BOB, T0 + 10)).await,
        Err(StoreError::NotFound)
    ));
    s.put_session(session(1, "alice", ALICE, T0 + 10))
        .await
        .unwrap();
    s.put_session(session(2, "alice", ALICE, T0 + 1_000))
        .await
        .unwrap();
    assert!(matches!(
        s.put_session(session(2, "alice", ALICE, T0 + 1_000)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_ne!(f.census().await, before, "the census counts sessions");
    assert_eq!(
        s.session_by_token_hash(&[1; 32]).await.unwrap(),
        Some(session(1, "alice", ALICE, T0 + 10))
    );
    f.advance(10);
    assert_eq!(
        s.session_by_token_hash(&[1; 32]).await.unwrap(),
        None,
        "expired"
    );
    assert!(s.session_by_token_hash(&[2; 32]).await.unwrap().is_some());

    let removed = s.delete_session(&[2; 32]).await.unwrap();
    assert_eq!(removed, Some(session(2, "alice", ALICE, T0 + 1_000)));
    assert_eq!(s.delete_session(&[2; 32]).await.unwrap(), None);
    assert_eq!(s.session_by_token_hash(&[2; 32]).await.unwrap(), None);

    s.put_session(session(3, "alice", ALICE, T0 + 5_000))
        .await
        .unwrap();
    let mut all = s.delete_sessions_of("alice").await.unwrap();
    all.sort_by_key(|r| r.token_hash);
    assert_eq!(
        all,
        vec![
            session(1, "alice", ALICE, T0 + 10),
            session(3, "alice", ALICE, T0 + 5_000)
        ]
    );
    assert_eq!(s.session_by_token_hash(&[3; 32]).await.unwrap(), None);
    assert!(s.delete_sessions_of("alice").await.unwrap().is_empty());
    assert!(s.delete_sessions_of("nobody").await.unwrap().is_empty());
    // No session record or index entry is left behind.
    assert_eq!(f.census().await, before);
}

/// Many look-ups at once (a store may answer them together): each gets its own session, an
/// unknown, expired or deleted token gets none, and a deletion is seen by every look-up made
/// after it returned.
pub async fn concurrent_session_lookups_each_get_their_own_answer<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    for token in 1..=40u8 {
        let expires = if token.is_multiple_of(10) {
            T0 + 5
        } else {
            T0 + 60_000
        };
        s.put_session(session(token, "alice", ALICE, expires))
            .await
            .unwrap();
    }
    f.advance(5);
    let expected = |token: u8| {
        (token <= 40 && !token.is_multiple_of(10))
            .then(|| session(token, "alice", ALICE, T0 + 60_000))
    };
    for round in 0..3 {
        let mut tasks = Vec::new();
        for token in (1..=60u8).chain(1..=60u8) {
            let s = f.store.clone();
            tasks.push(tokio::spawn(async move {
                (token, s.session_by_token_hash(&[token; 32]).await)
            }));
        }
        for t in tasks {
            let (token, got) = t.await.unwrap();
            let want = if round > 0 && token <= 5 {
                None
            } else {
                expected(token)
            };
            assert_eq!(got.unwrap(), want, "token {token}, round {round}");
        }
        for token in 1..=5u8 {
            s.delete_session(&[token; 32]).await.unwrap();
        }
    }
}

pub async fn delete_account_removes_everything<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    s.put_session(session(1, "alice", ALICE, T0 + 10_000))
        .await
        .unwrap();
    s.put_session(session(2, "bob", BOB, T0 + 10_000))
        .await
        .unwrap();
    s.enqueue(vec![(ALICE, msg("a")), (ALICE, msg("b"))])
        .await
        .unwrap();
    s.enqueue(vec![(BOB, msg("c"))]).await.unwrap();

    let gone = s.delete_account("alice").await.unwrap();
    assert_eq!(gone.account, account("alice", ALICE));
    assert_eq!(gone.sessions, vec![session(1, "alice", ALICE, T0 + 10_000)]);
    assert_eq!(gone.messages_removed, 2);
    assert!(matches!(
        s.delete_account("alice").await,
        Err(StoreError::NotFound)
    ));

    assert_eq!(s.account_by_username("alice").await.unwrap(), None);
    assert_eq!(s.account_by_identity(&ALICE).await.unwrap(), None);
    assert_eq!(s.session_by_token_hash(&[1; 32]).await.unwrap(), None);
    assert!(matches!(
        s.enqueue(vec![(ALICE, msg("x"))]).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.put_session(session(3, "alice", ALICE, T0 + 10_000)).await,
        Err(StoreError::NotFound)
    ));
    // Bob is intact.
    assert!(s.session_by_token_hash(&[2; 32]).await.unwrap().is_some());
    assert_eq!(s.queue_depth(&BOB).await.unwrap().messages, 1);

    // Nothing keyed by alice is left: a twin in which alice registered and was deleted at
    // once, with no session and no message, holds exactly as many records.
    let twin = Fixture::with_alice(backend).await;
    twin.store
        .create_account(account("bob", BOB))
        .await
        .unwrap();
    twin.store
        .put_session(session(2, "bob", BOB, T0 + 10_000))
        .await
        .unwrap();
    twin.store.enqueue(vec![(BOB, msg("c"))]).await.unwrap();
    twin.store.delete_account("alice").await.unwrap();
    assert_eq!(f.census().await, twin.census().await);

    // A deleted account's name can be registered again.
    s.create_account(account("alice", [0xa2; 32]))
        .await
        .unwrap();
}

/// The first fingerprint recorded for a name stays; another one is reported, also after a
/// reopen, and when several instances bind at once exactly one fingerprint wins.
pub async fn secrets_are_bound_by_the_first_that_serves_the_store<B: Backend>(backend: &B) {
    let f = Fixture::new(backend).await;
    let bind = |pairs: &[(&str, u8)]| {
        let s = f.store.clone();
        let pairs: Vec<(String, [u8; 32])> = pairs
            .iter()
            .map(|(n, b)| (n.to_string(), [*b; 32]))
            .collect();
        async move { s.bind_secrets(pairs).await.unwrap() }
    };
    assert!(bind(&[("opaque", 1), ("kt", 2)]).await.is_empty());
    assert!(bind(&[("opaque", 1), ("kt", 2)]).await.is_empty());
    assert_eq!(
        bind(&[("opaque", 1), ("kt", 3), ("tls", 4)]).await,
        vec!["kt".to_string()]
    );
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(
        s.bind_secrets(vec![("kt".into(), [3; 32]), ("tls".into(), [4; 32])])
            .await
            .unwrap(),
        vec!["kt".to_string()],
        "the first fingerprint survives a reopen; the new name was recorded"
    );
    let mut tasks = Vec::new();
    for i in 0..6u8 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            s.bind_secrets(vec![("raced".into(), [i; 32])])
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap().is_empty() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

pub async fn reopen_finds_everything_acknowledged<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    f.store
        .put_session(session(1, "alice", ALICE, T0 + 10_000))
        .await
        .unwrap();
    f.store
        .enqueue(vec![(ALICE, msg("a")), (ALICE, msg("b"))])
        .await
        .unwrap();
    f.store.ack(&ALICE, &[Seq(1)]).await.unwrap();
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(
        s.account_by_identity(&ALICE).await.unwrap(),
        Some(account("alice", ALICE))
    );
    assert!(s.session_by_token_hash(&[1; 32]).await.unwrap().is_some());
    let p = s.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
    assert_eq!(super::queues::seqs(&p), vec![2]);
    assert_eq!(&p.messages[0].payload[..], b"b");
    assert_eq!(
        s.queue_depth(&ALICE).await.unwrap(),
        crate::store::QueueDepth {
            messages: 1,
            bytes: 1
        }
    );
}

/// The durability policy: after a failed commit, that write and every later call answer
/// Unavailable (never `Ok`), and a restart finds what was acknowledged before.
pub async fn a_failed_commit_answers_unavailable_never_ok<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    f.store.enqueue(vec![(ALICE, msg("kept"))]).await.unwrap();
    f.store
        .engine()
        .expect("the store needs an engine to inject a commit failure into")
        .inject_commit_failure_for_tests();
    let r = f.store.enqueue(vec![(ALICE, msg("lost"))]).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    // Whether later calls are refused too is the engine's policy (fjall: until restart;
    // PostgreSQL: no, the next transaction is independent), tested with each engine.
    // After a restart the acknowledged message is there.
    let f = f.reopen().await;
    let p = f.store.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
    assert_eq!(&p.messages[0].payload[..], b"kept");
}

/// Gives `identity` a device with a push token, a recovery bundle and a P2P endpoint.
async fn furnish<S: Store>(s: &S, identity: &crate::store::IdentityKey) {
    use bytes::Bytes;

    use crate::store::{DeviceRecord, EndpointRecord, PushPlatform, PushToken};
    s.register_device(
        identity,
        &[0; 32],
        DeviceRecord {
            id: [4; 16],
            name: "phone".into(),
            device_key: [9; 32],
            created_at_ms: T0,
            last_seen_ms: 0,
            push: None,
            revoked_at_ms: None,
        },
        8,
    )
    .await
    .unwrap();
    s.set_push_token(
        identity,
        &[4; 16],
        Some(PushToken {
            platform: PushPlatform::UnifiedPush,
            token: "http://push.example.org/x".into(),
        }),
    )
    .await
    .unwrap();
    s.put_recovery_bundle(identity, Bytes::from_static(b"bundle"), T0)
        .await
        .unwrap();
    s.publish_endpoint(
        identity,
        EndpointRecord {
            device_id: vec![4; 16],
            node_id: [1; 32],
            relay_url: String::new(),
            direct_addrs: vec!["192.0.2.1:1".into()],
            published_at_ms: T0,
            expires_at_ms: T0 + 60_000,
        },
    )
    .await
    .unwrap();
}

pub async fn account_deletion_removes_devices_tokens_bundle_and_endpoints<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    for identity in [ALICE, BOB] {
        furnish(s, &identity).await;
    }
    s.delete_account("alice").await.unwrap();
    assert!(s.devices_of(&ALICE).await.unwrap().is_empty());
    assert!(s.push_targets(&[ALICE]).await.unwrap().is_empty());
    assert!(s.recovery_bundle(&ALICE).await.unwrap().is_none());
    assert!(s.endpoints_of(&ALICE, T0).await.unwrap().is_empty());
    assert_eq!(s.push_targets(&[BOB]).await.unwrap().len(), 1);
    // Only bob's records remain: a twin in which alice never had any holds as many.
    let twin = Fixture::with_alice(backend).await;
    twin.store
        .create_account(account("bob", BOB))
        .await
        .unwrap();
    furnish(&twin.store, &BOB).await;
    twin.store.delete_account("alice").await.unwrap();
    assert_eq!(f.census().await, twin.census().await);
    // Expired endpoints are swept with their index entries.
    assert_eq!(
        s.purge_expired_endpoints(T0 + 60_000).await.unwrap(),
        (1, false)
    );
    assert_eq!(
        twin.store
            .purge_expired_endpoints(T0 + 60_000)
            .await
            .unwrap(),
        (1, false)
    );
    assert_eq!(f.census().await, twin.census().await);
    assert!(s.endpoints_of(&BOB, T0).await.unwrap().is_empty());
}
