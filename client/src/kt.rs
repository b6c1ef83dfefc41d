//! Key transparency: verifying the server's audit answers.
//!
//! The server keeps an append-only Merkle log (RFC 9162 hashing, SHA-256) of username →
//! identity key bindings and revocations, and signs its tree heads with an Ed25519 log key.
//! A client pins that key on first use and then checks every
//! `AuditKeyTransparencyResponse` with [`verify_audit`]: the head's signature, that the leaf
//! is in the tree, and that the tree extends the one it saw last (so the server cannot show
//! different histories to different clients without being caught). Everything here is pure:
//! no I/O, no clock. The leaf encoding, the hashes, the proof checks and the signed bytes are
//! `qpq-kt`'s, the same code the server builds the log with; this module maps the protocol's
//! messages onto them.
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

pub use qpq_kt::{Hash, leaf_hash, verify_consistency, verify_inclusion};

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
        .and_then(qpq_kt::LeafKind::from_u8)
        .ok_or(KtError::Malformed(
            "leaf kind must be BINDING or REVOCATION",
        ))?;
    let reason =
        u8::try_from(leaf.reason).map_err(|_| KtError::Malformed("leaf reason out of range"))?;
    let identity = leaf.identity_key[..]
        .try_into()
        .map_err(|_| KtError::Malformed("leaf identity_key must be 32 bytes"))?;
    qpq_kt::Leaf {
        kind,
        username: leaf.username.clone(),
        identity,
        timestamp_ms: leaf.timestamp_unix_ms,
        reason,
    }
    .to_bytes()
    .map_err(|_| KtError::Malformed("leaf username too long"))
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
    let log_id = qpq_kt::log_id(pinned_log_key);
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
    let message =
        qpq_kt::tree_head_bytes(&log_id, head.tree_size, head.timestamp_unix_ms, &root_hash);
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

    #[test]
    fn leaf_data_is_the_logs_encoding() {
        let leaf = proto::KtLeaf {
            kind: proto::KtLeafKind::Revocation as i32,
            username: "alice".into(),
            identity_key: vec![7; 32].into(),
            timestamp_unix_ms: 0x0102,
            reason: 3,
        };
        let expected = qpq_kt::Leaf {
            kind: qpq_kt::LeafKind::Revocation,
            username: "alice".into(),
            identity: [7; 32],
            timestamp_ms: 0x0102,
            reason: 3,
        };
        assert_eq!(leaf_data(&leaf).unwrap(), expected.to_bytes().unwrap());
        let bad_kind = proto::KtLeaf {
            kind: 3,
            ..leaf.clone()
        };
        assert_eq!(
            leaf_data(&bad_kind),
            Err(KtError::Malformed(
                "leaf kind must be BINDING or REVOCATION"
            ))
        );
        let short_key = proto::KtLeaf {
            identity_key: vec![7; 31].into(),
            ..leaf
        };
        assert_eq!(
            leaf_data(&short_key),
            Err(KtError::Malformed("leaf identity_key must be 32 bytes"))
        );
    }
}
