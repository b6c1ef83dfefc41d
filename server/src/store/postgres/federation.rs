//! [`FederationStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;

impl FederationStore for PgStore {
    async fn enqueue_with_outbox(
        &self,
        local: Vec<(IdentityKey, NewMessage)>,
        outbox: Vec<(String, OutboxMessage)>,
        limits: OutboxLimits,
    ) -> Result<Vec<Seq>, StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::enqueue_with_outbox is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn outbox_front(&self, peer: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::outbox_front is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn outbox_remove(&self, peer: &str, positions: &[u64]) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::outbox_remove is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn outbox_depth(&self, peer: &str) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::outbox_depth is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn outbox_peers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::outbox_peers is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn store_relayed(
        &self,
        peer: &str,
        deliveries: Vec<RelayedDelivery>,
    ) -> Result<Vec<RelayStored>, StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::store_relayed is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn purge_expired_relay_ids(&self, now_ms: u64) -> Result<(u64, bool), StoreError> {
        Err(StoreError::Unavailable(
            "FederationStore::purge_expired_relay_ids is not built on PostgreSQL yet".into(),
        )
        .into())
    }
}
