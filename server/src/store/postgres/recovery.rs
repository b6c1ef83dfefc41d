//! [`RecoveryStore`] on PostgreSQL.
//!
//! Table (`schema/recovery.sql`): `recovery_bundles`, one row per account. Storing checks the
//! account under a share lock on its row (lock order: accounts first), so no bundle outlives
//! a concurrent account deletion.

use bytes::Bytes;

use super::{PgError, PgStore, Tx, account_exists, execute, int, query_opt, uint};
use crate::store::{Account, IdentityKey, RecoveryStore, StoreError};

impl RecoveryStore for PgStore {
    async fn put_recovery_bundle(
        &self,
        identity: &IdentityKey,
        bundle: Bytes,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let bundle: &[u8] = &bundle;
        self.transact("put_recovery_bundle", |tx, _| {
            Box::pin(async move {
                if !account_exists(tx, identity).await? {
                    return Err(StoreError::NotFound.into());
                }
                execute(
                    tx,
                    "INSERT INTO recovery_bundles (identity_key, bundle, stored_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (identity_key) DO UPDATE SET bundle = EXCLUDED.bundle, \
                     stored_at_ms = EXCLUDED.stored_at_ms",
                    &[&identity.as_slice(), &bundle, &int(now_ms)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn recovery_bundle(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<(Bytes, u64)>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT bundle, stored_at_ms FROM recovery_bundles WHERE identity_key = $1",
                    &[&identity.as_slice()],
                )
                .await?;
                match row {
                    Some(r) => Ok(Some((
                        Bytes::from(r.get::<_, Vec<u8>>("bundle")),
                        uint(r.get("stored_at_ms"))?,
                    ))),
                    None => Ok(None),
                }
            })
        })
        .await
    }

    async fn delete_recovery_bundle(&self, identity: &IdentityKey) -> Result<bool, StoreError> {
        self.transact("delete_recovery_bundle", |tx, _| {
            Box::pin(async move {
                let gone = execute(
                    tx,
                    "DELETE FROM recovery_bundles WHERE identity_key = $1",
                    &[&identity.as_slice()],
                )
                .await?;
                Ok(gone > 0)
            })
        })
        .await
    }
}

/// Removes the recovery bundle of a deleted account.
pub(super) async fn delete_recovery_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    execute(
        tx,
        "DELETE FROM recovery_bundles WHERE identity_key = $1",
        &[&account.identity_key.as_slice()],
    )
    .await?;
    Ok(())
}
