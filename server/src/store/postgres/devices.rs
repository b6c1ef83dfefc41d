//! [`DeviceStore`] on PostgreSQL.
//!
//! One row per device in `devices`; a revoked device keeps its row as a tombstone
//! (`revoked_at_ms` set, push token cleared), so its id is refused for good by
//! `register_device` and by a login ([`check_device_usable`], inside `put_session`).
//!
//! Locks: registration and revocation lock the account row first (so the per-account cap
//! and the sessions bound to a device are judged alone, and a login of the account waits),
//! then touch device and session rows. `record_last_seen` locks only device rows, in key
//! order.

use std::collections::BTreeMap;

use tokio_postgres::Row;

use super::{PgError, PgStore, Tx, execute, fixed, int, query, query_opt, session_of, text, uint};
use crate::store::{
    Account, DeviceError, DeviceId, DeviceRecord, DeviceStore, IdentityKey, PushPlatform,
    PushToken, Registered, SessionRecord, StoreError,
};

const DEVICE_COLUMNS: &str = "device_id, name, device_key, created_at_ms, last_seen_ms, \
     push_platform, push_token, revoked_at_ms";

fn device_of(row: &Row) -> Result<DeviceRecord, StoreError> {
    let platform: Option<i16> = row.get("push_platform");
    let token: Option<Vec<u8>> = row.get("push_token");
    let push = match (platform, token) {
        (None, _) => None,
        (Some(p), token) => {
            let platform = u8::try_from(p)
                .ok()
                .and_then(PushPlatform::from_u8)
                .ok_or_else(|| StoreError::Corrupt(format!("device: unknown push platform {p}")))?;
            Some(PushToken {
                platform,
                token: text(token.unwrap_or_default(), "push token")?,
            })
        }
    };
    let revoked: Option<i64> = row.get("revoked_at_ms");
    Ok(DeviceRecord {
        id: fixed(row.get("device_id"), "device id")?,
        name: text(row.get("name"), "device name")?,
        device_key: fixed(row.get("device_key"), "device key")?,
        created_at_ms: uint(row.get("created_at_ms"))?,
        last_seen_ms: uint(row.get("last_seen_ms"))?,
        push,
        revoked_at_ms: revoked.map(uint).transpose()?,
    })
}

/// Locks the account row of `identity` (lock order: accounts first); `NotFound` without one.
async fn lock_account_of(tx: &Tx<'_>, identity: &IdentityKey) -> Result<(), PgError> {
    let row = query_opt(
        tx,
        "SELECT 1 FROM accounts WHERE identity_key = $1 FOR UPDATE",
        &[&identity.as_slice()],
    )
    .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound.into()),
    }
}

async fn device(
    tx: &Tx<'_>,
    identity: &IdentityKey,
    id: &DeviceId,
    lock: bool,
) -> Result<Option<DeviceRecord>, PgError> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE identity_key = $1 AND device_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = query_opt(tx, &sql, &[&identity.as_slice(), &id.as_slice()]).await?;
    Ok(row.map(|r| device_of(&r)).transpose()?)
}

/// A refusal is decided before anything is written, so its transaction commits nothing.
type Outcome<T> = Result<T, DeviceError>;

fn answer<T>(r: Result<Outcome<T>, StoreError>) -> Result<T, DeviceError> {
    r?
}

impl DeviceStore for PgStore {
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
        let device = &device;
        let r = self
            .transact("register_device", |tx, _| {
                Box::pin(async move {
                    lock_account_of(tx, identity).await?;
                    let stored = match self::device(tx, identity, &device.id, true).await? {
                        Some(d) if d.revoked_at_ms.is_some() => {
                            return Ok(Err(DeviceError::Revoked));
                        }
                        Some(d) if d.device_key != device.device_key => {
                            return Ok(Err(DeviceError::KeyMismatch));
                        }
                        Some(d) => d,
                        None => {
                            let active = query_opt(
                                tx,
                                "SELECT count(*)::int8 AS n FROM devices \
                                 WHERE identity_key = $1 AND revoked_at_ms IS NULL",
                                &[&identity.as_slice()],
                            )
                            .await?
                            .map_or(Ok(0), |r| uint(r.get("n")))?;
                            if active >= max_devices as u64 {
                                return Ok(Err(DeviceError::TooMany { limit: max_devices }));
                            }
                            execute(
                                tx,
                                "INSERT INTO devices (identity_key, device_id, name, device_key, \
                                 created_at_ms, last_seen_ms, push_platform, push_token, revoked_at_ms) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                                &[
                                    &identity.as_slice(),
                                    &device.id.as_slice(),
                                    &device.name.as_bytes(),
                                    &device.device_key.as_slice(),
                                    &int(device.created_at_ms),
                                    &int(device.last_seen_ms),
                                    &device.push.as_ref().map(|p| i16::from(p.platform.as_u8())),
                                    &device.push.as_ref().map(|p| p.token.as_bytes()),
                                    &device.revoked_at_ms.map(int),
                                ],
                            )
                            .await?;
                            device.clone()
                        }
                    };
                    let bound = execute(
                        tx,
                        "UPDATE sessions SET device_id = $3 \
                         WHERE token_hash = $1 AND identity_key = $2 AND device_id IS NULL",
                        &[&session.as_slice(), &identity.as_slice(), &stored.id.as_slice()],
                    )
                    .await?;
                    Ok(Ok(Registered {
                        device: stored,
                        bound_session: bound > 0,
                    }))
                })
            })
            .await;
        answer(r)
    }

    async fn devices_of(&self, identity: &IdentityKey) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    &format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices WHERE identity_key = $1 \
                         ORDER BY created_at_ms, device_id"
                    ),
                    &[&identity.as_slice()],
                )
                .await?;
                Ok(rows.iter().map(device_of).collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
    }

    async fn revoke_device(
        &self,
        identity: &IdentityKey,
        id: &DeviceId,
        now_ms: u64,
    ) -> Result<Vec<SessionRecord>, DeviceError> {
        let r = self
            .transact("revoke_device", |tx, _| {
                Box::pin(async move {
                    lock_account_of(tx, identity).await?;
                    let existing = self::device(tx, identity, id, true).await?;
                    let sessions = query(
                        tx,
                        &format!(
                            "DELETE FROM sessions WHERE identity_key = $1 AND device_id = $2 \
                             RETURNING {}",
                            super::SESSION_COLUMNS
                        ),
                        &[&identity.as_slice(), &id.as_slice()],
                    )
                    .await?
                    .iter()
                    .map(session_of)
                    .collect::<Result<Vec<_>, _>>()?;
                    let revoked_at = int(now_ms.max(1));
                    match existing {
                        Some(d) if d.revoked_at_ms.is_some() => {}
                        Some(_) => {
                            execute(
                                tx,
                                "UPDATE devices SET revoked_at_ms = $3, push_platform = NULL, \
                                 push_token = NULL WHERE identity_key = $1 AND device_id = $2",
                                &[&identity.as_slice(), &id.as_slice(), &revoked_at],
                            )
                            .await?;
                        }
                        None if sessions.is_empty() => return Ok(Err(DeviceError::NotFound)),
                        None => {
                            execute(
                                tx,
                                "INSERT INTO devices (identity_key, device_id, name, device_key, \
                                 created_at_ms, last_seen_ms, push_platform, push_token, revoked_at_ms) \
                                 VALUES ($1, $2, '', $3, $4, 0, NULL, NULL, $5)",
                                &[
                                    &identity.as_slice(),
                                    &id.as_slice(),
                                    &[0u8; 32].as_slice(),
                                    &int(now_ms),
                                    &revoked_at,
                                ],
                            )
                            .await?;
                        }
                    }
                    // A revoked device keeps no P2P endpoint (as its sessions, in this
                    // transaction).
                    super::p2p::remove_endpoint(tx, identity, id).await?;
                    Ok(Ok(sessions))
                })
            })
            .await;
        answer(r)
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
        let push = &push;
        let r = self
            .transact("set_push_token", |tx, _| {
                Box::pin(async move {
                    let updated = execute(
                        tx,
                        "UPDATE devices SET push_platform = $3, push_token = $4 \
                         WHERE identity_key = $1 AND device_id = $2 AND revoked_at_ms IS NULL",
                        &[
                            &identity.as_slice(),
                            &id.as_slice(),
                            &push.as_ref().map(|p| i16::from(p.platform.as_u8())),
                            &push.as_ref().map(|p| p.token.as_bytes()),
                        ],
                    )
                    .await?;
                    if updated > 0 {
                        return Ok(Ok(()));
                    }
                    Ok(Err(match self::device(tx, identity, id, false).await? {
                        Some(_) => DeviceError::Revoked,
                        None => DeviceError::NotFound,
                    }))
                })
            })
            .await;
        answer(r)
    }

    async fn push_targets(
        &self,
        identities: &[IdentityKey],
    ) -> Result<Vec<(IdentityKey, DeviceId, PushToken)>, StoreError> {
        let mut asked = identities.to_vec();
        let mut seen = std::collections::HashSet::new();
        asked.retain(|i| seen.insert(*i));
        let keys: Vec<&[u8]> = asked.iter().map(|i| i.as_slice()).collect();
        let mut found = self
            .read(|c, _| {
                Box::pin(async move {
                    let rows = query(
                        c,
                        &format!(
                            "SELECT identity_key, {DEVICE_COLUMNS} FROM devices \
                             WHERE identity_key = ANY($1) \
                             AND revoked_at_ms IS NULL AND push_platform IS NOT NULL \
                             ORDER BY identity_key, created_at_ms, device_id"
                        ),
                        &[&keys],
                    )
                    .await?;
                    let mut found: BTreeMap<IdentityKey, Vec<(DeviceId, PushToken)>> =
                        BTreeMap::new();
                    for row in &rows {
                        let identity = fixed(row.get("identity_key"), "identity key")?;
                        let d = device_of(row)?;
                        if let Some(push) = d.push {
                            found.entry(identity).or_default().push((d.id, push));
                        }
                    }
                    Ok(found)
                })
            })
            .await?;
        let mut out = Vec::new();
        for identity in asked {
            for (device, push) in found.remove(&identity).unwrap_or_default() {
                out.push((identity, device, push));
            }
        }
        Ok(out)
    }

    async fn record_last_seen(
        &self,
        seen: Vec<(IdentityKey, DeviceId, u64)>,
    ) -> Result<(), StoreError> {
        // The latest time per device, in key order (the order the rows are locked in).
        let mut latest: BTreeMap<(IdentityKey, DeviceId), u64> = BTreeMap::new();
        for (identity, id, at) in seen {
            let t = latest.entry((identity, id)).or_default();
            *t = (*t).max(at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let identities: Vec<&[u8]> = latest.keys().map(|(i, _)| i.as_slice()).collect();
        let ids: Vec<&[u8]> = latest.keys().map(|(_, d)| d.as_slice()).collect();
        let times: Vec<i64> = latest.values().map(|&t| int(t)).collect();
        let (identities, ids, times) = (&identities, &ids, &times);
        self.transact("record_last_seen", |tx, _| {
            Box::pin(async move {
                query(
                    tx,
                    "SELECT 1 FROM devices d \
                     JOIN UNNEST($1::bytea[], $2::bytea[]) AS u(identity_key, device_id) \
                     ON d.identity_key = u.identity_key AND d.device_id = u.device_id \
                     ORDER BY d.identity_key, d.device_id FOR UPDATE OF d",
                    &[identities, ids],
                )
                .await?;
                execute(
                    tx,
                    "UPDATE devices AS d SET last_seen_ms = u.at \
                     FROM UNNEST($1::bytea[], $2::bytea[], $3::int8[]) AS u(identity_key, device_id, at) \
                     WHERE d.identity_key = u.identity_key AND d.device_id = u.device_id \
                     AND d.revoked_at_ms IS NULL AND d.last_seen_ms < u.at",
                    &[identities, ids, times],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }
}

/// Removes the devices of a deleted account.
pub(super) async fn delete_device_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    execute(
        tx,
        "DELETE FROM devices WHERE identity_key = $1",
        &[&account.identity_key.as_slice()],
    )
    .await?;
    Ok(())
}

/// Refuses a session for a revoked device id (the caller holds the account row's lock, so a
/// revocation cannot run between this check and the session's insert).
pub(super) async fn check_device_usable(
    tx: &Tx<'_>,
    session: &SessionRecord,
) -> Result<(), PgError> {
    let Some(id) = session
        .device_id
        .as_deref()
        .and_then(|d| <DeviceId>::try_from(d).ok())
    else {
        return Ok(());
    };
    match device(tx, &session.identity_key, &id, false).await? {
        Some(d) if d.revoked_at_ms.is_some() => Err(StoreError::InvalidArgument(
            "this device id was revoked (RevokeDevice) and cannot log in again; log in with a new device id".into(),
        )
        .into()),
        _ => Ok(()),
    }
}
