//! Channel (400): creating channels, and the checks every channel method shares (ids,
//! names, settings, roles, who may send to a channel).
//!
//! The server keeps a channel's metadata, members with roles, and its MLS epoch; it never
//! sees content. The group methods (members, metadata, commits) are in `group.rs`, typing
//! in `delivery.rs`, presence in `crate::background::presence`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{ChannelService, QpqPush, proto};
use rand::RngCore;
use rand::rngs::OsRng;

use crate::auth::identity_of;
use crate::store::{
    Actor, Channel, ChannelId, ChannelRole, IdentityKey, NewChannel, NewMessage, Refusal, Store,
    StoreError,
};
use crate::{Messenger, errors};

/// Longest channel name, in bytes.
pub(crate) const MAX_NAME: usize = 128;
/// Longest channel description, in bytes.
pub(crate) const MAX_DESCRIPTION: usize = 1024;
/// Most settings per channel.
pub(crate) const MAX_SETTINGS: usize = 32;
/// Longest setting key, in bytes.
const MAX_SETTING_KEY: usize = 64;
/// Longest setting value, in bytes.
const MAX_SETTING_VALUE: usize = 1024;
/// Most initial members of CreateChannel.
const MAX_INITIAL_MEMBERS: usize = 1000;

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

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::bad_request(format!(
            "{field} is {} bytes; at most {max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_settings(settings: &BTreeMap<String, String>) -> Result<(), Status> {
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

pub(crate) fn role_to_proto(role: ChannelRole) -> proto::ChannelRole {
    match role {
        ChannelRole::Owner => proto::ChannelRole::Owner,
        ChannelRole::Admin => proto::ChannelRole::Admin,
        ChannelRole::Member => proto::ChannelRole::Member,
    }
}

impl<S: Store> Messenger<S> {
    /// A membership event about `member` (empty for metadata) made by `actor`.
    pub(crate) fn membership(
        &self,
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
            changed_at_unix_ms: self.now_ms(),
        }
    }

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
    pub(crate) fn push_membership(
        &self,
        recipients: &[IdentityKey],
        event: &proto::MembershipEvent,
    ) {
        for recipient in recipients {
            for connection in self.live.connections_of(recipient) {
                // A full push buffer loses only the hint.
                let _ = connection.push().push_membership(event);
            }
        }
    }

    /// Everyone who shares a channel with `identity` (itself excluded).
    pub(crate) async fn presence_peers(
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

impl<S: Store> ChannelService for Messenger<S> {
    async fn create_channel(
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
        let created_at_ms = self.now_ms();
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
            let event = self.membership(
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
