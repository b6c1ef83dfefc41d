//! Key transparency (510, 511, 520): the append-only log of key bindings and revocations.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn revoke_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RevokeKeyRequest,
    ) -> Result<proto::RevokeKeyResponse, Status> {
        Err(not_yet(MethodId::RevokeKey))
    }

    pub(crate) async fn check_revocation(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::CheckRevocationRequest,
    ) -> Result<proto::CheckRevocationResponse, Status> {
        Err(not_yet(MethodId::CheckRevocation))
    }

    pub(crate) async fn audit_key_transparency(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::AuditKeyTransparencyRequest,
    ) -> Result<proto::AuditKeyTransparencyResponse, Status> {
        Err(not_yet(MethodId::AuditKeyTransparency))
    }
}
