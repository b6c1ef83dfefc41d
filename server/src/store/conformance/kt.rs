//! The key transparency log: bindings appended with accounts and never removed, revocations
//! appended once, the newest-leaf lookups, a dense log under concurrent registrations, and
//! stored subtree hashes from which every head's root and proofs follow.

use qpq_kt::tree::ProofPlan;
use qpq_kt::{Hash, Leaf, LeafKind};

use super::{ALICE, BOB, Backend, CAROL, Fixture, T0, account};
use crate::store::{IdentityKey, KtStore, Revocation, Store, StoreError};

fn binding(username: &str, identity: IdentityKey, timestamp_ms: u64) -> Leaf {
    Leaf {
        kind: LeafKind::Binding,
        username: username.into(),
        identity,
        timestamp_ms,
        reason: 0,
    }
}

/// RFC 9162's Merkle tree hash, computed from the leaf hashes directly.
fn tree_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => qpq_kt::empty_root(),
        1 => leaves[0],
        n => {
            let split = n.next_power_of_two() / 2;
            qpq_kt::node_hash(&tree_hash(&leaves[..split]), &tree_hash(&leaves[split..]))
        }
    }
}

async fn leaf_hashes<S: KtStore>(s: &S) -> Vec<Hash> {
    let mut out = Vec::new();
    for i in 0..s.kt_size().await.unwrap() {
        out.push(s.kt_leaf(i).await.unwrap().unwrap().hash().unwrap());
    }
    out
}

/// Checks, for the log as stored, every older head's consistency and every leaf's
/// inclusion, from the stored nodes only.
async fn check_proofs<S: KtStore>(s: &S) {
    let hashes = leaf_hashes(s).await;
    let size = hashes.len() as u64;
    let root = tree_hash(&hashes);
    for old in 0..=size {
        let leaf = (old < size).then_some(old);
        let plan = ProofPlan::new(size, leaf, old).unwrap();
        let proofs = plan
            .prove_fetched(&s.kt_nodes(&plan.nodes()).await.unwrap())
            .unwrap();
        assert_eq!(proofs.root, root, "root of {size} leaves");
        if let Some(i) = leaf {
            assert!(qpq_kt::verify_inclusion(
                &hashes[i as usize],
                i,
                size,
                &proofs.inclusion,
                &root
            ));
        }
        if old > 0 {
            let old_root = tree_hash(&hashes[..old as usize]);
            assert!(qpq_kt::verify_consistency(
                old,
                size,
                &old_root,
                &root,
                &proofs.consistency
            ));
        }
    }
}

pub async fn bindings_are_appended_with_accounts_and_never_removed<B: Backend>(backend: &B) {
    let f = Fixture::new(backend).await;
    let s = &f.store;
    assert_eq!(s.kt_size().await.unwrap(), 0);
    assert_eq!(s.kt_leaf(0).await.unwrap(), None);
    assert_eq!(s.kt_newest_for_username("alice").await.unwrap(), None);
    s.create_account(account("alice", ALICE)).await.unwrap();
    s.create_account(account("bob", BOB)).await.unwrap();
    // A refused registration appends nothing.
    assert!(s.create_account(account("alice", CAROL)).await.is_err());
    assert_eq!(s.kt_size().await.unwrap(), 2);
    assert_eq!(
        s.kt_leaf(0).await.unwrap(),
        Some(binding("alice", ALICE, T0))
    );
    assert_eq!(s.kt_leaf(1).await.unwrap(), Some(binding("bob", BOB, T0)));
    assert_eq!(s.kt_leaf(2).await.unwrap(), None);
    // Deleting the account keeps its binding; the name bound again gets a newer leaf.
    s.delete_account("alice").await.unwrap();
    s.create_account(account("alice", CAROL)).await.unwrap();
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(s.kt_size().await.unwrap(), 3);
    assert_eq!(
        s.kt_leaf(0).await.unwrap(),
        Some(binding("alice", ALICE, T0))
    );
    assert_eq!(s.kt_newest_for_username("alice").await.unwrap(), Some(2));
    assert_eq!(s.kt_newest_for_identity(&ALICE).await.unwrap(), Some(0));
    assert_eq!(s.kt_newest_for_identity(&CAROL).await.unwrap(), Some(2));
    assert_eq!(s.kt_newest_for_username("bob").await.unwrap(), Some(1));
    assert_eq!(s.kt_newest_for_username("carol").await.unwrap(), None);
    check_proofs(s).await;
}

pub async fn a_revocation_is_appended_once_and_bars_the_key<B: Backend>(backend: &B) {
    let f = Fixture::with_alice(backend).await;
    let s = &f.store;
    s.create_account(account("bob", BOB)).await.unwrap();
    assert!(matches!(
        s.kt_revoke(&CAROL, 1).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.kt_revocation(&ALICE).await.unwrap(), None);
    f.advance(7);
    let (revocation, appended) = s.kt_revoke(&ALICE, 3).await.unwrap();
    let expected = Revocation {
        leaf_index: 2,
        revoked_at_ms: T0 + 7,
        reason: 3,
    };
    assert_eq!((revocation, appended), (expected, true));
    f.advance(1);
    assert_eq!(s.kt_revoke(&ALICE, 1).await.unwrap(), (expected, false));
    let f = f.reopen().await;
    let s = &f.store;
    assert_eq!(s.kt_size().await.unwrap(), 3);
    assert_eq!(s.kt_revocation(&ALICE).await.unwrap(), Some(expected));
    assert_eq!(
        s.kt_leaf(2).await.unwrap(),
        Some(Leaf {
            kind: LeafKind::Revocation,
            username: "alice".into(),
            identity: ALICE,
            timestamp_ms: T0 + 7,
            reason: 3,
        })
    );
    // The revocation is now the newest leaf of both the name and the key.
    assert_eq!(s.kt_newest_for_username("alice").await.unwrap(), Some(2));
    assert_eq!(s.kt_newest_for_identity(&ALICE).await.unwrap(), Some(2));
    // A revoked key is never bound again, under any name; the refusal appends nothing.
    s.delete_account("alice").await.unwrap();
    assert!(matches!(
        s.create_account(account("alice2", ALICE)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(s.kt_size().await.unwrap(), 3);
    check_proofs(s).await;
}

pub async fn concurrent_registrations_keep_the_log_dense<B: Backend>(backend: &B) {
    let f = Fixture::new(backend).await;
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_account(account(&format!("user{i}"), [i + 1; 32]))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = &f.store;
    assert_eq!(s.kt_size().await.unwrap(), 20);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20u8 {
        let index = s
            .kt_newest_for_username(&format!("user{i}"))
            .await
            .unwrap()
            .unwrap();
        assert!(seen.insert(index), "leaf {index} twice");
        let leaf = s.kt_leaf(index).await.unwrap().unwrap();
        assert_eq!(leaf, binding(&format!("user{i}"), [i + 1; 32], T0));
        assert_eq!(
            s.kt_newest_for_identity(&[i + 1; 32]).await.unwrap(),
            Some(index)
        );
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    check_proofs(s).await;
}
