//! Channel and group management (400, 410-413).
//!
//! Not implemented yet: every method answers Unavailable (see `service::not_yet`).

use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{MethodId, proto};

use crate::Messenger;
use crate::service::not_yet;
use crate::store::Store;

impl<S: Store> Messenger<S> {
    pub(crate) async fn create_channel(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::CreateChannelRequest,
    ) -> Result<proto::CreateChannelResponse, Status> {
        Err(not_yet(MethodId::CreateChannel))
    }

    pub(crate) async fn remove_member(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RemoveMemberRequest,
    ) -> Result<proto::RemoveMemberResponse, Status> {
        Err(not_yet(MethodId::RemoveMember))
    }

    pub(crate) async fn update_group_metadata(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::UpdateGroupMetadataRequest,
    ) -> Result<proto::UpdateGroupMetadataResponse, Status> {
        Err(not_yet(MethodId::UpdateGroupMetadata))
    }

    pub(crate) async fn list_group_members(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::ListGroupMembersRequest,
    ) -> Result<proto::ListGroupMembersResponse, Status> {
        Err(not_yet(MethodId::ListGroupMembers))
    }

    pub(crate) async fn rotate_keys(
        &self,
        _ctx: Ctx<Session>,
        _request: proto::RotateKeysRequest,
    ) -> Result<proto::RotateKeysResponse, Status> {
        Err(not_yet(MethodId::RotateKeys))
    }
}
