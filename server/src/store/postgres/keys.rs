//! [`KeyStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;

impl KeyStore for PgStore {
    async fn upload_key_package(
        &self,
        upload: KeyPackageUpload,
    ) -> Result<KeyPackageDepth, StoreError> {
        Err(StoreError::Unavailable(
            "KeyStore::upload_key_package is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn fetch_key_package(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<(Bytes, bool)>, StoreError> {
        Err(StoreError::Unavailable(
            "KeyStore::fetch_key_package is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn key_package_depth(
        &self,
        identity: &IdentityKey,
    ) -> Result<KeyPackageDepth, StoreError> {
        Err(StoreError::Unavailable(
            "KeyStore::key_package_depth is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn put_hybrid_key(
        &self,
        identity: &IdentityKey,
        key: HybridKeyRecord,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "KeyStore::put_hybrid_key is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn hybrid_keys(
        &self,
        identities: &[IdentityKey],
    ) -> Result<Vec<Option<HybridKeyRecord>>, StoreError> {
        Err(
            StoreError::Unavailable("KeyStore::hybrid_keys is not built on PostgreSQL yet".into())
                .into(),
        )
    }
}

/// Removes the KeyPackages and hybrid key of a deleted account.
pub(super) async fn delete_keys_of(tx: &Tx<'_>, identity: &IdentityKey) -> Result<(), PgError> {
    Ok(())
}
