//! The devices of an account and their push tokens.
//!
//! A device is registered under an account with a client-chosen 16-byte id. Revoking it keeps
//! a tombstone (so the id can never be registered or logged in with again), drops its push
//! token and P2P endpoint, and deletes every session bound to it, all in one atomic batch.

use std::fmt;
use std::future::Future;

use super::{IdentityKey, SessionRecord, StoreError};

/// A device id: 16 bytes chosen by the client.
pub type DeviceId = [u8; 16];

/// The push service of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushPlatform {
    /// Apple Push Notification service (token = device token).
    Apns,
    /// Firebase Cloud Messaging (token = registration token).
    Fcm,
    /// UnifiedPush (token = the distributor's endpoint URL).
    UnifiedPush,
    /// Web Push, RFC 8030 (token = the push service's endpoint URL).
    WebPush,
}

impl PushPlatform {
    /// The stored byte.
    pub fn as_u8(self) -> u8 {
        match self {
            PushPlatform::Apns => 1,
            PushPlatform::Fcm => 2,
            PushPlatform::UnifiedPush => 3,
            PushPlatform::WebPush => 4,
        }
    }

    /// From the stored byte.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(PushPlatform::Apns),
            2 => Some(PushPlatform::Fcm),
            3 => Some(PushPlatform::UnifiedPush),
            4 => Some(PushPlatform::WebPush),
            _ => None,
        }
    }
}

/// A device's push token.
#[derive(Clone, PartialEq, Eq)]
pub struct PushToken {
    /// Push service.
    pub platform: PushPlatform,
    /// Token or endpoint URL, at most 4096 bytes.
    pub token: String,
}

// Tokens and endpoint URLs are capabilities: keep them out of logs.
impl fmt::Debug for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushToken")
            .field("platform", &self.platform)
            .field("token_len", &self.token.len())
            .finish()
    }
}

/// A registered (or revoked) device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device id.
    pub id: DeviceId,
    /// Human label, at most 255 bytes.
    pub name: String,
    /// Ed25519 public key of the device.
    pub device_key: [u8; 32],
    /// Registration time, Unix ms.
    pub created_at_ms: u64,
    /// Last authenticated call as last recorded, Unix ms; 0 = never.
    pub last_seen_ms: u64,
    /// Push token, if any.
    pub push: Option<PushToken>,
    /// When it was revoked; `None` while active.
    pub revoked_at_ms: Option<u64>,
}

/// Result of [`DeviceStore::register_device`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The device as stored (the existing record on a retry).
    pub device: DeviceRecord,
    /// `true` when the calling session was bound to the device.
    pub bound_session: bool,
}

/// Why a device operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Storage failed (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device id was revoked; it cannot be used again.
    #[error("device was revoked")]
    Revoked,
    /// The device id is registered with another key.
    #[error("device is registered with another key")]
    KeyMismatch,
    /// The account has as many active devices as allowed.
    #[error("too many devices (at most {limit})")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// No such device on the account.
    #[error("no such device")]
    NotFound,
}

/// Storage of devices and push tokens. Mutations are durable on `Ok`.
pub trait DeviceStore: Send + Sync + 'static {
    /// Registers `device` under the account of `identity`; a retry with the same key answers
    /// the existing record. When the session `session` has no device, it is bound to this one
    /// in the same batch. At most `max_devices` active devices per account.
    fn register_device(
        &self,
        identity: &IdentityKey,
        session: &[u8; 32],
        device: DeviceRecord,
        max_devices: usize,
    ) -> impl Future<Output = Result<Registered, DeviceError>> + Send;

    /// Every device record of the account (revoked ones included), oldest first.
    fn devices_of(
        &self,
        identity: &IdentityKey,
    ) -> impl Future<Output = Result<Vec<DeviceRecord>, StoreError>> + Send;

    /// Revokes a device: tombstone, push token and P2P endpoint dropped, sessions bound to it
    /// deleted (returned, so the caller can end their connections). A device that was never
    /// registered but has sessions is revoked too. A revoked device answers an empty list;
    /// an unknown id without sessions [`DeviceError::NotFound`].
    fn revoke_device(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<SessionRecord>, DeviceError>> + Send;

    /// Sets (or with `None` clears) the push token of an active registered device.
    fn set_push_token(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        push: Option<PushToken>,
    ) -> impl Future<Output = Result<(), DeviceError>> + Send;

    /// Active devices that have a push token, of the accounts in `identities` (one call for
    /// many, so a burst of wake-ups costs one read): `(identity, device, token)`, grouped by
    /// identity in the order asked, each account's devices in registration order. Unknown
    /// identities have none; an identity asked twice is answered once.
    fn push_targets(
        &self,
        identities: &[IdentityKey],
    ) -> impl Future<Output = Result<Vec<(IdentityKey, DeviceId, PushToken)>, StoreError>> + Send;

    /// Records last-seen times `(identity, device, unix_ms)` of active registered devices
    /// (later times only; unknown devices are skipped).
    fn record_last_seen(
        &self,
        seen: Vec<(IdentityKey, DeviceId, u64)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
