//! Key transparency: an append-only Merkle log (RFC 9162 hashing, SHA-256) of
//! username → identity key bindings and of revocations.
//!
//! Bindings are appended by [`Store::create_account`](super::Store::create_account) in the
//! account's own batch; revocations by [`KtStore::kt_revoke`]. Nothing is ever removed, not
//! even when an account is deleted: the log is the public record of what the server said.
//! Signing tree heads is the handler's job (the log key is not storage).

use std::future::Future;

use super::{IdentityKey, StoreError};

/// Kind of a leaf; the numbers are the protocol's `KtLeafKind` and the leaf data's byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KtLeafKind {
    /// username → identity key, at registration.
    Binding = 1,
    /// The identity key is revoked.
    Revocation = 2,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtLeafRecord {
    /// Binding or revocation.
    pub kind: KtLeafKind,
    /// The bare username the key is (or was) bound to.
    pub username: String,
    /// The Ed25519 identity key.
    pub identity: IdentityKey,
    /// When the leaf was appended, Unix ms.
    pub timestamp_ms: u64,
    /// The protocol's `RevocationReason` value; 0 for bindings.
    pub reason: u8,
}

/// Prefix of the leaf data (`kt.proto`).
const LEAF_PREFIX: &[u8] = b"qpq-kt-leaf-v1";

impl KtLeafRecord {
    /// The leaf data exactly as `kt.proto` documents it (what the leaf hash covers):
    /// `"qpq-kt-leaf-v1" ‖ kind(1) ‖ timestamp(8) ‖ identity(32) ‖ reason(1) ‖
    /// username_len(2) ‖ username`. Usernames longer than 65535 bytes are refused.
    pub fn leaf_data(&self) -> Result<Vec<u8>, StoreError> {
        let len = u16::try_from(self.username.len())
            .map_err(|_| StoreError::InvalidArgument("username longer than 65535 bytes".into()))?;
        let mut v = Vec::with_capacity(LEAF_PREFIX.len() + 44 + self.username.len());
        v.extend_from_slice(LEAF_PREFIX);
        v.push(self.kind as u8);
        v.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        v.extend_from_slice(&self.identity);
        v.push(self.reason);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(self.username.as_bytes());
        Ok(v)
    }

    /// Inverse of [`KtLeafRecord::leaf_data`].
    pub fn from_leaf_data(data: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("transparency log leaf is malformed".into());
        let rest = data.strip_prefix(LEAF_PREFIX).ok_or_else(corrupt)?;
        if rest.len() < 44 {
            return Err(corrupt());
        }
        let kind = match rest[0] {
            1 => KtLeafKind::Binding,
            2 => KtLeafKind::Revocation,
            _ => return Err(corrupt()),
        };
        let timestamp_ms = u64::from_be_bytes(rest[1..9].try_into().map_err(|_| corrupt())?);
        let identity: IdentityKey = rest[9..41].try_into().map_err(|_| corrupt())?;
        let reason = rest[41];
        let len = usize::from(u16::from_be_bytes([rest[42], rest[43]]));
        let name = rest
            .get(44..)
            .filter(|n| n.len() == len)
            .ok_or_else(corrupt)?;
        let username = String::from_utf8(name.to_vec()).map_err(|_| corrupt())?;
        Ok(KtLeafRecord {
            kind,
            username,
            identity,
            timestamp_ms,
            reason,
        })
    }
}

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

/// Which leaf an audit proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KtSubject {
    /// The newest leaf for this bare username.
    Username(String),
    /// The newest leaf for this identity key.
    Identity(IdentityKey),
    /// The leaf at this index.
    Index(u64),
}

/// The log's state: its size and Merkle root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KtHead {
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 Merkle tree hash of the leaves (SHA-256 of nothing when empty).
    pub root: [u8; 32],
}

/// What an audit returns, all read from one consistent snapshot of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtProof {
    /// The log's head.
    pub head: KtHead,
    /// The proven leaf and its index, when a subject was given.
    pub leaf: Option<(u64, KtLeafRecord)>,
    /// Inclusion path of the leaf in `head` (leaf level first).
    pub inclusion: Vec<[u8; 32]>,
    /// Consistency path from the requested size to `head.size`.
    pub consistency: Vec<[u8; 32]>,
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

    /// The head, the subject's newest leaf with its inclusion path, and the consistency path
    /// from `last_seen_size` (0: none). [`StoreError::NotFound`] when the subject has no
    /// leaf; [`StoreError::InvalidArgument`] when `last_seen_size` exceeds the log's size.
    fn kt_audit(
        &self,
        subject: Option<KtSubject>,
        last_seen_size: u64,
    ) -> impl Future<Output = Result<KtProof, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_data_layout_and_round_trip() {
        let leaf = KtLeafRecord {
            kind: KtLeafKind::Revocation,
            username: "alice".into(),
            identity: [7; 32],
            timestamp_ms: 0x0102,
            reason: 3,
        };
        let data = leaf.leaf_data().unwrap();
        assert_eq!(data.len(), 14 + 1 + 8 + 32 + 1 + 2 + 5);
        assert_eq!(&data[..14], b"qpq-kt-leaf-v1");
        assert_eq!(data[14], 2);
        assert_eq!(&data[15..23], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(data[55], 3);
        assert_eq!(&data[56..58], &[0, 5]);
        assert_eq!(KtLeafRecord::from_leaf_data(&data).unwrap(), leaf);
        for cut in 0..data.len() {
            assert!(KtLeafRecord::from_leaf_data(&data[..cut]).is_err());
        }
    }
}
