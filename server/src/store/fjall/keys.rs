//! [`KeyStore`] on fjall.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `key_packages` | identity(32) ‖ n(8) | `v1 ‖ key_package` — FIFO by `n` |
//! | `key_package_meta` | identity(32) | `v1 ‖ next_n(8) ‖ queued(8)` |
//! | `last_resort_key_packages` | identity(32) | `v1 ‖ key_package` |
//! | `hybrid_keys` | identity(32) | `v1 ‖ created_at(8) ‖ x25519(32) ‖ signature(64) ‖ mlkem768` |
//!
//! `key_package_meta.queued` equals the entries under the identity's prefix (same batch);
//! `next_n` only grows. A fetch reads the front and removes it in one writer operation, so
//! concurrent fetches never share a KeyPackage.

use bytes::Bytes;
use fjall::OwnedWriteBatch;

use super::{Engine, FjallStore, engine_err};
use crate::store::codec::{Reader, V1};
use crate::store::keys::{HybridKeyRecord, KeyPackageDepth, KeyPackageUpload, KeyStore};
use crate::store::{IdentityKey, QueueLimit, StoreError};

pub(super) const KEY_PACKAGES: &str = "key_packages";
pub(super) const KEY_PACKAGE_META: &str = "key_package_meta";
pub(super) const LAST_RESORT_KEY_PACKAGES: &str = "last_resort_key_packages";
pub(super) const HYBRID_KEYS: &str = "hybrid_keys";

/// `(next_n, queued)` of an identity's KeyPackage queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Meta {
    next: u64,
    queued: u64,
}

fn encode_meta(m: Meta) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(V1);
    v.extend_from_slice(&m.next.to_be_bytes());
    v.extend_from_slice(&m.queued.to_be_bytes());
    v
}

fn decode_meta(b: &[u8]) -> Result<Meta, StoreError> {
    let mut r = Reader::versioned(b, "key package meta")?;
    let m = Meta {
        next: r.u64()?,
        queued: r.u64()?,
    };
    r.finish()?;
    Ok(m)
}

fn package_key(identity: &IdentityKey, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(identity);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn versioned(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + payload.len());
    v.push(V1);
    v.extend_from_slice(payload);
    v
}

fn unversioned(b: &[u8], what: &'static str) -> Result<Bytes, StoreError> {
    let mut r = Reader::versioned(b, what)?;
    Ok(Bytes::copy_from_slice(r.rest()))
}

fn encode_hybrid(k: &HybridKeyRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(105 + k.mlkem768_public.len());
    v.push(V1);
    v.extend_from_slice(&k.created_at_ms.to_be_bytes());
    v.extend_from_slice(&k.x25519_public);
    v.extend_from_slice(&k.signature);
    v.extend_from_slice(&k.mlkem768_public);
    v
}

fn decode_hybrid(b: &[u8]) -> Result<HybridKeyRecord, StoreError> {
    let mut r = Reader::versioned(b, "hybrid key")?;
    Ok(HybridKeyRecord {
        created_at_ms: r.u64()?,
        x25519_public: r.array()?,
        signature: r.array()?,
        mlkem768_public: Bytes::copy_from_slice(r.rest()),
    })
}

impl Engine {
    fn key_package_meta(&self, identity: &IdentityKey) -> Result<Meta, StoreError> {
        match self
            .ks(KEY_PACKAGE_META)?
            .get(identity)
            .map_err(engine_err)?
        {
            Some(v) => decode_meta(&v),
            None => Ok(Meta::default()),
        }
    }

    fn require_account(&self, identity: &IdentityKey) -> Result<(), StoreError> {
        if self.identities.contains_key(identity).map_err(engine_err)? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn depth(&self, identity: &IdentityKey) -> Result<KeyPackageDepth, StoreError> {
        Ok(KeyPackageDepth {
            queued: self.key_package_meta(identity)?.queued,
            has_last_resort: self
                .ks(LAST_RESORT_KEY_PACKAGES)?
                .contains_key(identity)
                .map_err(engine_err)?,
        })
    }

    fn upload_key_package(
        &self,
        upload: &KeyPackageUpload,
    ) -> Result<(KeyPackageDepth, bool), StoreError> {
        let identity = &upload.identity;
        self.require_account(identity)?;
        let mut depth = self.depth(identity)?;
        let mut batch = self.db.batch();
        if upload.last_resort {
            batch.insert(
                self.ks(LAST_RESORT_KEY_PACKAGES)?,
                identity.to_vec(),
                versioned(&upload.key_package),
            );
            depth.has_last_resort = true;
        } else {
            let mut meta = self.key_package_meta(identity)?;
            if meta.queued >= upload.max_queued {
                return Err(StoreError::QueueFull {
                    limit: QueueLimit::Messages(upload.max_queued),
                });
            }
            batch.insert(
                self.ks(KEY_PACKAGES)?,
                package_key(identity, meta.next),
                versioned(&upload.key_package),
            );
            meta.next = meta
                .next
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("key package counter overflow".into()))?;
            meta.queued += 1;
            batch.insert(
                self.ks(KEY_PACKAGE_META)?,
                identity.to_vec(),
                encode_meta(meta),
            );
            depth.queued = meta.queued;
        }
        Ok((depth, self.commit(batch)?))
    }

    fn fetch_key_package(
        &self,
        identity: &IdentityKey,
    ) -> Result<(Option<(Bytes, bool)>, bool), StoreError> {
        self.require_account(identity)?;
        if let Some(guard) = self.ks(KEY_PACKAGES)?.prefix(identity).next() {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            let package = unversioned(&value, "key package")?;
            let mut meta = self.key_package_meta(identity)?;
            meta.queued = meta.queued.saturating_sub(1);
            let mut batch = self.db.batch();
            batch.remove(self.ks(KEY_PACKAGES)?, key.to_vec());
            batch.insert(
                self.ks(KEY_PACKAGE_META)?,
                identity.to_vec(),
                encode_meta(meta),
            );
            return Ok((Some((package, false)), self.commit(batch)?));
        }
        let last = self
            .ks(LAST_RESORT_KEY_PACKAGES)?
            .get(identity)
            .map_err(engine_err)?;
        match last {
            Some(v) => Ok((Some((unversioned(&v, "key package")?, true)), false)),
            None => Ok((None, false)),
        }
    }

    /// Adds the removal of every key record of `identity` to an account-deletion batch.
    pub(super) fn delete_keys_of(
        &self,
        batch: &mut OwnedWriteBatch,
        identity: &IdentityKey,
    ) -> Result<(), StoreError> {
        let packages = self.ks(KEY_PACKAGES)?;
        for guard in packages.prefix(identity) {
            batch.remove(packages, guard.key().map_err(engine_err)?.to_vec());
        }
        batch.remove(self.ks(KEY_PACKAGE_META)?, identity.to_vec());
        batch.remove(self.ks(LAST_RESORT_KEY_PACKAGES)?, identity.to_vec());
        batch.remove(self.ks(HYBRID_KEYS)?, identity.to_vec());
        Ok(())
    }
}

impl KeyStore for FjallStore {
    async fn upload_key_package(
        &self,
        upload: KeyPackageUpload,
    ) -> Result<KeyPackageDepth, StoreError> {
        if upload.key_package.is_empty() {
            return Err(StoreError::InvalidArgument(
                "key package must not be empty".into(),
            ));
        }
        self.write(move |e| e.upload_key_package(&upload)).await
    }

    async fn fetch_key_package(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<(Bytes, bool)>, StoreError> {
        let identity = *identity;
        self.write(move |e| e.fetch_key_package(&identity)).await
    }

    async fn key_package_depth(
        &self,
        identity: &IdentityKey,
    ) -> Result<KeyPackageDepth, StoreError> {
        self.inline(|e| e.depth(identity))
    }

    async fn put_hybrid_key(
        &self,
        identity: &IdentityKey,
        key: HybridKeyRecord,
    ) -> Result<(), StoreError> {
        let identity = *identity;
        let value = encode_hybrid(&key);
        self.write(move |e| {
            e.require_account(&identity)?;
            let mut batch = e.db.batch();
            batch.insert(e.ks(HYBRID_KEYS)?, identity.to_vec(), value);
            Ok(((), e.commit(batch)?))
        })
        .await
    }

    async fn hybrid_keys(
        &self,
        identities: &[IdentityKey],
    ) -> Result<Vec<Option<HybridKeyRecord>>, StoreError> {
        self.inline(|e| {
            let ks = e.ks(HYBRID_KEYS)?;
            identities
                .iter()
                .map(|identity| match ks.get(identity).map_err(engine_err)? {
                    Some(v) => decode_hybrid(&v).map(Some),
                    None => Ok(None),
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let m = Meta { next: 7, queued: 3 };
        assert_eq!(decode_meta(&encode_meta(m)).unwrap(), m);
        let k = HybridKeyRecord {
            x25519_public: [1; 32],
            mlkem768_public: Bytes::from(vec![2; 1184]),
            signature: [3; 64],
            created_at_ms: 9,
        };
        let v = encode_hybrid(&k);
        assert_eq!(decode_hybrid(&v).unwrap(), k);
        assert!(decode_hybrid(&v[..50]).is_err());
        assert_eq!(&unversioned(&versioned(b"kp"), "x").unwrap()[..], b"kp");
    }
}
