//! RFC 9162 Merkle tree hashing (§2.1) over stored perfect subtrees: pure functions, no
//! storage engine.
//!
//! The log stores, for every complete aligned subtree, its hash under `(level, index)`: the
//! node covering leaves `[index · 2^level, (index + 1) · 2^level)`. Appending leaf `n`
//! completes at most `log2(n) + 1` of them ([`append`]). Every hash RFC 9162 needs (roots,
//! inclusion and consistency paths) splits a range at the largest power of two below its
//! size, so its left parts are always such stored subtrees and a root costs `O(log n)`
//! reads, a path `O(log² n)`.

use sha2::{Digest, Sha256};

use super::StoreError;

/// A SHA-256 hash.
pub(crate) type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`.
pub(crate) fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The stored complete subtrees.
pub(crate) trait Nodes {
    /// The hash of the complete subtree at `(level, index)`; it must exist.
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError>;
}

/// The nodes to store when leaf number `n` (0-based) with hash `leaf` is appended to a tree of
/// `n` leaves: the leaf itself and each subtree it completes, as `(level, index, hash)`.
pub(crate) fn append(
    nodes: &impl Nodes,
    n: u64,
    leaf: Hash,
) -> Result<Vec<(u8, u64, Hash)>, StoreError> {
    let mut out = vec![(0u8, n, leaf)];
    let (mut level, mut index, mut hash) = (0u8, n, leaf);
    while index & 1 == 1 {
        let left = nodes.node(level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        out.push((level, index, hash));
    }
    Ok(out)
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[a:b]) for `a < b` within the stored tree.
fn subtree(nodes: &impl Nodes, a: u64, b: u64) -> Result<Hash, StoreError> {
    let n = b - a;
    if n.is_power_of_two() && a.is_multiple_of(n) {
        return nodes.node(n.trailing_zeros() as u8, a / n);
    }
    let k = split(n);
    Ok(node_hash(
        &subtree(nodes, a, a + k)?,
        &subtree(nodes, a + k, b)?,
    ))
}

/// The root of the first `size` leaves (`SHA-256("")` for the empty tree).
pub(crate) fn root(nodes: &impl Nodes, size: u64) -> Result<Hash, StoreError> {
    if size == 0 {
        return Ok(Sha256::digest(b"").into());
    }
    subtree(nodes, 0, size)
}

/// PATH(m, D[a:b]) of RFC 9162 §2.1.3.1, leaf level first.
fn path(nodes: &impl Nodes, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) -> Result<(), StoreError> {
    let n = b - a;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(nodes, m, a, a + k, out)?;
        out.push(subtree(nodes, a + k, b)?);
    } else {
        path(nodes, m - k, a + k, b, out)?;
        out.push(subtree(nodes, a, a + k)?);
    }
    Ok(())
}

/// The inclusion path of leaf `index` in the tree of `size` leaves.
pub(crate) fn inclusion(
    nodes: &impl Nodes,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, StoreError> {
    if index >= size {
        return Err(StoreError::InvalidArgument(format!(
            "leaf index {index} is not below the tree size {size}"
        )));
    }
    let mut out = Vec::new();
    path(nodes, index, 0, size, &mut out)?;
    Ok(out)
}

/// SUBPROOF(m, D[a:b], complete) of RFC 9162 §2.1.4.1.
fn subproof(
    nodes: &impl Nodes,
    m: u64,
    a: u64,
    b: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    let n = b - a;
    if m == n {
        if !complete {
            out.push(subtree(nodes, a, b)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, a, a + k, complete, out)?;
        out.push(subtree(nodes, a + k, b)?);
    } else {
        subproof(nodes, m - k, a + k, b, false, out)?;
        out.push(subtree(nodes, a, a + k)?);
    }
    Ok(())
}

/// The consistency path from the tree of `old` leaves to the tree of `new` leaves; empty when
/// `old` is 0 or equals `new`.
pub(crate) fn consistency(nodes: &impl Nodes, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
    if old > new {
        return Err(StoreError::InvalidArgument(format!(
            "tree size {old} is larger than the log ({new} leaves)"
        )));
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(nodes, old, 0, new, true, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    /// An in-memory log built with [`append`].
    #[derive(Default)]
    struct Log {
        nodes: RefCell<HashMap<(u8, u64), Hash>>,
        leaves: Vec<Hash>,
    }

    impl Nodes for Log {
        fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
            self.nodes
                .borrow()
                .get(&(level, index))
                .copied()
                .ok_or_else(|| StoreError::Corrupt(format!("missing node {level}/{index}")))
        }
    }

    impl Log {
        fn push(&mut self, data: &[u8]) {
            let leaf = leaf_hash(data);
            let n = self.leaves.len() as u64;
            for (level, index, hash) in append(self, n, leaf).unwrap() {
                self.nodes.borrow_mut().insert((level, index), hash);
            }
            self.leaves.push(leaf);
        }
    }

    /// MTH straight from RFC 9162, over the leaf hashes.
    fn reference(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference(&leaves[..k]), &reference(&leaves[k..]))
            }
        }
    }

    /// RFC 9162 §2.1.3.2.
    fn verify_inclusion(index: u64, size: u64, leaf: Hash, path: &[Hash], root: Hash) -> bool {
        if index >= size {
            return false;
        }
        let (mut f, mut s, mut r) = (index, size - 1, leaf);
        for p in path {
            if s == 0 {
                return false;
            }
            if f & 1 == 1 || f == s {
                r = node_hash(p, &r);
                if f & 1 == 0 {
                    while f & 1 == 0 && f != 0 {
                        f >>= 1;
                        s >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, p);
            }
            f >>= 1;
            s >>= 1;
        }
        s == 0 && r == root
    }

    /// RFC 9162 §2.1.4.2.
    fn verify_consistency(
        old: u64,
        new: u64,
        old_root: Hash,
        new_root: Hash,
        path: &[Hash],
    ) -> bool {
        if old == new {
            return path.is_empty() && old_root == new_root;
        }
        let mut path = path.to_vec();
        if old.is_power_of_two() {
            path.insert(0, old_root);
        }
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        let (mut f, mut s) = (old - 1, new - 1);
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
        fr == old_root && sr == new_root && s == 0
    }

    #[test]
    fn roots_match_the_rfc_definition() {
        let mut log = Log::default();
        assert_eq!(root(&log, 0).unwrap(), reference(&[]));
        for i in 0..70u32 {
            log.push(&i.to_be_bytes());
            for size in 1..=log.leaves.len() {
                assert_eq!(
                    root(&log, size as u64).unwrap(),
                    reference(&log.leaves[..size]),
                    "size {size}"
                );
            }
        }
    }

    #[test]
    fn inclusion_paths_verify_for_every_leaf_and_size() {
        let mut log = Log::default();
        for i in 0..40u32 {
            log.push(&i.to_be_bytes());
        }
        for size in 1..=40u64 {
            let r = root(&log, size).unwrap();
            for index in 0..size {
                let p = inclusion(&log, index, size).unwrap();
                assert!(
                    verify_inclusion(index, size, log.leaves[index as usize], &p, r),
                    "leaf {index} of {size}"
                );
                // Another leaf's hash does not verify.
                let other = log.leaves[((index + 1) % size) as usize];
                if size > 1 {
                    assert!(!verify_inclusion(index, size, other, &p, r));
                }
            }
        }
        assert!(inclusion(&log, 5, 5).is_err());
    }

    #[test]
    fn consistency_paths_verify_between_every_pair_of_sizes() {
        let mut log = Log::default();
        for i in 0..40u32 {
            log.push(&i.to_be_bytes());
        }
        for new in 1..=40u64 {
            let new_root = root(&log, new).unwrap();
            for old in 1..=new {
                let old_root = root(&log, old).unwrap();
                let p = consistency(&log, old, new).unwrap();
                assert!(
                    verify_consistency(old, new, old_root, new_root, &p),
                    "{old} -> {new}"
                );
                if old < new {
                    assert!(!verify_consistency(old, new, [9; 32], new_root, &p));
                }
            }
        }
        assert!(consistency(&log, 0, 10).unwrap().is_empty());
        assert!(consistency(&log, 41, 40).is_err());
    }

    #[test]
    fn known_answer_for_two_leaves() {
        // MTH of two leaves is node(leaf(d0), leaf(d1)).
        let mut log = Log::default();
        log.push(b"a");
        log.push(b"b");
        let expected = node_hash(&leaf_hash(b"a"), &leaf_hash(b"b"));
        assert_eq!(root(&log, 2).unwrap(), expected);
        assert_eq!(inclusion(&log, 0, 2).unwrap(), vec![leaf_hash(b"b")]);
    }
}
