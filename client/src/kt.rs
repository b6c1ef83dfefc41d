//! Key transparency: verifying the server's audit answers.
//!
//! The server keeps an append-only Merkle log (RFC 9162 hashing, SHA-256) of username →
//! identity key bindings and revocations, and signs its tree heads with an Ed25519 log key.
//! A client pins that key on first use and then checks every
//! `AuditKeyTransparencyResponse` with [`verify_audit`]: the head's signature, that the leaf
//! is in the tree, and that the tree extends the one it saw last (so the server cannot show
//! different histories to different clients without being caught). Everything here is pure:
//! no I/O, no clock.
//!
//! ```no_run
//! # async fn run(client: qpq_client::QpqClient, token: bytes::Bytes, pinned: [u8; 32],
//! #              last: Option<qpq_client::kt::TreeHead>) -> Result<(), Box<dyn std::error::Error>> {
//! use qpq_client::proto;
//! let response = client
//!     .audit_key_transparency(proto::AuditKeyTransparencyRequest {
//!         session_token: token,
//!         subject: Some(proto::audit_key_transparency_request::Subject::Username("bob".into())),
//!         last_seen_tree_size: last.as_ref().map_or(0, |h| h.tree_size),
//!     })
//!     .await?;
//! let verified = qpq_client::kt::verify_audit(&response, &pinned, last.as_ref())?;
//! // Keep `verified.head` as the new `last`; `verified.leaf` is bob's newest binding or
//! // revocation, proven to be in the log.
//! # Ok(())
//! # }
//! ```

use ed25519_dalek::{Signature, VerifyingKey};
use qpq_schema::proto;
use sha2::{Digest, Sha256};

/// A SHA-256 hash.
///
/// ```
/// let hash: qpq_client::kt::Hash = qpq_client::kt::leaf_hash(b"data");
/// ```
pub type Hash = [u8; 32];

/// Prefix of the leaf data (kt.proto).
const LEAF_PREFIX: &[u8] = b"qpq-kt-leaf-v1";
/// Prefix of the signed tree head (kt.proto).
const STH_PREFIX: &[u8] = b"qpq-kt-sth-v1";

/// A tree head the client has verified; keep the newest one to check the next answer.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let profile = qpq_client::Profile::open(dir.path()).unwrap();
/// // The qpq tool keeps the last one in the profile's kt.toml.
/// let last: Option<qpq_client::kt::TreeHead> = match profile.kt_state().unwrap() {
///     Some(state) => state.last.map(|saved| saved.head().unwrap()),
///     None => None,
/// };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    /// Number of leaves.
    pub tree_size: u64,
    /// Merkle root over them.
    pub root_hash: Hash,
    /// When the server signed it, Unix ms.
    pub timestamp_unix_ms: u64,
}

/// A verified audit answer.
///
/// ```
/// # fn run(response: qpq_client::proto::AuditKeyTransparencyResponse, pinned: [u8; 32]) -> Result<(), qpq_client::kt::KtError> {
/// let verified = qpq_client::kt::verify_audit(&response, &pinned, None)?;
/// if let Some((index, leaf)) = &verified.leaf {
///     println!("{} is leaf {index} of {}", leaf.username, verified.head.tree_size);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedAudit {
    /// The signed head, verified (and consistent with the head passed as `last_seen`).
    pub head: TreeHead,
    /// The proven leaf and its index, when the request named a subject.
    pub leaf: Option<(u64, proto::KtLeaf)>,
}

/// Why an audit answer was rejected.
///
/// ```
/// let response = qpq_client::proto::AuditKeyTransparencyResponse::default();
/// let error = qpq_client::kt::verify_audit(&response, &[0; 32], None).unwrap_err();
/// assert_eq!(error, qpq_client::kt::KtError::Malformed("tree_head is missing"));
/// ```
/// Any of these means the answer must not be trusted;
/// the ones about signatures and proofs mean the server (or someone in between) lied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KtError {
    /// A field is missing or has the wrong size.
    #[error("malformed audit answer: {0}")]
    Malformed(&'static str),
    /// The head names another log than the pinned key.
    #[error("the tree head is from another log (log_id is not SHA-256 of the pinned key)")]
    WrongLog,
    /// The head's signature does not verify with the pinned key.
    #[error("the tree head's signature does not verify with the pinned log key")]
    BadSignature,
    /// The inclusion proof does not lead from the leaf to the signed root.
    #[error("the leaf is not proven to be in the tree (inclusion proof failed)")]
    NotIncluded,
    /// The consistency proof does not show the new tree extends the one seen before.
    #[error(
        "the tree does not extend the one seen before (consistency proof failed): a forked or rewritten log"
    )]
    Inconsistent,
    /// The head is smaller than one seen before.
    #[error("the log shrank from {seen} to {got} leaves")]
    Rollback {
        /// Size seen before.
        seen: u64,
        /// Size now.
        got: u64,
    },
}

/// `SHA-256(0x00 ‖ data)`.
///
/// ```
/// let a = qpq_client::kt::leaf_hash(b"one");
/// assert_ne!(a, qpq_client::kt::leaf_hash(b"two"));
/// ```
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The leaf data of `leaf` as kt.proto documents it: `"qpq-kt-leaf-v1" ‖ kind(1) ‖
/// timestamp(8) ‖ identity_key(32) ‖ reason(1) ‖ username_len(2) ‖ username`.
///
/// ```
/// use qpq_client::proto::{KtLeaf, KtLeafKind};
/// let leaf = KtLeaf {
///     kind: KtLeafKind::Binding as i32,
///     username: "bob".into(),
///     identity_key: vec![7; 32].into(),
///     timestamp_unix_ms: 1,
///     reason: 0,
/// };
/// assert_eq!(qpq_client::kt::leaf_data(&leaf).unwrap().len(), 14 + 44 + 3);
/// ```
pub fn leaf_data(leaf: &proto::KtLeaf) -> Result<Vec<u8>, KtError> {
    let kind = u8::try_from(leaf.kind)
        .ok()
        .filter(|k| (1..=2).contains(k))
        .ok_or(KtError::Malformed(
            "leaf kind must be BINDING or REVOCATION",
        ))?;
    let reason =
        u8::try_from(leaf.reason).map_err(|_| KtError::Malformed("leaf reason out of range"))?;
    if leaf.identity_key.len() != 32 {
        return Err(KtError::Malformed("leaf identity_key must be 32 bytes"));
    }
    let len = u16::try_from(leaf.username.len())
        .map_err(|_| KtError::Malformed("leaf username too long"))?;
    let mut v = Vec::with_capacity(LEAF_PREFIX.len() + 44 + leaf.username.len());
    v.extend_from_slice(LEAF_PREFIX);
    v.push(kind);
    v.extend_from_slice(&leaf.timestamp_unix_ms.to_be_bytes());
    v.extend_from_slice(&leaf.identity_key);
    v.push(reason);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(leaf.username.as_bytes());
    Ok(v)
}

/// RFC 9162 §2.1.3.2: whether `path` proves leaf `index` (hash `leaf`) is in the tree of
/// `size` leaves with root `root`.
///
/// ```
/// use qpq_client::kt::{leaf_hash, verify_inclusion};
/// // A one-leaf tree's root is the leaf hash, with an empty path.
/// let leaf = leaf_hash(b"only");
/// assert!(verify_inclusion(&leaf, 0, 1, &[], &leaf));
/// assert!(!verify_inclusion(&leaf, 1, 1, &[], &leaf));
/// ```
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: whether `path` proves the tree of `new_size` leaves (root `new_root`)
/// extends the tree of `old_size` leaves (root `old_root`). Equal sizes need equal roots and
/// an empty path; `old_size` 0 proves nothing and is refused.
///
/// ```
/// use qpq_client::kt::{leaf_hash, verify_consistency};
/// let root = leaf_hash(b"only");
/// assert!(verify_consistency(1, 1, &root, &root, &[]));
/// assert!(!verify_consistency(0, 1, &root, &root, &[]));
/// ```
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return path.is_empty() && old_root == new_root;
    }
    let mut nodes: Vec<Hash> = Vec::with_capacity(path.len() + 1);
    if old_size.is_power_of_two() {
        nodes.push(*old_root);
    }
    nodes.extend_from_slice(path);
    let Some((first, rest)) = nodes.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && fr == *old_root && sr == *new_root
}

fn hash_of(bytes: &[u8], what: &'static str) -> Result<Hash, KtError> {
    bytes.try_into().map_err(|_| KtError::Malformed(what))
}

fn hashes(list: &[bytes::Bytes], what: &'static str) -> Result<Vec<Hash>, KtError> {
    list.iter().map(|h| hash_of(h, what)).collect()
}

/// Verifies a signed tree head with the pinned log key.
///
/// ```
/// let head = qpq_client::proto::SignedTreeHead::default();
/// assert_eq!(
///     qpq_client::kt::verify_tree_head(&head, &[0; 32]),
///     Err(qpq_client::kt::KtError::WrongLog)
/// );
/// ```
pub fn verify_tree_head(
    head: &proto::SignedTreeHead,
    pinned_log_key: &[u8; 32],
) -> Result<TreeHead, KtError> {
    let log_id: Hash = Sha256::digest(pinned_log_key).into();
    if head.log_id[..] != log_id {
        return Err(KtError::WrongLog);
    }
    let root_hash = hash_of(&head.root_hash, "root_hash must be 32 bytes")?;
    let signature: [u8; 64] = head
        .signature
        .as_ref()
        .try_into()
        .map_err(|_| KtError::Malformed("signature must be 64 bytes"))?;
    let key = VerifyingKey::from_bytes(pinned_log_key).map_err(|_| KtError::BadSignature)?;
    let mut message = Vec::with_capacity(STH_PREFIX.len() + 80);
    message.extend_from_slice(STH_PREFIX);
    message.extend_from_slice(&log_id);
    message.extend_from_slice(&head.tree_size.to_be_bytes());
    message.extend_from_slice(&head.timestamp_unix_ms.to_be_bytes());
    message.extend_from_slice(&root_hash);
    key.verify_strict(&message, &Signature::from_bytes(&signature))
        .map_err(|_| KtError::BadSignature)?;
    Ok(TreeHead {
        tree_size: head.tree_size,
        root_hash,
        timestamp_unix_ms: head.timestamp_unix_ms,
    })
}

/// Verifies an audit answer: the tree head's signature by `pinned_log_key` (the answer's own
/// `log_public_key` is ignored), the leaf's inclusion proof when a leaf is given, and, when
/// `last_seen` is given (the head this client verified before, whose size it sent as
/// `last_seen_tree_size`), the consistency proof from it. Returns the verified head to keep
/// for next time.
///
/// ```no_run
/// # fn run(response: qpq_client::proto::AuditKeyTransparencyResponse, pinned: [u8; 32],
/// #        last: Option<qpq_client::kt::TreeHead>) -> Result<(), qpq_client::kt::KtError> {
/// let verified = qpq_client::kt::verify_audit(&response, &pinned, last.as_ref())?;
/// let keep = verified.head; // check the next answer against this one
/// # Ok(())
/// # }
/// ```
pub fn verify_audit(
    response: &proto::AuditKeyTransparencyResponse,
    pinned_log_key: &[u8; 32],
    last_seen: Option<&TreeHead>,
) -> Result<VerifiedAudit, KtError> {
    let signed = response
        .tree_head
        .as_ref()
        .ok_or(KtError::Malformed("tree_head is missing"))?;
    let head = verify_tree_head(signed, pinned_log_key)?;
    let leaf = match &response.leaf {
        Some(leaf) => {
            let hash = leaf_hash(&leaf_data(leaf)?);
            let path = hashes(
                &response.inclusion_path,
                "inclusion_path entries must be 32 bytes",
            )?;
            if !verify_inclusion(
                &hash,
                response.leaf_index,
                head.tree_size,
                &path,
                &head.root_hash,
            ) {
                return Err(KtError::NotIncluded);
            }
            Some((response.leaf_index, leaf.clone()))
        }
        None => None,
    };
    if let Some(seen) = last_seen.filter(|s| s.tree_size > 0) {
        if seen.tree_size > head.tree_size {
            return Err(KtError::Rollback {
                seen: seen.tree_size,
                got: head.tree_size,
            });
        }
        let path = hashes(
            &response.consistency_path,
            "consistency_path entries must be 32 bytes",
        )?;
        if !verify_consistency(
            seen.tree_size,
            head.tree_size,
            &seen.root_hash,
            &head.root_hash,
            &path,
        ) {
            return Err(KtError::Inconsistent);
        }
    }
    Ok(VerifiedAudit { head, leaf })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH of RFC 9162 over leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaves[0],
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn rfc_paths_for_a_seven_leaf_tree() {
        // RFC 9162 §2.1.5's example tree of seven leaves d0..d6.
        let leaves: Vec<Hash> = (0u8..7).map(|i| leaf_hash(&[i])).collect();
        let root = mth(&leaves);
        // Inclusion of d0: [d1, hash(c), hash(g)] in RFC terms.
        let path = [leaves[1], mth(&leaves[2..4]), mth(&leaves[4..7])];
        assert!(verify_inclusion(&leaves[0], 0, 7, &path, &root));
        assert!(!verify_inclusion(&leaves[1], 0, 7, &path, &root));
        assert!(!verify_inclusion(&leaves[0], 7, 7, &path, &root));
        // Consistency of the 3-leaf tree with the 7-leaf tree: [c, d, g, l] in RFC terms.
        let old = mth(&leaves[..3]);
        let proof = [leaves[2], leaves[3], mth(&leaves[..2]), mth(&leaves[4..7])];
        assert!(verify_consistency(3, 7, &old, &root, &proof));
        assert!(!verify_consistency(3, 7, &root, &root, &proof));
        // Consistency of the 4-leaf tree: [l] (the old root is implied).
        assert!(verify_consistency(
            4,
            7,
            &mth(&leaves[..4]),
            &root,
            &[mth(&leaves[4..7])]
        ));
        assert!(verify_consistency(7, 7, &root, &root, &[]));
        assert!(!verify_consistency(0, 7, &root, &root, &[]));
    }
}
