//! P2P endpoints (one per device, replaced on publish, hidden once expired, swept in
//! bounded steps) and recovery bundles (one per account).

use bytes::Bytes;

use super::{ALICE, BOB, Backend, Fixture, T0};
use crate::store::{EndpointRecord, P2pStore, RecoveryStore, StoreError};

fn endpoint(device: u8, published_at_ms: u64, expires_at_ms: u64) -> EndpointRecord {
    EndpointRecord {
        device_id: vec![device; 16],
        node_id: [device; 32],
        relay_url: "https://relay.example.org".into(),
        direct_addrs: vec!["192.0.2.1:4433".into(), "[2001:db8::1]:4433".into()],
        published_at_ms,
        expires_at_ms,
    }
}

pub async fn endpoints_replace_per_device_and_expire<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.publish_endpoint(&ALICE, endpoint(1, T0, T0 + 100))
        .await
        .unwrap();
    s.publish_endpoint(&ALICE, endpoint(2, T0 + 1, T0 + 50))
        .await
        .unwrap();
    // Republishing replaces, with the new expiry.
    s.publish_endpoint(&ALICE, endpoint(1, T0 + 2, T0 + 200))
        .await
        .unwrap();
    assert!(matches!(
        s.publish_endpoint(&BOB, endpoint(1, T0, T0 + 100)).await,
        Err(StoreError::NotFound)
    ));
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(
        s.endpoints_of(&ALICE, T0).await.unwrap(),
        vec![endpoint(1, T0 + 2, T0 + 200), endpoint(2, T0 + 1, T0 + 50)],
        "newest first"
    );
    assert_eq!(
        s.endpoints_of(&ALICE, T0 + 50).await.unwrap(),
        vec![endpoint(1, T0 + 2, T0 + 200)],
        "expired at 50"
    );
    assert_eq!(
        s.purge_expired_endpoints(T0 + 49).await.unwrap(),
        (0, false)
    );
    assert_eq!(
        s.purge_expired_endpoints(T0 + 50).await.unwrap(),
        (1, false)
    );
    // The replaced expiry of device 1 is not swept at its old time.
    assert_eq!(
        s.purge_expired_endpoints(T0 + 100).await.unwrap(),
        (0, false)
    );
    assert_eq!(s.endpoints_of(&ALICE, T0).await.unwrap().len(), 1);
    assert_eq!(
        s.purge_expired_endpoints(T0 + 200).await.unwrap(),
        (1, false)
    );
    let empty = Fixture::with_alice(backend).await;
    assert_eq!(f.census().await, empty.census().await);
}

pub async fn endpoint_sweeps_are_bounded<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let n = B::PURGE_BOUND + 3;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = f.store.clone();
        let mut e = endpoint(0, T0, T0 + 10);
        e.device_id = (i as u32).to_be_bytes().to_vec();
        tasks.push(tokio::spawn(async move {
            s.publish_endpoint(&ALICE, e).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut swept = 0;
    let mut calls = 0;
    loop {
        let (n, more) = f.store.purge_expired_endpoints(T0 + 10).await.unwrap();
        assert!(n as usize <= B::PURGE_BOUND);
        swept += n;
        calls += 1;
        if !more {
            break;
        }
    }
    assert_eq!(swept as usize, n);
    assert!(calls >= 2);
    assert!(f.store.endpoints_of(&ALICE, T0).await.unwrap().is_empty());
}

pub async fn recovery_bundles_replace_and_delete<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let before = f.census().await;
    assert_eq!(s.recovery_bundle(&ALICE).await.unwrap(), None);
    s.put_recovery_bundle(&ALICE, Bytes::from_static(b"one"), T0)
        .await
        .unwrap();
    s.put_recovery_bundle(&ALICE, Bytes::from_static(b"two"), T0 + 1)
        .await
        .unwrap();
    assert!(matches!(
        s.put_recovery_bundle(&BOB, Bytes::from_static(b"x"), T0)
            .await,
        Err(StoreError::NotFound)
    ));
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(
        s.recovery_bundle(&ALICE).await.unwrap(),
        Some((Bytes::from_static(b"two"), T0 + 1))
    );
    assert!(s.delete_recovery_bundle(&ALICE).await.unwrap());
    assert!(!s.delete_recovery_bundle(&ALICE).await.unwrap());
    assert!(!s.delete_recovery_bundle(&BOB).await.unwrap());
    assert_eq!(s.recovery_bundle(&ALICE).await.unwrap(), None);
    assert_eq!(f.census().await, before);
}
