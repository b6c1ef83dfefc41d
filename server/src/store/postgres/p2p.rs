//! [`P2pStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;

impl P2pStore for PgStore {
    async fn publish_endpoint(
        &self,
        identity: &IdentityKey,
        endpoint: EndpointRecord,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "P2pStore::publish_endpoint is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn endpoints_of(
        &self,
        identity: &IdentityKey,
        now_ms: u64,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        Err(
            StoreError::Unavailable("P2pStore::endpoints_of is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn purge_expired_endpoints(&self, now_ms: u64) -> Result<(u64, bool), StoreError> {
        Err(StoreError::Unavailable(
            "P2pStore::purge_expired_endpoints is not built on PostgreSQL yet".into(),
        )
        .into())
    }
}

/// Removes the endpoints of a deleted account.
pub(super) async fn delete_p2p_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    Ok(())
}
