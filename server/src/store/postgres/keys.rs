//! [`KeyStore`] on PostgreSQL.
//!
//! Tables (`schema/keys.sql`): `key_package_meta` (per identity: `next_n`, `queued`),
//! `key_packages` (FIFO by `n`), `last_resort_key_packages`, `hybrid_keys`.
//!
//! Every write checks the account with a share lock on its row (lock order: accounts first),
//! so nothing is stored for an account deleted concurrently. Uploads to the queue and
//! fetches lock the identity's `key_package_meta` row (`FOR UPDATE`) before they read the
//! queue: pops of one queue run one after another, each sees the previous one's removal, so
//! two concurrent fetches never get the same KeyPackage, the oldest one is always the one
//! handed out, and the last resort is answered only when the queue is really empty. (A pop by
//! `SKIP LOCKED` on the package rows would let pops run side by side, but a caller that finds
//! every queued row locked by pops that later roll back would answer the last resort while
//! KeyPackages remain, and would not always take the oldest.)

use bytes::Bytes;

use super::{
    PgError, PgStore, Tx, account_exists, execute, fixed, int, query, query_one, query_opt, uint,
};
use crate::store::{
    HybridKeyRecord, IdentityKey, KeyPackageDepth, KeyPackageUpload, KeyStore, QueueLimit,
    StoreError,
};

/// Locks the KeyPackage queue of `identity` (lock order: after accounts, channels, queues and
/// the outbox) and answers its `(next_n, queued)`; creates the row when the identity never
/// queued one.
async fn lock_meta(tx: &Tx<'_>, identity: &IdentityKey) -> Result<(u64, u64), PgError> {
    execute(
        tx,
        "INSERT INTO key_package_meta (identity_key, next_n, queued) VALUES ($1, 0, 0) \
         ON CONFLICT (identity_key) DO NOTHING",
        &[&identity.as_slice()],
    )
    .await?;
    let row = query_one(
        tx,
        "SELECT next_n, queued FROM key_package_meta WHERE identity_key = $1 FOR UPDATE",
        &[&identity.as_slice()],
    )
    .await?;
    Ok((uint(row.get("next_n"))?, uint(row.get("queued"))?))
}

/// Whether `identity` has a last-resort KeyPackage.
async fn has_last_resort(tx: &Tx<'_>, identity: &IdentityKey) -> Result<bool, PgError> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM last_resort_key_packages WHERE identity_key = $1",
        &[&identity.as_slice()],
    )
    .await?
    .is_some())
}

impl KeyStore for PgStore {
    async fn upload_key_package(
        &self,
        upload: KeyPackageUpload,
    ) -> Result<KeyPackageDepth, StoreError> {
        if upload.key_package.is_empty() {
            return Err(StoreError::InvalidArgument(
                "key package must not be empty".into(),
            ));
        }
        let upload = &upload;
        self.transact("upload_key_package", |tx, _| {
            Box::pin(async move {
                let identity = &upload.identity;
                if !account_exists(tx, identity).await? {
                    return Err(StoreError::NotFound.into());
                }
                let package: &[u8] = &upload.key_package;
                if upload.last_resort {
                    execute(
                        tx,
                        "INSERT INTO last_resort_key_packages (identity_key, key_package) VALUES ($1, $2) \
                         ON CONFLICT (identity_key) DO UPDATE SET key_package = EXCLUDED.key_package",
                        &[&identity.as_slice(), &package],
                    )
                    .await?;
                    let queued = query_opt(
                        tx,
                        "SELECT queued FROM key_package_meta WHERE identity_key = $1",
                        &[&identity.as_slice()],
                    )
                    .await?
                    .map(|r| uint(r.get("queued")))
                    .transpose()?
                    .unwrap_or(0);
                    return Ok(KeyPackageDepth {
                        queued,
                        has_last_resort: true,
                    });
                }
                let (next, queued) = lock_meta(tx, identity).await?;
                if queued >= upload.max_queued {
                    return Err(StoreError::QueueFull {
                        limit: QueueLimit::Messages(upload.max_queued),
                    }
                    .into());
                }
                let after = next
                    .checked_add(1)
                    .filter(|&n| i64::try_from(n).is_ok())
                    .ok_or_else(|| StoreError::Corrupt("key package counter overflow".into()))?;
                execute(
                    tx,
                    "INSERT INTO key_packages (identity_key, n, key_package) VALUES ($1, $2, $3)",
                    &[&identity.as_slice(), &int(next), &package],
                )
                .await?;
                execute(
                    tx,
                    "UPDATE key_package_meta SET next_n = $2, queued = $3 WHERE identity_key = $1",
                    &[&identity.as_slice(), &int(after), &int(queued + 1)],
                )
                .await?;
                Ok(KeyPackageDepth {
                    queued: queued + 1,
                    has_last_resort: has_last_resort(tx, identity).await?,
                })
            })
        })
        .await
    }

    async fn fetch_key_package(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<(Bytes, bool)>, StoreError> {
        self.transact("fetch_key_package", |tx, _| {
            Box::pin(async move {
                if !account_exists(tx, identity).await? {
                    return Err(StoreError::NotFound.into());
                }
                let meta = query_opt(
                    tx,
                    "SELECT queued FROM key_package_meta WHERE identity_key = $1 FOR UPDATE",
                    &[&identity.as_slice()],
                )
                .await?;
                if let Some(meta) = meta {
                    let queued = uint(meta.get("queued"))?;
                    // Under the meta lock this statement sees every earlier pop committed.
                    let popped = query_opt(
                        tx,
                        "DELETE FROM key_packages WHERE identity_key = $1 AND n = \
                         (SELECT min(n) FROM key_packages WHERE identity_key = $1) \
                         RETURNING key_package",
                        &[&identity.as_slice()],
                    )
                    .await?;
                    if let Some(row) = popped {
                        execute(
                            tx,
                            "UPDATE key_package_meta SET queued = $2 WHERE identity_key = $1",
                            &[&identity.as_slice(), &int(queued.saturating_sub(1))],
                        )
                        .await?;
                        return Ok(Some((
                            Bytes::from(row.get::<_, Vec<u8>>("key_package")),
                            false,
                        )));
                    }
                }
                let last = query_opt(
                    tx,
                    "SELECT key_package FROM last_resort_key_packages WHERE identity_key = $1",
                    &[&identity.as_slice()],
                )
                .await?;
                Ok(last.map(|r| (Bytes::from(r.get::<_, Vec<u8>>("key_package")), true)))
            })
        })
        .await
    }

    async fn key_package_depth(
        &self,
        identity: &IdentityKey,
    ) -> Result<KeyPackageDepth, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_one(
                    c,
                    "SELECT (SELECT queued FROM key_package_meta WHERE identity_key = $1) AS queued, \
                     EXISTS (SELECT 1 FROM last_resort_key_packages WHERE identity_key = $1) AS last",
                    &[&identity.as_slice()],
                )
                .await?;
                let queued: Option<i64> = row.get("queued");
                Ok(KeyPackageDepth {
                    queued: queued.map(uint).transpose()?.unwrap_or(0),
                    has_last_resort: row.get("last"),
                })
            })
        })
        .await
    }

    async fn put_hybrid_key(
        &self,
        identity: &IdentityKey,
        key: HybridKeyRecord,
    ) -> Result<(), StoreError> {
        let key = &key;
        self.transact("put_hybrid_key", |tx, _| {
            Box::pin(async move {
                if !account_exists(tx, identity).await? {
                    return Err(StoreError::NotFound.into());
                }
                let mlkem: &[u8] = &key.mlkem768_public;
                execute(
                    tx,
                    "INSERT INTO hybrid_keys (identity_key, x25519_public, mlkem768_public, signature, \
                     created_at_ms) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (identity_key) DO UPDATE SET x25519_public = EXCLUDED.x25519_public, \
                     mlkem768_public = EXCLUDED.mlkem768_public, signature = EXCLUDED.signature, \
                     created_at_ms = EXCLUDED.created_at_ms",
                    &[
                        &identity.as_slice(),
                        &key.x25519_public.as_slice(),
                        &mlkem,
                        &key.signature.as_slice(),
                        &int(key.created_at_ms),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn hybrid_keys(
        &self,
        identities: &[IdentityKey],
    ) -> Result<Vec<Option<HybridKeyRecord>>, StoreError> {
        if identities.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<&[u8]> = identities.iter().map(|i| i.as_slice()).collect();
        let wanted = &wanted;
        let found = self
            .read(|c, _| {
                Box::pin(async move {
                    let rows = query(
                        c,
                        "SELECT identity_key, x25519_public, mlkem768_public, signature, created_at_ms \
                         FROM hybrid_keys WHERE identity_key = ANY($1)",
                        &[wanted],
                    )
                    .await?;
                    let mut found = std::collections::HashMap::with_capacity(rows.len());
                    for row in &rows {
                        let identity: IdentityKey = fixed(row.get("identity_key"), "identity key")?;
                        let record = HybridKeyRecord {
                            x25519_public: fixed(row.get("x25519_public"), "X25519 public key")?,
                            mlkem768_public: Bytes::from(row.get::<_, Vec<u8>>("mlkem768_public")),
                            signature: fixed(row.get("signature"), "hybrid key signature")?,
                            created_at_ms: uint(row.get("created_at_ms"))?,
                        };
                        found.insert(identity, record);
                    }
                    Ok(found)
                })
            })
            .await?;
        Ok(identities.iter().map(|i| found.get(i).cloned()).collect())
    }
}

/// Removes the KeyPackages and hybrid key of a deleted account.
pub(super) async fn delete_keys_of(tx: &Tx<'_>, identity: &IdentityKey) -> Result<(), PgError> {
    let identity = identity.as_slice();
    // Lock order: the meta row first, as uploads and fetches take it.
    execute(
        tx,
        "DELETE FROM key_package_meta WHERE identity_key = $1",
        &[&identity],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM key_packages WHERE identity_key = $1",
        &[&identity],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM last_resort_key_packages WHERE identity_key = $1",
        &[&identity],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM hybrid_keys WHERE identity_key = $1",
        &[&identity],
    )
    .await?;
    Ok(())
}
