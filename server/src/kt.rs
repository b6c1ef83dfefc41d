//! Key transparency above the store: proofs from the stored log, and the log's signing key.
//!
//! The store keeps leaves and the hashes of complete subtrees (`store/kt.rs`); [`audit`]
//! reads what one answer needs and computes the root and the proofs with `qpq-kt`, the code
//! clients verify with. [`LogKey`] is the server's Ed25519 log key, persisted in the data
//! directory with mode 0600 so the log's identity survives restarts; it signs tree heads.
//! The handlers of the three methods are in `api/kt.rs`.

use std::path::Path;

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use qpq_kt::tree::ProofPlan;
use qpq_kt::{Hash, Leaf};
use qpq_schema::proto;
use rand::RngCore;
use rand::rngs::OsRng;

use crate::secret_file::{self, Created};
use crate::store::{IdentityKey, KtStore, StoreError};

/// Which leaf an audit proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KtSubject {
    /// The newest leaf for this bare username.
    Username(String),
    /// The newest leaf for this identity key.
    Identity(IdentityKey),
    /// The leaf at this index.
    Index(u64),
}

/// The log's state: its size and Merkle root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KtHead {
    /// Number of leaves.
    pub(crate) size: u64,
    /// RFC 9162 Merkle tree hash of the leaves (SHA-256 of nothing when empty).
    pub(crate) root: Hash,
}

/// What an audit returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KtProof {
    /// The log's head.
    pub(crate) head: KtHead,
    /// The proven leaf and its index, when a subject was given.
    pub(crate) leaf: Option<(u64, Leaf)>,
    /// Inclusion path of the leaf in `head` (leaf level first).
    pub(crate) inclusion: Vec<Hash>,
    /// Consistency path from the requested size to `head.size`.
    pub(crate) consistency: Vec<Hash>,
}

/// The head, the subject's newest leaf with its inclusion path, and the consistency path
/// from `last_seen_size` (0: none). [`StoreError::NotFound`] when the subject has no leaf;
/// [`StoreError::InvalidArgument`] when `last_seen_size` exceeds the log's size.
///
/// The store gives no snapshot across reads, so the subject is looked up, then the size
/// read, then the subject looked up again: a leaf's index is written in the batch that
/// appends it, so the head covers the leaf, and an unchanged second lookup means the leaf was
/// still the subject's newest when the size was read. (A subject rebound again and again
/// between the reads is answered after [`NEWEST_LOOKUPS`] tries with the leaf that was newest
/// just before the size read.) Leaves and nodes never change, so the later reads agree with
/// the size.
pub(crate) async fn audit<S: KtStore>(
    store: &S,
    subject: Option<KtSubject>,
    last_seen_size: u64,
) -> Result<KtProof, StoreError> {
    let mut index = newest(store, subject.as_ref()).await?;
    let mut size = store.kt_size().await?;
    if matches!(
        subject,
        Some(KtSubject::Username(_) | KtSubject::Identity(_))
    ) {
        for _ in 1..NEWEST_LOOKUPS {
            let again = newest(store, subject.as_ref()).await?;
            if again == index {
                break;
            }
            index = again;
            size = store.kt_size().await?;
        }
    }
    if last_seen_size > size {
        return Err(StoreError::InvalidArgument(format!(
            "last_seen_tree_size {last_seen_size} is larger than the log ({size} leaves): this server never showed that tree head"
        )));
    }
    if index.is_some_and(|i| i >= size) {
        return Err(StoreError::NotFound);
    }
    let plan = ProofPlan::new(size, index, last_seen_size)
        .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
    let hashes = store.kt_nodes(&plan.nodes()).await?;
    let proofs = plan
        .prove_fetched(&hashes)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let leaf = match index {
        Some(i) => {
            let leaf = store.kt_leaf(i).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("transparency log leaf {i} is missing"))
            })?;
            Some((i, leaf))
        }
        None => None,
    };
    Ok(KtProof {
        head: KtHead {
            size,
            root: proofs.root,
        },
        leaf,
        inclusion: proofs.inclusion,
        consistency: proofs.consistency,
    })
}

/// How often [`audit`] looks a subject up to pair its newest leaf with a head.
const NEWEST_LOOKUPS: usize = 3;

/// The index of the leaf `subject` names. [`StoreError::NotFound`] when it has none.
async fn newest<S: KtStore>(
    store: &S,
    subject: Option<&KtSubject>,
) -> Result<Option<u64>, StoreError> {
    let found = match subject {
        None => return Ok(None),
        Some(KtSubject::Username(name)) => store.kt_newest_for_username(name).await?,
        Some(KtSubject::Identity(identity)) => store.kt_newest_for_identity(identity).await?,
        Some(KtSubject::Index(i)) => Some(*i),
    };
    found.ok_or(StoreError::NotFound).map(Some)
}

/// File name of the log's signing key seed in the data directory.
pub(crate) const LOG_KEY_FILE: &str = "kt-log-key.bin";

/// The log's Ed25519 signing key.
pub(crate) struct LogKey {
    signing: SigningKey,
    log_id: [u8; 32],
}

impl LogKey {
    fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let log_id = qpq_kt::log_id(signing.verifying_key().as_bytes());
        Self { signing, log_id }
    }

    /// Loads the key from `data_dir`, creating it on first start (mode 0600, atomically:
    /// `secret_file`).
    pub(crate) fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOG_KEY_FILE);
        loop {
            if let Some(bytes) = secret_file::read(&path, "key transparency log key")? {
                let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "{} must hold a 32-byte Ed25519 seed, found {} bytes",
                        path.display(),
                        bytes.len()
                    )
                })?;
                return Ok(Self::from_seed(&seed));
            }
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            match secret_file::create(&path, &seed)? {
                Created::New => {
                    tracing::info!(path = %path.display(), "created the key transparency log key");
                    return Ok(Self::from_seed(&seed));
                }
                // Another process created it meanwhile: use theirs.
                Created::Existing => continue,
            }
        }
    }

    /// The 32-byte public key.
    /// A fingerprint of the key (domain-separated SHA-256 of its public half).
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"qpq kt log key fingerprint v1\0");
        h.update(self.public());
        h.finalize().into()
    }

    pub(crate) fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `head` at `timestamp_ms` (kt.proto's tree head string).
    pub(crate) fn sign(&self, head: &KtHead, timestamp_ms: u64) -> proto::SignedTreeHead {
        let message = qpq_kt::tree_head_bytes(&self.log_id, head.size, timestamp_ms, &head.root);
        proto::SignedTreeHead {
            log_id: Bytes::copy_from_slice(&self.log_id),
            tree_size: head.size,
            root_hash: Bytes::copy_from_slice(&head.root),
            timestamp_unix_ms: timestamp_ms,
            signature: Bytes::copy_from_slice(&self.signing.sign(&message).to_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    use qpq_kt::tree::{self, NodeId};
    use qpq_kt::{LeafKind, verify_consistency, verify_inclusion};

    use super::*;
    use crate::store::Revocation;

    /// A log in memory: only what [`audit`] reads.
    #[derive(Default)]
    struct MemLog {
        leaves: Mutex<Vec<Leaf>>,
        nodes: Mutex<HashMap<NodeId, Hash>>,
        /// Bindings of bob that land while the size is read, one per read (a race).
        racing_bindings: Mutex<u8>,
    }

    impl MemLog {
        fn push(&self, username: &str, identity: u8) {
            let mut leaves = self.leaves.lock().unwrap();
            let leaf = Leaf {
                kind: LeafKind::Binding,
                username: username.into(),
                identity: [identity; 32],
                timestamp_ms: leaves.len() as u64,
                reason: 0,
            };
            let mut nodes = self.nodes.lock().unwrap();
            let stored = |id: NodeId| nodes.get(&id).copied().ok_or(id);
            let new = tree::append(&stored, leaves.len() as u64, leaf.hash().unwrap()).unwrap();
            nodes.extend(new);
            leaves.push(leaf);
        }

        fn newest(&self, matches: impl Fn(&Leaf) -> bool) -> Option<u64> {
            let leaves = self.leaves.lock().unwrap();
            leaves.iter().rposition(matches).map(|i| i as u64)
        }
    }

    impl KtStore for MemLog {
        async fn kt_revoke(
            &self,
            _identity: &IdentityKey,
            _reason: u8,
        ) -> Result<(Revocation, bool), StoreError> {
            Err(StoreError::Unavailable("not part of audits".into()))
        }

        async fn kt_revocation(
            &self,
            _identity: &IdentityKey,
        ) -> Result<Option<Revocation>, StoreError> {
            Ok(None)
        }

        async fn kt_size(&self) -> Result<u64, StoreError> {
            let mut racing = self.racing_bindings.lock().unwrap();
            if *racing > 0 {
                *racing -= 1;
                // A new binding of bob lands between the audit's lookup and this read.
                self.push("bob", 100 + *racing);
            }
            Ok(self.leaves.lock().unwrap().len() as u64)
        }

        async fn kt_newest_for_username(&self, username: &str) -> Result<Option<u64>, StoreError> {
            Ok(self.newest(|l| l.username == username))
        }

        async fn kt_newest_for_identity(
            &self,
            identity: &IdentityKey,
        ) -> Result<Option<u64>, StoreError> {
            Ok(self.newest(|l| l.identity == *identity))
        }

        async fn kt_leaf(&self, index: u64) -> Result<Option<Leaf>, StoreError> {
            let leaves = self.leaves.lock().unwrap();
            Ok(usize::try_from(index)
                .ok()
                .and_then(|i| leaves.get(i))
                .cloned())
        }

        async fn kt_nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
            let nodes = self.nodes.lock().unwrap();
            ids.iter()
                .map(|id| {
                    nodes
                        .get(id)
                        .copied()
                        .ok_or_else(|| StoreError::Corrupt(format!("node {id} is missing")))
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn audits_prove_the_newest_leaf_and_extend_every_older_head() {
        let log = MemLog::default();
        let empty = audit(&log, None, 0).await.unwrap();
        assert_eq!(empty.head.size, 0);
        assert_eq!(empty.head.root, qpq_kt::empty_root());
        let mut roots = vec![empty.head.root];
        for i in 0..20u8 {
            log.push(["alice", "bob", "carol"][usize::from(i % 3)], i);
            roots.push(audit(&log, None, 0).await.unwrap().head.root);
        }
        // bob's newest leaf is the last of 1, 4, ..., 19.
        let proof = audit(&log, Some(KtSubject::Username("bob".into())), 0)
            .await
            .unwrap();
        let (index, leaf) = proof.leaf.clone().unwrap();
        assert_eq!((index, leaf.identity), (19, [19; 32]));
        assert!(verify_inclusion(
            &leaf.hash().unwrap(),
            index,
            20,
            &proof.inclusion,
            &proof.head.root
        ));
        let by_key = audit(&log, Some(KtSubject::Identity([4; 32])), 0)
            .await
            .unwrap();
        assert_eq!(by_key.leaf.map(|(i, _)| i), Some(4));
        for seen in 1..=20u64 {
            let proof = audit(&log, Some(KtSubject::Index(seen - 1)), seen)
                .await
                .unwrap();
            assert_eq!(proof.head.root, roots[20]);
            assert!(verify_consistency(
                seen,
                20,
                &roots[seen as usize],
                &proof.head.root,
                &proof.consistency
            ));
        }
        assert!(matches!(
            audit(&log, Some(KtSubject::Username("dave".into())), 0).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            audit(&log, Some(KtSubject::Index(20)), 0).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            audit(&log, None, 21).await,
            Err(StoreError::InvalidArgument(m)) if m.contains("21")
        ));
    }

    #[tokio::test]
    async fn an_audit_pairs_the_newest_leaf_with_a_head_when_bindings_race_it() {
        let log = MemLog::default();
        log.push("bob", 1);
        log.push("alice", 2);
        // bob is bound again while the audit reads the size: the leaf it proves must be the
        // newest one in the head it answers with, or the answer hides the newer binding.
        for racing in 1..=2u8 {
            *log.racing_bindings.lock().unwrap() = racing;
            let proof = audit(&log, Some(KtSubject::Username("bob".into())), 0)
                .await
                .unwrap();
            let (index, leaf) = proof.leaf.clone().unwrap();
            let newest_in_head = log
                .leaves
                .lock()
                .unwrap()
                .iter()
                .take(proof.head.size as usize)
                .rposition(|l| l.username == "bob")
                .unwrap() as u64;
            assert_eq!(index, newest_in_head, "{racing} racing bindings");
            assert!(verify_inclusion(
                &leaf.hash().unwrap(),
                index,
                proof.head.size,
                &proof.inclusion,
                &proof.head.root
            ));
        }
    }

    #[test]
    fn log_key_is_created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = LogKey::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(LOG_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LogKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public(), again.public());
        assert_eq!(again.log_id, qpq_kt::log_id(&again.public()));
        fs::write(dir.path().join(LOG_KEY_FILE), b"short").unwrap();
        assert!(LogKey::load_or_create(dir.path()).is_err());
    }
}
