//! Federation (900-905): delivery between servers.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, FederationPeer, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn relay_enqueue(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::RelayEnqueueRequest,
    ) -> Result<proto::RelayEnqueueResponse, Status> {
        Err(not_yet(MethodId::RelayEnqueue))
    }

    pub(crate) async fn relay_batch_enqueue(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::RelayBatchEnqueueRequest,
    ) -> Result<proto::RelayBatchEnqueueResponse, Status> {
        Err(not_yet(MethodId::RelayBatchEnqueue))
    }

    pub(crate) async fn proxy_fetch_key_package(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ProxyFetchKeyPackageRequest,
    ) -> Result<proto::ProxyFetchKeyPackageResponse, Status> {
        Err(not_yet(MethodId::ProxyFetchKeyPackage))
    }

    pub(crate) async fn proxy_fetch_hybrid_key(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ProxyFetchHybridKeyRequest,
    ) -> Result<proto::ProxyFetchHybridKeyResponse, Status> {
        Err(not_yet(MethodId::ProxyFetchHybridKey))
    }

    pub(crate) async fn proxy_resolve_user(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ProxyResolveUserRequest,
    ) -> Result<proto::ProxyResolveUserResponse, Status> {
        Err(not_yet(MethodId::ProxyResolveUser))
    }

    pub(crate) async fn federation_health(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::FederationHealthRequest,
    ) -> Result<proto::FederationHealthResponse, Status> {
        Err(not_yet(MethodId::FederationHealth))
    }
}

impl<S: Store> Messenger<S> {
    pub(crate) async fn peer_fetch_key_package(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::PeerFetchKeyPackageRequest,
    ) -> Result<proto::PeerFetchKeyPackageResponse, Status> {
        Err(not_yet(MethodId::PeerFetchKeyPackage))
    }

    pub(crate) async fn peer_fetch_hybrid_key(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::PeerFetchHybridKeyRequest,
    ) -> Result<proto::PeerFetchHybridKeyResponse, Status> {
        Err(not_yet(MethodId::PeerFetchHybridKey))
    }

    pub(crate) async fn peer_resolve_user(
        &self,
        _ctx: Ctx<FederationPeer>,
        _request: proto::PeerResolveUserRequest,
    ) -> Result<proto::PeerResolveUserResponse, Status> {
        Err(not_yet(MethodId::PeerResolveUser))
    }
}
