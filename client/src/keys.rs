//! Hybrid post-quantum keys: an X25519 + ML-KEM-768 key pair ([`HybridSecret`]), signing its
//! public half for upload, and checking a fetched one.
//!
//! The server checks the owner's signature on upload, but a client must check it again
//! against the identity key it trusts (for example one proven by key transparency), because
//! only that stops a server from handing out a key of its own.
//!
//! ```no_run
//! # async fn run(client: qpq_client::QpqClient, token: bytes::Bytes) -> Result<(), qpq_client::ClientError> {
//! use qpq_client::keys::{HybridSecret, sign_hybrid_key};
//! let identity = qpq_client::IdentityKey::generate();
//! let hybrid = HybridSecret::generate();
//! let key = sign_hybrid_key(&identity, &hybrid.x25519_public(), &hybrid.mlkem768_public(), 1);
//! client
//!     .upload_hybrid_key(qpq_client::proto::UploadHybridKeyRequest {
//!         session_token: token,
//!         key: Some(key),
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use qpq_schema::proto;

use crate::IdentityKey;

/// Domain separation prefix of the signature (keys.proto).
const CONTEXT: &[u8] = b"qpq-v2-hybrid-public-key";

/// Size of an X25519 public key.
///
/// ```
/// let secret = qpq_client::keys::HybridSecret::generate();
/// assert_eq!(secret.x25519_public().len(), qpq_client::keys::X25519_PUBLIC_LEN);
/// ```
pub const X25519_PUBLIC_LEN: usize = 32;
/// Size of an ML-KEM-768 encapsulation key.
///
/// ```
/// assert_eq!(qpq_client::keys::MLKEM768_PUBLIC_LEN, 1184);
/// ```
pub const MLKEM768_PUBLIC_LEN: usize = 1184;
/// Size of [`HybridSecret::to_bytes`]: the X25519 secret (32) and the ML-KEM-768 seed (64).
///
/// ```
/// assert_eq!(qpq_client::keys::HYBRID_SECRET_LEN, 32 + 64);
/// ```
pub const HYBRID_SECRET_LEN: usize = 96;

/// The private half of a hybrid X25519 + ML-KEM-768 key: an X25519 static secret and the
/// 64-byte seed of an ML-KEM-768 decapsulation key. Keep [`to_bytes`](Self::to_bytes) with
/// mode 0600 (the profile does); publish only the public halves, signed with
/// [`sign_hybrid_key`].
///
/// ```
/// let secret = qpq_client::keys::HybridSecret::generate();
/// assert_eq!(secret.mlkem768_public().len(), qpq_client::keys::MLKEM768_PUBLIC_LEN);
/// let again = qpq_client::keys::HybridSecret::from_bytes(&secret.to_bytes()).unwrap();
/// assert_eq!(again.x25519_public(), secret.x25519_public());
/// ```
pub struct HybridSecret {
    x25519: x25519_dalek::StaticSecret,
    mlkem_seed: [u8; 64],
    mlkem: ml_kem::DecapsulationKey<ml_kem::MlKem768>,
}

impl HybridSecret {
    /// A fresh random key pair.
    ///
    /// ```
    /// let a = qpq_client::keys::HybridSecret::generate();
    /// let b = qpq_client::keys::HybridSecret::generate();
    /// assert_ne!(a.x25519_public(), b.x25519_public());
    /// ```
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; HYBRID_SECRET_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_array(&bytes)
    }

    fn from_array(bytes: &[u8; HYBRID_SECRET_LEN]) -> Self {
        let mut x25519 = [0u8; 32];
        x25519.copy_from_slice(&bytes[..32]);
        let mut mlkem_seed = [0u8; 64];
        mlkem_seed.copy_from_slice(&bytes[32..]);
        let mlkem = ml_kem::DecapsulationKey::<ml_kem::MlKem768>::from_seed(mlkem_seed.into());
        Self {
            x25519: x25519_dalek::StaticSecret::from(x25519),
            mlkem_seed,
            mlkem,
        }
    }

    /// Restores a key pair from [`to_bytes`](Self::to_bytes); `None` unless exactly
    /// [`HYBRID_SECRET_LEN`] bytes.
    ///
    /// ```
    /// assert!(qpq_client::keys::HybridSecret::from_bytes(&[0; 5]).is_none());
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; HYBRID_SECRET_LEN] = bytes.try_into().ok()?;
        Some(Self::from_array(bytes))
    }

    /// The secret as bytes: X25519 secret (32) ‖ ML-KEM-768 seed (64). Key material.
    ///
    /// ```
    /// let secret = qpq_client::keys::HybridSecret::generate();
    /// assert_eq!(secret.to_bytes().len(), qpq_client::keys::HYBRID_SECRET_LEN);
    /// ```
    pub fn to_bytes(&self) -> [u8; HYBRID_SECRET_LEN] {
        let mut bytes = [0u8; HYBRID_SECRET_LEN];
        bytes[..32].copy_from_slice(self.x25519.as_bytes());
        bytes[32..].copy_from_slice(&self.mlkem_seed);
        bytes
    }

    /// The X25519 public key (32 bytes).
    ///
    /// ```
    /// let public = qpq_client::keys::HybridSecret::generate().x25519_public();
    /// assert_eq!(public.len(), 32);
    /// ```
    pub fn x25519_public(&self) -> [u8; X25519_PUBLIC_LEN] {
        x25519_dalek::PublicKey::from(&self.x25519).to_bytes()
    }

    /// The ML-KEM-768 encapsulation key ([`MLKEM768_PUBLIC_LEN`] bytes).
    ///
    /// ```
    /// let public = qpq_client::keys::HybridSecret::generate().mlkem768_public();
    /// assert_eq!(public.len(), 1184);
    /// ```
    pub fn mlkem768_public(&self) -> Vec<u8> {
        use ml_kem::KeyExport;
        self.mlkem.encapsulation_key().to_bytes().to_vec()
    }

    /// The X25519 shared secret with a peer's X25519 public key.
    ///
    /// ```
    /// use qpq_client::keys::HybridSecret;
    /// let (a, b) = (HybridSecret::generate(), HybridSecret::generate());
    /// assert_eq!(a.x25519_agree(&b.x25519_public()), b.x25519_agree(&a.x25519_public()));
    /// ```
    pub fn x25519_agree(&self, peer_public: &[u8; 32]) -> [u8; 32] {
        self.x25519
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer_public))
            .to_bytes()
    }

    /// Decapsulates an ML-KEM-768 ciphertext (1088 bytes) made for
    /// [`mlkem768_public`](Self::mlkem768_public); `None` when it has the wrong size. A
    /// wrong ciphertext of the right size yields an unrelated secret (implicit rejection).
    ///
    /// ```
    /// let secret = qpq_client::keys::HybridSecret::generate();
    /// assert!(secret.mlkem768_decapsulate(&[0; 3]).is_none());
    /// ```
    pub fn mlkem768_decapsulate(&self, ciphertext: &[u8]) -> Option<[u8; 32]> {
        use ml_kem::Decapsulate;
        let shared = self.mlkem.decapsulate_slice(ciphertext).ok()?;
        Some(shared.into())
    }
}

impl std::fmt::Debug for HybridSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridSecret")
            .field(
                "x25519_public",
                &qpq_runtime::tls::hex(&self.x25519_public()),
            )
            .finish_non_exhaustive()
    }
}

/// The bytes an identity signs (keys.proto): `"qpq-v2-hybrid-public-key" ‖ identity_key ‖
/// created_at_unix_ms ‖ x25519_public ‖ mlkem768_public`.
///
/// ```
/// let bytes = qpq_client::keys::hybrid_key_signed_bytes(&[1; 32], 7, &[2; 32], &[3; 1184]);
/// assert_eq!(bytes.len(), 1280);
/// ```
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
///
/// ```
/// use qpq_client::keys::{HybridSecret, sign_hybrid_key, verify_hybrid_key};
/// let identity = qpq_client::IdentityKey::generate();
/// let secret = HybridSecret::generate();
/// let key = sign_hybrid_key(&identity, &secret.x25519_public(), &secret.mlkem768_public(), 1);
/// assert!(verify_hybrid_key(&identity.public(), &key));
/// ```
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
///
/// ```
/// # let key = qpq_client::proto::HybridPublicKey::default();
/// // `key` came from FetchHybridKey; the identity key from a verified KT audit.
/// let trusted_identity = [7u8; 32];
/// if !qpq_client::keys::verify_hybrid_key(&trusted_identity, &key) {
///     eprintln!("refusing a hybrid key its owner did not sign");
/// }
/// ```
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

    #[test]
    fn hybrid_secret_round_trips_and_decapsulates() {
        use ml_kem::{EncapsulationKey, Key, MlKem768};
        let secret = HybridSecret::generate();
        let restored = HybridSecret::from_bytes(&secret.to_bytes()).unwrap();
        assert_eq!(restored.mlkem768_public(), secret.mlkem768_public());
        assert_eq!(restored.x25519_public(), secret.x25519_public());
        // Encapsulating to the published key gives the secret the stored seed recovers.
        let public = secret.mlkem768_public();
        let encoded = Key::<EncapsulationKey<MlKem768>>::try_from(&public[..]).unwrap();
        let ek = EncapsulationKey::<MlKem768>::new(&encoded).unwrap();
        let (ciphertext, shared) = ek.encapsulate_deterministic(&[9u8; 32].into());
        assert_eq!(ciphertext.len(), 1088);
        assert_eq!(
            restored.mlkem768_decapsulate(&ciphertext).unwrap(),
            <[u8; 32]>::from(shared)
        );
        // A key from another seed does not.
        let other = HybridSecret::generate();
        assert_ne!(
            other.mlkem768_decapsulate(&ciphertext).unwrap(),
            <[u8; 32]>::from(shared)
        );
    }
}
