//! [`KtStore`] on PostgreSQL: the transparency log.
//!
//! Tables (`schema/kt.sql`): `kt_meta` (one row: the size), `kt_leaves` (leaf data by index,
//! with its kind, username and identity copied out for the lookups), `kt_nodes` (the hash of
//! every complete subtree, as `qpq_kt::tree::append` names them).
//!
//! An append locks the `kt_meta` row (`FOR UPDATE`, always the last lock a transaction
//! takes), reads the size as the new leaf's index, writes the leaf and the subtrees it
//! completes, and bumps the size, all in the caller's transaction: leaves are dense and
//! totally ordered, and a size read after a commit covers every leaf and node below it.
//! Checks that must hold at the append (a revoked key is not bound again, a key is revoked
//! once) run after the lock, so they see every earlier append committed.
//!
//! Leaves and nodes are never rewritten, so reads are single statements.

use std::collections::HashMap;

use qpq_kt::tree::{self, NodeId};
use qpq_kt::{Hash, Leaf, LeafKind};
use tokio_postgres::Row;

use super::{PgError, PgStore, Tx, execute, fixed, int, query, query_one, query_opt, uint};
use crate::store::{Account, IdentityKey, KtStore, Revocation, StoreError};

/// Locks the log head and answers its size (the index of the next leaf).
async fn lock_size(tx: &Tx<'_>) -> Result<u64, PgError> {
    let row = query_opt(tx, "SELECT size FROM kt_meta WHERE id FOR UPDATE", &[]).await?;
    let row =
        row.ok_or_else(|| StoreError::Corrupt("the transparency log head row is missing".into()))?;
    Ok(uint(row.get("size"))?)
}

/// The left siblings `tree::append` reads when leaf `n` is appended.
fn siblings(n: u64) -> Vec<NodeId> {
    (0..n.trailing_ones())
        .map(|level| NodeId {
            level: level as u8,
            index: (n >> level) - 1,
        })
        .collect()
}

/// Node ids as the two arrays the node queries take.
fn node_columns(ids: &[NodeId]) -> (Vec<i16>, Vec<i64>) {
    ids.iter()
        .map(|id| (i16::from(id.level), int(id.index)))
        .unzip()
}

/// The stored hashes of `ids` (those that exist).
async fn fetch_nodes<C: deadpool_postgres::GenericClient + Sync>(
    c: &C,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, PgError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (levels, indexes) = node_columns(ids);
    let rows = query(
        c,
        "SELECT n.node_level, n.node_index, n.hash FROM kt_nodes n \
         JOIN unnest($1::int2[], $2::int8[]) AS w(node_level, node_index) \
         ON n.node_level = w.node_level AND n.node_index = w.node_index",
        &[&levels, &indexes],
    )
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let level: i16 = row.get("node_level");
        let id = NodeId {
            level: u8::try_from(level)
                .map_err(|_| StoreError::Corrupt(format!("transparency log node level {level}")))?,
            index: uint(row.get("node_index"))?,
        };
        out.insert(id, fixed(row.get("hash"), "transparency log node hash")?);
    }
    Ok(out)
}

/// Appends `leaf` at `index` (the size [`lock_size`] answered, under its lock): the leaf,
/// the subtrees it completes and the new size.
async fn append_at(tx: &Tx<'_>, index: u64, leaf: &Leaf) -> Result<(), PgError> {
    let data = leaf.to_bytes().map_err(StoreError::from)?;
    let size = index
        .checked_add(1)
        .filter(|&s| i64::try_from(s).is_ok())
        .ok_or_else(|| StoreError::Corrupt("transparency log size overflow".into()))?;
    let stored = fetch_nodes(tx, &siblings(index)).await?;
    let lookup = |id: NodeId| {
        stored
            .get(&id)
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("transparency log node {id} is missing")))
    };
    let nodes = tree::append(&lookup, index, qpq_kt::leaf_hash(&data))?;
    let (levels, indexes) = node_columns(&nodes.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    let hashes: Vec<&[u8]> = nodes.iter().map(|(_, h)| h.as_slice()).collect();
    execute(
        tx,
        "INSERT INTO kt_nodes (node_level, node_index, hash) \
         SELECT * FROM unnest($1::int2[], $2::int8[], $3::bytea[])",
        &[&levels, &indexes, &hashes],
    )
    .await?;
    execute(
        tx,
        "INSERT INTO kt_leaves (leaf_index, kind, username, identity_key, data) VALUES ($1, $2, $3, $4, $5)",
        &[
            &int(index),
            &(leaf.kind as i16),
            &leaf.username,
            &leaf.identity.as_slice(),
            &data,
        ],
    )
    .await?;
    execute(tx, "UPDATE kt_meta SET size = $1 WHERE id", &[&int(size)]).await?;
    Ok(())
}

fn leaf_of(row: &Row) -> Result<Leaf, StoreError> {
    Ok(Leaf::from_bytes(row.get("data"))?)
}

fn revocation_of(row: &Row) -> Result<Revocation, StoreError> {
    let leaf = leaf_of(row)?;
    Ok(Revocation {
        leaf_index: uint(row.get("leaf_index"))?,
        revoked_at_ms: leaf.timestamp_ms,
        reason: leaf.reason,
    })
}

const REVOCATION: &str =
    "SELECT leaf_index, data FROM kt_leaves WHERE identity_key = $1 AND kind = 2";

impl KtStore for PgStore {
    async fn kt_revoke(
        &self,
        identity: &IdentityKey,
        reason: u8,
    ) -> Result<(Revocation, bool), StoreError> {
        let now = self.now();
        self.transact("kt_revoke", |tx, _| {
            Box::pin(async move {
                let index = lock_size(tx).await?;
                if let Some(row) = query_opt(tx, REVOCATION, &[&identity.as_slice()]).await? {
                    return Ok((revocation_of(&row)?, false));
                }
                let bound = query_opt(
                    tx,
                    "SELECT data FROM kt_leaves WHERE identity_key = $1 ORDER BY leaf_index DESC LIMIT 1",
                    &[&identity.as_slice()],
                )
                .await?
                .ok_or(StoreError::NotFound)?;
                let leaf = Leaf {
                    kind: LeafKind::Revocation,
                    username: leaf_of(&bound)?.username,
                    identity: *identity,
                    timestamp_ms: now,
                    reason,
                };
                append_at(tx, index, &leaf).await?;
                Ok((
                    Revocation {
                        leaf_index: index,
                        revoked_at_ms: now,
                        reason,
                    },
                    true,
                ))
            })
        })
        .await
    }

    async fn kt_revocation(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<Revocation>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(c, REVOCATION, &[&identity.as_slice()]).await?;
                Ok(row.map(|r| revocation_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn kt_size(&self) -> Result<u64, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_one(c, "SELECT size FROM kt_meta WHERE id", &[]).await?;
                Ok(uint(row.get("size"))?)
            })
        })
        .await
    }

    async fn kt_newest_for_username(&self, username: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_one(
                    c,
                    "SELECT max(leaf_index) AS i FROM kt_leaves WHERE username = $1",
                    &[&username],
                )
                .await?;
                Ok(row.get::<_, Option<i64>>("i").map(uint).transpose()?)
            })
        })
        .await
    }

    async fn kt_newest_for_identity(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<u64>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_one(
                    c,
                    "SELECT max(leaf_index) AS i FROM kt_leaves WHERE identity_key = $1",
                    &[&identity.as_slice()],
                )
                .await?;
                Ok(row.get::<_, Option<i64>>("i").map(uint).transpose()?)
            })
        })
        .await
    }

    async fn kt_leaf(&self, index: u64) -> Result<Option<Leaf>, StoreError> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT data FROM kt_leaves WHERE leaf_index = $1",
                    &[&index],
                )
                .await?;
                Ok(row.map(|r| leaf_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn kt_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .read(|c, _| Box::pin(async move { fetch_nodes(c, ids).await }))
            .await?;
        ids.iter()
            .map(|id| {
                found.get(id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("transparency log node {id} is missing"))
                })
            })
            .collect()
    }
}

/// Adds the binding of a new account to the log inside its creation transaction (locks `kt_meta` last).
pub(super) async fn append_binding(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    let index = lock_size(tx).await?;
    let revoked = query_opt(tx, REVOCATION, &[&account.identity_key.as_slice()]).await?;
    if revoked.is_some() {
        return Err(StoreError::InvalidArgument(
            "this identity key was revoked in the key transparency log; generate a new identity key".into(),
        )
        .into());
    }
    let leaf = Leaf {
        kind: LeafKind::Binding,
        username: account.username.clone(),
        identity: account.identity_key,
        timestamp_ms: account.created_at_ms,
        reason: 0,
    };
    append_at(tx, index, &leaf).await
}
