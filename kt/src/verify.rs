//! Checking proofs against signed roots (RFC 9162 §2.1.3.2 and §2.1.4.2).

use crate::{Hash, node_hash};

/// RFC 9162 §2.1.3.2: whether `path` proves leaf `index` (hash `leaf`) is in the tree of
/// `size` leaves with root `root`.
///
/// ```
/// use qpq_kt::{leaf_hash, verify_inclusion};
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
/// use qpq_kt::{leaf_hash, verify_consistency};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{empty_root, leaf_hash};

    /// MTH of RFC 9162 over leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
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

    #[test]
    fn the_empty_tree_has_the_rfc_root() {
        // RFC 9162 §2.1.1: MTH({}) = SHA-256().
        assert_eq!(
            empty_root(),
            [
                0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
                0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
                0x78, 0x52, 0xb8, 0x55
            ]
        );
    }
}
