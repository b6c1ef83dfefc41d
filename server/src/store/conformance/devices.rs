//! Devices: registration (retries, key mismatch, the per-account cap, binding the calling
//! session), revocation (tombstones that refuse the id for good, bound sessions ended, push
//! token and endpoint dropped), push tokens and last-seen times.

use super::{ALICE, BOB, Backend, Fixture, T0, account, session};
use crate::store::{
    DeviceError, DeviceId, DeviceRecord, DeviceStore, EndpointRecord, P2pStore, PushPlatform,
    PushToken, SessionRecord, Store, StoreError,
};

fn device(id: u8, created_at_ms: u64) -> DeviceRecord {
    DeviceRecord {
        id: [id; 16],
        name: format!("device {id}"),
        device_key: [id; 32],
        created_at_ms,
        last_seen_ms: 0,
        push: None,
        revoked_at_ms: None,
    }
}

fn push(token: &str) -> PushToken {
    PushToken {
        platform: PushPlatform::UnifiedPush,
        token: token.into(),
    }
}

/// A session of alice with token hash `[token; 32]`, bound to `device` when given.
fn session_on(token: u8, device: Option<DeviceId>) -> SessionRecord {
    SessionRecord {
        device_id: device.map(|d| d.to_vec()),
        ..session(token, "alice", ALICE, T0 + 60_000)
    }
}

pub async fn registration_retries_caps_and_binds_the_session<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.put_session(session_on(1, None)).await.unwrap();
    let first = s
        .register_device(&ALICE, &[1; 32], device(1, T0), 2)
        .await
        .unwrap();
    assert_eq!(first.device, device(1, T0));
    assert!(first.bound_session);
    let bound = s.session_by_token_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(bound.device_id, Some(vec![1; 16]));
    // A retry answers the stored record (and does not rebind: the session has a device).
    let retry = s
        .register_device(&ALICE, &[1; 32], device(1, T0 + 5), 2)
        .await
        .unwrap();
    assert_eq!(retry.device, device(1, T0));
    assert!(!retry.bound_session);
    let other_key = DeviceRecord {
        device_key: [7; 32],
        ..device(1, T0)
    };
    assert!(matches!(
        s.register_device(&ALICE, &[1; 32], other_key, 2).await,
        Err(DeviceError::KeyMismatch)
    ));
    // A session of another account, or none at all, is not bound.
    let second = s
        .register_device(&ALICE, &[9; 32], device(2, T0 + 1), 2)
        .await
        .unwrap();
    assert!(!second.bound_session);
    assert!(matches!(
        s.register_device(&ALICE, &[9; 32], device(3, T0 + 2), 2)
            .await,
        Err(DeviceError::TooMany { limit: 2 })
    ));
    assert!(matches!(
        s.register_device(&BOB, &[9; 32], device(3, T0), 2).await,
        Err(DeviceError::Store(StoreError::NotFound))
    ));
    let f = f.reopen().await;
    assert_eq!(
        f.store.devices_of(&ALICE).await.unwrap(),
        vec![device(1, T0), device(2, T0 + 1)],
        "oldest first"
    );
    assert!(f.store.devices_of(&BOB).await.unwrap().is_empty());
}

pub async fn revocation_ends_sessions_and_refuses_the_id_for_good<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.register_device(&ALICE, &[0; 32], device(1, T0), 2)
        .await
        .unwrap();
    s.register_device(&ALICE, &[0; 32], device(2, T0), 2)
        .await
        .unwrap();
    s.set_push_token(&ALICE, &[1; 16], Some(push("http://push.example.org/1")))
        .await
        .unwrap();
    s.publish_endpoint(
        &ALICE,
        EndpointRecord {
            device_id: vec![1; 16],
            node_id: [1; 32],
            relay_url: String::new(),
            direct_addrs: Vec::new(),
            published_at_ms: T0,
            expires_at_ms: T0 + 60_000,
        },
    )
    .await
    .unwrap();
    s.put_session(session_on(1, Some([1; 16]))).await.unwrap();
    s.put_session(session_on(2, Some([1; 16]))).await.unwrap();
    s.put_session(session_on(3, Some([2; 16]))).await.unwrap();

    let mut ended = s.revoke_device(&ALICE, &[1; 16], T0 + 9).await.unwrap();
    ended.sort_by_key(|r| r.token_hash);
    assert_eq!(
        ended,
        vec![session_on(1, Some([1; 16])), session_on(2, Some([1; 16]))]
    );
    for token in [1, 2] {
        assert_eq!(s.session_by_token_hash(&[token; 32]).await.unwrap(), None);
    }
    assert!(s.session_by_token_hash(&[3; 32]).await.unwrap().is_some());
    assert!(s.push_targets(&[ALICE]).await.unwrap().is_empty());
    assert!(s.endpoints_of(&ALICE, T0).await.unwrap().is_empty());
    let tombstone = &s.devices_of(&ALICE).await.unwrap()[0];
    assert_eq!(tombstone.revoked_at_ms, Some(T0 + 9));
    assert_eq!(tombstone.push, None);
    // Revoked for good: no registration, login or push token with that id again.
    assert!(matches!(
        s.register_device(&ALICE, &[0; 32], device(1, T0), 2).await,
        Err(DeviceError::Revoked)
    ));
    assert!(matches!(
        s.put_session(session_on(4, Some([1; 16]))).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(
        s.set_push_token(&ALICE, &[1; 16], Some(push("http://push.example.org/2")))
            .await
            .is_err()
    );
    assert!(
        s.revoke_device(&ALICE, &[1; 16], T0 + 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A revoked device does not count against the cap.
    s.register_device(&ALICE, &[0; 32], device(5, T0), 2)
        .await
        .unwrap();
    // An id that was never registered: refused, unless sessions use it (they end too).
    assert!(matches!(
        s.revoke_device(&ALICE, &[6; 16], T0).await,
        Err(DeviceError::NotFound)
    ));
    s.put_session(session_on(7, Some([7; 16]))).await.unwrap();
    let ended = s.revoke_device(&ALICE, &[7; 16], T0).await.unwrap();
    assert_eq!(ended, vec![session_on(7, Some([7; 16]))]);
    assert!(matches!(
        s.put_session(session_on(8, Some([7; 16]))).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

pub async fn push_tokens_and_last_seen_times<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    for id in [1, 2] {
        s.register_device(&ALICE, &[0; 32], device(id, T0), 4)
            .await
            .unwrap();
    }
    s.set_push_token(&ALICE, &[2; 16], Some(push("http://push.example.org/a")))
        .await
        .unwrap();
    s.set_push_token(&ALICE, &[2; 16], Some(push("http://push.example.org/b")))
        .await
        .unwrap();
    assert_eq!(
        s.push_targets(&[ALICE]).await.unwrap(),
        vec![(ALICE, [2; 16], push("http://push.example.org/b"))]
    );
    // Several accounts in one read: in the order asked, each once, unknown ones have none.
    s.create_account(account("bob", BOB)).await.unwrap();
    for id in [4, 3] {
        s.register_device(&BOB, &[0; 32], device(id, T0 + u64::from(id)), 4)
            .await
            .unwrap();
        let url = format!("http://push.example.org/bob{id}");
        s.set_push_token(&BOB, &[id; 16], Some(push(&url)))
            .await
            .unwrap();
    }
    assert_eq!(
        s.push_targets(&[BOB, [0x77; 32], ALICE, BOB])
            .await
            .unwrap(),
        vec![
            (BOB, [3; 16], push("http://push.example.org/bob3")),
            (BOB, [4; 16], push("http://push.example.org/bob4")),
            (ALICE, [2; 16], push("http://push.example.org/b")),
        ]
    );
    assert!(s.push_targets(&[]).await.unwrap().is_empty());
    assert!(matches!(
        s.set_push_token(&ALICE, &[3; 16], Some(push("x"))).await,
        Err(DeviceError::NotFound)
    ));
    s.set_push_token(&ALICE, &[2; 16], None).await.unwrap();
    assert!(s.push_targets(&[ALICE]).await.unwrap().is_empty());

    // Later times only; unknown devices and accounts are skipped.
    s.record_last_seen(vec![
        (ALICE, [1; 16], T0 + 50),
        (ALICE, [9; 16], T0 + 50),
        (BOB, [1; 16], T0 + 50),
    ])
    .await
    .unwrap();
    s.record_last_seen(vec![(ALICE, [1; 16], T0 + 20)])
        .await
        .unwrap();
    let f = f.reopen().await;
    let devices = f.store.devices_of(&ALICE).await.unwrap();
    assert_eq!(devices.len(), 2, "no record for an unknown device");
    assert_eq!(
        (devices[0].last_seen_ms, devices[1].last_seen_ms),
        (T0 + 50, 0)
    );
}
