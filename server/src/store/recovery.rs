//! The account recovery bundle: one opaque, client-encrypted blob per account.

use std::future::Future;

use bytes::Bytes;

use super::{IdentityKey, StoreError};

/// Storage of recovery bundles. Mutations are durable on `Ok`.
pub trait RecoveryStore: Send + Sync + 'static {
    /// Stores or replaces the account's bundle, stamped `now_ms`. [`StoreError::NotFound`]
    /// when the account does not exist.
    fn put_recovery_bundle(
        &self,
        identity: &IdentityKey,
        bundle: Bytes,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The account's bundle and when it was stored.
    fn recovery_bundle(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Option<(Bytes, u64)>, StoreError>> + Send;

    /// Deletes the account's bundle; `false` when there was none.
    fn delete_recovery_bundle(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
