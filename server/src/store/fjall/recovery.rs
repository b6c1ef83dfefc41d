//! [`RecoveryStore`] on fjall.
//!
//! # Key layout
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `recovery_bundles` | identity(32) | `v1 ‖ stored_at(8) ‖ bundle` |

use bytes::Bytes;
use fjall::OwnedWriteBatch;

use super::record::{Reader, Writer};
use super::{Engine, FjallStore, engine_err};
use crate::store::{Account, IdentityKey, RecoveryStore, StoreError};

impl Engine {
    fn put_recovery_bundle(
        &self,
        identity: &IdentityKey,
        bundle: &[u8],
        now_ms: u64,
    ) -> Result<((), bool), StoreError> {
        self.account_must_exist(identity)?;
        let mut w = Writer::new(8 + bundle.len());
        w.u64(now_ms).raw(bundle);
        let mut batch = self.db.batch();
        batch.insert(self.ks("recovery_bundles")?, identity.to_vec(), w.finish());
        Ok(((), self.commit(batch)?))
    }

    fn delete_recovery_bundle(&self, identity: &IdentityKey) -> Result<(bool, bool), StoreError> {
        let ks = self.ks("recovery_bundles")?;
        if !ks.contains_key(identity).map_err(engine_err)? {
            return Ok((false, false));
        }
        let mut batch = self.db.batch();
        batch.remove(ks, identity.to_vec());
        Ok((true, self.commit(batch)?))
    }

    /// Adds the removal of an account's recovery bundle to its deletion batch.
    pub(super) fn delete_recovery_data(
        &self,
        batch: &mut OwnedWriteBatch,
        account: &Account,
    ) -> Result<(), StoreError> {
        batch.remove(self.ks("recovery_bundles")?, account.identity_key.to_vec());
        Ok(())
    }
}

impl RecoveryStore for FjallStore {
    async fn put_recovery_bundle(
        &self,
        identity: &IdentityKey,
        bundle: Bytes,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let identity = *identity;
        self.write(move |e| e.put_recovery_bundle(&identity, &bundle, now_ms))
            .await
    }

    async fn recovery_bundle(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<(Bytes, u64)>, StoreError> {
        self.inline(|e| {
            match e
                .ks("recovery_bundles")?
                .get(identity)
                .map_err(engine_err)?
            {
                Some(v) => {
                    let mut r = Reader::new(&v, "recovery bundle")?;
                    let stored_at = r.u64()?;
                    Ok(Some((Bytes::copy_from_slice(r.rest()), stored_at)))
                }
                None => Ok(None),
            }
        })
    }

    async fn delete_recovery_bundle(&self, identity: &IdentityKey) -> Result<bool, StoreError> {
        let identity = *identity;
        self.write(move |e| e.delete_recovery_bundle(&identity))
            .await
    }
}
