//! [`ChannelStore`] on fjall.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `channels` | channel(16) | `v1 ‖ owner(32) ‖ created(8) ‖ epoch(8) ‖ name ‖ description ‖ settings_count(2) ‖ (key ‖ value)*`, strings as `len(2) ‖ UTF-8` |
//! | `channel_members` | channel(16) ‖ identity(32) | `v1 ‖ role(1) ‖ joined_at(8)` |
//! | `channel_member_order` | channel(16) ‖ joined_at(8) ‖ identity(32) | empty — members by join time |
//! | `member_channels` | identity(32) ‖ channel(16) | empty — the channels of an identity |
//!
//! A member has exactly one entry in each of the last three keyspaces, written and removed
//! in one batch with the change that adds or removes it. The owner named in `channels` is a
//! member with role OWNER. The epoch only grows, by one per accepted commit, in the batch
//! that queues the commit.

use std::collections::{BTreeMap, HashSet};

use fjall::OwnedWriteBatch;

use super::{Engine, FjallStore, engine_err};
use crate::store::channels::{
    Actor, Channel, ChannelId, ChannelRole, ChannelStore, ChannelUpdate, CommitOutcome, MemberPage,
    MemberRecord, NewChannel, Refusal, Removal, RotateCommit,
};
use crate::store::codec::{Reader, V1};
use crate::store::{IdentityKey, NewMessage, StoreError};

pub(super) const CHANNELS: &str = "channels";
pub(super) const CHANNEL_MEMBERS: &str = "channel_members";
pub(super) const CHANNEL_MEMBER_ORDER: &str = "channel_member_order";
pub(super) const MEMBER_CHANNELS: &str = "member_channels";

/// What a writer operation returns: the outcome (or why it was refused) and whether it
/// committed anything.
type Written<T> = Result<(Result<T, Refusal>, bool), StoreError>;

/// Length of a member-page cursor: `joined_at(8) ‖ identity(32)` of the last member returned.
const CURSOR_LEN: usize = 40;

fn put_str(v: &mut Vec<u8>, s: &str, what: &str) -> Result<(), StoreError> {
    let len = u16::try_from(s.len())
        .map_err(|_| StoreError::InvalidArgument(format!("{what} longer than 65535 bytes")))?;
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    Ok(())
}

fn get_str(r: &mut Reader<'_>) -> Result<String, StoreError> {
    let len = usize::from(r.u16()?);
    String::from_utf8(r.bytes(len)?.to_vec())
        .map_err(|_| StoreError::Corrupt("channel string is not utf-8".into()))
}

fn encode_channel(c: &Channel) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::with_capacity(64 + c.name.len() + c.description.len());
    v.push(V1);
    v.extend_from_slice(&c.owner);
    v.extend_from_slice(&c.created_at_ms.to_be_bytes());
    v.extend_from_slice(&c.epoch.to_be_bytes());
    put_str(&mut v, &c.name, "channel name")?;
    put_str(&mut v, &c.description, "channel description")?;
    let count = u16::try_from(c.settings.len())
        .map_err(|_| StoreError::InvalidArgument("more than 65535 settings".into()))?;
    v.extend_from_slice(&count.to_be_bytes());
    for (key, value) in &c.settings {
        put_str(&mut v, key, "setting key")?;
        put_str(&mut v, value, "setting value")?;
    }
    Ok(v)
}

fn decode_channel(id: ChannelId, b: &[u8]) -> Result<Channel, StoreError> {
    let mut r = Reader::versioned(b, "channel")?;
    let owner = r.array()?;
    let created_at_ms = r.u64()?;
    let epoch = r.u64()?;
    let name = get_str(&mut r)?;
    let description = get_str(&mut r)?;
    let count = r.u16()?;
    let mut settings = BTreeMap::new();
    for _ in 0..count {
        let key = get_str(&mut r)?;
        settings.insert(key, get_str(&mut r)?);
    }
    r.finish()?;
    Ok(Channel {
        id,
        name,
        description,
        settings,
        owner,
        created_at_ms,
        epoch,
    })
}

fn encode_member(m: &MemberRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(10);
    v.push(V1);
    v.push(m.role.as_u8());
    v.extend_from_slice(&m.joined_at_ms.to_be_bytes());
    v
}

fn decode_member(identity: IdentityKey, b: &[u8]) -> Result<MemberRecord, StoreError> {
    let mut r = Reader::versioned(b, "channel member")?;
    let role = ChannelRole::from_u8(r.u8()?)
        .ok_or_else(|| StoreError::Corrupt("channel member role is invalid".into()))?;
    let joined_at_ms = r.u64()?;
    r.finish()?;
    Ok(MemberRecord {
        identity,
        role,
        joined_at_ms,
    })
}

fn member_key(id: &ChannelId, identity: &IdentityKey) -> Vec<u8> {
    [&id.0[..], identity].concat()
}

fn order_key(id: &ChannelId, joined_at_ms: u64, identity: &IdentityKey) -> Vec<u8> {
    [&id.0[..], &joined_at_ms.to_be_bytes(), identity].concat()
}

fn member_channels_key(identity: &IdentityKey, id: &ChannelId) -> Vec<u8> {
    [&identity[..], &id.0].concat()
}

/// Lowercase hex, for messages that name an identity key.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity at the end of a member or order key.
fn identity_at_end(key: &[u8]) -> Result<IdentityKey, StoreError> {
    key.len()
        .checked_sub(32)
        .and_then(|start| key[start..].try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("channel key is too short".into()))
}

impl Engine {
    /// Channels: one pass over the keys of `channels`.
    pub(super) fn channel_count(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        for guard in self.ks(CHANNELS)?.iter() {
            guard.key().map_err(engine_err)?;
            count += 1;
        }
        Ok(count)
    }

    pub(super) fn channel_get(&self, id: &ChannelId) -> Result<Option<Channel>, StoreError> {
        match self.ks(CHANNELS)?.get(id.0).map_err(engine_err)? {
            Some(v) => decode_channel(*id, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn member_get(
        &self,
        id: &ChannelId,
        identity: &IdentityKey,
    ) -> Result<Option<MemberRecord>, StoreError> {
        match self
            .ks(CHANNEL_MEMBERS)?
            .get(member_key(id, identity))
            .map_err(engine_err)?
        {
            Some(v) => decode_member(*identity, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn put_channel(
        &self,
        batch: &mut OwnedWriteBatch,
        channel: &Channel,
    ) -> Result<(), StoreError> {
        batch.insert(
            self.ks(CHANNELS)?,
            channel.id.0.to_vec(),
            encode_channel(channel)?,
        );
        Ok(())
    }

    fn put_member(
        &self,
        batch: &mut OwnedWriteBatch,
        id: &ChannelId,
        member: &MemberRecord,
    ) -> Result<(), StoreError> {
        batch.insert(
            self.ks(CHANNEL_MEMBERS)?,
            member_key(id, &member.identity),
            encode_member(member),
        );
        batch.insert(
            self.ks(CHANNEL_MEMBER_ORDER)?,
            order_key(id, member.joined_at_ms, &member.identity),
            Vec::new(),
        );
        batch.insert(
            self.ks(MEMBER_CHANNELS)?,
            member_channels_key(&member.identity, id),
            Vec::new(),
        );
        Ok(())
    }

    fn drop_member(
        &self,
        batch: &mut OwnedWriteBatch,
        id: &ChannelId,
        member: &MemberRecord,
    ) -> Result<(), StoreError> {
        batch.remove(self.ks(CHANNEL_MEMBERS)?, member_key(id, &member.identity));
        batch.remove(
            self.ks(CHANNEL_MEMBER_ORDER)?,
            order_key(id, member.joined_at_ms, &member.identity),
        );
        batch.remove(
            self.ks(MEMBER_CHANNELS)?,
            member_channels_key(&member.identity, id),
        );
        Ok(())
    }

    /// Every member's identity key, in key order.
    pub(super) fn member_identities(&self, id: &ChannelId) -> Result<Vec<IdentityKey>, StoreError> {
        let mut out = Vec::new();
        for guard in self.ks(CHANNEL_MEMBERS)?.prefix(id.0) {
            out.push(identity_at_end(&guard.key().map_err(engine_err)?)?);
        }
        Ok(out)
    }

    /// Every member by join time.
    fn members_in_order(&self, id: &ChannelId) -> Result<Vec<MemberRecord>, StoreError> {
        let mut out = Vec::new();
        for guard in self.ks(CHANNEL_MEMBER_ORDER)?.prefix(id.0) {
            let identity = identity_at_end(&guard.key().map_err(engine_err)?)?;
            if let Some(m) = self.member_get(id, &identity)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Removes `member` (already read) from `channel` in `batch`. When it owns the channel,
    /// ownership passes to the earliest admin, else the earliest member; with nobody left
    /// the channel and its bans are deleted. Returns (new owner, channel deleted).
    pub(super) fn remove_from_channel(
        &self,
        batch: &mut OwnedWriteBatch,
        channel: &Channel,
        member: &MemberRecord,
    ) -> Result<(Option<IdentityKey>, bool), StoreError> {
        self.drop_member(batch, &channel.id, member)?;
        if member.identity != channel.owner {
            return Ok((None, false));
        }
        let others: Vec<MemberRecord> = self
            .members_in_order(&channel.id)?
            .into_iter()
            .filter(|m| m.identity != member.identity)
            .collect();
        let heir = others
            .iter()
            .find(|m| m.role == ChannelRole::Admin)
            .or_else(|| others.first())
            .copied();
        match heir {
            Some(heir) => {
                let promoted = MemberRecord {
                    role: ChannelRole::Owner,
                    ..heir
                };
                self.put_member(batch, &channel.id, &promoted)?;
                let updated = Channel {
                    owner: heir.identity,
                    ..channel.clone()
                };
                self.put_channel(batch, &updated)?;
                Ok((Some(heir.identity), false))
            }
            None => {
                batch.remove(self.ks(CHANNELS)?, channel.id.0.to_vec());
                self.delete_channel_bans(batch, &channel.id)?;
                Ok((None, true))
            }
        }
    }

    /// Adds the removal of `identity` from every channel to an account-deletion batch.
    pub(super) fn delete_memberships_of(
        &self,
        batch: &mut OwnedWriteBatch,
        identity: &IdentityKey,
    ) -> Result<(), StoreError> {
        for id in self.channels_of(identity)? {
            let (Some(channel), Some(member)) =
                (self.channel_get(&id)?, self.member_get(&id, identity)?)
            else {
                // An index entry without its record: drop the entry alone.
                batch.remove(
                    self.ks(MEMBER_CHANNELS)?,
                    member_channels_key(identity, &id),
                );
                continue;
            };
            self.remove_from_channel(batch, &channel, &member)?;
        }
        Ok(())
    }

    fn channels_of(&self, identity: &IdentityKey) -> Result<Vec<ChannelId>, StoreError> {
        let mut out = Vec::new();
        for guard in self.ks(MEMBER_CHANNELS)?.prefix(identity) {
            let key = guard.key().map_err(engine_err)?;
            let id: [u8; 16] = key
                .get(32..48)
                .and_then(|s| s.try_into().ok())
                .filter(|_| key.len() == 48)
                .ok_or_else(|| StoreError::Corrupt("member channel key length".into()))?;
            out.push(ChannelId(id));
        }
        Ok(out)
    }

    fn create_channel(&self, new: &NewChannel) -> Written<Channel> {
        let channel = &new.channel;
        if self
            .ks(CHANNELS)?
            .contains_key(channel.id.0)
            .map_err(engine_err)?
        {
            return Err(StoreError::InvalidArgument("channel id exists".into()));
        }
        let mut members = vec![channel.owner];
        for m in &new.members {
            if !members.contains(m) {
                members.push(*m);
            }
        }
        for m in &members {
            if !self.identities.contains_key(m).map_err(engine_err)? {
                return Ok((Err(Refusal::UnknownAccount(*m)), false));
            }
        }
        let mut batch = self.db.batch();
        self.put_channel(&mut batch, channel)?;
        for m in members {
            let role = if m == channel.owner {
                ChannelRole::Owner
            } else {
                ChannelRole::Member
            };
            let record = MemberRecord {
                identity: m,
                role,
                joined_at_ms: channel.created_at_ms,
            };
            self.put_member(&mut batch, &channel.id, &record)?;
        }
        Ok((Ok(channel.clone()), self.commit(batch)?))
    }

    fn remove_member(
        &self,
        id: &ChannelId,
        actor: Actor,
        target: &IdentityKey,
    ) -> Written<Removal> {
        let Some(channel) = self.channel_get(id)? else {
            return Ok((Err(Refusal::NoChannel), false));
        };
        if actor.identity != *target {
            let role = self.member_get(id, &actor.identity)?.map(|m| m.role);
            let allowed = actor.server_admin || role.is_some_and(ChannelRole::manages_members);
            if !allowed {
                let refusal = match role {
                    None => Refusal::NotMember,
                    Some(_) => Refusal::Forbidden(
                        "only the channel's owner or admins (or a server admin) may remove other members; any member may remove itself".into(),
                    ),
                };
                return Ok((Err(refusal), false));
            }
            if *target == channel.owner {
                return Ok((
                    Err(Refusal::Forbidden(
                        "the owner cannot be removed; the owner may leave, which passes ownership to an admin or the earliest member".into(),
                    )),
                    false,
                ));
            }
        }
        let Some(member) = self.member_get(id, target)? else {
            let remaining = self.member_identities(id)?;
            return Ok((
                Ok(Removal {
                    removed: false,
                    remaining,
                    ..Removal::default()
                }),
                false,
            ));
        };
        let mut batch = self.db.batch();
        let (new_owner, channel_deleted) =
            self.remove_from_channel(&mut batch, &channel, &member)?;
        let remaining = self
            .member_identities(id)?
            .into_iter()
            .filter(|m| m != target)
            .collect();
        Ok((
            Ok(Removal {
                removed: true,
                remaining,
                new_owner,
                channel_deleted,
            }),
            self.commit(batch)?,
        ))
    }

    fn update_channel(
        &self,
        id: &ChannelId,
        actor: Actor,
        update: ChannelUpdate,
    ) -> Written<(Channel, Vec<IdentityKey>)> {
        let Some(mut channel) = self.channel_get(id)? else {
            return Ok((Err(Refusal::NoChannel), false));
        };
        if channel.owner != actor.identity {
            let refusal = if self.member_get(id, &actor.identity)?.is_some() {
                Refusal::Forbidden(
                    "only the channel's owner may change its name, description, settings or roles"
                        .into(),
                )
            } else {
                Refusal::NotMember
            };
            return Ok((Err(refusal), false));
        }
        if let Some(name) = update.name {
            channel.name = name;
        }
        if let Some(description) = update.description {
            channel.description = description;
        }
        channel.settings.extend(update.set_settings);
        for key in &update.remove_settings {
            channel.settings.remove(key);
        }
        if channel.settings.len() > update.max_settings {
            return Ok((
                Err(Refusal::Invalid(format!(
                    "a channel has at most {} settings; this update would leave {}",
                    update.max_settings,
                    channel.settings.len()
                ))),
                false,
            ));
        }
        let mut batch = self.db.batch();
        for (identity, role) in &update.role_changes {
            if *identity == channel.owner {
                return Ok((
                    Err(Refusal::Invalid(
                        "the owner's role cannot change (ownership is not transferable here)"
                            .into(),
                    )),
                    false,
                ));
            }
            let Some(member) = self.member_get(id, identity)? else {
                return Ok((
                    Err(Refusal::Invalid(format!(
                        "role change for {} who is not a member of the channel",
                        hex(identity)
                    ))),
                    false,
                ));
            };
            // Same key as the existing entries, so this rewrites the role in place.
            self.put_member(
                &mut batch,
                id,
                &MemberRecord {
                    role: *role,
                    ..member
                },
            )?;
        }
        self.put_channel(&mut batch, &channel)?;
        let members = self.member_identities(id)?;
        Ok((Ok((channel, members)), self.commit(batch)?))
    }

    fn rotate(&self, c: RotateCommit) -> Written<CommitOutcome> {
        let refuse = |r: Refusal| Ok((Err(r), false));
        let Some(mut channel) = self.channel_get(&c.channel)? else {
            return refuse(Refusal::NoChannel);
        };
        let Some(sender) = self.member_get(&c.channel, &c.sender.identity)? else {
            return refuse(Refusal::NotMember);
        };
        if c.epoch != channel.epoch {
            return refuse(Refusal::StaleEpoch {
                current: channel.epoch,
            });
        }
        if !c.welcomes.is_empty() && !sender.role.manages_members() {
            return refuse(Refusal::Forbidden(
                "only the channel's owner or admins may add members (welcomes)".into(),
            ));
        }
        let mut seen = HashSet::new();
        for (recipient, _) in &c.welcomes {
            if !seen.insert(*recipient) {
                return refuse(Refusal::Invalid(format!(
                    "two welcomes for {}",
                    hex(recipient)
                )));
            }
            if !self
                .identities
                .contains_key(recipient)
                .map_err(engine_err)?
            {
                return refuse(Refusal::UnknownAccount(*recipient));
            }
            if self.active_channel_ban(&c.channel, recipient)?.is_some() {
                return refuse(Refusal::Banned(*recipient));
            }
            if self.member_get(&c.channel, recipient)?.is_some() {
                return refuse(Refusal::Invalid(format!(
                    "welcome for {}, who is a member already",
                    hex(recipient)
                )));
            }
        }
        let existing = self.member_identities(&c.channel)?;
        let mut deliveries: Vec<(IdentityKey, NewMessage)> = existing
            .iter()
            .filter(|m| **m != c.sender.identity)
            .map(|m| (*m, c.commit.clone()))
            .collect();
        deliveries.extend(c.welcomes.iter().cloned());
        let mut batch = self.db.batch();
        // Any refusal below drops the batch: the epoch, members and messages go together.
        let seqs = self.enqueue_into(&mut batch, &deliveries)?;
        let now = self.clock.unix_ms();
        let mut added = Vec::with_capacity(c.welcomes.len());
        for (recipient, _) in &c.welcomes {
            let record = MemberRecord {
                identity: *recipient,
                role: ChannelRole::Member,
                joined_at_ms: now,
            };
            self.put_member(&mut batch, &c.channel, &record)?;
            added.push(*recipient);
        }
        channel.epoch = channel.epoch.checked_add(1).ok_or_else(|| {
            StoreError::InvalidArgument("the channel's epoch is at its maximum".into())
        })?;
        self.put_channel(&mut batch, &channel)?;
        let mut members = existing;
        members.extend(added.iter().copied());
        let queued = deliveries.iter().map(|(r, _)| *r).zip(seqs).collect();
        Ok((
            Ok(CommitOutcome {
                new_epoch: channel.epoch,
                queued,
                added,
                members,
            }),
            self.commit(batch)?,
        ))
    }

    fn members_page(
        &self,
        id: &ChannelId,
        cursor: &[u8],
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        let start = match cursor.len() {
            0 => id.0.to_vec(),
            CURSOR_LEN => {
                // Just past the cursor's key: order keys all have the same length.
                let mut k = [&id.0[..], cursor].concat();
                k.push(0);
                k
            }
            n => {
                return Err(StoreError::InvalidArgument(format!(
                    "cursor must be a next_cursor from ListGroupMembers ({CURSOR_LEN} bytes), got {n} bytes"
                )));
            }
        };
        let mut page = MemberPage::default();
        for guard in self.ks(CHANNEL_MEMBER_ORDER)?.range(start..) {
            let key = guard.key().map_err(engine_err)?;
            if !key.starts_with(&id.0) {
                break;
            }
            if page.members.len() >= limit {
                if let Some(last) = page.members.last() {
                    page.next_cursor =
                        [&last.joined_at_ms.to_be_bytes()[..], &last.identity].concat();
                }
                break;
            }
            let identity = identity_at_end(&key)?;
            if let Some(m) = self.member_get(id, &identity)? {
                page.members.push(m);
            }
        }
        Ok(page)
    }
}

impl ChannelStore for FjallStore {
    async fn create_channel(
        &self,
        new: NewChannel,
    ) -> Result<Result<Channel, Refusal>, StoreError> {
        self.write(move |e| e.create_channel(&new)).await
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<Channel>, StoreError> {
        self.inline(|e| e.channel_get(id))
    }

    async fn member(
        &self,
        id: &ChannelId,
        identity: &IdentityKey,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.inline(|e| e.member_get(id, identity))
    }

    async fn members_page(
        &self,
        id: &ChannelId,
        cursor: &[u8],
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        let (id, cursor) = (*id, cursor.to_vec());
        self.blocking(move |e| e.members_page(&id, &cursor, limit))
            .await
    }

    async fn member_identities(&self, id: &ChannelId) -> Result<Vec<IdentityKey>, StoreError> {
        let id = *id;
        self.blocking(move |e| e.member_identities(&id)).await
    }

    async fn channels_of(&self, identity: &IdentityKey) -> Result<Vec<ChannelId>, StoreError> {
        let identity = *identity;
        self.blocking(move |e| e.channels_of(&identity)).await
    }

    async fn remove_member(
        &self,
        id: &ChannelId,
        actor: Actor,
        target: &IdentityKey,
    ) -> Result<Result<Removal, Refusal>, StoreError> {
        let (id, target) = (*id, *target);
        self.write(move |e| e.remove_member(&id, actor, &target))
            .await
    }

    async fn update_channel(
        &self,
        id: &ChannelId,
        actor: Actor,
        update: ChannelUpdate,
    ) -> Result<Result<(Channel, Vec<IdentityKey>), Refusal>, StoreError> {
        let id = *id;
        self.write(move |e| e.update_channel(&id, actor, update))
            .await
    }

    async fn rotate(
        &self,
        commit: RotateCommit,
    ) -> Result<Result<CommitOutcome, Refusal>, StoreError> {
        self.write(move |e| e.rotate(commit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_and_member_values_round_trip() {
        let mut settings = BTreeMap::new();
        settings.insert("theme".to_owned(), "dark".to_owned());
        settings.insert("empty".to_owned(), String::new());
        let c = Channel {
            id: ChannelId([5; 16]),
            name: "ops".into(),
            description: "on call".into(),
            settings,
            owner: [1; 32],
            created_at_ms: 7,
            epoch: 3,
        };
        let v = encode_channel(&c).unwrap();
        assert_eq!(decode_channel(c.id, &v).unwrap(), c);
        for cut in 0..v.len() {
            assert!(decode_channel(c.id, &v[..cut]).is_err());
        }
        let m = MemberRecord {
            identity: [2; 32],
            role: ChannelRole::Admin,
            joined_at_ms: 9,
        };
        assert_eq!(decode_member(m.identity, &encode_member(&m)).unwrap(), m);
        assert!(decode_member(m.identity, &[1, 9, 0]).is_err());
    }

    #[test]
    fn order_keys_sort_by_join_time() {
        let id = ChannelId([0; 16]);
        assert!(order_key(&id, 1, &[0xff; 32]) < order_key(&id, 2, &[0; 32]));
        assert_eq!(
            identity_at_end(&order_key(&id, 1, &[4; 32])).unwrap(),
            [4; 32]
        );
    }
}
