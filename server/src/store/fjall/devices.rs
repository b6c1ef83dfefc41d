//! [`DeviceStore`] on fjall.
//!
//! # Key layout
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `devices` | identity(32) ‖ device_id(16) | `v1 ‖ created(8) ‖ last_seen(8) ‖ device_key(32) ‖ revoked_at(8, 0 = active) ‖ push_platform(1, 0 = none) ‖ name(2+n) ‖ push_token(2+n)` |
//!
//! A revoked device stays as a tombstone (no push token) so its id is never accepted again,
//! neither by RegisterDevice nor by a login (see [`Engine::check_device_usable`]). Sessions
//! name their device in their own record (`sessions` keyspace); the sessions of a device are
//! found through the account's `session_index` entries.

use fjall::OwnedWriteBatch;

use super::record::{Reader, Writer};
use super::{Engine, FjallStore, engine_err};
use crate::store::codec;
use crate::store::{
    Account, DeviceError, DeviceId, DeviceRecord, DeviceStore, IdentityKey, PushPlatform,
    PushToken, Registered, SessionRecord, StoreError,
};

fn device_key(identity: &IdentityKey, id: &DeviceId) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(identity);
    k[32..].copy_from_slice(id);
    k
}

fn encode(d: &DeviceRecord) -> Result<Vec<u8>, StoreError> {
    let mut w = Writer::new(64 + d.name.len());
    w.u64(d.created_at_ms)
        .u64(d.last_seen_ms)
        .raw(&d.device_key)
        .u64(d.revoked_at_ms.unwrap_or(0))
        .u8(d.push.as_ref().map_or(0, |p| p.platform.as_u8()))
        .bytes16(d.name.as_bytes())?
        .bytes16(d.push.as_ref().map_or(&b""[..], |p| p.token.as_bytes()))?;
    Ok(w.finish())
}

fn decode(key: &[u8], value: &[u8]) -> Result<DeviceRecord, StoreError> {
    let id: DeviceId = key
        .get(32..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("device key has the wrong length".into()))?;
    let mut r = Reader::new(value, "device")?;
    let created_at_ms = r.u64()?;
    let last_seen_ms = r.u64()?;
    let device_key = r.array()?;
    let revoked_at_ms = Some(r.u64()?).filter(|t| *t != 0);
    let platform = r.u8()?;
    let name = r.string16()?;
    let token = r.string16()?;
    r.end()?;
    let push = match platform {
        0 => None,
        p => Some(PushToken {
            platform: PushPlatform::from_u8(p)
                .ok_or_else(|| StoreError::Corrupt(format!("device: unknown push platform {p}")))?,
            token,
        }),
    };
    Ok(DeviceRecord {
        id,
        name,
        device_key,
        created_at_ms,
        last_seen_ms,
        push,
        revoked_at_ms,
    })
}

impl Engine {
    fn device(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let key = device_key(identity, id);
        match self.ks("devices")?.get(key).map_err(engine_err)? {
            Some(v) => decode(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Devices of `identity` that are not revoked (one prefix read).
    pub(super) fn active_devices(&self, identity: &IdentityKey) -> Result<u64, StoreError> {
        let mut count = 0;
        for guard in self.ks("devices")?.prefix(identity) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            if decode(&key, &value)?.revoked_at_ms.is_none() {
                count += 1;
            }
        }
        Ok(count)
    }

    fn devices_of(&self, identity: &IdentityKey) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut out = Vec::new();
        for guard in self.ks("devices")?.prefix(identity) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            out.push(decode(&key, &value)?);
        }
        out.sort_by_key(|d| (d.created_at_ms, d.id));
        Ok(out)
    }

    /// The sessions of `identity` bound to `device`.
    fn sessions_of_device(
        &self,
        identity: &IdentityKey,
        device: &[u8],
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut out = Vec::new();
        for guard in self.session_index.prefix(identity) {
            let key = guard.key().map_err(engine_err)?;
            let token = codec::token_of_session_index_key(&key)?;
            if let Some(v) = self.sessions.get(token).map_err(engine_err)? {
                let s = codec::decode_session(&token, &v)?;
                if s.device_id.as_deref() == Some(device) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Refuses a new session bound to a revoked device (called by `put_session`).
    pub(super) fn check_device_usable(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let Some(id) = session
            .device_id
            .as_deref()
            .and_then(|d| <DeviceId>::try_from(d).ok())
        else {
            return Ok(());
        };
        match self.device(&session.identity_key, &id)? {
            Some(d) if d.revoked_at_ms.is_some() => Err(StoreError::InvalidArgument(
                "this device id was revoked (RevokeDevice) and cannot log in again; log in with a new device id".into(),
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn account_must_exist(&self, identity: &IdentityKey) -> Result<(), StoreError> {
        if self.identities.contains_key(identity).map_err(engine_err)? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn register_device(
        &self,
        identity: &IdentityKey,
        session: &[u8; 32],
        device: DeviceRecord,
        max_devices: usize,
    ) -> Result<(Registered, bool), DeviceError> {
        self.account_must_exist(identity)?;
        let mut batch = self.db.batch();
        let stored = match self.device(identity, &device.id)? {
            Some(d) if d.revoked_at_ms.is_some() => return Err(DeviceError::Revoked),
            Some(d) if d.device_key != device.device_key => return Err(DeviceError::KeyMismatch),
            Some(d) => d,
            None => {
                let active = self
                    .devices_of(identity)?
                    .iter()
                    .filter(|d| d.revoked_at_ms.is_none())
                    .count();
                if active >= max_devices {
                    return Err(DeviceError::TooMany { limit: max_devices });
                }
                batch.insert(
                    self.ks("devices")?,
                    device_key(identity, &device.id).to_vec(),
                    encode(&device)?,
                );
                device
            }
        };
        let mut bound_session = false;
        if let Some(v) = self.sessions.get(session).map_err(engine_err)? {
            let mut s = codec::decode_session(session, &v)?;
            if s.identity_key == *identity && s.device_id.is_none() {
                s.device_id = Some(stored.id.to_vec());
                batch.insert(&self.sessions, session.to_vec(), codec::encode_session(&s)?);
                bound_session = true;
            }
        }
        let registered = Registered {
            device: stored,
            bound_session,
        };
        Ok((registered, self.commit(batch)?))
    }

    fn revoke_device(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        now_ms: u64,
    ) -> Result<(Vec<SessionRecord>, bool), DeviceError> {
        self.account_must_exist(identity)?;
        let existing = self.device(identity, id)?;
        let sessions = self.sessions_of_device(identity, id)?;
        let tombstone = match existing {
            Some(d) if d.revoked_at_ms.is_some() => None,
            Some(d) => Some(DeviceRecord {
                push: None,
                revoked_at_ms: Some(now_ms.max(1)),
                ..d
            }),
            None if sessions.is_empty() => return Err(DeviceError::NotFound),
            None => Some(DeviceRecord {
                id: *id,
                name: String::new(),
                device_key: [0; 32],
                created_at_ms: now_ms,
                last_seen_ms: 0,
                push: None,
                revoked_at_ms: Some(now_ms.max(1)),
            }),
        };
        let mut batch = self.db.batch();
        if let Some(tombstone) = tombstone {
            batch.insert(
                self.ks("devices")?,
                device_key(identity, id).to_vec(),
                encode(&tombstone)?,
            );
            self.remove_endpoint(&mut batch, identity, id)?;
        }
        for s in &sessions {
            self.remove_session(&mut batch, s);
        }
        Ok((sessions, self.commit(batch)?))
    }

    fn set_push_token(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        push: Option<PushToken>,
    ) -> Result<((), bool), DeviceError> {
        let mut device = match self.device(identity, id)? {
            None => return Err(DeviceError::NotFound),
            Some(d) if d.revoked_at_ms.is_some() => return Err(DeviceError::Revoked),
            Some(d) => d,
        };
        device.push = push;
        let mut batch = self.db.batch();
        batch.insert(
            self.ks("devices")?,
            device_key(identity, id).to_vec(),
            encode(&device)?,
        );
        Ok(((), self.commit(batch)?))
    }

    fn record_last_seen(
        &self,
        seen: &[(IdentityKey, DeviceId, u64)],
    ) -> Result<((), bool), StoreError> {
        let mut batch = self.db.batch();
        for (identity, id, at) in seen {
            if let Some(mut d) = self.device(identity, id)?
                && d.revoked_at_ms.is_none()
                && d.last_seen_ms < *at
            {
                d.last_seen_ms = *at;
                batch.insert(
                    self.ks("devices")?,
                    device_key(identity, id).to_vec(),
                    encode(&d)?,
                );
            }
        }
        Ok(((), self.commit(batch)?))
    }

    /// Adds the removal of an account's devices (and so their push tokens) to its deletion
    /// batch.
    pub(super) fn delete_device_data(
        &self,
        batch: &mut OwnedWriteBatch,
        account: &Account,
    ) -> Result<(), StoreError> {
        let devices = self.ks("devices")?;
        for guard in devices.prefix(account.identity_key) {
            let key = guard.key().map_err(engine_err)?;
            batch.remove(devices, key.to_vec());
        }
        Ok(())
    }
}

impl FjallStore {
    /// Runs a device operation on the writer thread; a refusal is an answer that wrote
    /// nothing.
    async fn write_device<T, F>(&self, op: F) -> Result<T, DeviceError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<(T, bool), DeviceError> + Send + 'static,
    {
        self.write(move |e| match op(e) {
            Ok((value, wrote)) => Ok((Ok(value), wrote)),
            Err(DeviceError::Store(error)) => Err(error),
            Err(refusal) => Ok((Err(refusal), false)),
        })
        .await?
    }
}

impl DeviceStore for FjallStore {
    async fn register_device(
        &self,
        identity: &IdentityKey,
        session: &[u8; 32],
        device: DeviceRecord,
        max_devices: usize,
    ) -> Result<Registered, DeviceError> {
        if device.name.len() > 255 {
            return Err(
                StoreError::InvalidArgument("device name longer than 255 bytes".into()).into(),
            );
        }
        let (identity, session) = (*identity, *session);
        self.write_device(move |e| e.register_device(&identity, &session, device, max_devices))
            .await
    }

    async fn devices_of(&self, identity: &IdentityKey) -> Result<Vec<DeviceRecord>, StoreError> {
        let identity = *identity;
        self.blocking(move |e| e.devices_of(&identity)).await
    }

    async fn revoke_device(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        now_ms: u64,
    ) -> Result<Vec<SessionRecord>, DeviceError> {
        let (identity, id) = (*identity, *id);
        self.write_device(move |e| e.revoke_device(&identity, &id, now_ms))
            .await
    }

    async fn set_push_token(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        push: Option<PushToken>,
    ) -> Result<(), DeviceError> {
        if push.as_ref().is_some_and(|p| p.token.len() > 4096) {
            return Err(
                StoreError::InvalidArgument("push token longer than 4096 bytes".into()).into(),
            );
        }
        let (identity, id) = (*identity, *id);
        self.write_device(move |e| e.set_push_token(&identity, &id, push))
            .await
    }

    async fn push_targets(
        &self,
        identities: &[IdentityKey],
    ) -> Result<Vec<(IdentityKey, DeviceId, PushToken)>, StoreError> {
        let mut asked = identities.to_vec();
        let mut seen = std::collections::HashSet::new();
        asked.retain(|i| seen.insert(*i));
        self.blocking(move |e| {
            let mut out = Vec::new();
            for identity in asked {
                out.extend(
                    e.devices_of(&identity)?
                        .into_iter()
                        .filter(|d| d.revoked_at_ms.is_none())
                        .filter_map(|d| Some((identity, d.id, d.push?))),
                );
            }
            Ok(out)
        })
        .await
    }

    async fn record_last_seen(
        &self,
        seen: Vec<(IdentityKey, DeviceId, u64)>,
    ) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        self.write(move |e| e.record_last_seen(&seen)).await
    }
}
