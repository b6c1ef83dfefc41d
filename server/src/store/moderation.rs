//! Moderation: reports filed by users, and bans (server-wide or per channel).
//!
//! Bans and reports are the server's own records: deleting an account keeps the reports it
//! filed or received and the bans on its identity key.

use std::future::Future;

use bytes::Bytes;

use super::channels::{Actor, ChannelId, ChannelRole, Refusal};
use super::{IdentityKey, SessionRecord, StoreError};

/// Where a ban applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BanScope {
    /// The whole server: no login, no session.
    Server,
    /// One channel: not a member, cannot be added.
    Channel(ChannelId),
}

/// A ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRecord {
    /// Where it applies.
    pub scope: BanScope,
    /// The banned identity.
    pub identity: IdentityKey,
    /// Its username when banned.
    pub username: String,
    /// Reason given.
    pub reason: String,
    /// Who banned.
    pub banned_by: IdentityKey,
    /// When, Unix ms.
    pub created_at_ms: u64,
    /// When it ends, Unix ms; 0 = permanent.
    pub expires_at_ms: u64,
}

impl BanRecord {
    /// Whether the ban is in force at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || self.expires_at_ms > now_ms
    }
}

/// What a ban did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BanOutcome {
    /// Server-wide: the sessions it deleted (the handler closes their connections).
    pub sessions: Vec<SessionRecord>,
    /// Per channel: whether the identity was a member and is now removed.
    pub removed_from_channel: bool,
    /// Per channel: the members after the ban.
    pub remaining: Vec<IdentityKey>,
}

/// A stored report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecord {
    /// Random id.
    pub id: [u8; 16],
    /// Who reported.
    pub reporter: IdentityKey,
    /// The reporter's username.
    pub reporter_username: String,
    /// Who is reported.
    pub reported: IdentityKey,
    /// The reported user's username.
    pub reported_username: String,
    /// The channel the message was in, if any.
    pub channel: Option<ChannelId>,
    /// Seq of the message in the reporter's queue; 0 when not given.
    pub seq: u64,
    /// The protocol's `ReportCategory` value.
    pub category: u8,
    /// Free text.
    pub reason: String,
    /// Content the reporter chose to disclose.
    pub evidence: Bytes,
    /// When, Unix ms.
    pub created_at_ms: u64,
}

/// A page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// Items on this page.
    pub items: Vec<T>,
    /// Opaque cursor for the next page; empty when this was the last.
    pub next_cursor: Vec<u8>,
}

/// Reports and bans. Mutations are durable on `Ok`; an inner `Err(Refusal)` changed nothing.
pub trait ModerationStore: Send + Sync + 'static {
    /// Stores a report.
    fn add_report(
        &self,
        report: ReportRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reports oldest first, after `cursor` (empty: from the oldest).
    fn reports(
        &self,
        cursor: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<Page<ReportRecord>, StoreError>> + Send;

    /// Stores (or replaces) a ban. Server-wide: only a server admin; it deletes the identity's
    /// sessions in the same batch. Per channel: the channel's owner or admins or a server
    /// admin, never against the owner; it removes the member in the same batch.
    fn ban(
        &self,
        ban: BanRecord,
        actor: Actor,
    ) -> impl Future<Output = Result<Result<BanOutcome, Refusal>, StoreError>> + Send;

    /// Lifts a ban (same permissions as [`ModerationStore::ban`]); `true` when there was one
    /// in force.
    fn unban(
        &self,
        scope: BanScope,
        identity: &IdentityKey,
        actor: Actor,
    ) -> impl Future<Output = Result<Result<bool, Refusal>, StoreError>> + Send;

    /// The server-wide ban of `identity` when one is in force.
    fn server_ban(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Option<BanRecord>, StoreError>> + Send;

    /// Bans in force: server-wide ones then per channel ones, or only `channel`'s, after
    /// `cursor`.
    fn bans(
        &self,
        channel: Option<ChannelId>,
        cursor: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<Page<BanRecord>, StoreError>> + Send;
}

/// The refusal of a server-wide ban (or unban) by someone who is not a server admin.
pub(super) fn server_ban_refusal() -> Refusal {
    Refusal::Forbidden(
        "server-wide bans are for server administrators; give channel_id to ban from a channel you own or administer".into(),
    )
}

/// Whether `actor` may ban `target` from a channel owned by `owner` (or lift its ban,
/// `lifting`), given both their roles there (`None`: not a member). The one rule every
/// backend applies, under its own lock of the channel.
pub(super) fn may_ban_in_channel(
    actor: Actor,
    actor_role: Option<ChannelRole>,
    target: &IdentityKey,
    target_role: Option<ChannelRole>,
    owner: &IdentityKey,
    lifting: bool,
) -> Result<(), Refusal> {
    if !actor.server_admin {
        match actor_role {
            None => return Err(Refusal::NotMember),
            Some(role) if !role.manages_members() => {
                return Err(Refusal::Forbidden(
                    "only the channel's owner or admins (or a server admin) may ban or unban in a channel".into(),
                ));
            }
            Some(_) => {}
        }
    }
    if lifting {
        return Ok(());
    }
    if *target == actor.identity {
        return Err(Refusal::Invalid("you cannot ban yourself".into()));
    }
    if target == owner {
        return Err(Refusal::Forbidden(
            "the channel's owner cannot be banned from it".into(),
        ));
    }
    if target_role == Some(ChannelRole::Admin)
        && actor_role == Some(ChannelRole::Admin)
        && !actor.server_admin
    {
        return Err(Refusal::Forbidden(
            "a channel admin cannot ban another admin; ask the owner".into(),
        ));
    }
    Ok(())
}
