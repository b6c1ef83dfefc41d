//! [`KtStore`] on fjall: the transparency log.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `kt_leaves` | index(8) | `v1 ‖ leaf data` (the bytes the leaf hash covers, `kt.proto`) |
//! | `kt_nodes` | level(1) ‖ index(8) | `v1 ‖ hash(32)` — every complete subtree (`store/merkle.rs`) |
//! | `kt_meta` | `size` | `v1 ‖ tree_size(8)` |
//! | `kt_by_username` | username | `index(8)` of the newest leaf for it |
//! | `kt_by_identity` | identity(32) | `index(8)` of the newest leaf for it |
//! | `kt_revoked` | identity(32) | `index(8)` of its revocation leaf |
//!
//! A leaf, its completed subtrees, the size and the indexes are written in one batch, and at
//! most one leaf is appended per batch (the size is read from the committed state). Readers
//! work on one snapshot, so a head, its proofs and its leaf always agree.

use fjall::{OwnedWriteBatch, Readable, Snapshot};

use super::{Engine, FjallStore, engine_err};
use crate::store::codec::{Reader, V1};
use crate::store::kt::{KtHead, KtLeafKind, KtLeafRecord, KtProof, KtStore, KtSubject, Revocation};
use crate::store::merkle::{self, Hash, Nodes};
use crate::store::{Account, IdentityKey, StoreError};

pub(super) const KT_LEAVES: &str = "kt_leaves";
pub(super) const KT_NODES: &str = "kt_nodes";
pub(super) const KT_META: &str = "kt_meta";
pub(super) const KT_BY_USERNAME: &str = "kt_by_username";
pub(super) const KT_BY_IDENTITY: &str = "kt_by_identity";
pub(super) const KT_REVOKED: &str = "kt_revoked";

const SIZE_KEY: &[u8] = b"size";

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(level);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn decode_index(b: &[u8]) -> Result<u64, StoreError> {
    let a: [u8; 8] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt("transparency log index has the wrong length".into()))?;
    Ok(u64::from_be_bytes(a))
}

/// Reads of the log through one snapshot.
struct View<'a> {
    engine: &'a Engine,
    snapshot: Snapshot,
}

impl View<'_> {
    fn get(&self, ks: &'static str, key: &[u8]) -> Result<Option<fjall::UserValue>, StoreError> {
        self.snapshot
            .get(self.engine.ks(ks)?, key)
            .map_err(engine_err)
    }

    fn size(&self) -> Result<u64, StoreError> {
        match self.get(KT_META, SIZE_KEY)? {
            Some(v) => {
                let mut r = Reader::versioned(&v, "transparency log size")?;
                let size = r.u64()?;
                r.finish()?;
                Ok(size)
            }
            None => Ok(0),
        }
    }

    fn leaf(&self, index: u64) -> Result<KtLeafRecord, StoreError> {
        let v = self.get(KT_LEAVES, &index.to_be_bytes())?.ok_or_else(|| {
            StoreError::Corrupt(format!("transparency log leaf {index} is missing"))
        })?;
        let mut r = Reader::versioned(&v, "transparency log leaf")?;
        KtLeafRecord::from_leaf_data(r.rest())
    }

    fn index_in(&self, ks: &'static str, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.get(ks, key)?.map(|v| decode_index(&v)).transpose()
    }
}

impl Nodes for View<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let v = self
            .get(KT_NODES, &node_key(level, index))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("transparency log node {level}/{index} is missing"))
            })?;
        let mut r = Reader::versioned(&v, "transparency log node")?;
        let hash = r.array()?;
        r.finish()?;
        Ok(hash)
    }
}

impl Engine {
    /// Leaves in the log (one read).
    pub(super) fn kt_size(&self) -> Result<u64, StoreError> {
        self.kt_view().size()
    }

    fn kt_view(&self) -> View<'_> {
        View {
            engine: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// Adds `leaf` to `batch` as the next leaf; returns its index. Only one per batch.
    fn kt_append(
        &self,
        batch: &mut OwnedWriteBatch,
        leaf: &KtLeafRecord,
    ) -> Result<u64, StoreError> {
        let view = self.kt_view();
        let index = view.size()?;
        let data = leaf.leaf_data()?;
        for (level, i, hash) in merkle::append(&view, index, merkle::leaf_hash(&data))? {
            batch.insert(
                self.ks(KT_NODES)?,
                node_key(level, i),
                [&[V1][..], &hash].concat(),
            );
        }
        batch.insert(
            self.ks(KT_LEAVES)?,
            index.to_be_bytes().to_vec(),
            [&[V1][..], &data].concat(),
        );
        let size = index + 1;
        batch.insert(
            self.ks(KT_META)?,
            SIZE_KEY.to_vec(),
            [&[V1][..], &size.to_be_bytes()].concat(),
        );
        let at = index.to_be_bytes().to_vec();
        batch.insert(
            self.ks(KT_BY_USERNAME)?,
            leaf.username.as_bytes().to_vec(),
            at.clone(),
        );
        batch.insert(self.ks(KT_BY_IDENTITY)?, leaf.identity.to_vec(), at.clone());
        if leaf.kind == KtLeafKind::Revocation {
            batch.insert(self.ks(KT_REVOKED)?, leaf.identity.to_vec(), at);
        }
        Ok(index)
    }

    /// Adds the binding of a new account to its creation batch. A revoked identity key cannot
    /// be bound again.
    pub(super) fn kt_append_binding(
        &self,
        batch: &mut OwnedWriteBatch,
        account: &Account,
    ) -> Result<(), StoreError> {
        if self
            .ks(KT_REVOKED)?
            .contains_key(account.identity_key)
            .map_err(engine_err)?
        {
            return Err(StoreError::InvalidArgument(
                "this identity key was revoked in the key transparency log; generate a new identity key".into(),
            ));
        }
        let leaf = KtLeafRecord {
            kind: KtLeafKind::Binding,
            username: account.username.clone(),
            identity: account.identity_key,
            timestamp_ms: account.created_at_ms,
            reason: 0,
        };
        self.kt_append(batch, &leaf)?;
        Ok(())
    }

    fn kt_revocation(&self, identity: &IdentityKey) -> Result<Option<Revocation>, StoreError> {
        let view = self.kt_view();
        let Some(index) = view.index_in(KT_REVOKED, identity)? else {
            return Ok(None);
        };
        let leaf = view.leaf(index)?;
        Ok(Some(Revocation {
            leaf_index: index,
            revoked_at_ms: leaf.timestamp_ms,
            reason: leaf.reason,
        }))
    }

    fn kt_revoke(
        &self,
        identity: &IdentityKey,
        reason: u8,
    ) -> Result<((Revocation, bool), bool), StoreError> {
        if let Some(existing) = self.kt_revocation(identity)? {
            return Ok(((existing, false), false));
        }
        let view = self.kt_view();
        let index = view
            .index_in(KT_BY_IDENTITY, identity)?
            .ok_or(StoreError::NotFound)?;
        let bound = view.leaf(index)?;
        let leaf = KtLeafRecord {
            kind: KtLeafKind::Revocation,
            username: bound.username,
            identity: *identity,
            timestamp_ms: self.clock.unix_ms(),
            reason,
        };
        let mut batch = self.db.batch();
        let leaf_index = self.kt_append(&mut batch, &leaf)?;
        let revocation = Revocation {
            leaf_index,
            revoked_at_ms: leaf.timestamp_ms,
            reason,
        };
        Ok(((revocation, true), self.commit(batch)?))
    }

    fn kt_audit(&self, subject: Option<KtSubject>, last_seen: u64) -> Result<KtProof, StoreError> {
        let view = self.kt_view();
        let size = view.size()?;
        if last_seen > size {
            return Err(StoreError::InvalidArgument(format!(
                "last_seen_tree_size {last_seen} is larger than the log ({size} leaves): this server never showed that tree head"
            )));
        }
        let head = KtHead {
            size,
            root: merkle::root(&view, size)?,
        };
        let index = match subject {
            None => None,
            Some(KtSubject::Username(name)) => Some(
                view.index_in(KT_BY_USERNAME, name.as_bytes())?
                    .ok_or(StoreError::NotFound)?,
            ),
            Some(KtSubject::Identity(identity)) => Some(
                view.index_in(KT_BY_IDENTITY, &identity)?
                    .ok_or(StoreError::NotFound)?,
            ),
            Some(KtSubject::Index(i)) if i < size => Some(i),
            Some(KtSubject::Index(_)) => return Err(StoreError::NotFound),
        };
        let (leaf, inclusion) = match index {
            Some(i) => (Some((i, view.leaf(i)?)), merkle::inclusion(&view, i, size)?),
            None => (None, Vec::new()),
        };
        Ok(KtProof {
            head,
            leaf,
            inclusion,
            consistency: merkle::consistency(&view, last_seen, size)?,
        })
    }
}

impl KtStore for FjallStore {
    async fn kt_revoke(
        &self,
        identity: &IdentityKey,
        reason: u8,
    ) -> Result<(Revocation, bool), StoreError> {
        let identity = *identity;
        self.write(move |e| e.kt_revoke(&identity, reason)).await
    }

    async fn kt_revocation(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<Revocation>, StoreError> {
        self.inline(|e| e.kt_revocation(identity))
    }

    async fn kt_audit(
        &self,
        subject: Option<KtSubject>,
        last_seen_size: u64,
    ) -> Result<KtProof, StoreError> {
        self.blocking(move |e| e.kt_audit(subject, last_seen_size))
            .await
    }
}
