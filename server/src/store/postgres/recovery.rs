//! [`RecoveryStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;

impl RecoveryStore for PgStore {
    async fn put_recovery_bundle(
        &self,
        identity: &IdentityKey,
        bundle: Bytes,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "RecoveryStore::put_recovery_bundle is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn recovery_bundle(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<(Bytes, u64)>, StoreError> {
        Err(StoreError::Unavailable(
            "RecoveryStore::recovery_bundle is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn delete_recovery_bundle(&self, identity: &IdentityKey) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "RecoveryStore::delete_recovery_bundle is not built on PostgreSQL yet".into(),
        )
        .into())
    }
}

/// Removes the recovery bundle of a deleted account.
pub(super) async fn delete_recovery_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    Ok(())
}
