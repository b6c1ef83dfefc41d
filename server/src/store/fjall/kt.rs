//! [`KtStore`] on fjall: the transparency log.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `kt_leaves` | index(8) | `v1 ‖ leaf data` (the bytes the leaf hash covers, `kt.proto`) |
//! | `kt_nodes` | level(1) ‖ index(8) | `v1 ‖ hash(32)` — every complete subtree (`qpq_kt::tree`) |
//! | `kt_meta` | `size` | `v1 ‖ tree_size(8)` |
//! | `kt_by_username` | username | `index(8)` of the newest leaf for it |
//! | `kt_by_identity` | identity(32) | `index(8)` of the newest leaf for it |
//! | `kt_revoked` | identity(32) | `index(8)` of its revocation leaf |
//!
//! A leaf, its completed subtrees, the size and the indexes are written in one batch, and at
//! most one leaf is appended per batch (the size is read from the committed state). Each read
//! works on one snapshot; leaves and nodes are never rewritten, so reads of a size and then of
//! the nodes that size needs agree.

use fjall::{OwnedWriteBatch, Readable, Snapshot};
use qpq_kt::tree::{self, NodeId, Nodes};
use qpq_kt::{Hash, Leaf, LeafKind};

use super::{Engine, FjallStore, engine_err};
use crate::store::codec::{Reader, V1};
use crate::store::kt::{KtStore, Revocation};
use crate::store::{Account, IdentityKey, StoreError};

pub(super) const KT_LEAVES: &str = "kt_leaves";
pub(super) const KT_NODES: &str = "kt_nodes";
pub(super) const KT_META: &str = "kt_meta";
pub(super) const KT_BY_USERNAME: &str = "kt_by_username";
pub(super) const KT_BY_IDENTITY: &str = "kt_by_identity";
pub(super) const KT_REVOKED: &str = "kt_revoked";

const SIZE_KEY: &[u8] = b"size";

fn node_key(id: NodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(id.level);
    k.extend_from_slice(&id.index.to_be_bytes());
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

    fn leaf(&self, index: u64) -> Result<Leaf, StoreError> {
        self.leaf_if_any(index)?
            .ok_or_else(|| StoreError::Corrupt(format!("transparency log leaf {index} is missing")))
    }

    fn leaf_if_any(&self, index: u64) -> Result<Option<Leaf>, StoreError> {
        let Some(v) = self.get(KT_LEAVES, &index.to_be_bytes())? else {
            return Ok(None);
        };
        let mut r = Reader::versioned(&v, "transparency log leaf")?;
        Ok(Some(Leaf::from_bytes(r.rest())?))
    }

    fn index_in(&self, ks: &'static str, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.get(ks, key)?.map(|v| decode_index(&v)).transpose()
    }
}

impl Nodes for View<'_> {
    type Error = StoreError;

    fn node(&self, id: NodeId) -> Result<Hash, StoreError> {
        let v = self
            .get(KT_NODES, &node_key(id))?
            .ok_or_else(|| StoreError::Corrupt(format!("transparency log node {id} is missing")))?;
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
    fn kt_append(&self, batch: &mut OwnedWriteBatch, leaf: &Leaf) -> Result<u64, StoreError> {
        let view = self.kt_view();
        let index = view.size()?;
        let data = leaf.to_bytes()?;
        for (id, hash) in tree::append(&view, index, qpq_kt::leaf_hash(&data))? {
            batch.insert(
                self.ks(KT_NODES)?,
                node_key(id),
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
        if leaf.kind == LeafKind::Revocation {
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
        let leaf = Leaf {
            kind: LeafKind::Binding,
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
        let leaf = Leaf {
            kind: LeafKind::Revocation,
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

    fn kt_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        let view = self.kt_view();
        ids.iter().map(|&id| view.node(id)).collect()
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

    async fn kt_size(&self) -> Result<u64, StoreError> {
        self.inline(|e| e.kt_size())
    }

    async fn kt_newest_for_username(&self, username: &str) -> Result<Option<u64>, StoreError> {
        self.inline(|e| e.kt_view().index_in(KT_BY_USERNAME, username.as_bytes()))
    }

    async fn kt_newest_for_identity(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<u64>, StoreError> {
        self.inline(|e| e.kt_view().index_in(KT_BY_IDENTITY, identity))
    }

    async fn kt_leaf(&self, index: u64) -> Result<Option<Leaf>, StoreError> {
        self.inline(|e| e.kt_view().leaf_if_any(index))
    }

    async fn kt_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        // A proof reads O(log² n) nodes: more than a point read, so off the async workers.
        let ids = ids.to_vec();
        self.blocking(move |e| e.kt_nodes(&ids)).await
    }
}
