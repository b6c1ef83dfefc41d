//! RFC 9162 Merkle tree hashing (§2.1) over stored complete subtrees.
//!
//! A log stores, for every complete aligned subtree, its hash under a [`NodeId`]: the node
//! covering leaves `[index · 2^level, (index + 1) · 2^level)`. Appending leaf `n` completes
//! at most `log2(n) + 1` of them ([`append`]). Every hash RFC 9162 needs (roots, inclusion
//! and consistency paths) splits a range at the largest power of two below its size, so its
//! left parts are always such stored subtrees and a root costs `O(log n)` reads, a path
//! `O(log² n)`.
//!
//! Which nodes a proof reads depends on the sizes and the index alone, never on the hashes.
//! A [`ProofPlan`] uses that: it names the nodes it needs ([`ProofPlan::nodes`]) so a caller
//! whose storage is asynchronous can fetch them in one read, then computes the proofs from
//! them ([`ProofPlan::prove_fetched`]). A caller with synchronous access implements [`Nodes`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt;

use crate::{Hash, empty_root, node_hash};

/// A complete aligned subtree: leaves `[index · 2^level, (index + 1) · 2^level)`; level 0 is
/// the leaf hash itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Height above the leaves.
    pub level: u8,
    /// Position among the nodes of that level.
    pub index: u64,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.level, self.index)
    }
}

/// The stored complete subtrees.
pub trait Nodes {
    /// Why a node cannot be read.
    type Error;

    /// The hash of the complete subtree `id`; asked only for nodes a tree of the proven size
    /// has.
    fn node(&self, id: NodeId) -> Result<Hash, Self::Error>;
}

/// A node a [`ProofPlan`] needs was not among those fetched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("transparency log node {0} is missing")]
pub struct MissingNode(pub NodeId);

/// A proof was asked for outside the tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeError {
    /// The leaf is not in the tree.
    #[error("leaf index {index} is not below the tree size {size}")]
    Leaf {
        /// The leaf asked for.
        index: u64,
        /// Leaves in the tree.
        size: u64,
    },
    /// The older tree is larger than the newer one.
    #[error("tree size {old} is larger than the log ({size} leaves)")]
    OldSize {
        /// The older tree's size.
        old: u64,
        /// Leaves in the tree.
        size: u64,
    },
}

/// The nodes to store when leaf number `n` (0-based) with hash `leaf` is appended to a tree of
/// `n` leaves: the leaf itself and each subtree it completes. Reads the left siblings.
///
/// ```
/// use qpq_kt::tree::{NodeId, append};
/// use std::collections::HashMap;
/// let mut stored: HashMap<NodeId, qpq_kt::Hash> = HashMap::new();
/// for n in 0..3u64 {
///     let leaf = qpq_kt::leaf_hash(&n.to_be_bytes());
///     let lookup = |id: NodeId| stored.get(&id).copied().ok_or(id);
///     let new = append(&lookup, n, leaf).unwrap();
///     stored.extend(new);
/// }
/// // Leaves 0..3 and the subtree over leaves 0 and 1.
/// assert_eq!(stored.len(), 4);
/// ```
pub fn append<N: Nodes>(nodes: &N, n: u64, leaf: Hash) -> Result<Vec<(NodeId, Hash)>, N::Error> {
    let mut out = vec![(NodeId { level: 0, index: n }, leaf)];
    let (mut level, mut index, mut hash) = (0u8, n, leaf);
    while index & 1 == 1 {
        let left = nodes.node(NodeId {
            level,
            index: index - 1,
        })?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        out.push((NodeId { level, index }, hash));
    }
    Ok(out)
}

impl<F, E> Nodes for F
where
    F: Fn(NodeId) -> Result<Hash, E>,
{
    type Error = E;

    fn node(&self, id: NodeId) -> Result<Hash, E> {
        self(id)
    }
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[a:b]) for `a < b` within the stored tree.
fn subtree<N: Nodes>(nodes: &N, a: u64, b: u64) -> Result<Hash, N::Error> {
    let n = b - a;
    if n.is_power_of_two() && a.is_multiple_of(n) {
        return nodes.node(NodeId {
            level: n.trailing_zeros() as u8,
            index: a / n,
        });
    }
    let k = split(n);
    Ok(node_hash(
        &subtree(nodes, a, a + k)?,
        &subtree(nodes, a + k, b)?,
    ))
}

/// The root of the first `size` leaves (`SHA-256("")` for the empty tree).
pub fn root<N: Nodes>(nodes: &N, size: u64) -> Result<Hash, N::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(nodes, 0, size)
}

/// PATH(m, D[a:b]) of RFC 9162 §2.1.3.1, leaf level first.
fn path<N: Nodes>(nodes: &N, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) -> Result<(), N::Error> {
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

/// SUBPROOF(m, D[a:b], complete) of RFC 9162 §2.1.4.1.
fn subproof<N: Nodes>(
    nodes: &N,
    m: u64,
    a: u64,
    b: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), N::Error> {
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

/// What one audit proves about the tree of `size` leaves: its root, optionally the inclusion
/// of one leaf, and optionally its consistency with an older tree.
///
/// ```
/// use qpq_kt::tree::{NodeId, ProofPlan};
/// // A tree of two leaves, "a" and "b", stored as its three nodes.
/// let (a, b) = (qpq_kt::leaf_hash(b"a"), qpq_kt::leaf_hash(b"b"));
/// let stored = |id: NodeId| match (id.level, id.index) {
///     (0, 0) => a,
///     (0, 1) => b,
///     _ => qpq_kt::node_hash(&a, &b),
/// };
/// let plan = ProofPlan::new(2, Some(0), 1).unwrap();
/// let fetched: Vec<_> = plan.nodes().into_iter().map(stored).collect();
/// let proofs = plan.prove_fetched(&fetched).unwrap();
/// assert!(qpq_kt::verify_inclusion(&a, 0, 2, &proofs.inclusion, &proofs.root));
/// assert!(qpq_kt::verify_consistency(1, 2, &a, &proofs.root, &proofs.consistency));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    size: u64,
    leaf: Option<u64>,
    old_size: u64,
}

/// The proofs of a [`ProofPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proofs {
    /// Root of the tree.
    pub root: Hash,
    /// Inclusion path of the leaf, leaf level first; empty when no leaf was asked for.
    pub inclusion: Vec<Hash>,
    /// Consistency path from the older tree; empty when its size is 0 or the tree's own.
    pub consistency: Vec<Hash>,
}

/// Answers every read with zeros and remembers what was read.
#[derive(Default)]
struct Recorder(RefCell<BTreeSet<NodeId>>);

impl Nodes for Recorder {
    type Error = Infallible;

    fn node(&self, id: NodeId) -> Result<Hash, Infallible> {
        self.0.borrow_mut().insert(id);
        Ok([0; 32])
    }
}

/// Nodes fetched for a plan.
struct Fetched(BTreeMap<NodeId, Hash>);

impl Nodes for Fetched {
    type Error = MissingNode;

    fn node(&self, id: NodeId) -> Result<Hash, MissingNode> {
        self.0.get(&id).copied().ok_or(MissingNode(id))
    }
}

impl ProofPlan {
    /// The proofs for the tree of `size` leaves: the inclusion of `leaf` if given, and the
    /// consistency with the tree of `old_size` leaves (0: none).
    pub fn new(size: u64, leaf: Option<u64>, old_size: u64) -> Result<Self, RangeError> {
        if let Some(index) = leaf.filter(|&i| i >= size) {
            return Err(RangeError::Leaf { index, size });
        }
        if old_size > size {
            return Err(RangeError::OldSize {
                old: old_size,
                size,
            });
        }
        Ok(Self {
            size,
            leaf,
            old_size,
        })
    }

    /// The stored nodes [`ProofPlan::prove`] reads, sorted and without repeats.
    pub fn nodes(&self) -> Vec<NodeId> {
        let recorder = Recorder::default();
        let Ok(_) = self.prove(&recorder);
        recorder.0.into_inner().into_iter().collect()
    }

    /// The proofs, reading nodes from `nodes`.
    pub fn prove<N: Nodes>(&self, nodes: &N) -> Result<Proofs, N::Error> {
        let mut inclusion = Vec::new();
        if let Some(index) = self.leaf {
            path(nodes, index, 0, self.size, &mut inclusion)?;
        }
        let mut consistency = Vec::new();
        if self.old_size > 0 && self.old_size < self.size {
            subproof(nodes, self.old_size, 0, self.size, true, &mut consistency)?;
        }
        Ok(Proofs {
            root: root(nodes, self.size)?,
            inclusion,
            consistency,
        })
    }

    /// The proofs from `hashes`, the hashes of [`ProofPlan::nodes`] in that order.
    pub fn prove_fetched(&self, hashes: &[Hash]) -> Result<Proofs, MissingNode> {
        let ids = self.nodes();
        if let Some(&missing) = ids.get(hashes.len()) {
            return Err(MissingNode(missing));
        }
        self.prove(&Fetched(
            ids.into_iter().zip(hashes.iter().copied()).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{leaf_hash, verify_consistency, verify_inclusion};

    /// An in-memory log built with [`append`].
    #[derive(Default)]
    struct Log {
        nodes: HashMap<NodeId, Hash>,
        leaves: Vec<Hash>,
    }

    impl Nodes for Log {
        type Error = MissingNode;

        fn node(&self, id: NodeId) -> Result<Hash, MissingNode> {
            self.nodes.get(&id).copied().ok_or(MissingNode(id))
        }
    }

    impl Log {
        fn with(count: u32) -> Self {
            let mut log = Log::default();
            for i in 0..count {
                log.push(&i.to_be_bytes());
            }
            log
        }

        fn push(&mut self, data: &[u8]) {
            let leaf = leaf_hash(data);
            let n = self.leaves.len() as u64;
            let new = append(&*self, n, leaf).unwrap();
            self.nodes.extend(new);
            self.leaves.push(leaf);
        }
    }

    fn inclusion(log: &Log, index: u64, size: u64) -> Result<Vec<Hash>, RangeError> {
        let plan = ProofPlan::new(size, Some(index), 0)?;
        Ok(plan.prove(log).unwrap().inclusion)
    }

    fn consistency(log: &Log, old: u64, new: u64) -> Result<Vec<Hash>, RangeError> {
        let plan = ProofPlan::new(new, None, old)?;
        Ok(plan.prove(log).unwrap().consistency)
    }

    /// MTH straight from RFC 9162, over the leaf hashes.
    fn reference(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference(&leaves[..k]), &reference(&leaves[k..]))
            }
        }
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
        let log = Log::with(64);
        for size in 1..=64u64 {
            let r = root(&log, size).unwrap();
            for index in 0..size {
                let p = inclusion(&log, index, size).unwrap();
                let leaf = log.leaves[index as usize];
                assert!(
                    verify_inclusion(&leaf, index, size, &p, &r),
                    "leaf {index} of {size}"
                );
                // Another leaf's hash does not verify.
                let other = log.leaves[((index + 1) % size) as usize];
                if size > 1 {
                    assert!(!verify_inclusion(&other, index, size, &p, &r));
                }
            }
        }
        assert!(inclusion(&log, 5, 5).is_err());
    }

    #[test]
    fn consistency_paths_verify_between_every_pair_of_sizes() {
        let log = Log::with(64);
        for new in 1..=64u64 {
            let new_root = root(&log, new).unwrap();
            for old in 1..=new {
                let old_root = root(&log, old).unwrap();
                let p = consistency(&log, old, new).unwrap();
                assert!(
                    verify_consistency(old, new, &old_root, &new_root, &p),
                    "{old} -> {new}"
                );
                if old < new {
                    assert!(!verify_consistency(old, new, &[9; 32], &new_root, &p));
                }
            }
        }
        assert!(consistency(&log, 0, 10).unwrap().is_empty());
        assert!(consistency(&log, 65, 64).is_err());
    }

    #[test]
    fn tampered_proofs_are_rejected() {
        let log = Log::with(64);
        for size in 1..=64u64 {
            let r = root(&log, size).unwrap();
            for index in 0..size {
                let leaf = log.leaves[index as usize];
                let p = inclusion(&log, index, size).unwrap();
                for at in 0..p.len() {
                    let mut bad = p.clone();
                    bad[at][0] ^= 1;
                    assert!(!verify_inclusion(&leaf, index, size, &bad, &r));
                    let mut short = p.clone();
                    short.remove(at);
                    assert!(!verify_inclusion(&leaf, index, size, &short, &r));
                }
                let mut long = p.clone();
                long.push([0; 32]);
                assert!(!verify_inclusion(&leaf, index, size, &long, &r));
                let mut wrong_root = r;
                wrong_root[31] ^= 1;
                assert!(!verify_inclusion(&leaf, index, size, &p, &wrong_root));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(
                        !verify_inclusion(&leaf, other, size, &p, &r),
                        "leaf {index} passed as {other} of {size}"
                    );
                }
            }
            for old in 1..size {
                let old_root = root(&log, old).unwrap();
                let p = consistency(&log, old, size).unwrap();
                for at in 0..p.len() {
                    let mut bad = p.clone();
                    bad[at][0] ^= 1;
                    assert!(!verify_consistency(old, size, &old_root, &r, &bad));
                    let mut short = p.clone();
                    short.remove(at);
                    assert!(!verify_consistency(old, size, &old_root, &r, &short));
                }
                let mut long = p.clone();
                long.push([0; 32]);
                assert!(!verify_consistency(old, size, &old_root, &r, &long));
                let mut wrong_root = r;
                wrong_root[0] ^= 1;
                assert!(!verify_consistency(old, size, &old_root, &wrong_root, &p));
                // Another older tree than the one proven.
                if old > 1 {
                    let other = root(&log, old - 1).unwrap();
                    assert!(!verify_consistency(old, size, &other, &r, &p));
                }
            }
        }
    }

    #[test]
    fn a_plan_names_exactly_the_nodes_it_reads() {
        let log = Log::with(64);
        for size in 0..=64u64 {
            for (leaf, old) in [(None, 0), (size.checked_sub(1), size / 2), (Some(0), 1)] {
                let Ok(plan) = ProofPlan::new(size, leaf, old.min(size)) else {
                    continue;
                };
                let ids = plan.nodes();
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
                let fetched: Vec<Hash> = ids.iter().map(|&id| log.node(id).unwrap()).collect();
                assert_eq!(plan.prove_fetched(&fetched), plan.prove(&log));
                if let Some((_, fewer)) = fetched.split_last() {
                    assert_eq!(
                        plan.prove_fetched(fewer),
                        Err(MissingNode(*ids.last().unwrap()))
                    );
                }
            }
        }
        // The root of a power of two is one node.
        assert_eq!(
            ProofPlan::new(32, None, 0).unwrap().nodes(),
            vec![NodeId { level: 5, index: 0 }]
        );
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

    #[test]
    fn range_errors_name_the_sizes() {
        assert_eq!(
            ProofPlan::new(5, Some(5), 0).unwrap_err().to_string(),
            "leaf index 5 is not below the tree size 5"
        );
        assert_eq!(
            ProofPlan::new(40, None, 41).unwrap_err().to_string(),
            "tree size 41 is larger than the log (40 leaves)"
        );
    }
}
