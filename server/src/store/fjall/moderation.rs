//! [`ModerationStore`] on fjall.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `reports` | created_at(8) ‖ report_id(16) | `v1 ‖ reporter(32) ‖ reported(32) ‖ has_channel(1) ‖ [channel(16)] ‖ seq(8) ‖ category(1) ‖ reporter_name ‖ reported_name ‖ reason ‖ evidence(rest)`, strings as `len(2) ‖ UTF-8` |
//! | `server_bans` | identity(32) | ban |
//! | `channel_bans` | channel(16) ‖ identity(32) | ban |
//!
//! A ban is `v1 ‖ banned_by(32) ‖ created_at(8) ‖ expires_at(8) ‖ username ‖ reason(rest)`.
//! Expired bans stay stored until replaced or lifted; every reader ignores them. A listing
//! cursor is `scope(1: 0 server, 1 channel) ‖ key of the last ban returned`.

use fjall::OwnedWriteBatch;

use super::{Engine, FjallStore, engine_err};
use crate::store::channels::{Actor, ChannelId, Refusal};
use crate::store::codec::{Reader, V1};
use crate::store::moderation::{
    BanOutcome, BanRecord, BanScope, ModerationStore, Page, ReportRecord, may_ban_in_channel,
    server_ban_refusal,
};
use crate::store::{IdentityKey, StoreError};

pub(super) const REPORTS: &str = "reports";
pub(super) const SERVER_BANS: &str = "server_bans";
pub(super) const CHANNEL_BANS: &str = "channel_bans";

fn put_str(v: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let len = u16::try_from(s.len())
        .map_err(|_| StoreError::InvalidArgument("text longer than 65535 bytes".into()))?;
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    Ok(())
}

fn get_str(r: &mut Reader<'_>) -> Result<String, StoreError> {
    let len = usize::from(r.u16()?);
    String::from_utf8(r.bytes(len)?.to_vec())
        .map_err(|_| StoreError::Corrupt("moderation text is not utf-8".into()))
}

fn encode_report(r: &ReportRecord) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::with_capacity(128 + r.reason.len() + r.evidence.len());
    v.push(V1);
    v.extend_from_slice(&r.reporter);
    v.extend_from_slice(&r.reported);
    match &r.channel {
        Some(c) => {
            v.push(1);
            v.extend_from_slice(&c.0);
        }
        None => v.push(0),
    }
    v.extend_from_slice(&r.seq.to_be_bytes());
    v.push(r.category);
    put_str(&mut v, &r.reporter_username)?;
    put_str(&mut v, &r.reported_username)?;
    put_str(&mut v, &r.reason)?;
    v.extend_from_slice(&r.evidence);
    Ok(v)
}

fn report_key(created_at_ms: u64, id: &[u8; 16]) -> Vec<u8> {
    [&created_at_ms.to_be_bytes()[..], id].concat()
}

fn decode_report(key: &[u8], b: &[u8]) -> Result<ReportRecord, StoreError> {
    let mut k = Reader::new(key);
    let created_at_ms = k.u64()?;
    let id = k.array()?;
    k.finish()?;
    let mut r = Reader::versioned(b, "report")?;
    let reporter = r.array()?;
    let reported = r.array()?;
    let channel = match r.u8()? {
        0 => None,
        1 => Some(ChannelId(r.array()?)),
        _ => return Err(StoreError::Corrupt("report channel flag is invalid".into())),
    };
    let seq = r.u64()?;
    let category = r.u8()?;
    let reporter_username = get_str(&mut r)?;
    let reported_username = get_str(&mut r)?;
    let reason = get_str(&mut r)?;
    Ok(ReportRecord {
        id,
        reporter,
        reporter_username,
        reported,
        reported_username,
        channel,
        seq,
        category,
        reason,
        evidence: bytes::Bytes::copy_from_slice(r.rest()),
        created_at_ms,
    })
}

fn encode_ban(b: &BanRecord) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::with_capacity(64 + b.username.len() + b.reason.len());
    v.push(V1);
    v.extend_from_slice(&b.banned_by);
    v.extend_from_slice(&b.created_at_ms.to_be_bytes());
    v.extend_from_slice(&b.expires_at_ms.to_be_bytes());
    put_str(&mut v, &b.username)?;
    v.extend_from_slice(b.reason.as_bytes());
    Ok(v)
}

fn decode_ban(scope: BanScope, identity: IdentityKey, b: &[u8]) -> Result<BanRecord, StoreError> {
    let mut r = Reader::versioned(b, "ban")?;
    let banned_by = r.array()?;
    let created_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let username = get_str(&mut r)?;
    let reason = String::from_utf8(r.rest().to_vec())
        .map_err(|_| StoreError::Corrupt("ban reason is not utf-8".into()))?;
    Ok(BanRecord {
        scope,
        identity,
        username,
        reason,
        banned_by,
        created_at_ms,
        expires_at_ms,
    })
}

/// A stored ban key and the ban it decodes to.
fn decode_ban_entry(scope_byte: u8, key: &[u8], value: &[u8]) -> Result<BanRecord, StoreError> {
    let corrupt = || StoreError::Corrupt("ban key has the wrong length".into());
    match scope_byte {
        0 => {
            let identity = key.try_into().map_err(|_| corrupt())?;
            decode_ban(BanScope::Server, identity, value)
        }
        _ => {
            if key.len() != 48 {
                return Err(corrupt());
            }
            let channel = ChannelId(key[..16].try_into().map_err(|_| corrupt())?);
            let identity = key[16..].try_into().map_err(|_| corrupt())?;
            decode_ban(BanScope::Channel(channel), identity, value)
        }
    }
}

impl Engine {
    /// The server-wide ban of `identity` in force now, if any.
    pub(super) fn active_server_ban(
        &self,
        identity: &IdentityKey,
    ) -> Result<Option<BanRecord>, StoreError> {
        let Some(v) = self.ks(SERVER_BANS)?.get(identity).map_err(engine_err)? else {
            return Ok(None);
        };
        let ban = decode_ban(BanScope::Server, *identity, &v)?;
        Ok(ban.active_at(self.clock.unix_ms()).then_some(ban))
    }

    /// The ban of `identity` from `channel` in force now, if any.
    pub(super) fn active_channel_ban(
        &self,
        channel: &ChannelId,
        identity: &IdentityKey,
    ) -> Result<Option<BanRecord>, StoreError> {
        let key = [&channel.0[..], identity].concat();
        let Some(v) = self.ks(CHANNEL_BANS)?.get(key).map_err(engine_err)? else {
            return Ok(None);
        };
        let ban = decode_ban(BanScope::Channel(*channel), *identity, &v)?;
        Ok(ban.active_at(self.clock.unix_ms()).then_some(ban))
    }

    /// Adds the removal of every ban of a deleted channel to `batch`.
    pub(super) fn delete_channel_bans(
        &self,
        batch: &mut OwnedWriteBatch,
        channel: &ChannelId,
    ) -> Result<(), StoreError> {
        let bans = self.ks(CHANNEL_BANS)?;
        for guard in bans.prefix(channel.0) {
            batch.remove(bans, guard.key().map_err(engine_err)?.to_vec());
        }
        Ok(())
    }

    /// Whether `actor` may ban `target` (or lift its ban, `lifting`) in `scope`.
    fn may_ban(
        &self,
        scope: BanScope,
        actor: Actor,
        target: &IdentityKey,
        lifting: bool,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let channel = match scope {
            BanScope::Server => {
                return Ok(if actor.server_admin {
                    Ok(())
                } else {
                    Err(server_ban_refusal())
                });
            }
            BanScope::Channel(id) => id,
        };
        let Some(info) = self.channel_get(&channel)? else {
            return Ok(Err(Refusal::NoChannel));
        };
        let actor_role = self.member_get(&channel, &actor.identity)?.map(|m| m.role);
        let target_role = self.member_get(&channel, target)?.map(|m| m.role);
        Ok(may_ban_in_channel(
            actor,
            actor_role,
            target,
            target_role,
            &info.owner,
            lifting,
        ))
    }

    fn ban(
        &self,
        ban: &BanRecord,
        actor: Actor,
    ) -> Result<(Result<BanOutcome, Refusal>, bool), StoreError> {
        if let Err(refusal) = self.may_ban(ban.scope, actor, &ban.identity, false)? {
            return Ok((Err(refusal), false));
        }
        let mut batch = self.db.batch();
        let mut outcome = BanOutcome::default();
        match ban.scope {
            BanScope::Server => {
                batch.insert(
                    self.ks(SERVER_BANS)?,
                    ban.identity.to_vec(),
                    encode_ban(ban)?,
                );
                // Same batch: no session of the banned account survives the ban.
                outcome.sessions = self.remove_sessions_of(&mut batch, &ban.identity)?;
            }
            BanScope::Channel(id) => {
                batch.insert(
                    self.ks(CHANNEL_BANS)?,
                    [&id.0[..], &ban.identity].concat(),
                    encode_ban(ban)?,
                );
                let channel = self.channel_get(&id)?.ok_or(StoreError::NotFound)?;
                let members = self.member_identities(&id)?;
                if let Some(member) = self.member_get(&id, &ban.identity)? {
                    // Never the owner (checked above), so nobody inherits anything.
                    self.remove_from_channel(&mut batch, &channel, &member)?;
                    outcome.removed_from_channel = true;
                }
                outcome.remaining = members.into_iter().filter(|m| *m != ban.identity).collect();
            }
        }
        Ok((Ok(outcome), self.commit(batch)?))
    }

    fn unban(
        &self,
        scope: BanScope,
        identity: &IdentityKey,
        actor: Actor,
    ) -> Result<(Result<bool, Refusal>, bool), StoreError> {
        if let Err(refusal) = self.may_ban(scope, actor, identity, true)? {
            return Ok((Err(refusal), false));
        }
        let (active, ks, key) = match scope {
            BanScope::Server => (
                self.active_server_ban(identity)?,
                self.ks(SERVER_BANS)?,
                identity.to_vec(),
            ),
            BanScope::Channel(id) => (
                self.active_channel_ban(&id, identity)?,
                self.ks(CHANNEL_BANS)?,
                [&id.0[..], identity].concat(),
            ),
        };
        if !ks.contains_key(&key).map_err(engine_err)? {
            return Ok((Ok(false), false));
        }
        let mut batch = self.db.batch();
        batch.remove(ks, key);
        Ok((Ok(active.is_some()), self.commit(batch)?))
    }

    fn reports(&self, cursor: &[u8], limit: usize) -> Result<Page<ReportRecord>, StoreError> {
        let start = match cursor.len() {
            0 => Vec::new(),
            24 => [cursor, &[0]].concat(),
            n => {
                return Err(StoreError::InvalidArgument(format!(
                    "cursor must be a next_cursor from ListReports (24 bytes), got {n} bytes"
                )));
            }
        };
        let mut items = Vec::new();
        let mut next_cursor = Vec::new();
        for guard in self.ks(REPORTS)?.range(start..) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            if items.len() >= limit {
                if let Some(last) = items.last() {
                    let last: &ReportRecord = last;
                    next_cursor = report_key(last.created_at_ms, &last.id);
                }
                break;
            }
            items.push(decode_report(&key, &value)?);
        }
        Ok(Page { items, next_cursor })
    }

    fn bans(
        &self,
        channel: Option<ChannelId>,
        cursor: &[u8],
        limit: usize,
    ) -> Result<Page<BanRecord>, StoreError> {
        let bad_cursor = || {
            StoreError::InvalidArgument(
                "cursor must be a next_cursor from ListBanned for the same channel_id".into(),
            )
        };
        // Where to start: (scope, first key at or after which to read).
        let (mut scope, mut start): (u8, Vec<u8>) = match (cursor.split_first(), channel) {
            (None, None) => (0, Vec::new()),
            (None, Some(c)) => (1, c.0.to_vec()),
            (Some((&s, key)), _) if (s, key.len()) == (0, 32) || (s, key.len()) == (1, 48) => {
                (s, [key, &[0]].concat())
            }
            _ => return Err(bad_cursor()),
        };
        if let Some(c) = channel
            && (scope != 1 || !start.starts_with(&c.0))
        {
            return Err(bad_cursor());
        }
        let now = self.clock.unix_ms();
        let mut items: Vec<(u8, Vec<u8>, BanRecord)> = Vec::new();
        let mut more = false;
        'scopes: while scope <= 1 {
            let ks = self.ks(if scope == 0 {
                SERVER_BANS
            } else {
                CHANNEL_BANS
            })?;
            for guard in ks.range(start.clone()..) {
                let (key, value) = guard.into_inner().map_err(engine_err)?;
                if let Some(c) = channel
                    && !key.starts_with(&c.0)
                {
                    break 'scopes;
                }
                let ban = decode_ban_entry(scope, &key, &value)?;
                if !ban.active_at(now) {
                    continue;
                }
                if items.len() >= limit {
                    more = true;
                    break 'scopes;
                }
                items.push((scope, key.to_vec(), ban));
            }
            scope += 1;
            start = Vec::new();
        }
        let next_cursor = match items.last() {
            Some((s, key, _)) if more => [&[*s][..], key].concat(),
            _ => Vec::new(),
        };
        Ok(Page {
            items: items.into_iter().map(|(_, _, b)| b).collect(),
            next_cursor,
        })
    }
}

impl ModerationStore for FjallStore {
    async fn add_report(&self, report: ReportRecord) -> Result<(), StoreError> {
        let key = report_key(report.created_at_ms, &report.id);
        let value = encode_report(&report)?;
        self.write(move |e| {
            let mut batch = e.db.batch();
            batch.insert(e.ks(REPORTS)?, key, value);
            Ok(((), e.commit(batch)?))
        })
        .await
    }

    async fn reports(&self, cursor: &[u8], limit: usize) -> Result<Page<ReportRecord>, StoreError> {
        let cursor = cursor.to_vec();
        self.blocking(move |e| e.reports(&cursor, limit)).await
    }

    async fn ban(
        &self,
        ban: BanRecord,
        actor: Actor,
    ) -> Result<Result<BanOutcome, Refusal>, StoreError> {
        self.write(move |e| e.ban(&ban, actor)).await
    }

    async fn unban(
        &self,
        scope: BanScope,
        identity: &IdentityKey,
        actor: Actor,
    ) -> Result<Result<bool, Refusal>, StoreError> {
        let identity = *identity;
        self.write(move |e| e.unban(scope, &identity, actor)).await
    }

    async fn server_ban(&self, identity: &IdentityKey) -> Result<Option<BanRecord>, StoreError> {
        self.inline(|e| e.active_server_ban(identity))
    }

    async fn bans(
        &self,
        channel: Option<ChannelId>,
        cursor: &[u8],
        limit: usize,
    ) -> Result<Page<BanRecord>, StoreError> {
        let cursor = cursor.to_vec();
        self.blocking(move |e| e.bans(channel, &cursor, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_and_ban_values_round_trip() {
        let report = ReportRecord {
            id: [4; 16],
            reporter: [1; 32],
            reporter_username: "alice".into(),
            reported: [2; 32],
            reported_username: "mallory".into(),
            channel: Some(ChannelId([3; 16])),
            seq: 12,
            category: 2,
            reason: "threats".into(),
            evidence: bytes::Bytes::from_static(b"quoted"),
            created_at_ms: 99,
        };
        let key = report_key(99, &[4; 16]);
        let v = encode_report(&report).unwrap();
        assert_eq!(decode_report(&key, &v).unwrap(), report);
        assert!(decode_report(&key, &v[..40]).is_err());
        let ban = BanRecord {
            scope: BanScope::Channel(ChannelId([3; 16])),
            identity: [2; 32],
            username: "mallory".into(),
            reason: "spam".into(),
            banned_by: [1; 32],
            created_at_ms: 5,
            expires_at_ms: 0,
        };
        let key = [&[3u8; 16][..], &[2u8; 32]].concat();
        assert_eq!(
            decode_ban_entry(1, &key, &encode_ban(&ban).unwrap()).unwrap(),
            ban
        );
        assert!(ban.active_at(u64::MAX));
        let timed = BanRecord {
            expires_at_ms: 10,
            ..ban
        };
        assert!(timed.active_at(9) && !timed.active_at(10));
    }
}
