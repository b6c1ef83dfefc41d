//! [`DeviceStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;

impl DeviceStore for PgStore {
    async fn register_device(
        &self,
        identity: &IdentityKey,
        session: &[u8; 32],
        device: DeviceRecord,
        max_devices: usize,
    ) -> Result<Registered, DeviceError> {
        Err(StoreError::Unavailable(
            "DeviceStore::register_device is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn devices_of(&self, identity: &IdentityKey) -> Result<Vec<DeviceRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "DeviceStore::devices_of is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn revoke_device(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        now_ms: u64,
    ) -> Result<Vec<SessionRecord>, DeviceError> {
        Err(StoreError::Unavailable(
            "DeviceStore::revoke_device is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn set_push_token(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        push: Option<PushToken>,
    ) -> Result<(), DeviceError> {
        Err(StoreError::Unavailable(
            "DeviceStore::set_push_token is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn push_targets(
        &self,
        identity: &IdentityKey,
    ) -> Result<Vec<(DeviceId, PushToken)>, StoreError> {
        Err(StoreError::Unavailable(
            "DeviceStore::push_targets is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn record_last_seen(
        &self,
        seen: Vec<(IdentityKey, DeviceId, u64)>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "DeviceStore::record_last_seen is not built on PostgreSQL yet".into(),
        )
        .into())
    }
}

/// Removes the devices of a deleted account.
pub(super) async fn delete_device_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    Ok(())
}

/// Refuses a session for a revoked device id.
pub(super) async fn check_device_usable(
    tx: &Tx<'_>,
    session: &SessionRecord,
) -> Result<(), PgError> {
    Ok(())
}
