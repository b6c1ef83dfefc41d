//! Channel and group management (400, 410-413), typing (206) and presence: the server-side
//! record of MLS groups and the pushes about them.
//!
//! The server keeps a channel's metadata, members with roles, and its MLS epoch; it never
//! sees content. RotateKeys orders commits: the store accepts a commit only for the
//! channel's current epoch and queues it (and its welcomes) in the same atomic write, so a
//! losing commit gets Conflict and leaves no trace.
//!
//! Pushes (hints; the store is the truth): PushMembership to the members concerned when
//! membership, roles or metadata change; PushTyping to the other members; PushPresence to
//! everyone sharing a channel with a user whose first connection came or last one went
//! ([`presence_feed`], fed by `live.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{QpqPush, proto};
use rand::RngCore;
use rand::rngs::OsRng;

use crate::clock::now_ms;
use crate::keys::identity_field;
use crate::session::identity_of;
use crate::store::{
    Actor, Channel, ChannelId, ChannelRole, ChannelUpdate, IdentityKey, NewChannel, NewMessage,
    Refusal, RotateCommit, Store, StoreError,
};
use crate::{Messenger, errors};

/// Longest channel name, in bytes.
const MAX_NAME: usize = 128;
/// Longest channel description, in bytes.
const MAX_DESCRIPTION: usize = 1024;
/// Most settings per channel.
const MAX_SETTINGS: usize = 32;
/// Longest setting key, in bytes.
const MAX_SETTING_KEY: usize = 64;
/// Longest setting value, in bytes.
const MAX_SETTING_VALUE: usize = 1024;
/// Most initial members of CreateChannel.
const MAX_INITIAL_MEMBERS: usize = 1000;
/// ListGroupMembers page size when the request says 0.
const DEFAULT_MEMBER_PAGE: usize = 500;
/// Largest ListGroupMembers page.
const MAX_MEMBER_PAGE: usize = 1000;
/// Most bytes of a commit with its welcomes.
const MAX_COMMIT_BYTES: usize = 1 << 20;

/// Lowercase hex of an identity key, for messages.
fn hex(bytes: &[u8]) -> String {
    qpq_runtime::tls::hex(bytes)
}

/// A required 16-byte channel id.
pub(crate) fn channel_id(bytes: &[u8]) -> Result<ChannelId, Status> {
    bytes.try_into().map(ChannelId).map_err(|_| {
        Status::bad_request(format!(
            "channel_id must be the 16 bytes CreateChannel returned, got {} bytes",
            bytes.len()
        ))
    })
}

/// An optional channel id: empty means none.
pub(crate) fn optional_channel_id(bytes: &[u8]) -> Result<Option<ChannelId>, Status> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        channel_id(bytes).map(Some)
    }
}

/// The status for a refused channel operation.
pub(crate) fn refusal(refusal: Refusal) -> Status {
    match refusal {
        Refusal::NoChannel => Status::not_found("there is no channel with this channel_id"),
        Refusal::NotMember => Status::forbidden("you are not a member of this channel"),
        Refusal::Forbidden(why) => Status::forbidden(why),
        Refusal::UnknownAccount(identity) => Status::not_found(format!(
            "no account has the identity key {} on this server",
            hex(&identity)
        )),
        Refusal::Banned(identity) => Status::forbidden(format!(
            "{} is banned from this channel; a channel owner or admin must unban them first",
            hex(&identity)
        )),
        Refusal::StaleEpoch { current } => Status::conflict(format!(
            "the channel is at epoch {current}; fetch and merge the commits in your queue, then retry"
        )),
        Refusal::Invalid(why) => Status::bad_request(why),
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::bad_request(format!(
            "{field} is {} bytes; at most {max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

fn check_settings(settings: &BTreeMap<String, String>) -> Result<(), Status> {
    if settings.len() > MAX_SETTINGS {
        return Err(Status::bad_request(format!(
            "a channel has at most {MAX_SETTINGS} settings, got {}",
            settings.len()
        )));
    }
    for (key, value) in settings {
        if key.is_empty() || key.len() > MAX_SETTING_KEY {
            return Err(Status::bad_request(format!(
                "setting key `{}` must be 1 to {MAX_SETTING_KEY} bytes",
                key.chars().take(80).collect::<String>()
            )));
        }
        check_text(&format!("setting `{key}`"), value, MAX_SETTING_VALUE)?;
    }
    Ok(())
}

fn role_to_proto(role: ChannelRole) -> proto::ChannelRole {
    match role {
        ChannelRole::Owner => proto::ChannelRole::Owner,
        ChannelRole::Admin => proto::ChannelRole::Admin,
        ChannelRole::Member => proto::ChannelRole::Member,
    }
}

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

/// A membership event about `member` (empty for metadata) made by `actor`.
fn membership(
    channel: &ChannelId,
    kind: proto::MembershipChange,
    member: Option<&IdentityKey>,
    actor: &IdentityKey,
    role: Option<ChannelRole>,
) -> proto::MembershipEvent {
    proto::MembershipEvent {
        channel_id: Bytes::copy_from_slice(&channel.0),
        kind: kind as i32,
        member_identity_key: member
            .map(|m| Bytes::copy_from_slice(m))
            .unwrap_or_default(),
        actor_identity_key: Bytes::copy_from_slice(actor),
        role: role.map_or(proto::ChannelRole::Unspecified, role_to_proto) as i32,
        changed_at_unix_ms: now_ms(),
    }
}

impl<S: Store> Messenger<S> {
    /// Whether the session's user is a server administrator (configuration).
    pub(crate) fn is_admin(&self, session: &Session) -> bool {
        self.config.admins.iter().any(|a| a == &session.username)
    }

    /// The caller as an actor of channel operations.
    pub(crate) fn actor(&self, session: &Session) -> Result<Actor, Status> {
        Ok(Actor {
            identity: identity_of(session)?,
            server_admin: self.is_admin(session),
        })
    }

    /// A message tagged with a channel may only come from a member of it (a banned user is
    /// no member).
    pub(crate) async fn check_channel_sender(&self, message: &NewMessage) -> Result<(), Status> {
        let Some(channel) = message.channel_id else {
            return Ok(());
        };
        let member = self
            .store
            .member(&channel, &message.sender_identity_key)
            .await
            .map_err(errors::store)?;
        if member.is_some() {
            return Ok(());
        }
        let exists = self
            .store
            .channel(&channel)
            .await
            .map_err(errors::store)?
            .is_some();
        Err(if exists {
            Status::forbidden("you are not a member of the channel this message is tagged with")
        } else {
            Status::not_found("there is no channel with this channel_id")
        })
    }

    /// Pushes `event` to every live connection of `recipients`.
    fn push_membership(&self, recipients: &[IdentityKey], event: &proto::MembershipEvent) {
        for recipient in recipients {
            for connection in self.live.connections_of(recipient) {
                // A full push buffer loses only the hint.
                let _ = connection.push().push_membership(event);
            }
        }
    }

    pub(crate) async fn create_channel(
        &self,
        ctx: Ctx<Session>,
        request: proto::CreateChannelRequest,
    ) -> Result<proto::CreateChannelResponse, Status> {
        let owner = identity_of(ctx.auth())?;
        check_text("name", &request.name, MAX_NAME)?;
        check_text("description", &request.description, MAX_DESCRIPTION)?;
        let settings: BTreeMap<String, String> = request.settings.into_iter().collect();
        check_settings(&settings)?;
        if request.initial_members.len() > MAX_INITIAL_MEMBERS {
            return Err(Status::bad_request(format!(
                "initial_members holds at most {MAX_INITIAL_MEMBERS} users, got {}",
                request.initial_members.len()
            )));
        }
        let mut members = Vec::with_capacity(request.initial_members.len());
        for (i, member) in request.initial_members.iter().enumerate() {
            let identity = self.recipient(Some(member)).await.map_err(|s| {
                Status::new(s.code(), format!("initial_members[{i}]: {}", s.message()))
            })?;
            members.push(identity);
        }
        let created_at_ms = now_ms();
        // Ids are 16 random bytes: a collision is practically impossible, but a retry with a
        // fresh id costs nothing.
        let mut attempt = 0;
        let channel = loop {
            let mut id = [0u8; 16];
            OsRng.fill_bytes(&mut id);
            let new = NewChannel {
                channel: Channel {
                    id: ChannelId(id),
                    name: request.name.clone(),
                    description: request.description.clone(),
                    settings: settings.clone(),
                    owner,
                    created_at_ms,
                    epoch: request.initial_epoch,
                },
                members: members.clone(),
            };
            match self.store.create_channel(new).await {
                Ok(Ok(channel)) => break channel,
                Ok(Err(refused)) => return Err(refusal(refused)),
                Err(StoreError::InvalidArgument(_)) if attempt < 3 => attempt += 1,
                Err(other) => return Err(errors::store(other)),
            }
        };
        for member in members.iter().filter(|m| **m != owner) {
            let event = membership(
                &channel.id,
                proto::MembershipChange::Added,
                Some(member),
                &owner,
                Some(ChannelRole::Member),
            );
            self.push_membership(&[*member], &event);
        }
        tracing::info!(channel = ?channel.id, members = members.len() + 1, "channel created");
        Ok(proto::CreateChannelResponse {
            channel_id: Bytes::copy_from_slice(&channel.id.0),
            created_at_unix_ms: channel.created_at_ms,
        })
    }

    pub(crate) async fn remove_member(
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
            let event = membership(
                &id,
                proto::MembershipChange::Removed,
                Some(&target),
                &actor.identity,
                None,
            );
            self.push_membership(&told, &event);
            if let Some(owner) = removal.new_owner {
                let event = membership(
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

    pub(crate) async fn update_group_metadata(
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
            let event = membership(
                &id,
                proto::MembershipChange::MetadataUpdated,
                None,
                &actor.identity,
                None,
            );
            self.push_membership(&members, &event);
        }
        for (identity, role) in role_changes {
            let event = membership(
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

    pub(crate) async fn list_group_members(
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

    pub(crate) async fn rotate_keys(
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
            let event = membership(
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

    pub(crate) async fn send_typing(
        &self,
        ctx: Ctx<Session>,
        request: proto::SendTypingRequest,
    ) -> Result<proto::SendTypingResponse, Status> {
        let caller = identity_of(ctx.auth())?;
        let id = channel_id(&request.channel_id)?;
        if self
            .store
            .member(&id, &caller)
            .await
            .map_err(errors::store)?
            .is_none()
        {
            let exists = self
                .store
                .channel(&id)
                .await
                .map_err(errors::store)?
                .is_some();
            return Err(refusal(if exists {
                Refusal::NotMember
            } else {
                Refusal::NoChannel
            }));
        }
        let members = self
            .store
            .member_identities(&id)
            .await
            .map_err(errors::store)?;
        let event = proto::TypingEvent {
            channel_id: request.channel_id,
            identity_key: Bytes::copy_from_slice(&caller),
            typing: request.typing,
        };
        for member in members.iter().filter(|m| **m != caller) {
            for connection in self.live.connections_of(member) {
                let _ = connection.push().push_typing(&event);
            }
        }
        Ok(proto::SendTypingResponse {})
    }

    /// Everyone who shares a channel with `identity` (itself excluded).
    async fn presence_peers(
        &self,
        identity: &IdentityKey,
    ) -> Result<BTreeSet<IdentityKey>, StoreError> {
        let mut peers = BTreeSet::new();
        for channel in self.store.channels_of(identity).await? {
            peers.extend(self.store.member_identities(&channel).await?);
        }
        peers.remove(identity);
        Ok(peers)
    }
}

/// Pushes PushPresence for every change `live.rs` reports, to the users sharing a channel
/// with the one who came or went. Runs for the server's lifetime.
pub(crate) async fn presence_feed<S: Store>(messenger: Arc<Messenger<S>>) {
    let Some(mut changes) = messenger.live.take_presence_events() else {
        return;
    };
    while let Some(change) = changes.recv().await {
        let peers = match messenger.presence_peers(&change.identity).await {
            Ok(peers) => peers,
            Err(error) => {
                tracing::warn!(%error, "presence: could not read channel members");
                continue;
            }
        };
        let event = proto::PresenceEvent {
            identity_key: Bytes::copy_from_slice(&change.identity),
            online: change.online,
            changed_at_unix_ms: change.at_ms,
        };
        for peer in peers {
            for connection in messenger.live.connections_of(&peer) {
                let _ = connection.push().push_presence(&event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_and_settings_are_checked() {
        assert!(channel_id(&[1; 16]).is_ok());
        let err = channel_id(&[1; 15]).unwrap_err();
        assert!(err.message().contains("16 bytes"), "{}", err.message());
        assert_eq!(optional_channel_id(&[]).unwrap(), None);
        let mut settings = BTreeMap::new();
        settings.insert(String::new(), "x".to_owned());
        assert!(check_settings(&settings).is_err());
        let many: BTreeMap<_, _> = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_settings(&many).is_err());
        assert!(check_text("name", &"n".repeat(129), MAX_NAME).is_err());
    }

    #[test]
    fn stale_epoch_is_conflict() {
        let status = refusal(Refusal::StaleEpoch { current: 4 });
        assert_eq!(status.code(), qpq_runtime::StatusCode::Conflict);
        assert!(status.message().contains("epoch 4"));
    }
}
