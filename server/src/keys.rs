//! Keys (300-304): MLS KeyPackages and hybrid post-quantum public keys.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn upload_key_package(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UploadKeyPackageRequest,
    ) -> Result<proto::UploadKeyPackageResponse, Status> {
        Err(not_yet(MethodId::UploadKeyPackage))
    }

    pub(crate) async fn fetch_key_package(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchKeyPackageRequest,
    ) -> Result<proto::FetchKeyPackageResponse, Status> {
        Err(not_yet(MethodId::FetchKeyPackage))
    }

    pub(crate) async fn upload_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UploadHybridKeyRequest,
    ) -> Result<proto::UploadHybridKeyResponse, Status> {
        Err(not_yet(MethodId::UploadHybridKey))
    }

    pub(crate) async fn fetch_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchHybridKeyRequest,
    ) -> Result<proto::FetchHybridKeyResponse, Status> {
        Err(not_yet(MethodId::FetchHybridKey))
    }

    pub(crate) async fn fetch_hybrid_keys(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FetchHybridKeysRequest,
    ) -> Result<proto::FetchHybridKeysResponse, Status> {
        Err(not_yet(MethodId::FetchHybridKeys))
    }
}
