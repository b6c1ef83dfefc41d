//! Keys (300-304): MLS KeyPackages and hybrid post-quantum public keys.
//!
//! KeyPackages are single-use: a fetch pops the oldest one atomically (in the store's
//! writer), falling back to the identity's last-resort KeyPackage, which stays. Fetches are
//! rate limited per requester ([`FetchLimiter`]) so nobody drains another user's queue.
//! Hybrid keys are checked (sizes, the ML-KEM modulus check, the owner's Ed25519 signature)
//! before they are stored; fetching clients verify the signature again.

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{KeysService, proto};

use crate::auth::identity_of;
use crate::store::{HybridKeyRecord, IdentityKey, KeyPackageUpload, Store, StoreError};
use crate::{Messenger, errors};

/// Largest KeyPackage, in bytes (keys.proto).
const MAX_KEY_PACKAGE: usize = 16 << 10;
/// Most single-use KeyPackages queued per identity.
pub(crate) const MAX_QUEUED_KEY_PACKAGES: u64 = 1_000;
/// Most identities one FetchHybridKeys call may name.
const MAX_HYBRID_FETCH: usize = 256;
/// Size of an X25519 public key.
const X25519_LEN: usize = 32;
/// Size of an ML-KEM-768 encapsulation key.
const MLKEM768_LEN: usize = 1184;
/// Domain separation prefix of the hybrid key signature (keys.proto).
const HYBRID_CONTEXT: &[u8] = b"qpq-v2-hybrid-public-key";

/// The bytes an identity signs for its hybrid key (keys.proto): the context string, then
/// `identity_key ‖ created_at_unix_ms ‖ x25519_public ‖ mlkem768_public`.
pub(crate) fn hybrid_signed_bytes(
    identity: &IdentityKey,
    created_at_ms: u64,
    x25519_public: &[u8],
    mlkem768_public: &[u8],
) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(HYBRID_CONTEXT.len() + 40 + x25519_public.len() + mlkem768_public.len());
    v.extend_from_slice(HYBRID_CONTEXT);
    v.extend_from_slice(identity);
    v.extend_from_slice(&created_at_ms.to_be_bytes());
    v.extend_from_slice(x25519_public);
    v.extend_from_slice(mlkem768_public);
    v
}

/// FIPS 203 §7.2 modulus check of an ML-KEM-768 encapsulation key: its 768 12-bit
/// coefficients (the first 1152 bytes) must each be below q = 3329.
fn mlkem768_modulus_ok(key: &[u8]) -> bool {
    const Q: u16 = 3329;
    key.len() == MLKEM768_LEN
        && key[..1152].chunks_exact(3).all(|c| {
            let (b0, b1, b2) = (u16::from(c[0]), u16::from(c[1]), u16::from(c[2]));
            let d1 = b0 | ((b1 & 0x0f) << 8);
            let d2 = (b1 >> 4) | (b2 << 4);
            d1 < Q && d2 < Q
        })
}

/// Parses a 32-byte identity key field.
pub(crate) fn identity_field(field: &str, bytes: &[u8]) -> Result<IdentityKey, Status> {
    bytes.try_into().map_err(|_| {
        Status::bad_request(format!(
            "{field} must be a 32-byte identity key, got {} bytes",
            bytes.len()
        ))
    })
}

/// Checks an uploaded hybrid key against the uploader's identity key.
fn check_hybrid_key(
    identity: &IdentityKey,
    key: &proto::HybridPublicKey,
) -> Result<HybridKeyRecord, Status> {
    let x25519_public: [u8; X25519_LEN] = key.x25519_public[..].try_into().map_err(|_| {
        Status::bad_request(format!(
            "x25519_public must be {X25519_LEN} bytes, got {}",
            key.x25519_public.len()
        ))
    })?;
    if x25519_public == [0; X25519_LEN] {
        return Err(Status::bad_request(
            "x25519_public is all zeros, which is not a usable public key",
        ));
    }
    if key.mlkem768_public.len() != MLKEM768_LEN {
        return Err(Status::bad_request(format!(
            "mlkem768_public must be an ML-KEM-768 encapsulation key of {MLKEM768_LEN} bytes, got {}",
            key.mlkem768_public.len()
        )));
    }
    if !mlkem768_modulus_ok(&key.mlkem768_public) {
        return Err(Status::bad_request(
            "mlkem768_public fails the ML-KEM modulus check (a coefficient is not below 3329); it is not an encapsulation key",
        ));
    }
    if key.created_at_unix_ms == 0 {
        return Err(Status::bad_request(
            "created_at_unix_ms must be set to when the key was made (Unix ms); it is covered by the signature",
        ));
    }
    let signature: [u8; 64] = key.signature[..].try_into().map_err(|_| {
        Status::bad_request(format!(
            "signature must be a 64-byte Ed25519 signature, got {} bytes",
            key.signature.len()
        ))
    })?;
    let verifying = VerifyingKey::from_bytes(identity).map_err(|_| Status::internal())?;
    let message = hybrid_signed_bytes(
        identity,
        key.created_at_unix_ms,
        &x25519_public,
        &key.mlkem768_public,
    );
    verifying
        .verify_strict(&message, &Signature::from_bytes(&signature))
        .map_err(|_| {
            Status::bad_request(
                "signature does not verify: sign \"qpq-v2-hybrid-public-key\" || identity_key || created_at_unix_ms (u64 BE) || x25519_public || mlkem768_public with this account's identity key",
            )
        })?;
    Ok(HybridKeyRecord {
        x25519_public,
        mlkem768_public: key.mlkem768_public.clone(),
        signature,
        created_at_ms: key.created_at_unix_ms,
    })
}

pub(crate) fn hybrid_to_proto(record: HybridKeyRecord) -> proto::HybridPublicKey {
    proto::HybridPublicKey {
        x25519_public: Bytes::copy_from_slice(&record.x25519_public),
        mlkem768_public: record.mlkem768_public,
        signature: Bytes::copy_from_slice(&record.signature),
        created_at_unix_ms: record.created_at_ms,
    }
}

impl<S: Store> KeysService for Messenger<S> {
    async fn upload_key_package(
        &self,
        ctx: Ctx<Session>,
        request: proto::UploadKeyPackageRequest,
    ) -> Result<proto::UploadKeyPackageResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        if request.key_package.is_empty() {
            return Err(Status::bad_request(
                "key_package is empty: send one TLS-encoded MLS KeyPackage",
            ));
        }
        if request.key_package.len() > MAX_KEY_PACKAGE {
            return Err(Status::bad_request(format!(
                "key_package is {} bytes; a KeyPackage may be at most {MAX_KEY_PACKAGE} bytes",
                request.key_package.len()
            )));
        }
        let upload = KeyPackageUpload {
            identity,
            key_package: request.key_package,
            last_resort: request.last_resort,
            max_queued: MAX_QUEUED_KEY_PACKAGES,
        };
        let depth = self
            .store
            .upload_key_package(upload)
            .await
            .map_err(|e| match e {
                StoreError::QueueFull { .. } => Status::rate_limited(
                    format!(
                        "your KeyPackage queue is full ({MAX_QUEUED_KEY_PACKAGES} single-use KeyPackages); upload more after some are fetched"
                    ),
                    60_000,
                ),
                other => errors::store(other),
            })?;
        Ok(proto::UploadKeyPackageResponse {
            queue_depth: u32::try_from(depth.queued).unwrap_or(u32::MAX),
            has_last_resort: depth.has_last_resort,
        })
    }

    async fn fetch_key_package(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchKeyPackageRequest,
    ) -> Result<proto::FetchKeyPackageResponse, Status> {
        let requester = identity_of(ctx.auth())?;
        let target = identity_field("identity_key", &request.identity_key)?;
        if let Err(wait) = self.key_fetches.check(&requester) {
            let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
            return Err(Status::rate_limited(
                format!(
                    "too many FetchKeyPackage calls: at most {} per minute per caller; retry later",
                    self.config.key_package_fetches_per_minute
                ),
                ms,
            ));
        }
        let fetched = self
            .store
            .fetch_key_package(&target)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    Status::not_found("no account has this identity key on this server")
                }
                other => errors::store(other),
            })?;
        Ok(match fetched {
            Some((key_package, last_resort)) => proto::FetchKeyPackageResponse {
                key_package,
                last_resort,
            },
            None => proto::FetchKeyPackageResponse::default(),
        })
    }

    async fn upload_hybrid_key(
        &self,
        ctx: Ctx<Session>,
        request: proto::UploadHybridKeyRequest,
    ) -> Result<proto::UploadHybridKeyResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let key = request.key.ok_or_else(|| {
            Status::bad_request("key is missing: send the signed HybridPublicKey")
        })?;
        let record = check_hybrid_key(&identity, &key)?;
        let current = self
            .store
            .hybrid_keys(&[identity])
            .await
            .map_err(errors::store)?
            .pop()
            .flatten();
        if let Some(current) = current
            && current.created_at_ms > record.created_at_ms
        {
            return Err(Status::conflict(format!(
                "a newer hybrid key (created_at_unix_ms {}) is stored; an older key cannot replace it",
                current.created_at_ms
            )));
        }
        self.store
            .put_hybrid_key(&identity, record)
            .await
            .map_err(errors::store)?;
        Ok(proto::UploadHybridKeyResponse {})
    }

    async fn fetch_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        request: proto::FetchHybridKeyRequest,
    ) -> Result<proto::FetchHybridKeyResponse, Status> {
        let identity = identity_field("identity_key", &request.identity_key)?;
        let found = self
            .store
            .hybrid_keys(&[identity])
            .await
            .map_err(errors::store)?
            .pop()
            .flatten();
        Ok(match found {
            Some(record) => proto::FetchHybridKeyResponse {
                key: Some(hybrid_to_proto(record)),
                found: true,
            },
            None => proto::FetchHybridKeyResponse::default(),
        })
    }

    async fn fetch_hybrid_keys(
        &self,
        _ctx: Ctx<Session>,
        request: proto::FetchHybridKeysRequest,
    ) -> Result<proto::FetchHybridKeysResponse, Status> {
        if request.identity_keys.is_empty() || request.identity_keys.len() > MAX_HYBRID_FETCH {
            return Err(Status::bad_request(format!(
                "identity_keys must name 1 to {MAX_HYBRID_FETCH} identities, got {}",
                request.identity_keys.len()
            )));
        }
        let identities = request
            .identity_keys
            .iter()
            .enumerate()
            .map(|(i, key)| identity_field(&format!("identity_keys[{i}]"), key))
            .collect::<Result<Vec<_>, _>>()?;
        let found = self
            .store
            .hybrid_keys(&identities)
            .await
            .map_err(errors::store)?;
        Ok(proto::FetchHybridKeysResponse {
            entries: identities
                .iter()
                .zip(found)
                .filter_map(|(identity, record)| {
                    record.map(|r| proto::HybridKeyEntry {
                        identity_key: Bytes::copy_from_slice(identity),
                        key: Some(hybrid_to_proto(r)),
                    })
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_check() {
        assert!(mlkem768_modulus_ok(&[0u8; MLKEM768_LEN]));
        // 3328 = 0xd00 is the largest coefficient: bytes 00 0d | ...
        let mut ok = vec![0u8; MLKEM768_LEN];
        ok[0] = 0x00;
        ok[1] = 0x0d;
        assert!(mlkem768_modulus_ok(&ok));
        let mut bad = vec![0u8; MLKEM768_LEN];
        bad[0] = 0x01;
        bad[1] = 0x0d; // 3329
        assert!(!mlkem768_modulus_ok(&bad));
        let mut bad_high = vec![0u8; MLKEM768_LEN];
        bad_high[2] = 0xff; // second coefficient 0xff0
        assert!(!mlkem768_modulus_ok(&bad_high));
        // The trailing 32 bytes (rho) are free.
        let mut rho = vec![0u8; MLKEM768_LEN];
        rho[1152..].fill(0xff);
        assert!(mlkem768_modulus_ok(&rho));
        assert!(!mlkem768_modulus_ok(&[0u8; 1183]));
    }

    #[test]
    fn signed_bytes_layout() {
        let m = hybrid_signed_bytes(&[1; 32], 0x0102, &[2; 32], &[3; 1184]);
        assert_eq!(m.len(), 1280);
        assert_eq!(&m[..24], b"qpq-v2-hybrid-public-key");
        assert_eq!(&m[56..64], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }
}
