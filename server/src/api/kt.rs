//! Key transparency (510, 511, 520): the append-only log of key bindings and revocations.
//!
//! The log is stored by the store (`store/kt.rs`: leaves and subtree hashes); proofs and the
//! log key are `crate::kt`'s. These handlers validate, audit or revoke, and sign the head.
//! Bindings are appended at registration by the store itself.

use bytes::Bytes;
use qpq_kt::{Leaf, LeafKind};
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{KtService, proto};

use crate::api::keys::identity_field;
use crate::auth::identity_of;
use crate::kt::{self, KtSubject};
use crate::store::{Store, StoreError};
use crate::{Messenger, errors};

fn leaf_to_proto(leaf: Leaf) -> proto::KtLeaf {
    proto::KtLeaf {
        kind: match leaf.kind {
            LeafKind::Binding => proto::KtLeafKind::Binding,
            LeafKind::Revocation => proto::KtLeafKind::Revocation,
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
        let proof = kt::audit(&self.store, subject, request.last_seen_tree_size)
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
