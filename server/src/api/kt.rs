//! Key transparency (510, 511, 520): the append-only log of key bindings and revocations.
//!
//! The log itself (leaves, Merkle nodes, proofs) is storage (`store/fjall/kt.rs`); this
//! module signs tree heads with the server's Ed25519 log key ([`LogKey`], persisted in the
//! data directory with mode 0600 so the log's identity survives restarts) and answers the
//! three methods. Bindings are appended at registration by the store itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{KtService, proto};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::api::keys::identity_field;
use crate::auth::identity_of;
use crate::store::{KtHead, KtLeafKind, KtLeafRecord, KtSubject, Store, StoreError};
use crate::{Messenger, errors};

/// File name of the log's signing key seed in the data directory.
pub(crate) const LOG_KEY_FILE: &str = "kt-log-key.bin";

/// Prefix of the signed tree head bytes (kt.proto).
const STH_CONTEXT: &[u8] = b"qpq-kt-sth-v1";

/// The log's Ed25519 signing key.
pub(crate) struct LogKey {
    signing: SigningKey,
    log_id: [u8; 32],
}

impl LogKey {
    fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let log_id = Sha256::digest(signing.verifying_key().as_bytes()).into();
        Self { signing, log_id }
    }

    /// Loads the key from `data_dir`, creating it (mode 0600, written and synced under a
    /// temporary name, then linked into place) on first start.
    pub(crate) fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOG_KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let mode = fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{:o}", mode & 0o777),
                        "key transparency log key is readable by others; it should be mode 0600"
                    );
                }
                let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "{} must hold a 32-byte Ed25519 seed, found {} bytes",
                        path.display(),
                        bytes.len()
                    )
                })?;
                return Ok(Self::from_seed(&seed));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let tmp = data_dir.join(format!(".{LOG_KEY_FILE}.{:016x}.tmp", OsRng.next_u64()));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&seed)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
        // A hard link fails instead of replacing a key another process created meanwhile.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(data_dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("cannot sync {}", data_dir.display()))?;
                tracing::info!(path = %path.display(), "created the key transparency log key");
                Ok(Self::from_seed(&seed))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load_or_create(data_dir),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }

    /// The 32-byte public key.
    pub(crate) fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `head` at `timestamp_ms` (kt.proto's tree head string).
    fn sign(&self, head: &KtHead, timestamp_ms: u64) -> proto::SignedTreeHead {
        let mut message = Vec::with_capacity(STH_CONTEXT.len() + 80);
        message.extend_from_slice(STH_CONTEXT);
        message.extend_from_slice(&self.log_id);
        message.extend_from_slice(&head.size.to_be_bytes());
        message.extend_from_slice(&timestamp_ms.to_be_bytes());
        message.extend_from_slice(&head.root);
        proto::SignedTreeHead {
            log_id: Bytes::copy_from_slice(&self.log_id),
            tree_size: head.size,
            root_hash: Bytes::copy_from_slice(&head.root),
            timestamp_unix_ms: timestamp_ms,
            signature: Bytes::copy_from_slice(&self.signing.sign(&message).to_bytes()),
        }
    }
}

fn leaf_to_proto(leaf: KtLeafRecord) -> proto::KtLeaf {
    proto::KtLeaf {
        kind: match leaf.kind {
            KtLeafKind::Binding => proto::KtLeafKind::Binding,
            KtLeafKind::Revocation => proto::KtLeafKind::Revocation,
        } as i32,
        username: leaf.username,
        identity_key: Bytes::copy_from_slice(&leaf.identity),
        timestamp_unix_ms: leaf.timestamp_ms,
        reason: i32::from(leaf.reason),
    }
}

fn hashes(list: Vec<[u8; 32]>) -> Vec<Bytes> {
    list.iter().map(|h| Bytes::copy_from_slice(h)).collect()
}

impl<S: Store> KtService for Messenger<S> {
    async fn revoke_key(
        &self,
        ctx: Ctx<Session>,
        request: proto::RevokeKeyRequest,
    ) -> Result<proto::RevokeKeyResponse, Status> {
        let caller = identity_of(ctx.auth())?;
        let identity = identity_field("identity_key", &request.identity_key)?;
        let reason = proto::RevocationReason::try_from(request.reason).map_err(|_| {
            Status::bad_request(format!(
                "reason {} is not a RevocationReason (0 to 4)",
                request.reason
            ))
        })?;
        let admin = self.is_admin(ctx.auth());
        let reason = if identity == caller {
            if reason == proto::RevocationReason::Admin && !admin {
                return Err(Status::bad_request(
                    "reason ADMIN is for revocations by a server admin; use COMPROMISED, SUPERSEDED or LOST",
                ));
            }
            reason
        } else if admin {
            // The log says who acted: an admin revoking someone else's key is ADMIN.
            proto::RevocationReason::Admin
        } else {
            return Err(Status::forbidden(
                "you may revoke only your own identity key (server admins may revoke any)",
            ));
        };
        let (revocation, appended) = self
            .store
            .kt_revoke(&identity, reason as u8)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Status::not_found(
                    "this identity key has no binding in the key transparency log",
                ),
                other => errors::store(other),
            })?;
        if appended {
            tracing::info!(
                by = %ctx.auth().username,
                leaf = revocation.leaf_index,
                "identity key revoked"
            );
        }
        Ok(proto::RevokeKeyResponse {
            leaf_index: revocation.leaf_index,
            revoked_at_unix_ms: revocation.revoked_at_ms,
        })
    }

    async fn check_revocation(
        &self,
        _ctx: Ctx<Session>,
        request: proto::CheckRevocationRequest,
    ) -> Result<proto::CheckRevocationResponse, Status> {
        let identity = identity_field("identity_key", &request.identity_key)?;
        let revocation = self
            .store
            .kt_revocation(&identity)
            .await
            .map_err(errors::store)?;
        Ok(match revocation {
            Some(r) => proto::CheckRevocationResponse {
                revoked: true,
                revoked_at_unix_ms: r.revoked_at_ms,
                reason: i32::from(r.reason),
                leaf_index: r.leaf_index,
            },
            None => proto::CheckRevocationResponse::default(),
        })
    }

    async fn audit_key_transparency(
        &self,
        _ctx: Ctx<Session>,
        request: proto::AuditKeyTransparencyRequest,
    ) -> Result<proto::AuditKeyTransparencyResponse, Status> {
        use proto::audit_key_transparency_request::Subject;
        let subject = match request.subject {
            None => None,
            Some(Subject::Username(name)) => {
                Some(KtSubject::Username(self.local_name(&name)?.to_owned()))
            }
            Some(Subject::IdentityKey(key)) => {
                Some(KtSubject::Identity(identity_field("identity_key", &key)?))
            }
            Some(Subject::LeafIndex(index)) => Some(KtSubject::Index(index)),
        };
        let proof = self
            .store
            .kt_audit(subject, request.last_seen_tree_size)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    Status::not_found("the key transparency log has no leaf for this subject")
                }
                other => errors::store(other),
            })?;
        let (leaf_index, leaf) = match proof.leaf {
            Some((index, leaf)) => (index, Some(leaf_to_proto(leaf))),
            None => (0, None),
        };
        Ok(proto::AuditKeyTransparencyResponse {
            tree_head: Some(self.kt_log.sign(&proof.head, self.now_ms())),
            leaf,
            leaf_index,
            inclusion_path: hashes(proof.inclusion),
            consistency_path: hashes(proof.consistency),
            log_public_key: Bytes::copy_from_slice(&self.kt_log.public()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            again.log_id,
            <[u8; 32]>::from(Sha256::digest(again.public()))
        );
        fs::write(dir.path().join(LOG_KEY_FILE), b"short").unwrap();
        assert!(LogKey::load_or_create(dir.path()).is_err());
    }
}
