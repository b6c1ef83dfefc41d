//! Key transparency: the stored half of an append-only Merkle log (RFC 9162 hashing,
//! SHA-256) of username → identity key bindings and of revocations.
//!
//! Bindings are appended by [`Store::create_account`](super::Store::create_account) in the
//! account's own batch; revocations by [`KtStore::kt_revoke`]. Nothing is ever removed, not
//! even when an account is deleted: the log is the public record of what the server said.
//! A backend stores leaves (as `qpq_kt::Leaf` data) and the hashes of the complete subtrees
//! `qpq_kt::tree::append` names, and answers small reads; roots and proofs are computed above
//! the store (`server/src/kt.rs`) and signing tree heads is the handler's job (the log key is
//! not storage). Leaves and nodes never change once written, so reads need no snapshot in
//! common: a node a tree of size `n` needs exists once the size `n` has been read.

use std::future::Future;

use qpq_kt::tree::NodeId;
use qpq_kt::{Hash, Leaf, LeafError};

use super::{IdentityKey, StoreError};

/// A revocation in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Index of the revocation leaf.
    pub leaf_index: u64,
    /// When it was appended, Unix ms.
    pub revoked_at_ms: u64,
    /// The protocol's `RevocationReason` value.
    pub reason: u8,
}

impl From<LeafError> for StoreError {
    fn from(e: LeafError) -> Self {
        match e {
            LeafError::UsernameTooLong => StoreError::InvalidArgument(e.to_string()),
            _ => StoreError::Corrupt(e.to_string()),
        }
    }
}

/// The transparency log.
pub trait KtStore: Send + Sync + 'static {
    /// Appends a revocation of `identity` (with the username of its newest binding) unless
    /// one exists. Returns the revocation and whether this call appended it.
    /// [`StoreError::NotFound`] when the log has no binding of `identity`.
    fn kt_revoke(
        &self,
        identity: &IdentityKey,
        reason: u8,
    ) -> impl Future<Output = Result<(Revocation, bool), StoreError>> + Send;

    /// The revocation of `identity`, if any.
    fn kt_revocation(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Option<Revocation>, StoreError>> + Send;

    /// The number of leaves in the log.
    fn kt_size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Index of the newest leaf for the bare `username`, if any. Written in the batch that
    /// appends that leaf, so a size read afterwards covers it.
    fn kt_newest_for_username(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Index of the newest leaf for `identity`, if any (as for usernames).
    fn kt_newest_for_identity(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// The leaf at `index`; `None` at or past the log's size.
    fn kt_leaf(&self, index: u64) -> impl Future<Output = Result<Option<Leaf>, StoreError>> + Send;

    /// The hashes of the stored complete subtrees `ids`, in that order;
    /// [`StoreError::Corrupt`] when one is missing (callers ask only for nodes of a size they
    /// read).
    fn kt_nodes(
        &self,
        ids: &[NodeId],
    ) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;
}
