//! [`ChannelStore`] on PostgreSQL.
//!
//! A channel is a row of `channels`, each member a row of `channel_members`. Every change of
//! a channel or of its members runs under the channel row's lock (`FOR UPDATE`), so removals,
//! role changes, bans and commits of one channel run one after another, each on the state the
//! previous one left. Account rows a change needs (members added, welcomed) are share-locked
//! before it, and queue rows (the commit's deliveries) after it, as the lock order of
//! `postgres` says; so an account being deleted cannot become a member, and its deletion
//! removes every membership it has (`delete_memberships_of`).

use std::collections::{BTreeMap, HashSet};

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    PgError, PgStore, Tx, enqueue_in, execute, fixed, int, moderation, query, query_opt, text, uint,
};
use crate::store::{
    Actor, Channel, ChannelId, ChannelRole, ChannelStore, ChannelUpdate, CommitOutcome,
    IdentityKey, MemberPage, MemberRecord, NewChannel, NewMessage, Refusal, Removal, RotateCommit,
    StoreError,
};

const CHANNEL_COLUMNS: &str =
    "id, owner, created_at_ms, epoch, name, description, setting_keys, setting_values";

const MEMBER_COLUMNS: &str = "identity_key, role, joined_at_ms";

/// Length of a member-page cursor: `joined_at(8) ‖ identity(32)` of the last member returned
/// (the embedded store's cursor too).
const CURSOR_LEN: usize = 40;

/// Longest name, description, setting key or value, and most settings (the embedded store's
/// record bounds).
const MAX_TEXT: usize = u16::MAX as usize;

/// Lowercase hex, for messages that name an identity key.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn channel_of(row: &Row) -> Result<Channel, StoreError> {
    let id: Vec<u8> = row.get("id");
    let owner: Vec<u8> = row.get("owner");
    let keys: Vec<Vec<u8>> = row.get("setting_keys");
    let values: Vec<Vec<u8>> = row.get("setting_values");
    if keys.len() != values.len() {
        return Err(StoreError::Corrupt(
            "channel setting keys and values differ in number".into(),
        ));
    }
    let mut settings = BTreeMap::new();
    for (key, value) in keys.into_iter().zip(values) {
        settings.insert(
            text(key, "channel setting key")?,
            text(value, "channel setting value")?,
        );
    }
    Ok(Channel {
        id: ChannelId(fixed(&id, "channel id")?),
        name: text(row.get("name"), "channel name")?,
        description: text(row.get("description"), "channel description")?,
        settings,
        owner: fixed(&owner, "channel owner")?,
        created_at_ms: uint(row.get("created_at_ms"))?,
        epoch: uint(row.get("epoch"))?,
    })
}

fn role_of(v: i16) -> Result<ChannelRole, StoreError> {
    u8::try_from(v)
        .ok()
        .and_then(ChannelRole::from_u8)
        .ok_or_else(|| StoreError::Corrupt(format!("channel member role {v} is invalid")))
}

fn member_of(row: &Row) -> Result<MemberRecord, StoreError> {
    let identity: Vec<u8> = row.get("identity_key");
    Ok(MemberRecord {
        identity: fixed(&identity, "member identity key")?,
        role: role_of(row.get("role"))?,
        joined_at_ms: uint(row.get("joined_at_ms"))?,
    })
}

fn identity_of(row: &Row, column: &str) -> Result<IdentityKey, StoreError> {
    let v: Vec<u8> = row.get(column);
    fixed(&v, "identity key")
}

/// Refuses what the stored record cannot hold (the embedded store's bounds).
fn check_text(c: &Channel) -> Result<(), StoreError> {
    let fits = |s: &str, what: &str| {
        if s.len() > MAX_TEXT {
            Err(StoreError::InvalidArgument(format!(
                "{what} longer than 65535 bytes"
            )))
        } else {
            Ok(())
        }
    };
    fits(&c.name, "channel name")?;
    fits(&c.description, "channel description")?;
    if c.settings.len() > MAX_TEXT {
        return Err(StoreError::InvalidArgument(
            "more than 65535 settings".into(),
        ));
    }
    for (key, value) in &c.settings {
        fits(key, "setting key")?;
        fits(value, "setting value")?;
    }
    Ok(())
}

/// The settings as the two array columns, in key order.
fn settings_columns(c: &Channel) -> (Vec<&[u8]>, Vec<&[u8]>) {
    c.settings
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .unzip()
}

/// Locks a channel row and answers it (lock order: after account rows, before queues).
pub(super) async fn lock_channel(tx: &Tx<'_>, id: &ChannelId) -> Result<Option<Channel>, PgError> {
    let row = query_opt(
        tx,
        &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1 FOR UPDATE"),
        &[&id.0.as_slice()],
    )
    .await?;
    Ok(row.map(|r| channel_of(&r)).transpose()?)
}

/// One member's record.
pub(super) async fn member_in<C: GenericClient + Sync>(
    c: &C,
    id: &ChannelId,
    identity: &IdentityKey,
) -> Result<Option<MemberRecord>, PgError> {
    let row = query_opt(
        c,
        &format!(
            "SELECT {MEMBER_COLUMNS} FROM channel_members WHERE channel_id = $1 AND identity_key = $2"
        ),
        &[&id.0.as_slice(), &identity.as_slice()],
    )
    .await?;
    Ok(row.map(|r| member_of(&r)).transpose()?)
}

/// Every member's identity key, in key order.
pub(super) async fn identities_in<C: GenericClient + Sync>(
    c: &C,
    id: &ChannelId,
) -> Result<Vec<IdentityKey>, PgError> {
    let rows = query(
        c,
        "SELECT identity_key FROM channel_members WHERE channel_id = $1 ORDER BY identity_key",
        &[&id.0.as_slice()],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| identity_of(r, "identity_key"))
        .collect::<Result<_, _>>()?)
}

/// Which of `identities` are members.
async fn members_among(
    tx: &Tx<'_>,
    id: &ChannelId,
    identities: &[&[u8]],
) -> Result<HashSet<IdentityKey>, PgError> {
    let rows = query(
        tx,
        "SELECT identity_key FROM channel_members WHERE channel_id = $1 AND identity_key = ANY($2)",
        &[&id.0.as_slice(), &identities],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| identity_of(r, "identity_key"))
        .collect::<Result<_, _>>()?)
}

/// Share-locks the account rows of `identities` (in username order, as every taker of
/// several account locks) and answers which exist: they cannot be deleted before the
/// transaction ends.
async fn lock_accounts(tx: &Tx<'_>, identities: &[&[u8]]) -> Result<HashSet<IdentityKey>, PgError> {
    if identities.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = query(
        tx,
        "SELECT identity_key FROM accounts WHERE identity_key = ANY($1) ORDER BY username FOR SHARE",
        &[&identities],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| identity_of(r, "identity_key"))
        .collect::<Result<_, _>>()?)
}

async fn insert_members(
    tx: &Tx<'_>,
    id: &ChannelId,
    members: &[(IdentityKey, ChannelRole)],
    joined_at_ms: u64,
) -> Result<(), PgError> {
    if members.is_empty() {
        return Ok(());
    }
    let identities: Vec<&[u8]> = members.iter().map(|(m, _)| m.as_slice()).collect();
    let roles: Vec<i16> = members.iter().map(|(_, r)| i16::from(r.as_u8())).collect();
    execute(
        tx,
        "INSERT INTO channel_members (channel_id, identity_key, role, joined_at_ms) \
         SELECT $1, u.identity_key, u.role, $4 FROM UNNEST($2::bytea[], $3::int2[]) AS u(identity_key, role)",
        &[&id.0.as_slice(), &identities, &roles, &int(joined_at_ms)],
    )
    .await?;
    Ok(())
}

/// Rewrites a locked channel's row (everything but its id and creation time).
async fn write_channel(tx: &Tx<'_>, c: &Channel) -> Result<(), PgError> {
    let (keys, values) = settings_columns(c);
    execute(
        tx,
        "UPDATE channels SET owner = $2, epoch = $3, name = $4, description = $5, \
         setting_keys = $6, setting_values = $7 WHERE id = $1",
        &[
            &c.id.0.as_slice(),
            &c.owner.as_slice(),
            &int(c.epoch),
            &c.name.as_bytes(),
            &c.description.as_bytes(),
            &keys,
            &values,
        ],
    )
    .await?;
    Ok(())
}

/// Removes `member` (read under the channel's lock) from the locked `channel`. When it owns
/// the channel, ownership passes to the earliest admin, else the earliest member; with nobody
/// left the channel and its bans are deleted. Returns (new owner, channel deleted).
pub(super) async fn remove_from_channel(
    tx: &Tx<'_>,
    channel: &Channel,
    member: &MemberRecord,
) -> Result<(Option<IdentityKey>, bool), PgError> {
    let id = channel.id.0.as_slice();
    execute(
        tx,
        "DELETE FROM channel_members WHERE channel_id = $1 AND identity_key = $2",
        &[&id, &member.identity.as_slice()],
    )
    .await?;
    if member.identity != channel.owner {
        return Ok((None, false));
    }
    let heir = query_opt(
        tx,
        &format!(
            "SELECT {MEMBER_COLUMNS} FROM channel_members WHERE channel_id = $1 \
             ORDER BY role <> $2, joined_at_ms, identity_key LIMIT 1"
        ),
        &[&id, &i16::from(ChannelRole::Admin.as_u8())],
    )
    .await?
    .map(|r| member_of(&r))
    .transpose()?;
    match heir {
        Some(heir) => {
            execute(
                tx,
                "UPDATE channel_members SET role = $3 WHERE channel_id = $1 AND identity_key = $2",
                &[
                    &id,
                    &heir.identity.as_slice(),
                    &i16::from(ChannelRole::Owner.as_u8()),
                ],
            )
            .await?;
            execute(
                tx,
                "UPDATE channels SET owner = $2 WHERE id = $1",
                &[&id, &heir.identity.as_slice()],
            )
            .await?;
            Ok((Some(heir.identity), false))
        }
        None => {
            execute(tx, "DELETE FROM channels WHERE id = $1", &[&id]).await?;
            moderation::delete_channel_bans(tx, &channel.id).await?;
            Ok((None, true))
        }
    }
}

impl ChannelStore for PgStore {
    async fn create_channel(
        &self,
        new: NewChannel,
    ) -> Result<Result<Channel, Refusal>, StoreError> {
        let new = &new;
        self.transact("create_channel", |tx, _| {
            Box::pin(async move {
                let channel = &new.channel;
                let id = channel.id.0.as_slice();
                if query_opt(tx, "SELECT 1 FROM channels WHERE id = $1", &[&id])
                    .await?
                    .is_some()
                {
                    return Err(StoreError::InvalidArgument("channel id exists".into()).into());
                }
                let mut members = vec![channel.owner];
                for m in &new.members {
                    if !members.contains(m) {
                        members.push(*m);
                    }
                }
                let wanted: Vec<&[u8]> = members.iter().map(|m| m.as_slice()).collect();
                let known = lock_accounts(tx, &wanted).await?;
                if let Some(unknown) = members.iter().find(|m| !known.contains(*m)) {
                    return Ok(Err(Refusal::UnknownAccount(*unknown)));
                }
                check_text(channel)?;
                let (keys, values) = settings_columns(channel);
                let inserted = execute(
                    tx,
                    &format!(
                        "INSERT INTO channels ({CHANNEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ),
                    &[
                        &id,
                        &channel.owner.as_slice(),
                        &int(channel.created_at_ms),
                        &int(channel.epoch),
                        &channel.name.as_bytes(),
                        &channel.description.as_bytes(),
                        &keys,
                        &values,
                    ],
                )
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if e.violates("channels_pkey") => {
                        return Err(StoreError::InvalidArgument("channel id exists".into()).into());
                    }
                    Err(e) => return Err(e),
                }
                let roles: Vec<(IdentityKey, ChannelRole)> = members
                    .iter()
                    .map(|m| {
                        let role = if *m == channel.owner {
                            ChannelRole::Owner
                        } else {
                            ChannelRole::Member
                        };
                        (*m, role)
                    })
                    .collect();
                insert_members(tx, &channel.id, &roles, channel.created_at_ms).await?;
                Ok(Ok(channel.clone()))
            })
        })
        .await
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<Channel>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1"),
                    &[&id.0.as_slice()],
                )
                .await?;
                Ok(row.map(|r| channel_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn member(
        &self,
        id: &ChannelId,
        identity: &IdentityKey,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.read(|c, _| Box::pin(async move { member_in(c, id, identity).await }))
            .await
    }

    async fn members_page(
        &self,
        id: &ChannelId,
        cursor: &[u8],
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        let (after_ms, after_identity): (i64, &[u8]) = match cursor.len() {
            0 => (i64::MIN, &[]),
            CURSOR_LEN => {
                let (at, identity) = cursor.split_at(8);
                (int(u64::from_be_bytes(fixed(at, "cursor")?)), identity)
            }
            n => {
                return Err(StoreError::InvalidArgument(format!(
                    "cursor must be a next_cursor from ListGroupMembers ({CURSOR_LEN} bytes), got {n} bytes"
                )));
            }
        };
        let take = int(limit as u64).saturating_add(1);
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    &format!(
                        "SELECT {MEMBER_COLUMNS} FROM channel_members WHERE channel_id = $1 \
                         AND (joined_at_ms, identity_key) > ($2, $3) \
                         ORDER BY joined_at_ms, identity_key LIMIT $4"
                    ),
                    &[&id.0.as_slice(), &after_ms, &after_identity, &take],
                )
                .await?;
                let mut page = MemberPage::default();
                for row in &rows {
                    if page.members.len() >= limit {
                        if let Some(last) = page.members.last() {
                            page.next_cursor =
                                [&last.joined_at_ms.to_be_bytes()[..], &last.identity].concat();
                        }
                        break;
                    }
                    page.members.push(member_of(row)?);
                }
                Ok(page)
            })
        })
        .await
    }

    async fn member_identities(&self, id: &ChannelId) -> Result<Vec<IdentityKey>, StoreError> {
        self.read(|c, _| Box::pin(async move { identities_in(c, id).await }))
            .await
    }

    async fn channels_of(&self, identity: &IdentityKey) -> Result<Vec<ChannelId>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    "SELECT channel_id FROM channel_members WHERE identity_key = $1 ORDER BY channel_id",
                    &[&identity.as_slice()],
                )
                .await?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        let id: Vec<u8> = r.get("channel_id");
                        fixed(&id, "channel id").map(ChannelId)
                    })
                    .collect::<Result<_, _>>()?)
            })
        })
        .await
    }

    async fn remove_member(
        &self,
        id: &ChannelId,
        actor: Actor,
        target: &IdentityKey,
    ) -> Result<Result<Removal, Refusal>, StoreError> {
        self.transact("remove_member", |tx, _| {
            Box::pin(async move {
                let Some(channel) = lock_channel(tx, id).await? else {
                    return Ok(Err(Refusal::NoChannel));
                };
                if actor.identity != *target {
                    let role = member_in(tx, id, &actor.identity).await?.map(|m| m.role);
                    let allowed =
                        actor.server_admin || role.is_some_and(ChannelRole::manages_members);
                    if !allowed {
                        return Ok(Err(match role {
                            None => Refusal::NotMember,
                            Some(_) => Refusal::Forbidden(
                                "only the channel's owner or admins (or a server admin) may remove other members; any member may remove itself".into(),
                            ),
                        }));
                    }
                    if *target == channel.owner {
                        return Ok(Err(Refusal::Forbidden(
                            "the owner cannot be removed; the owner may leave, which passes ownership to an admin or the earliest member".into(),
                        )));
                    }
                }
                let Some(member) = member_in(tx, id, target).await? else {
                    return Ok(Ok(Removal {
                        removed: false,
                        remaining: identities_in(tx, id).await?,
                        ..Removal::default()
                    }));
                };
                let (new_owner, channel_deleted) =
                    remove_from_channel(tx, &channel, &member).await?;
                Ok(Ok(Removal {
                    removed: true,
                    remaining: identities_in(tx, id).await?,
                    new_owner,
                    channel_deleted,
                }))
            })
        })
        .await
    }

    async fn update_channel(
        &self,
        id: &ChannelId,
        actor: Actor,
        update: ChannelUpdate,
    ) -> Result<Result<(Channel, Vec<IdentityKey>), Refusal>, StoreError> {
        let update = &update;
        self.transact("update_channel", |tx, _| {
            Box::pin(async move {
                let Some(mut channel) = lock_channel(tx, id).await? else {
                    return Ok(Err(Refusal::NoChannel));
                };
                if channel.owner != actor.identity {
                    return Ok(Err(if member_in(tx, id, &actor.identity).await?.is_some() {
                        Refusal::Forbidden(
                            "only the channel's owner may change its name, description, settings or roles"
                                .into(),
                        )
                    } else {
                        Refusal::NotMember
                    }));
                }
                if let Some(name) = &update.name {
                    channel.name.clone_from(name);
                }
                if let Some(description) = &update.description {
                    channel.description.clone_from(description);
                }
                channel.settings.extend(
                    update
                        .set_settings
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                for key in &update.remove_settings {
                    channel.settings.remove(key);
                }
                if channel.settings.len() > update.max_settings {
                    return Ok(Err(Refusal::Invalid(format!(
                        "a channel has at most {} settings; this update would leave {}",
                        update.max_settings,
                        channel.settings.len()
                    ))));
                }
                // Every role change is checked before any is written: a refusal changes nothing.
                let targets: Vec<&[u8]> =
                    update.role_changes.iter().map(|(m, _)| m.as_slice()).collect();
                let members = members_among(tx, id, &targets).await?;
                let mut roles: BTreeMap<IdentityKey, ChannelRole> = BTreeMap::new();
                for (identity, role) in &update.role_changes {
                    if *identity == channel.owner {
                        return Ok(Err(Refusal::Invalid(
                            "the owner's role cannot change (ownership is not transferable here)"
                                .into(),
                        )));
                    }
                    if !members.contains(identity) {
                        return Ok(Err(Refusal::Invalid(format!(
                            "role change for {} who is not a member of the channel",
                            hex(identity)
                        ))));
                    }
                    roles.insert(*identity, *role);
                }
                check_text(&channel)?;
                if !roles.is_empty() {
                    let identities: Vec<&[u8]> = roles.keys().map(|m| m.as_slice()).collect();
                    let values: Vec<i16> = roles.values().map(|r| i16::from(r.as_u8())).collect();
                    execute(
                        tx,
                        "UPDATE channel_members AS m SET role = u.role \
                         FROM UNNEST($2::bytea[], $3::int2[]) AS u(identity_key, role) \
                         WHERE m.channel_id = $1 AND m.identity_key = u.identity_key",
                        &[&id.0.as_slice(), &identities, &values],
                    )
                    .await?;
                }
                write_channel(tx, &channel).await?;
                let members = identities_in(tx, id).await?;
                Ok(Ok((channel, members)))
            })
        })
        .await
    }

    async fn rotate(
        &self,
        commit: RotateCommit,
    ) -> Result<Result<CommitOutcome, Refusal>, StoreError> {
        let now = self.now();
        let limits = self.limits();
        let c = &commit;
        self.transact("rotate", |tx, _| {
            Box::pin(async move {
                let mut welcomed: Vec<&[u8]> =
                    c.welcomes.iter().map(|(w, _)| w.as_slice()).collect();
                welcomed.sort_unstable();
                welcomed.dedup();
                // Lock order: the welcomed accounts, then the channel, then the queues.
                let known = lock_accounts(tx, &welcomed).await?;
                let Some(mut channel) = lock_channel(tx, &c.channel).await? else {
                    return Ok(Err(Refusal::NoChannel));
                };
                let Some(sender) = member_in(tx, &c.channel, &c.sender.identity).await? else {
                    return Ok(Err(Refusal::NotMember));
                };
                if c.epoch != channel.epoch {
                    return Ok(Err(Refusal::StaleEpoch {
                        current: channel.epoch,
                    }));
                }
                if !c.welcomes.is_empty() {
                    if !sender.role.manages_members() {
                        return Ok(Err(Refusal::Forbidden(
                            "only the channel's owner or admins may add members (welcomes)".into(),
                        )));
                    }
                    let banned =
                        moderation::channel_bans_among(tx, &c.channel, &welcomed, now).await?;
                    let members = members_among(tx, &c.channel, &welcomed).await?;
                    let mut seen = HashSet::new();
                    for (recipient, _) in &c.welcomes {
                        if !seen.insert(*recipient) {
                            return Ok(Err(Refusal::Invalid(format!(
                                "two welcomes for {}",
                                hex(recipient)
                            ))));
                        }
                        if !known.contains(recipient) {
                            return Ok(Err(Refusal::UnknownAccount(*recipient)));
                        }
                        if banned.contains(recipient) {
                            return Ok(Err(Refusal::Banned(*recipient)));
                        }
                        if members.contains(recipient) {
                            return Ok(Err(Refusal::Invalid(format!(
                                "welcome for {}, who is a member already",
                                hex(recipient)
                            ))));
                        }
                    }
                }
                let existing = identities_in(tx, &c.channel).await?;
                let mut deliveries: Vec<(IdentityKey, NewMessage)> = existing
                    .iter()
                    .filter(|m| **m != c.sender.identity)
                    .map(|m| (*m, c.commit.clone()))
                    .collect();
                deliveries.extend(c.welcomes.iter().cloned());
                // In this transaction: a full queue (an error) rolls back the epoch and members too.
                let seqs = enqueue_in(tx, &deliveries, now, limits).await?;
                let added: Vec<IdentityKey> = c.welcomes.iter().map(|(w, _)| *w).collect();
                let roles: Vec<(IdentityKey, ChannelRole)> =
                    added.iter().map(|w| (*w, ChannelRole::Member)).collect();
                insert_members(tx, &c.channel, &roles, now).await?;
                channel.epoch = channel
                    .epoch
                    .checked_add(1)
                    .filter(|e| i64::try_from(*e).is_ok())
                    .ok_or_else(|| {
                        StoreError::InvalidArgument("the channel's epoch is at its maximum".into())
                    })?;
                execute(
                    tx,
                    "UPDATE channels SET epoch = $2 WHERE id = $1",
                    &[&c.channel.0.as_slice(), &int(channel.epoch)],
                )
                .await?;
                let mut members = existing;
                members.extend(added.iter().copied());
                let queued = deliveries.iter().map(|(r, _)| *r).zip(seqs).collect();
                Ok(Ok(CommitOutcome {
                    new_epoch: channel.epoch,
                    queued,
                    added,
                    members,
                }))
            })
        })
        .await
    }
}

/// Removes the memberships of a deleted account (locks its channel rows, in id order), with
/// what a removal does: ownership passes on, an emptied channel goes with its bans. The
/// account row is locked, so no membership of it can be added meanwhile.
pub(super) async fn delete_memberships_of(
    tx: &Tx<'_>,
    identity: &IdentityKey,
) -> Result<(), PgError> {
    let who = identity.as_slice();
    let ids: Vec<Vec<u8>> = query(
        tx,
        "SELECT channel_id FROM channel_members WHERE identity_key = $1 ORDER BY channel_id",
        &[&who],
    )
    .await?
    .iter()
    .map(|r| r.get("channel_id"))
    .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let channels = query(
        tx,
        &format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ),
        &[&ids],
    )
    .await?;
    for row in &channels {
        let channel = channel_of(row)?;
        // Read again under the lock: a removal that ran first may have taken it out.
        if let Some(member) = member_in(tx, &channel.id, identity).await? {
            remove_from_channel(tx, &channel, &member).await?;
        }
    }
    // A membership row whose channel is missing goes too.
    execute(
        tx,
        "DELETE FROM channel_members WHERE identity_key = $1",
        &[&who],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::backend::PgBackend;
    use crate::store::conformance::{ALICE, BOB, CAROL, Fixture, account, msg, new_channel};
    use crate::store::{Actor, ChannelId, ChannelStore, Refusal, RotateCommit, Store};

    const ID: ChannelId = ChannelId([7; 16]);

    /// A welcome racing the deletion of the welcomed account never leaves a membership of
    /// a deleted account behind: the rotate share-locks the account row before the channel's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_welcome_racing_the_accounts_deletion_leaves_no_member_behind() {
        let f = Fixture::with_alice(&PgBackend).await;
        let s = &f.store;
        s.create_account(account("bob", BOB)).await.unwrap();
        s.create_account(account("carol", CAROL)).await.unwrap();
        s.create_channel(new_channel(ID, ALICE, vec![BOB]))
            .await
            .unwrap()
            .unwrap();
        let rotate = {
            let s = s.clone();
            tokio::spawn(async move {
                s.rotate(RotateCommit {
                    channel: ID,
                    sender: Actor {
                        identity: ALICE,
                        server_admin: false,
                    },
                    epoch: 0,
                    commit: msg("commit"),
                    welcomes: vec![(CAROL, msg("welcome"))],
                })
                .await
            })
        };
        s.delete_account("carol").await.unwrap();
        let outcome = rotate.await.unwrap().unwrap();
        assert!(
            matches!(outcome, Ok(_) | Err(Refusal::UnknownAccount(CAROL))),
            "{outcome:?}"
        );
        assert_eq!(s.member(&ID, &CAROL).await.unwrap(), None);
        assert!(s.channels_of(&CAROL).await.unwrap().is_empty());
        let mut members = s.member_identities(&ID).await.unwrap();
        members.sort();
        assert_eq!(members, vec![ALICE, BOB]);
    }
}
