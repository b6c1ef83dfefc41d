//! [`ModerationStore`] on PostgreSQL.
//!
//! Reports are rows of `reports`, bans rows of `server_bans` and `channel_bans`. An expired
//! ban stays stored until replaced or lifted; every reader ignores it. A server-wide ban
//! locks the banned account's row (`FOR UPDATE`) before it deletes the sessions, and
//! `put_session` share-locks that row before it asks [`refuse_if_banned`], so a login racing
//! a ban either ends before the ban (and its session is deleted with the others) or sees the
//! ban. A per-channel ban runs under the channel row's lock, like every membership change.
//!
//! A listing cursor is the embedded store's: for reports `created_at(8) ‖ id(16)`, for bans
//! `scope(1: 0 server, 1 channel) ‖ identity(32)` or `‖ channel(16) ‖ identity(32)`.

use std::collections::HashSet;

use tokio_postgres::Row;

use super::channels::{identities_in, lock_channel, member_in, remove_from_channel};
use super::{
    PgError, PgStore, SESSION_COLUMNS, Tx, execute, fixed, int, query, query_opt, session_of, text,
    uint,
};
use crate::store::moderation::{may_ban_in_channel, server_ban_refusal};
use crate::store::{
    Actor, BanOutcome, BanRecord, BanScope, Channel, ChannelId, IdentityKey, ModerationStore, Page,
    Refusal, ReportRecord, StoreError,
};

/// Length of a report cursor: `created_at(8) ‖ id(16)`.
const REPORT_CURSOR_LEN: usize = 24;

/// Longest username and report reason (the embedded store's record bound).
const MAX_TEXT: usize = u16::MAX as usize;

const REPORT_COLUMNS: &str = "created_at_ms, id, reporter, reporter_username, reported, \
     reported_username, channel_id, seq, category, reason, evidence";

const BAN_COLUMNS: &str = "identity_key, username, reason, banned_by, created_at_ms, expires_at_ms";

/// Whether a ban row is in force at `$n` (a `BIGINT` of Unix ms).
fn active(now_param: &str) -> String {
    format!("(expires_at_ms = 0 OR expires_at_ms > {now_param})")
}

fn fits(s: &str) -> Result<(), StoreError> {
    if s.len() > MAX_TEXT {
        return Err(StoreError::InvalidArgument(
            "text longer than 65535 bytes".into(),
        ));
    }
    Ok(())
}

fn report_of(row: &Row) -> Result<ReportRecord, StoreError> {
    let id: Vec<u8> = row.get("id");
    let reporter: Vec<u8> = row.get("reporter");
    let reported: Vec<u8> = row.get("reported");
    let channel: Option<Vec<u8>> = row.get("channel_id");
    let category: i16 = row.get("category");
    Ok(ReportRecord {
        id: fixed(&id, "report id")?,
        reporter: fixed(&reporter, "reporter identity key")?,
        reporter_username: row.get("reporter_username"),
        reported: fixed(&reported, "reported identity key")?,
        reported_username: row.get("reported_username"),
        channel: channel
            .map(|c| fixed(&c, "report channel id").map(ChannelId))
            .transpose()?,
        seq: uint(row.get("seq"))?,
        category: u8::try_from(category)
            .map_err(|_| StoreError::Corrupt(format!("report category {category} is invalid")))?,
        reason: text(row.get("reason"), "report reason")?,
        evidence: bytes::Bytes::from(row.get::<_, Vec<u8>>("evidence")),
        created_at_ms: uint(row.get("created_at_ms"))?,
    })
}

fn ban_of(scope: BanScope, row: &Row) -> Result<BanRecord, StoreError> {
    let identity: Vec<u8> = row.get("identity_key");
    let banned_by: Vec<u8> = row.get("banned_by");
    Ok(BanRecord {
        scope,
        identity: fixed(&identity, "banned identity key")?,
        username: row.get("username"),
        reason: text(row.get("reason"), "ban reason")?,
        banned_by: fixed(&banned_by, "banning identity key")?,
        created_at_ms: uint(row.get("created_at_ms"))?,
        expires_at_ms: uint(row.get("expires_at_ms"))?,
    })
}

/// A ban row of either table (the listing's union: `scope` 0 or 1, `channel_id` NULL for 0).
fn listed_ban_of(row: &Row) -> Result<BanRecord, StoreError> {
    let scope: i16 = row.get("scope");
    let scope = match scope {
        0 => BanScope::Server,
        _ => {
            let channel: Option<Vec<u8>> = row.get("channel_id");
            let channel = channel
                .ok_or_else(|| StoreError::Corrupt("channel ban without a channel".into()))?;
            BanScope::Channel(ChannelId(fixed(&channel, "ban channel id")?))
        }
    };
    ban_of(scope, row)
}

/// Which of `identities` are banned from `channel` at `now_ms` (read under the channel's
/// lock, so no ban of it is added or lifted meanwhile).
pub(super) async fn channel_bans_among(
    tx: &Tx<'_>,
    channel: &ChannelId,
    identities: &[&[u8]],
    now_ms: u64,
) -> Result<HashSet<IdentityKey>, PgError> {
    let rows = query(
        tx,
        &format!(
            "SELECT identity_key FROM channel_bans WHERE channel_id = $1 AND identity_key = ANY($2) AND {}",
            active("$3")
        ),
        &[&channel.0.as_slice(), &identities, &int(now_ms)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let v: Vec<u8> = r.get("identity_key");
            fixed(&v, "banned identity key")
        })
        .collect::<Result<_, _>>()?)
}

/// Deletes every ban of a channel being deleted (under its lock).
pub(super) async fn delete_channel_bans(tx: &Tx<'_>, channel: &ChannelId) -> Result<(), PgError> {
    execute(
        tx,
        "DELETE FROM channel_bans WHERE channel_id = $1",
        &[&channel.0.as_slice()],
    )
    .await?;
    Ok(())
}

/// Whether `actor` may ban `target` from the locked `channel` (or lift its ban, `lifting`).
async fn may_ban_in(
    tx: &Tx<'_>,
    channel: &Channel,
    actor: Actor,
    target: &IdentityKey,
    lifting: bool,
) -> Result<Result<(), Refusal>, PgError> {
    let actor_role = member_in(tx, &channel.id, &actor.identity)
        .await?
        .map(|m| m.role);
    let target_role = member_in(tx, &channel.id, target).await?.map(|m| m.role);
    Ok(may_ban_in_channel(
        actor,
        actor_role,
        target,
        target_role,
        &channel.owner,
        lifting,
    ))
}

impl ModerationStore for PgStore {
    async fn add_report(&self, report: ReportRecord) -> Result<(), StoreError> {
        fits(&report.reporter_username)?;
        fits(&report.reported_username)?;
        fits(&report.reason)?;
        let r = &report;
        self.transact("add_report", |tx, _| {
            Box::pin(async move {
                let channel = r.channel.map(|c| c.0.to_vec());
                execute(
                    tx,
                    &format!(
                        "INSERT INTO reports ({REPORT_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT (created_at_ms, id) DO UPDATE SET reporter = EXCLUDED.reporter, \
                         reporter_username = EXCLUDED.reporter_username, reported = EXCLUDED.reported, \
                         reported_username = EXCLUDED.reported_username, channel_id = EXCLUDED.channel_id, \
                         seq = EXCLUDED.seq, category = EXCLUDED.category, reason = EXCLUDED.reason, \
                         evidence = EXCLUDED.evidence"
                    ),
                    &[
                        &int(r.created_at_ms),
                        &r.id.as_slice(),
                        &r.reporter.as_slice(),
                        &r.reporter_username,
                        &r.reported.as_slice(),
                        &r.reported_username,
                        &channel,
                        &int(r.seq),
                        &i16::from(r.category),
                        &r.reason.as_bytes(),
                        &r.evidence.as_ref(),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn reports(&self, cursor: &[u8], limit: usize) -> Result<Page<ReportRecord>, StoreError> {
        let (after_ms, after_id): (i64, &[u8]) = match cursor.len() {
            0 => (i64::MIN, &[]),
            REPORT_CURSOR_LEN => {
                let (at, id) = cursor.split_at(8);
                (int(u64::from_be_bytes(fixed(at, "cursor")?)), id)
            }
            n => {
                return Err(StoreError::InvalidArgument(format!(
                    "cursor must be a next_cursor from ListReports ({REPORT_CURSOR_LEN} bytes), got {n} bytes"
                )));
            }
        };
        let take = int(limit as u64).saturating_add(1);
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    &format!(
                        "SELECT {REPORT_COLUMNS} FROM reports WHERE (created_at_ms, id) > ($1, $2) \
                         ORDER BY created_at_ms, id LIMIT $3"
                    ),
                    &[&after_ms, &after_id, &take],
                )
                .await?;
                let mut items: Vec<ReportRecord> = Vec::new();
                let mut next_cursor = Vec::new();
                for row in &rows {
                    if items.len() >= limit {
                        if let Some(last) = items.last() {
                            next_cursor =
                                [&last.created_at_ms.to_be_bytes()[..], &last.id].concat();
                        }
                        break;
                    }
                    items.push(report_of(row)?);
                }
                Ok(Page { items, next_cursor })
            })
        })
        .await
    }

    async fn ban(
        &self,
        ban: BanRecord,
        actor: Actor,
    ) -> Result<Result<BanOutcome, Refusal>, StoreError> {
        let b = &ban;
        self.transact("ban", |tx, _| {
            Box::pin(async move {
                let identity = b.identity.as_slice();
                match b.scope {
                    BanScope::Server => {
                        if !actor.server_admin {
                            return Ok(Err(server_ban_refusal()));
                        }
                        fits(&b.username)?;
                        // The account row first: a put_session holding it (FOR SHARE) commits
                        // before the sessions below are deleted, or waits and sees the ban.
                        query_opt(
                            tx,
                            "SELECT 1 FROM accounts WHERE identity_key = $1 FOR UPDATE",
                            &[&identity],
                        )
                        .await?;
                        execute(
                            tx,
                            &format!(
                                "INSERT INTO server_bans ({BAN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                                 ON CONFLICT (identity_key) DO UPDATE SET username = EXCLUDED.username, \
                                 reason = EXCLUDED.reason, banned_by = EXCLUDED.banned_by, \
                                 created_at_ms = EXCLUDED.created_at_ms, expires_at_ms = EXCLUDED.expires_at_ms"
                            ),
                            &[
                                &identity,
                                &b.username,
                                &b.reason.as_bytes(),
                                &b.banned_by.as_slice(),
                                &int(b.created_at_ms),
                                &int(b.expires_at_ms),
                            ],
                        )
                        .await?;
                        let sessions = query(
                            tx,
                            &format!(
                                "DELETE FROM sessions WHERE identity_key = $1 RETURNING {SESSION_COLUMNS}"
                            ),
                            &[&identity],
                        )
                        .await?
                        .iter()
                        .map(session_of)
                        .collect::<Result<Vec<_>, _>>()?;
                        Ok(Ok(BanOutcome {
                            sessions,
                            ..BanOutcome::default()
                        }))
                    }
                    BanScope::Channel(id) => {
                        let Some(channel) = lock_channel(tx, &id).await? else {
                            return Ok(Err(Refusal::NoChannel));
                        };
                        if let Err(refusal) = may_ban_in(tx, &channel, actor, &b.identity, false).await? {
                            return Ok(Err(refusal));
                        }
                        fits(&b.username)?;
                        execute(
                            tx,
                            &format!(
                                "INSERT INTO channel_bans (channel_id, {BAN_COLUMNS}) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                                 ON CONFLICT (channel_id, identity_key) DO UPDATE SET username = EXCLUDED.username, \
                                 reason = EXCLUDED.reason, banned_by = EXCLUDED.banned_by, \
                                 created_at_ms = EXCLUDED.created_at_ms, expires_at_ms = EXCLUDED.expires_at_ms"
                            ),
                            &[
                                &id.0.as_slice(),
                                &identity,
                                &b.username,
                                &b.reason.as_bytes(),
                                &b.banned_by.as_slice(),
                                &int(b.created_at_ms),
                                &int(b.expires_at_ms),
                            ],
                        )
                        .await?;
                        let mut outcome = BanOutcome::default();
                        if let Some(member) = member_in(tx, &id, &b.identity).await? {
                            // Never the owner (refused above), so nobody inherits anything.
                            remove_from_channel(tx, &channel, &member).await?;
                            outcome.removed_from_channel = true;
                        }
                        outcome.remaining = identities_in(tx, &id).await?;
                        Ok(Ok(outcome))
                    }
                }
            })
        })
        .await
    }

    async fn unban(
        &self,
        scope: BanScope,
        identity: &IdentityKey,
        actor: Actor,
    ) -> Result<Result<bool, Refusal>, StoreError> {
        let now = int(self.now());
        self.transact("unban", |tx, _| {
            Box::pin(async move {
                let lifted = match scope {
                    BanScope::Server => {
                        if !actor.server_admin {
                            return Ok(Err(server_ban_refusal()));
                        }
                        query_opt(
                            tx,
                            "DELETE FROM server_bans WHERE identity_key = $1 RETURNING expires_at_ms",
                            &[&identity.as_slice()],
                        )
                        .await?
                    }
                    BanScope::Channel(id) => {
                        let Some(channel) = lock_channel(tx, &id).await? else {
                            return Ok(Err(Refusal::NoChannel));
                        };
                        if let Err(refusal) = may_ban_in(tx, &channel, actor, identity, true).await? {
                            return Ok(Err(refusal));
                        }
                        query_opt(
                            tx,
                            "DELETE FROM channel_bans WHERE channel_id = $1 AND identity_key = $2 \
                             RETURNING expires_at_ms",
                            &[&id.0.as_slice(), &identity.as_slice()],
                        )
                        .await?
                    }
                };
                Ok(Ok(lifted.is_some_and(|r| {
                    let expires: i64 = r.get("expires_at_ms");
                    expires == 0 || expires > now
                })))
            })
        })
        .await
    }

    async fn server_ban(&self, identity: &IdentityKey) -> Result<Option<BanRecord>, StoreError> {
        let now = int(self.now());
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    &format!(
                        "SELECT {BAN_COLUMNS} FROM server_bans WHERE identity_key = $1 AND {}",
                        active("$2")
                    ),
                    &[&identity.as_slice(), &now],
                )
                .await?;
                Ok(row.map(|r| ban_of(BanScope::Server, &r)).transpose()?)
            })
        })
        .await
    }

    async fn bans(
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
        let now = int(self.now());
        let take = int(limit as u64).saturating_add(1);
        let rows = match channel {
            Some(c) => {
                // One channel's bans, after the cursor's identity.
                let after: &[u8] = match cursor.split_first() {
                    None => &[],
                    Some((1, key)) if key.len() == 48 && key.starts_with(&c.0) => &key[16..],
                    Some(_) => return Err(bad_cursor()),
                };
                self.read(|db, _| {
                    Box::pin(async move {
                        query(
                            db,
                            &format!(
                                "SELECT 1::int2 AS scope, channel_id, {BAN_COLUMNS} FROM channel_bans \
                                 WHERE channel_id = $1 AND identity_key > $2 AND {} \
                                 ORDER BY identity_key LIMIT $4",
                                active("$3")
                            ),
                            &[&c.0.as_slice(), &after, &now, &take],
                        )
                        .await
                    })
                })
                .await?
            }
            None => {
                // Server-wide bans after the cursor, then per channel ones (or only those,
                // after a per channel cursor).
                let (server, server_after, channel_after, identity_after): (
                    bool,
                    &[u8],
                    &[u8],
                    &[u8],
                ) = match cursor.split_first() {
                    None => (true, &[], &[], &[]),
                    Some((0, key)) if key.len() == 32 => (true, key, &[], &[]),
                    Some((1, key)) if key.len() == 48 => (false, &[], &key[..16], &key[16..]),
                    Some(_) => return Err(bad_cursor()),
                };
                self.read(|db, _| {
                    Box::pin(async move {
                        query(
                            db,
                            &format!(
                                "(SELECT 0::int2 AS scope, NULL::bytea AS channel_id, {BAN_COLUMNS} \
                                 FROM server_bans WHERE $1 AND identity_key > $2 AND {active} \
                                 ORDER BY identity_key LIMIT $6) \
                                 UNION ALL \
                                 (SELECT 1::int2 AS scope, channel_id, {BAN_COLUMNS} FROM channel_bans \
                                 WHERE (channel_id, identity_key) > ($3, $4) AND {active} \
                                 ORDER BY channel_id, identity_key LIMIT $6) \
                                 ORDER BY scope, channel_id, identity_key LIMIT $6",
                                active = active("$5")
                            ),
                            &[&server, &server_after, &channel_after, &identity_after, &now, &take],
                        )
                        .await
                    })
                })
                .await?
            }
        };
        let mut items: Vec<(Vec<u8>, BanRecord)> = Vec::new();
        let mut more = false;
        for row in &rows {
            if items.len() >= limit {
                more = true;
                break;
            }
            let ban = listed_ban_of(row)?;
            let key = match ban.scope {
                BanScope::Server => [&[0u8][..], &ban.identity].concat(),
                BanScope::Channel(c) => [&[1u8][..], &c.0, &ban.identity].concat(),
            };
            items.push((key, ban));
        }
        let next_cursor = match items.last() {
            Some((key, _)) if more => key.clone(),
            _ => Vec::new(),
        };
        Ok(Page {
            items: items.into_iter().map(|(_, b)| b).collect(),
            next_cursor,
        })
    }
}

/// Answers `Banned` when a server-wide ban holds for the identity.
///
/// Whether a timed ban still holds is judged by the database's clock: this hook is not given
/// the store's.
pub(super) async fn refuse_if_banned(
    tx: &Tx<'_>,
    identity: &IdentityKey,
    now_ms: u64,
) -> Result<(), PgError> {
    let row = query_opt(
        tx,
        &format!(
            "SELECT expires_at_ms FROM server_bans WHERE identity_key = $1 AND {}",
            active("$2")
        ),
        &[&identity.as_slice(), &int(now_ms)],
    )
    .await?;
    match row {
        Some(r) => Err(StoreError::Banned {
            until_ms: uint(r.get("expires_at_ms"))?,
        }
        .into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::PgBackend;
    use crate::store::conformance::{ALICE, BOB, Fixture, T0, account, session};
    use crate::store::{Actor, BanRecord, BanScope, ModerationStore, Store, StoreError};

    const ADMIN: Actor = Actor {
        identity: [0xad; 32],
        server_admin: true,
    };

    fn server_ban() -> BanRecord {
        BanRecord {
            scope: BanScope::Server,
            identity: BOB,
            username: "bob".into(),
            reason: "spam".into(),
            banned_by: ALICE,
            created_at_ms: T0,
            expires_at_ms: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_ban_refuses_new_sessions_until_lifted() {
        let f = Fixture::with_alice(&PgBackend).await;
        let s = &f.store;
        s.create_account(account("bob", BOB)).await.unwrap();
        s.ban(server_ban(), ADMIN).await.unwrap().unwrap();
        let refused = s.put_session(session(1, "bob", BOB, T0 + 60_000)).await;
        assert!(
            matches!(refused, Err(StoreError::Banned { until_ms: 0 })),
            "{refused:?}"
        );
        assert_eq!(s.session_by_token_hash(&[1; 32]).await.unwrap(), None);
        assert_eq!(
            s.unban(BanScope::Server, &BOB, ADMIN).await.unwrap(),
            Ok(true)
        );
        s.put_session(session(1, "bob", BOB, T0 + 60_000))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_login_racing_a_server_ban_outlives_it() {
        let f = Fixture::with_alice(&PgBackend).await;
        f.store.create_account(account("bob", BOB)).await.unwrap();
        let mut logins = Vec::new();
        for token in 1..=16u8 {
            let s = f.store.clone();
            logins.push(tokio::spawn(async move {
                s.put_session(session(token, "bob", BOB, T0 + 60_000)).await
            }));
        }
        f.store.ban(server_ban(), ADMIN).await.unwrap().unwrap();
        for login in logins {
            let outcome = login.await.unwrap();
            assert!(
                matches!(outcome, Ok(()) | Err(StoreError::Banned { .. })),
                "{outcome:?}"
            );
        }
        for token in 1..=16u8 {
            assert_eq!(
                f.store.session_by_token_hash(&[token; 32]).await.unwrap(),
                None,
                "session {token} outlived the ban"
            );
        }
    }
}
