//! Hybrid post-quantum public keys: signing one for upload and checking a fetched one.
//!
//! The server checks the owner's signature on upload, but a client must check it again
//! against the identity key it trusts (for example one proven by key transparency), because
//! only that stops a server from handing out a key of its own.

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use qpq_schema::proto;

use crate::IdentityKey;

/// Domain separation prefix of the signature (keys.proto).
const CONTEXT: &[u8] = b"qpq-v2-hybrid-public-key";

/// The bytes an identity signs (keys.proto): `"qpq-v2-hybrid-public-key" ‖ identity_key ‖
/// created_at_unix_ms ‖ x25519_public ‖ mlkem768_public`.
pub fn hybrid_key_signed_bytes(
    identity_key: &[u8; 32],
    created_at_unix_ms: u64,
    x25519_public: &[u8],
    mlkem768_public: &[u8],
) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(CONTEXT.len() + 40 + x25519_public.len() + mlkem768_public.len());
    v.extend_from_slice(CONTEXT);
    v.extend_from_slice(identity_key);
    v.extend_from_slice(&created_at_unix_ms.to_be_bytes());
    v.extend_from_slice(x25519_public);
    v.extend_from_slice(mlkem768_public);
    v
}

/// A `HybridPublicKey` signed by `identity`, ready for UploadHybridKey.
pub fn sign_hybrid_key(
    identity: &IdentityKey,
    x25519_public: &[u8; 32],
    mlkem768_public: &[u8],
    created_at_unix_ms: u64,
) -> proto::HybridPublicKey {
    let message = hybrid_key_signed_bytes(
        &identity.public(),
        created_at_unix_ms,
        x25519_public,
        mlkem768_public,
    );
    proto::HybridPublicKey {
        x25519_public: Bytes::copy_from_slice(x25519_public),
        mlkem768_public: Bytes::copy_from_slice(mlkem768_public),
        signature: Bytes::copy_from_slice(&identity.sign(&message)),
        created_at_unix_ms,
    }
}

/// Whether `key` carries a valid signature by `identity_key`.
pub fn verify_hybrid_key(identity_key: &[u8; 32], key: &proto::HybridPublicKey) -> bool {
    let Ok(verifying) = VerifyingKey::from_bytes(identity_key) else {
        return false;
    };
    let Ok(signature) = <[u8; 64]>::try_from(key.signature.as_ref()) else {
        return false;
    };
    let message = hybrid_key_signed_bytes(
        identity_key,
        key.created_at_unix_ms,
        &key.x25519_public,
        &key.mlkem768_public,
    );
    verifying
        .verify_strict(&message, &Signature::from_bytes(&signature))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_keys_verify_and_tampering_is_caught() {
        let identity = IdentityKey::generate();
        let mut key = sign_hybrid_key(&identity, &[1; 32], &[2; 1184], 7);
        assert!(verify_hybrid_key(&identity.public(), &key));
        assert!(!verify_hybrid_key(&IdentityKey::generate().public(), &key));
        key.created_at_unix_ms = 8;
        assert!(!verify_hybrid_key(&identity.public(), &key));
    }
}
