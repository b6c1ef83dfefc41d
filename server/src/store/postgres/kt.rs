//! [`KtStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;
use qpq_kt::tree::NodeId;
use qpq_kt::{Hash, Leaf};

impl KtStore for PgStore {
    async fn kt_revoke(
        &self,
        identity: &IdentityKey,
        reason: u8,
    ) -> Result<(Revocation, bool), StoreError> {
        Err(
            StoreError::Unavailable("KtStore::kt_revoke is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn kt_revocation(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<Revocation>, StoreError> {
        Err(
            StoreError::Unavailable("KtStore::kt_revocation is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn kt_size(&self) -> Result<u64, StoreError> {
        Err(
            StoreError::Unavailable("KtStore::kt_size is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn kt_newest_for_username(&self, username: &str) -> Result<Option<u64>, StoreError> {
        Err(StoreError::Unavailable(
            "KtStore::kt_newest_for_username is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn kt_newest_for_identity(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<u64>, StoreError> {
        Err(StoreError::Unavailable(
            "KtStore::kt_newest_for_identity is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn kt_leaf(&self, index: u64) -> Result<Option<Leaf>, StoreError> {
        Err(
            StoreError::Unavailable("KtStore::kt_leaf is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn kt_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        Err(
            StoreError::Unavailable("KtStore::kt_nodes is not built on PostgreSQL yet".into())
                .into(),
        )
    }
}

/// Adds the binding of a new account to the log inside its creation transaction (locks `kt_meta` last).
pub(super) async fn append_binding(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    Ok(())
}
