//! Devices (700-702, 710): devices of an account and their push tokens.
//!
//! A device is registered under the caller's account with a client-chosen 16-byte id, a name
//! and its Ed25519 key; a session that has no device yet becomes bound to it. Revoking a
//! device ends its sessions at once: they are deleted from the store (so every later call with
//! their tokens is Unauthorized), their parked FetchWaits are signalled and their connections
//! closed (which ends their push streams). The caller's own connection is spared so it
//! receives the answer; if it revoked its own device, that connection stops receiving pushes
//! at once and is closed [`SELF_REVOKE_CLOSE`] later, after the answer has left. Delivery queues are per account, not per device, so revoking
//! drops no messages. A revoked id can never be registered or logged in with again.
//!
//! Last seen: every authenticated call of a device-bound session is noted in memory
//! ([`SeenDevices`]) and written to the device record by the sweeper once a minute, so
//! ListDevices is exact while the server runs and at most a minute behind after a restart.
//!
//! Push tokens: see `crate::background::push` for what is delivered where (and what cannot be).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use qpq_runtime::tls::hex;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{DeviceService, proto};

use crate::auth::identity_of;
use crate::background::push::check_endpoint;
use crate::store::{
    DeviceError, DeviceId, DeviceRecord, IdentityKey, PushPlatform, PushToken, Store, StoreError,
};
use crate::{Messenger, errors};

/// Most active (not revoked) devices per account.
pub(crate) const MAX_DEVICES: usize = 64;
/// Longest device name, in bytes.
const MAX_NAME: usize = 64;
/// Longest push token or endpoint URL, in bytes.
const MAX_TOKEN: usize = 4096;
/// How long a connection that revoked its own device stays open for the answer.
const SELF_REVOKE_CLOSE: std::time::Duration = std::time::Duration::from_millis(300);

/// Last authenticated call per device, in memory until the sweeper records it.
#[derive(Default)]
pub(crate) struct SeenDevices {
    /// `(last seen ms, not yet written to the store)`.
    map: Mutex<HashMap<(IdentityKey, DeviceId), (u64, bool)>>,
}

impl SeenDevices {
    fn lock(&self) -> MutexGuard<'_, HashMap<(IdentityKey, DeviceId), (u64, bool)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a call of a session bound to `device` (ids that are not 16 bytes are never
    /// registered devices and are ignored).
    pub(crate) fn touch(&self, identity: &IdentityKey, device: &[u8], now_ms: u64) {
        if let Ok(id) = DeviceId::try_from(device) {
            self.lock().insert((*identity, id), (now_ms, true));
        }
    }

    fn get(&self, identity: &IdentityKey, id: &DeviceId) -> Option<u64> {
        self.lock().get(&(*identity, *id)).map(|(at, _)| *at)
    }

    fn forget(&self, identity: &IdentityKey, id: &DeviceId) {
        self.lock().remove(&(*identity, *id));
    }

    /// The entries not yet written, marked written.
    fn take_dirty(&self) -> Vec<(IdentityKey, DeviceId, u64)> {
        let mut map = self.lock();
        map.iter_mut()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|((identity, id), (at, dirty))| {
                *dirty = false;
                (*identity, *id, *at)
            })
            .collect()
    }
}

fn device_id(bytes: &[u8], field: &str) -> Result<DeviceId, Status> {
    bytes
        .try_into()
        .map_err(|_| Status::bad_request(format!("{field} must be 16 bytes, got {}", bytes.len())))
}

fn platform_of(platform: PushPlatform) -> proto::PushPlatform {
    match platform {
        PushPlatform::Apns => proto::PushPlatform::Apns,
        PushPlatform::Fcm => proto::PushPlatform::Fcm,
        PushPlatform::UnifiedPush => proto::PushPlatform::UnifiedPush,
        PushPlatform::WebPush => proto::PushPlatform::WebPush,
    }
}

fn device_error(error: DeviceError) -> Status {
    match error {
        DeviceError::Revoked => Status::conflict(
            "this device id was revoked; a revoked id cannot be used again: register the device under a new random device_id",
        ),
        DeviceError::KeyMismatch => Status::conflict(
            "this device_id is registered with a different device_key; use the original key or a new device_id",
        ),
        DeviceError::TooMany { limit } => Status::forbidden(format!(
            "this account already has {limit} devices, the most allowed; revoke one (RevokeDevice) first"
        )),
        DeviceError::NotFound => Status::not_found(
            "no device with this id on your account; register it first (RegisterDevice)",
        ),
        DeviceError::Store(StoreError::NotFound) => {
            Status::unauthorized("your account no longer exists; log in again")
        }
        DeviceError::Store(other) => errors::store(other),
    }
}

/// Checks a push token for its platform.
fn check_token(platform: PushPlatform, token: &str, allow_private: bool) -> Result<(), Status> {
    if token.len() > MAX_TOKEN {
        return Err(Status::bad_request(format!(
            "token is {} bytes; at most {MAX_TOKEN}",
            token.len()
        )));
    }
    match platform {
        PushPlatform::Apns => {
            if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Status::bad_request(
                    "an APNs token is the device token in hex (at least 32 hex digits)",
                ));
            }
        }
        PushPlatform::Fcm => {
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Status::bad_request(
                    "an FCM registration token is printable ASCII without spaces",
                ));
            }
        }
        _ => check_endpoint(token, allow_private).map_err(Status::bad_request)?,
    }
    Ok(())
}

impl<S: Store> Messenger<S> {
    /// Writes the last-seen times noted since the previous call (called by the sweeper).
    pub(crate) async fn flush_last_seen(&self) {
        let seen = self.seen.take_dirty();
        if let Err(error) = self.store.record_last_seen(seen).await {
            tracing::warn!(%error, "could not record device last-seen times");
        }
    }
}

impl<S: Store> DeviceService for Messenger<S> {
    async fn register_device(
        &self,
        ctx: Ctx<Session>,
        request: proto::RegisterDeviceRequest,
    ) -> Result<proto::RegisterDeviceResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let id = device_id(&request.device_id, "device_id")?;
        if request.name.is_empty() || request.name.len() > MAX_NAME {
            return Err(Status::bad_request(format!(
                "name must be 1 to {MAX_NAME} bytes of UTF-8, got {}",
                request.name.len()
            )));
        }
        let device_key: [u8; 32] = request.device_key[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "device_key must be a 32-byte Ed25519 public key, got {} bytes",
                request.device_key.len()
            ))
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&device_key)
            .map_err(|_| Status::bad_request("device_key is not a valid Ed25519 public key"))?;
        let device = DeviceRecord {
            id,
            name: request.name,
            device_key,
            created_at_ms: self.now_ms(),
            last_seen_ms: 0,
            push: None,
            revoked_at_ms: None,
        };
        let registered = self
            .store
            .register_device(&identity, &ctx.auth().session_id, device, MAX_DEVICES)
            .await
            .map_err(device_error)?;
        if registered.bound_session {
            self.seen.touch(&identity, &id, self.now_ms());
        }
        tracing::info!(
            username = %ctx.auth().username,
            device = %hex(&id),
            bound_session = registered.bound_session,
            "device registered"
        );
        Ok(proto::RegisterDeviceResponse {
            created_at_unix_ms: registered.device.created_at_ms,
        })
    }

    async fn list_devices(
        &self,
        ctx: Ctx<Session>,
        _request: proto::ListDevicesRequest,
    ) -> Result<proto::ListDevicesResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let current = ctx.auth().device_id.as_deref();
        let devices = self
            .store
            .devices_of(&identity)
            .await
            .map_err(errors::store)?
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_none())
            .map(|d| {
                let seen = self.seen.get(&identity, &d.id).unwrap_or(0);
                proto::Device {
                    device_id: Bytes::copy_from_slice(&d.id),
                    name: d.name,
                    device_key: Bytes::copy_from_slice(&d.device_key),
                    created_at_unix_ms: d.created_at_ms,
                    last_seen_unix_ms: d.last_seen_ms.max(seen),
                    has_push_token: d.push.is_some(),
                    push_platform: d
                        .push
                        .as_ref()
                        .map_or(proto::PushPlatform::Unspecified, |p| {
                            platform_of(p.platform)
                        })
                        .into(),
                    current: current == Some(&d.id[..]),
                }
            })
            .collect();
        Ok(proto::ListDevicesResponse { devices })
    }

    async fn revoke_device(
        &self,
        ctx: Ctx<Session>,
        request: proto::RevokeDeviceRequest,
    ) -> Result<proto::RevokeDeviceResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let id = device_id(&request.device_id, "device_id")?;
        let ended = self
            .store
            .revoke_device(&identity, &id, self.now_ms())
            .await
            .map_err(device_error)?;
        self.seen.forget(&identity, &id);
        let sessions: Vec<[u8; 32]> = ended.iter().map(|s| s.token_hash).collect();
        // The caller's connection is spared so it gets this answer (see the module doc).
        self.end_sessions(
            &identity,
            &sessions,
            Some(ctx.connection().id()),
            "device revoked",
        );
        if ctx.auth().device_id.as_deref() == Some(&id[..]) {
            let connection = ctx.connection().clone();
            tokio::spawn(async move {
                tokio::time::sleep(SELF_REVOKE_CLOSE).await;
                connection.close("device revoked");
            });
        }
        tracing::info!(
            username = %ctx.auth().username,
            device = %hex(&id),
            sessions = sessions.len(),
            "device revoked"
        );
        Ok(proto::RevokeDeviceResponse {
            sessions_ended: u32::try_from(sessions.len()).unwrap_or(u32::MAX),
        })
    }

    async fn register_push_token(
        &self,
        ctx: Ctx<Session>,
        request: proto::RegisterPushTokenRequest,
    ) -> Result<proto::RegisterPushTokenResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let id = if request.device_id.is_empty() {
            match ctx.auth().device_id.as_deref() {
                Some(d) => device_id(d, "the session's device id").map_err(|_| {
                    Status::bad_request(
                        "this session's device id is not a registered 16-byte device id; name device_id",
                    )
                })?,
                None => {
                    return Err(Status::bad_request(
                        "this session is not bound to a device: register one (RegisterDevice) or name device_id",
                    ));
                }
            }
        } else {
            device_id(&request.device_id, "device_id")?
        };
        let push = if request.token.is_empty() {
            None
        } else {
            let platform = match proto::PushPlatform::try_from(request.platform) {
                Ok(proto::PushPlatform::Apns) => PushPlatform::Apns,
                Ok(proto::PushPlatform::Fcm) => PushPlatform::Fcm,
                Ok(proto::PushPlatform::UnifiedPush) => PushPlatform::UnifiedPush,
                Ok(proto::PushPlatform::WebPush) => PushPlatform::WebPush,
                _ => {
                    return Err(Status::bad_request(
                        "platform must be APNS, FCM, UNIFIED_PUSH or WEB_PUSH",
                    ));
                }
            };
            check_token(
                platform,
                &request.token,
                self.config.push_allow_private_endpoints,
            )?;
            Some(PushToken {
                platform,
                token: request.token,
            })
        };
        let platform = push.as_ref().map(|p| p.platform);
        self.store
            .set_push_token(&identity, &id, push)
            .await
            .map_err(device_error)?;
        match platform {
            Some(p @ (PushPlatform::Apns | PushPlatform::Fcm)) => tracing::warn!(
                device = %hex(&id),
                platform = ?p,
                "push token stored, but this server has no APNs/FCM credentials: the device will not be woken through it"
            ),
            Some(p) => tracing::info!(device = %hex(&id), platform = ?p, "push token stored"),
            None => tracing::info!(device = %hex(&id), "push token removed"),
        }
        Ok(proto::RegisterPushTokenResponse {})
    }
}
