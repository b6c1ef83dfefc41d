//! Channels: the server-side record of MLS groups (metadata, members and roles, the group's
//! current epoch) and the ordering of commits.
//!
//! The store checks what must be atomic with a change: roles when a member is removed or a
//! role changes, the epoch compare-and-set of a commit, bans when a member is added. Input
//! syntax (sizes, UTF-8, role values) is the handler's job.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use super::{IdentityKey, NewMessage, Seq, StoreError};

/// A channel id: 16 random bytes chosen by the server (the MLS group id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub [u8; 16]);

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A member's role. The numbers are the protocol's `ChannelRole` values (and the stored
/// byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChannelRole {
    /// The one member that may change metadata and roles.
    Owner = 1,
    /// May add (through commit welcomes), remove and ban members.
    Admin = 2,
    /// An ordinary member.
    Member = 3,
}

impl ChannelRole {
    /// The stored byte / protocol value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Inverse of [`ChannelRole::as_u8`].
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Owner),
            2 => Some(Self::Admin),
            3 => Some(Self::Member),
            _ => None,
        }
    }

    /// Owner or admin: may add, remove and ban members.
    pub fn manages_members(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// A channel's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Its id.
    pub id: ChannelId,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Free-form settings, stored as given.
    pub settings: BTreeMap<String, String>,
    /// Identity key of the owner.
    pub owner: IdentityKey,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
    /// The epoch the next commit must be for.
    pub epoch: u64,
}

/// One member of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member's identity key.
    pub identity: IdentityKey,
    /// Its role.
    pub role: ChannelRole,
    /// When it was added, Unix ms.
    pub joined_at_ms: u64,
}

/// A channel to create: `channel` (with the creator as owner) and further members.
#[derive(Clone, Debug)]
pub struct NewChannel {
    /// The channel; `owner` becomes its first member with role OWNER.
    pub channel: Channel,
    /// Further members, added with role MEMBER (duplicates and the owner are ignored).
    pub members: Vec<IdentityKey>,
}

/// Who asks for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The caller's identity key.
    pub identity: IdentityKey,
    /// Whether the caller is a server administrator (configuration).
    pub server_admin: bool,
}

/// Why a channel operation was refused; handlers turn these into statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// There is no such channel.
    NoChannel,
    /// The caller is not a member of the channel.
    NotMember,
    /// The caller's role does not allow this; the text says what would.
    Forbidden(String),
    /// This identity has no account here.
    UnknownAccount(IdentityKey),
    /// This identity is banned from the channel.
    Banned(IdentityKey),
    /// The commit is for `request`, but the channel is at `current`.
    StaleEpoch {
        /// The channel's current epoch.
        current: u64,
    },
    /// The request does not fit the channel's state; the text says why.
    Invalid(String),
}

/// A removal that happened (or did not: the identity was no member).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// `false` when the identity was not a member (nothing changed).
    pub removed: bool,
    /// Members after the change.
    pub remaining: Vec<IdentityKey>,
    /// When the owner left: the member that owns the channel now.
    pub new_owner: Option<IdentityKey>,
    /// When the last member left: the channel is gone.
    pub channel_deleted: bool,
}

/// A change of metadata and roles (owner only).
#[derive(Clone, Debug, Default)]
pub struct ChannelUpdate {
    /// New name when set.
    pub name: Option<String>,
    /// New description when set.
    pub description: Option<String>,
    /// Settings to add or overwrite.
    pub set_settings: BTreeMap<String, String>,
    /// Setting keys to delete (after `set_settings`).
    pub remove_settings: Vec<String>,
    /// Role changes (ADMIN or MEMBER) of existing members other than the owner.
    pub role_changes: Vec<(IdentityKey, ChannelRole)>,
    /// Most settings the channel may have after the change.
    pub max_settings: usize,
}

/// A commit submitted with RotateKeys.
#[derive(Clone, Debug)]
pub struct RotateCommit {
    /// The channel.
    pub channel: ChannelId,
    /// Who submits it (must be a member; owner or admin when it has welcomes).
    pub sender: Actor,
    /// The epoch the commit was made in; it must equal the channel's.
    pub epoch: u64,
    /// The commit, queued for every other member (tagged with the channel).
    pub commit: NewMessage,
    /// Welcomes: each recipient is added as MEMBER and gets its message.
    pub welcomes: Vec<(IdentityKey, NewMessage)>,
}

/// A commit that won.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The channel's epoch now.
    pub new_epoch: u64,
    /// Where the commit and the welcomes were queued, in order: the commit for each other
    /// member, then each welcome.
    pub queued: Vec<(IdentityKey, Seq)>,
    /// Members added by the welcomes.
    pub added: Vec<IdentityKey>,
    /// Every member after the commit (the added ones included).
    pub members: Vec<IdentityKey>,
}

/// One page of a channel's members, ordered by join time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberPage {
    /// Members on this page.
    pub members: Vec<MemberRecord>,
    /// Opaque cursor for the next page; empty when this was the last.
    pub next_cursor: Vec<u8>,
}

/// Channel records and commit ordering. Every mutating method is durable on `Ok`; an inner
/// `Err(Refusal)` means nothing changed.
pub trait ChannelStore: Send + Sync + 'static {
    /// Creates a channel with its owner and members, in one batch.
    /// [`Refusal::UnknownAccount`] when a member has no account. A channel id that exists
    /// already is [`StoreError::InvalidArgument`] (ids are random; the caller picks another).
    fn create_channel(
        &self,
        new: NewChannel,
    ) -> impl Future<Output = Result<Result<Channel, Refusal>, StoreError>> + Send;

    /// A channel's metadata.
    fn channel(
        &self,
        id: &ChannelId,
    ) -> impl Future<Output = Result<Option<Channel>, StoreError>> + Send;

    /// One member's record, when it is a member.
    fn member(
        &self,
        id: &ChannelId,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Option<MemberRecord>, StoreError>> + Send;

    /// Up to `limit` members after `cursor` (empty: from the first), by join time.
    /// A malformed cursor is [`StoreError::InvalidArgument`].
    fn members_page(
        &self,
        id: &ChannelId,
        cursor: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<MemberPage, StoreError>> + Send;

    /// Every member's identity key (for fan-out).
    fn member_identities(
        &self,
        id: &ChannelId,
    ) -> impl Future<Output = Result<Vec<IdentityKey>, StoreError>> + Send;

    /// The channels `identity` belongs to.
    fn channels_of(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Vec<ChannelId>, StoreError>> + Send;

    /// Removes `target` from the channel. The actor may remove itself (leave); owners,
    /// channel admins and server admins may remove others but not the owner. When the owner
    /// leaves, the earliest admin (else the earliest member) becomes owner; when the last
    /// member leaves, the channel is deleted.
    fn remove_member(
        &self,
        id: &ChannelId,
        actor: Actor,
        target: &IdentityKey,
    ) -> impl Future<Output = Result<Result<Removal, Refusal>, StoreError>> + Send;

    /// Applies `update` (the owner only) and returns the channel after it with its members.
    fn update_channel(
        &self,
        id: &ChannelId,
        actor: Actor,
        update: ChannelUpdate,
    ) -> impl Future<Output = Result<Result<(Channel, Vec<IdentityKey>), Refusal>, StoreError>> + Send;

    /// Orders a commit: accepted only when its epoch is the channel's (compare-and-set).
    /// The epoch advance, the added members and every queued message are one atomic batch,
    /// so a losing commit ([`Refusal::StaleEpoch`]) leaves no trace, and a welcome is never
    /// queued for a commit that did not win. A member's full queue refuses the whole commit
    /// ([`StoreError::QueueFull`]).
    fn rotate(
        &self,
        commit: RotateCommit,
    ) -> impl Future<Output = Result<Result<CommitOutcome, Refusal>, StoreError>> + Send;
}
