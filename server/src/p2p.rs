//! P2P (800-801): direct endpoints of identities.
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn publish_endpoint(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::PublishEndpointRequest,
    ) -> Result<proto::PublishEndpointResponse, Status> {
        Err(not_yet(MethodId::PublishEndpoint))
    }

    pub(crate) async fn resolve_endpoint(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ResolveEndpointRequest,
    ) -> Result<proto::ResolveEndpointResponse, Status> {
        Err(not_yet(MethodId::ResolveEndpoint))
    }
}
