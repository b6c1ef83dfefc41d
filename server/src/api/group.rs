//! Group (410-413): members, metadata and the MLS commits of a channel.
//!
//! RotateKeys orders commits: the store accepts a commit only for the channel's current
//! epoch and queues it (and its welcomes) in the same atomic write, so a losing commit gets
//! Conflict and leaves no trace. Membership and metadata changes push PushMembership to the
//! members concerned (hints; the store is the truth). The shared channel checks are in
//! `channel.rs`.

use crate::api::channel::{
    MAX_DESCRIPTION, MAX_NAME, MAX_SETTINGS, channel_id, check_settings, check_text, refusal,
    role_to_proto,
};
use crate::api::keys::identity_field;
use crate::auth::identity_of;
use crate::store::{
    Channel, ChannelRole, ChannelUpdate, NewMessage, Refusal, RotateCommit, Store, StoreError,
};
use crate::{Messenger, errors};
use bytes::Bytes;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{GroupService, proto};
use std::collections::BTreeMap;

/// ListGroupMembers page size when the request says 0.
const DEFAULT_MEMBER_PAGE: usize = 500;
/// Largest ListGroupMembers page.
const MAX_MEMBER_PAGE: usize = 1000;
/// Most bytes of a commit with its welcomes.
const MAX_COMMIT_BYTES: usize = 1 << 20;

fn channel_info(channel: &Channel) -> proto::ChannelInfo {
    proto::ChannelInfo {
        channel_id: Bytes::copy_from_slice(&channel.id.0),
        name: channel.name.clone(),
        description: channel.description.clone(),
        settings: channel
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        owner_identity_key: Bytes::copy_from_slice(&channel.owner),
        created_at_unix_ms: channel.created_at_ms,
        epoch: channel.epoch,
    }
}

impl<S: Store> GroupService for Messenger<S> {
    async fn remove_member(
        &self,
        ctx: Ctx<Session>,
        request: proto::RemoveMemberRequest,
    ) -> Result<proto::RemoveMemberResponse, Status> {
        let actor = self.actor(ctx.auth())?;
        let id = channel_id(&request.channel_id)?;
        let target = identity_field("member_identity_key", &request.member_identity_key)?;
        let removal = self
            .store
            .remove_member(&id, actor, &target)
            .await
            .map_err(errors::store)?
            .map_err(refusal)?;
        if removal.removed {
            let mut told = removal.remaining.clone();
            told.push(target);
            let event = self.membership(
                &id,
                proto::MembershipChange::Removed,
                Some(&target),
                &actor.identity,
                None,
            );
            self.push_membership(&told, &event);
            if let Some(owner) = removal.new_owner {
                let event = self.membership(
                    &id,
                    proto::MembershipChange::RoleChanged,
                    Some(&owner),
                    &actor.identity,
                    Some(ChannelRole::Owner),
                );
                self.push_membership(&removal.remaining, &event);
            }
        }
        Ok(proto::RemoveMemberResponse {
            removed: removal.removed,
        })
    }

    async fn update_group_metadata(
        &self,
        ctx: Ctx<Session>,
        request: proto::UpdateGroupMetadataRequest,
    ) -> Result<proto::UpdateGroupMetadataResponse, Status> {
        let actor = self.actor(ctx.auth())?;
        let id = channel_id(&request.channel_id)?;
        if let Some(name) = &request.name {
            check_text("name", name, MAX_NAME)?;
        }
        if let Some(description) = &request.description {
            check_text("description", description, MAX_DESCRIPTION)?;
        }
        let set_settings: BTreeMap<String, String> = request.set_settings.into_iter().collect();
        check_settings(&set_settings)?;
        let mut role_changes = Vec::with_capacity(request.role_changes.len());
        for (i, change) in request.role_changes.iter().enumerate() {
            let identity = identity_field(
                &format!("role_changes[{i}].identity_key"),
                &change.identity_key,
            )?;
            let role = match proto::ChannelRole::try_from(change.role) {
                Ok(proto::ChannelRole::Admin) => ChannelRole::Admin,
                Ok(proto::ChannelRole::Member) => ChannelRole::Member,
                _ => {
                    return Err(Status::bad_request(format!(
                        "role_changes[{i}].role must be ADMIN or MEMBER (ownership is not transferable here)"
                    )));
                }
            };
            role_changes.push((identity, role));
        }
        let metadata_changed = request.name.is_some()
            || request.description.is_some()
            || !set_settings.is_empty()
            || !request.remove_settings.is_empty();
        let update = ChannelUpdate {
            name: request.name,
            description: request.description,
            set_settings,
            remove_settings: request.remove_settings,
            role_changes: role_changes.clone(),
            max_settings: MAX_SETTINGS,
        };
        let (channel, members) = self
            .store
            .update_channel(&id, actor, update)
            .await
            .map_err(errors::store)?
            .map_err(refusal)?;
        if metadata_changed {
            let event = self.membership(
                &id,
                proto::MembershipChange::MetadataUpdated,
                None,
                &actor.identity,
                None,
            );
            self.push_membership(&members, &event);
        }
        for (identity, role) in role_changes {
            let event = self.membership(
                &id,
                proto::MembershipChange::RoleChanged,
                Some(&identity),
                &actor.identity,
                Some(role),
            );
            self.push_membership(&members, &event);
        }
        Ok(proto::UpdateGroupMetadataResponse {
            channel: Some(channel_info(&channel)),
        })
    }

    async fn list_group_members(
        &self,
        ctx: Ctx<Session>,
        request: proto::ListGroupMembersRequest,
    ) -> Result<proto::ListGroupMembersResponse, Status> {
        let caller = identity_of(ctx.auth())?;
        let id = channel_id(&request.channel_id)?;
        let channel = self
            .store
            .channel(&id)
            .await
            .map_err(errors::store)?
            .ok_or_else(|| refusal(Refusal::NoChannel))?;
        if self
            .store
            .member(&id, &caller)
            .await
            .map_err(errors::store)?
            .is_none()
        {
            return Err(refusal(Refusal::NotMember));
        }
        let limit = match request.limit as usize {
            0 => DEFAULT_MEMBER_PAGE,
            n => n.min(MAX_MEMBER_PAGE),
        };
        let page = self
            .store
            .members_page(&id, &request.cursor, limit)
            .await
            .map_err(errors::store)?;
        let mut members = Vec::with_capacity(page.members.len());
        for m in page.members {
            let username = self
                .store
                .account_by_identity(&m.identity)
                .await
                .map_err(errors::store)?
                .map(|a| a.username)
                .unwrap_or_default();
            members.push(proto::Member {
                identity_key: Bytes::copy_from_slice(&m.identity),
                username,
                role: role_to_proto(m.role) as i32,
                joined_at_unix_ms: m.joined_at_ms,
            });
        }
        Ok(proto::ListGroupMembersResponse {
            channel: Some(channel_info(&channel)),
            members,
            next_cursor: Bytes::from(page.next_cursor),
        })
    }

    async fn rotate_keys(
        &self,
        ctx: Ctx<Session>,
        request: proto::RotateKeysRequest,
    ) -> Result<proto::RotateKeysResponse, Status> {
        let actor = self.actor(ctx.auth())?;
        let id = channel_id(&request.channel_id)?;
        if request.commit.is_empty() {
            return Err(Status::bad_request(
                "commit is empty: send the TLS-encoded MLSMessage carrying the Commit",
            ));
        }
        let total: usize = request.commit.len()
            + request
                .welcomes
                .iter()
                .map(|w| w.welcome.len())
                .sum::<usize>();
        if total > MAX_COMMIT_BYTES {
            return Err(Status::bad_request(format!(
                "the commit and its welcomes are {total} bytes; at most {MAX_COMMIT_BYTES} are allowed"
            )));
        }
        let tagged = |payload: Bytes| NewMessage {
            sender_identity_key: actor.identity,
            sender: ctx.auth().username.clone(),
            channel_id: Some(id),
            payload,
            ttl_ms: None,
        };
        let mut welcomes = Vec::with_capacity(request.welcomes.len());
        for (i, w) in request.welcomes.into_iter().enumerate() {
            let at = |s: Status| Status::new(s.code(), format!("welcomes[{i}]: {}", s.message()));
            if w.welcome.is_empty() {
                return Err(at(Status::bad_request("welcome is empty")));
            }
            let recipient = self.recipient(w.recipient.as_ref()).await.map_err(at)?;
            welcomes.push((recipient, tagged(w.welcome)));
        }
        let commit = RotateCommit {
            channel: id,
            sender: actor,
            epoch: request.epoch,
            commit: tagged(request.commit),
            welcomes: welcomes.clone(),
        };
        let outcome = self
            .store
            .rotate(commit.clone())
            .await
            .map_err(|e| match e {
                StoreError::QueueFull { limit } => Status::rate_limited(
                    format!(
                        "a member's queue is full ({limit}), so the commit was not accepted; retry after they fetch"
                    ),
                    60_000,
                ),
                other => errors::store(other),
            })?
            .map_err(|r| match r {
                Refusal::StaleEpoch { current } => Status::conflict(format!(
                    "this commit is for epoch {}, but the channel is at epoch {current}: another commit won; fetch and merge it from your queue, then retry",
                    request.epoch
                )),
                other => refusal(other),
            })?;
        let messages = std::iter::repeat_n(&commit.commit, outcome.queued.len() - welcomes.len())
            .chain(welcomes.iter().map(|(_, m)| m));
        for ((recipient, seq), message) in outcome.queued.iter().zip(messages) {
            self.announce(recipient, *seq, message);
        }
        for added in &outcome.added {
            let event = self.membership(
                &id,
                proto::MembershipChange::Added,
                Some(added),
                &actor.identity,
                Some(ChannelRole::Member),
            );
            self.push_membership(&outcome.members, &event);
        }
        Ok(proto::RotateKeysResponse {
            new_epoch: outcome.new_epoch,
        })
    }
}
