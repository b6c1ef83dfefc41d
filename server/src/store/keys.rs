//! Keys: MLS KeyPackages (a single-use queue per identity, plus an optional last-resort one
//! that is never consumed) and each identity's signed hybrid public key.
//!
//! The store keeps bytes; checking sizes and signatures is the handler's job.

use std::future::Future;

use bytes::Bytes;

use super::{IdentityKey, StoreError};

/// One KeyPackage upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackageUpload {
    /// The owner (the caller).
    pub identity: IdentityKey,
    /// TLS-encoded MLS KeyPackage, opaque here.
    pub key_package: Bytes,
    /// `true`: replace the last-resort KeyPackage instead of queueing.
    pub last_resort: bool,
    /// Most single-use KeyPackages the queue may hold; a fuller queue refuses with
    /// [`StoreError::QueueFull`] and stores nothing.
    pub max_queued: u64,
}

/// The state of an identity's KeyPackages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyPackageDepth {
    /// Single-use KeyPackages queued.
    pub queued: u64,
    /// Whether a last-resort KeyPackage is stored.
    pub has_last_resort: bool,
}

/// A stored hybrid public key (X25519 + ML-KEM-768) with its owner's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HybridKeyRecord {
    /// X25519 public key.
    pub x25519_public: [u8; 32],
    /// ML-KEM-768 encapsulation key (1184 bytes).
    pub mlkem768_public: Bytes,
    /// Ed25519 signature by the identity key (see `keys.proto`).
    pub signature: [u8; 64],
    /// When the owner created it, Unix ms (covered by the signature).
    pub created_at_ms: u64,
}

/// KeyPackages and hybrid keys. Every write (a fetch included: it consumes) for an identity
/// without an account answers [`StoreError::NotFound`], checked in the write itself so nothing
/// outlives a concurrent account deletion; reads answer as for an identity with nothing.
pub trait KeyStore: Send + Sync + 'static {
    /// Queues a KeyPackage (or replaces the last-resort one); returns the state after it.
    fn upload_key_package(
        &self,
        upload: KeyPackageUpload,
    ) -> impl Future<Output = Result<KeyPackageDepth, StoreError>> + Send;

    /// Removes and returns the oldest queued KeyPackage of `identity` atomically (two
    /// concurrent calls never get the same one); when the queue is empty returns the
    /// last-resort one, which stays. `Ok(None)` when it has neither. The flag is `true` for
    /// the last-resort KeyPackage.
    fn fetch_key_package(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Option<(Bytes, bool)>, StoreError>> + Send;

    /// The state of an identity's KeyPackages.
    fn key_package_depth(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<KeyPackageDepth, StoreError>> + Send;

    /// Stores or replaces the hybrid key of `identity`.
    fn put_hybrid_key(
        &self,
        identity: &IdentityKey,
        key: HybridKeyRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The hybrid keys of `identities`, in the same order (`None`: no key or no account).
    fn hybrid_keys(
        &self,
        identities: &[IdentityKey],
    ) -> impl Future<Output = Result<Vec<Option<HybridKeyRecord>>, StoreError>> + Send;
}
