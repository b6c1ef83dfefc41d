//! Keys: single-use KeyPackages (FIFO, the queue cap, a last-resort one that stays,
//! concurrent fetches that never share one) and hybrid public keys.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{ALICE, BOB, Backend, Fixture};
use crate::store::{
    HybridKeyRecord, IdentityKey, KeyPackageDepth, KeyPackageUpload, KeyStore, QueueLimit, Store,
    StoreError,
};

fn upload(identity: IdentityKey, key_package: &str, last_resort: bool) -> KeyPackageUpload {
    KeyPackageUpload {
        identity,
        key_package: Bytes::copy_from_slice(key_package.as_bytes()),
        last_resort,
        max_queued: 100,
    }
}

fn hybrid(seed: u8) -> HybridKeyRecord {
    HybridKeyRecord {
        x25519_public: [seed; 32],
        mlkem768_public: Bytes::from(vec![seed; 1184]),
        signature: [seed; 64],
        created_at_ms: u64::from(seed),
    }
}

async fn fetch<S: KeyStore>(s: &S, who: &IdentityKey) -> Option<(String, bool)> {
    s.fetch_key_package(who)
        .await
        .unwrap()
        .map(|(kp, last)| (String::from_utf8(kp.to_vec()).unwrap(), last))
}

pub async fn key_packages_are_single_use_in_order_then_the_last_resort<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    assert_eq!(fetch(s, &ALICE).await, None);
    assert_eq!(
        s.upload_key_package(upload(ALICE, "one", false))
            .await
            .unwrap(),
        KeyPackageDepth {
            queued: 1,
            has_last_resort: false
        }
    );
    s.upload_key_package(upload(ALICE, "two", false))
        .await
        .unwrap();
    s.upload_key_package(upload(ALICE, "old last", true))
        .await
        .unwrap();
    let depth = s
        .upload_key_package(upload(ALICE, "last", true))
        .await
        .unwrap();
    assert_eq!(
        depth,
        KeyPackageDepth {
            queued: 2,
            has_last_resort: true
        }
    );
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(s.key_package_depth(&ALICE).await.unwrap(), depth);
    assert_eq!(fetch(s, &ALICE).await, Some(("one".into(), false)));
    assert_eq!(fetch(s, &ALICE).await, Some(("two".into(), false)));
    // The last-resort KeyPackage (the newest one uploaded) is handed out and stays.
    for _ in 0..3 {
        assert_eq!(fetch(s, &ALICE).await, Some(("last".into(), true)));
    }
    assert_eq!(
        s.key_package_depth(&ALICE).await.unwrap(),
        KeyPackageDepth {
            queued: 0,
            has_last_resort: true
        }
    );
    assert_eq!(
        s.key_package_depth(&BOB).await.unwrap(),
        KeyPackageDepth::default()
    );
}

pub async fn a_full_key_package_queue_refuses_and_stores_nothing<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let capped = |kp: &str| KeyPackageUpload {
        max_queued: 2,
        ..upload(ALICE, kp, false)
    };
    s.upload_key_package(capped("one")).await.unwrap();
    s.upload_key_package(capped("two")).await.unwrap();
    let before = f.census().await;
    let err = s.upload_key_package(capped("three")).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QueueFull {
                limit: QueueLimit::Messages(2)
            }
        ),
        "{err}"
    );
    assert_eq!(f.census().await, before);
    // The last-resort slot is no queue: it is not capped.
    let depth = s
        .upload_key_package(KeyPackageUpload {
            last_resort: true,
            ..capped("last")
        })
        .await
        .unwrap();
    assert_eq!(depth.queued, 2);
    assert!(depth.has_last_resort);
}

pub async fn concurrent_fetches_never_share_a_key_package<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    for i in 0..24 {
        f.store
            .upload_key_package(upload(ALICE, &format!("kp{i}"), false))
            .await
            .unwrap();
    }
    f.store
        .upload_key_package(upload(ALICE, "last", true))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(
            async move { fetch(&s, &ALICE).await.unwrap() },
        ));
    }
    let mut single = BTreeSet::new();
    let mut last_resort = 0;
    for t in tasks {
        match t.await.unwrap() {
            (kp, false) => assert!(single.insert(kp.clone()), "{kp} handed out twice"),
            (kp, true) => {
                assert_eq!(kp, "last");
                last_resort += 1;
            }
        }
    }
    assert_eq!((single.len(), last_resort), (24, 8));
    assert_eq!(f.store.key_package_depth(&ALICE).await.unwrap().queued, 0);
}

pub async fn hybrid_keys_replace_and_answer_in_order<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(super::account("bob", BOB)).await.unwrap();
    s.put_hybrid_key(&ALICE, hybrid(1)).await.unwrap();
    s.put_hybrid_key(&BOB, hybrid(2)).await.unwrap();
    s.put_hybrid_key(&ALICE, hybrid(3)).await.unwrap();
    let f = f.reopen().await;
    assert_eq!(
        f.store
            .hybrid_keys(&[BOB, [9; 32], ALICE, BOB])
            .await
            .unwrap(),
        vec![Some(hybrid(2)), None, Some(hybrid(3)), Some(hybrid(2))]
    );
    assert!(f.store.hybrid_keys(&[]).await.unwrap().is_empty());
}

pub async fn keys_of_an_identity_without_an_account_are_refused<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    let before = f.census().await;
    let nobody = [9; 32];
    for last_resort in [false, true] {
        assert!(matches!(
            s.upload_key_package(upload(nobody, "kp", last_resort))
                .await,
            Err(StoreError::NotFound)
        ));
    }
    assert!(matches!(
        s.fetch_key_package(&nobody).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.put_hybrid_key(&nobody, hybrid(1)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(f.census().await, before);
}
