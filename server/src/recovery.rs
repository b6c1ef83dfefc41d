//! Recovery (750-752): the client-encrypted account recovery bundle.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn store_recovery_bundle(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::StoreRecoveryBundleRequest,
    ) -> Result<proto::StoreRecoveryBundleResponse, Status> {
        Err(not_yet(MethodId::StoreRecoveryBundle))
    }

    pub(crate) async fn fetch_recovery_bundle(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchRecoveryBundleRequest,
    ) -> Result<proto::FetchRecoveryBundleResponse, Status> {
        Err(not_yet(MethodId::FetchRecoveryBundle))
    }

    pub(crate) async fn delete_recovery_bundle(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::DeleteRecoveryBundleRequest,
    ) -> Result<proto::DeleteRecoveryBundleResponse, Status> {
        Err(not_yet(MethodId::DeleteRecoveryBundle))
    }
}
