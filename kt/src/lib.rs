//! Key transparency for quicproquo, written once for the server and the client.
//!
//! The server keeps an append-only Merkle log (RFC 9162 hashing, SHA-256) of username →
//! identity key bindings and revocations and signs its tree heads; clients check its answers.
//! This crate is what both sides must agree on, byte for byte:
//!
//! - [`Leaf`]: the leaf data as `kt.proto` documents it, and [`leaf_hash`]/[`node_hash`]
//!   (RFC 9162 domain separation, `0x00` and `0x01`).
//! - [`tree`]: roots, inclusion and consistency proofs over stored complete subtrees, which
//!   the caller supplies through [`tree::Nodes`] (the server's store) or fetches ahead of time
//!   for a [`tree::ProofPlan`].
//! - [`verify_inclusion`], [`verify_consistency`]: RFC 9162 §2.1.3.2 and §2.1.4.2.
//! - [`tree_head_bytes`] and [`log_id`]: what the log's Ed25519 key signs.
//!
//! It is not the signature scheme (the server signs, the client verifies with its pinned key)
//! nor storage: no I/O, no clock, no async.

mod leaf;
pub mod tree;
mod verify;

use sha2::{Digest, Sha256};

pub use leaf::{Leaf, LeafError, LeafKind};
pub use verify::{verify_consistency, verify_inclusion};

/// A SHA-256 hash.
///
/// ```
/// let hash: qpq_kt::Hash = qpq_kt::leaf_hash(b"data");
/// ```
pub type Hash = [u8; 32];

/// Prefix of the signed tree head bytes (`kt.proto`).
const STH_PREFIX: &[u8] = b"qpq-kt-sth-v1";

/// `SHA-256(0x00 ‖ data)`.
///
/// ```
/// let a = qpq_kt::leaf_hash(b"one");
/// assert_ne!(a, qpq_kt::leaf_hash(b"two"));
/// ```
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
///
/// ```
/// let (a, b) = (qpq_kt::leaf_hash(b"a"), qpq_kt::leaf_hash(b"b"));
/// assert_ne!(qpq_kt::node_hash(&a, &b), qpq_kt::node_hash(&b, &a));
/// ```
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
///
/// ```
/// assert_eq!(qpq_kt::empty_root()[..4], [0xe3, 0xb0, 0xc4, 0x42]);
/// ```
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The log's id: `SHA-256(public_key)` of its Ed25519 key.
///
/// ```
/// assert_ne!(qpq_kt::log_id(&[1; 32]), qpq_kt::log_id(&[2; 32]));
/// ```
pub fn log_id(public_key: &[u8; 32]) -> Hash {
    Sha256::digest(public_key).into()
}

/// The bytes the log key signs for a tree head (`kt.proto`): `"qpq-kt-sth-v1" ‖ log_id(32) ‖
/// tree_size(8) ‖ timestamp(8) ‖ root(32)`, integers big-endian.
///
/// ```
/// let bytes = qpq_kt::tree_head_bytes(&[0; 32], 3, 4, &[5; 32]);
/// assert_eq!(bytes.len(), 13 + 80);
/// ```
pub fn tree_head_bytes(log_id: &Hash, tree_size: u64, timestamp_ms: u64, root: &Hash) -> Vec<u8> {
    let mut message = Vec::with_capacity(STH_PREFIX.len() + 80);
    message.extend_from_slice(STH_PREFIX);
    message.extend_from_slice(log_id);
    message.extend_from_slice(&tree_size.to_be_bytes());
    message.extend_from_slice(&timestamp_ms.to_be_bytes());
    message.extend_from_slice(root);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_head_bytes_layout() {
        let bytes = tree_head_bytes(&[1; 32], 0x0203, 0x0405, &[6; 32]);
        assert_eq!(&bytes[..13], b"qpq-kt-sth-v1");
        assert_eq!(&bytes[13..45], &[1; 32]);
        assert_eq!(&bytes[45..53], &[0, 0, 0, 0, 0, 0, 2, 3]);
        assert_eq!(&bytes[53..61], &[0, 0, 0, 0, 0, 0, 4, 5]);
        assert_eq!(&bytes[61..], &[6; 32]);
    }

    #[test]
    fn hashes_are_domain_separated() {
        // RFC 9162 §2.1.1: a leaf and a node over the same bytes never collide.
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_ne!(leaf_hash(&[&[1u8][..], &a, &b].concat()), node_hash(&a, &b));
        assert_eq!(node_hash(&a, &b), {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(a);
            h.update(b);
            <Hash>::from(h.finalize())
        });
    }
}
