//! Moderation (420-424): reports and bans.
//!
//! Server administrators are the usernames in the configuration (`--admin`, `QPQ_ADMINS`).
//! ListReports and ListBanned are `admin` methods (the authenticator refuses others); BanUser
//! and UnbanUser are `session` methods whose permission depends on the scope, checked in the
//! store together with the change: a server-wide ban is for server admins and ends the user's
//! sessions in the same write (login then fails); a channel ban is for the channel's owner
//! and admins (or a server admin) and removes the member, who cannot be added back.

use bytes::Bytes;
use qpq_runtime::{Admin, Ctx, Session, Status};
use qpq_schema::{ModerationService, QpqPush, proto};
use rand::RngCore;
use rand::rngs::OsRng;

use crate::api::channel::{channel_id, optional_channel_id, refusal};
use crate::api::keys::identity_field;
use crate::auth::identity_of;
use crate::store::{BanRecord, BanScope, ChannelId, IdentityKey, Refusal, ReportRecord, Store};
use crate::{Messenger, errors};

/// Longest report or ban reason, in bytes.
const MAX_REASON: usize = 1024;
/// Largest disclosed evidence, in bytes.
const MAX_EVIDENCE: usize = 32 << 10;
/// Listing page size when the request says 0.
const DEFAULT_PAGE: usize = 50;
/// Largest listing page.
const MAX_PAGE: usize = 500;

fn page_size(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn check_reason(reason: &str) -> Result<(), Status> {
    if reason.len() > MAX_REASON {
        return Err(Status::bad_request(format!(
            "reason is {} bytes; at most {MAX_REASON} are allowed",
            reason.len()
        )));
    }
    Ok(())
}

fn report_to_proto(r: ReportRecord) -> proto::Report {
    proto::Report {
        report_id: Bytes::copy_from_slice(&r.id),
        reporter_identity_key: Bytes::copy_from_slice(&r.reporter),
        reporter_username: r.reporter_username,
        reported_identity_key: Bytes::copy_from_slice(&r.reported),
        reported_username: r.reported_username,
        channel_id: r
            .channel
            .map(|c| Bytes::copy_from_slice(&c.0))
            .unwrap_or_default(),
        seq: r.seq,
        category: i32::from(r.category),
        reason: r.reason,
        evidence: r.evidence,
        created_at_unix_ms: r.created_at_ms,
    }
}

fn ban_to_proto(b: BanRecord) -> proto::Ban {
    proto::Ban {
        identity_key: Bytes::copy_from_slice(&b.identity),
        username: b.username,
        channel_id: match b.scope {
            BanScope::Server => Bytes::new(),
            BanScope::Channel(c) => Bytes::copy_from_slice(&c.0),
        },
        reason: b.reason,
        banned_by_identity_key: Bytes::copy_from_slice(&b.banned_by),
        created_at_unix_ms: b.created_at_ms,
        expires_at_unix_ms: b.expires_at_ms,
    }
}

fn scope_of(channel: Option<ChannelId>) -> BanScope {
    channel.map_or(BanScope::Server, BanScope::Channel)
}

impl<S: Store> Messenger<S> {
    /// The identity key and username a `UserRef` names. With `must_exist` false an
    /// identity key of a deleted account is accepted (its username is then empty).
    async fn user_of(
        &self,
        target: Option<&proto::UserRef>,
        must_exist: bool,
    ) -> Result<(IdentityKey, String), Status> {
        let identity = self.recipient(target).await?;
        let account = self
            .store
            .account_by_identity(&identity)
            .await
            .map_err(errors::store)?;
        match account {
            Some(account) => Ok((identity, account.username)),
            None if !must_exist => Ok((identity, String::new())),
            None => Err(Status::not_found(
                "no account has this identity key on this server",
            )),
        }
    }
}

impl<S: Store> ModerationService for Messenger<S> {
    async fn report_message(
        &self,
        ctx: Ctx<Session>,
        request: proto::ReportMessageRequest,
    ) -> Result<proto::ReportMessageResponse, Status> {
        let reporter = identity_of(ctx.auth())?;
        let channel = optional_channel_id(&request.channel_id)?;
        let reported = identity_field("reported_identity_key", &request.reported_identity_key)?;
        check_reason(&request.reason)?;
        if request.evidence.len() > MAX_EVIDENCE {
            return Err(Status::bad_request(format!(
                "evidence is {} bytes; at most {MAX_EVIDENCE} are allowed",
                request.evidence.len()
            )));
        }
        let category = match proto::ReportCategory::try_from(request.category) {
            Ok(proto::ReportCategory::Unspecified) => proto::ReportCategory::Other,
            Ok(category) => category,
            Err(_) => {
                return Err(Status::bad_request(format!(
                    "category {} is not a ReportCategory (0 to 4)",
                    request.category
                )));
            }
        };
        if reported == reporter {
            return Err(Status::bad_request("you cannot report yourself"));
        }
        if let Some(channel) = channel {
            let member = self
                .store
                .member(&channel, &reporter)
                .await
                .map_err(errors::store)?;
            if member.is_none() {
                let exists = self
                    .store
                    .channel(&channel)
                    .await
                    .map_err(errors::store)?
                    .is_some();
                return Err(if exists {
                    Status::forbidden(
                        "you can report messages only in channels you are a member of",
                    )
                } else {
                    refusal(Refusal::NoChannel)
                });
            }
        }
        let reported_username = self
            .store
            .account_by_identity(&reported)
            .await
            .map_err(errors::store)?
            .map(|a| a.username)
            .ok_or_else(|| {
                Status::not_found("no account has reported_identity_key on this server")
            })?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let report = ReportRecord {
            id,
            reporter,
            reporter_username: ctx.auth().username.clone(),
            reported,
            reported_username,
            channel,
            seq: request.seq,
            category: category as u8,
            reason: request.reason,
            evidence: request.evidence,
            created_at_ms: self.now_ms(),
        };
        self.store.add_report(report).await.map_err(errors::store)?;
        Ok(proto::ReportMessageResponse {
            report_id: Bytes::copy_from_slice(&id),
        })
    }

    async fn ban_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::BanUserRequest,
    ) -> Result<proto::BanUserResponse, Status> {
        let actor = self.actor(ctx.auth())?;
        let channel = optional_channel_id(&request.channel_id)?;
        check_reason(&request.reason)?;
        if channel.is_none() && !actor.server_admin {
            return Err(Status::forbidden(
                "server-wide bans are for server administrators; give channel_id to ban from a channel you own or administer",
            ));
        }
        let (target, username) = self.user_of(request.target.as_ref(), true).await?;
        if target == actor.identity {
            return Err(Status::bad_request("you cannot ban yourself"));
        }
        let now = self.now_ms();
        let expires_at_ms = match request.duration_secs {
            0 => 0,
            secs => now.saturating_add(u64::from(secs) * 1000),
        };
        let ban = BanRecord {
            scope: scope_of(channel),
            identity: target,
            username: username.clone(),
            reason: request.reason,
            banned_by: actor.identity,
            created_at_ms: now,
            expires_at_ms,
        };
        let outcome = self
            .store
            .ban(ban, actor)
            .await
            .map_err(errors::store)?
            .map_err(refusal)?;
        match channel {
            None => {
                let sessions: Vec<[u8; 32]> =
                    outcome.sessions.iter().map(|s| s.token_hash).collect();
                self.end_sessions(&target, &sessions, None, "banned from this server");
                tracing::info!(%username, by = %ctx.auth().username, "user banned server-wide");
            }
            Some(channel) if outcome.removed_from_channel => {
                let mut told = outcome.remaining.clone();
                told.push(target);
                let event = proto::MembershipEvent {
                    channel_id: Bytes::copy_from_slice(&channel.0),
                    kind: proto::MembershipChange::Removed as i32,
                    member_identity_key: Bytes::copy_from_slice(&target),
                    actor_identity_key: Bytes::copy_from_slice(&actor.identity),
                    role: proto::ChannelRole::Unspecified as i32,
                    changed_at_unix_ms: now,
                };
                for recipient in &told {
                    for connection in self.live.connections_of(recipient) {
                        let _ = connection.push().push_membership(&event);
                    }
                }
            }
            Some(_) => {}
        }
        Ok(proto::BanUserResponse {
            expires_at_unix_ms: expires_at_ms,
        })
    }

    async fn unban_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::UnbanUserRequest,
    ) -> Result<proto::UnbanUserResponse, Status> {
        let actor = self.actor(ctx.auth())?;
        let channel = optional_channel_id(&request.channel_id)?;
        let (target, _) = self.user_of(request.target.as_ref(), false).await?;
        let was_banned = self
            .store
            .unban(scope_of(channel), &target, actor)
            .await
            .map_err(errors::store)?
            .map_err(refusal)?;
        Ok(proto::UnbanUserResponse { was_banned })
    }

    async fn list_reports(
        &self,
        _ctx: Ctx<Admin>,
        request: proto::ListReportsRequest,
    ) -> Result<proto::ListReportsResponse, Status> {
        let page = self
            .store
            .reports(&request.cursor, page_size(request.limit))
            .await
            .map_err(errors::store)?;
        Ok(proto::ListReportsResponse {
            reports: page.items.into_iter().map(report_to_proto).collect(),
            next_cursor: Bytes::from(page.next_cursor),
        })
    }

    async fn list_banned(
        &self,
        _ctx: Ctx<Admin>,
        request: proto::ListBannedRequest,
    ) -> Result<proto::ListBannedResponse, Status> {
        let channel = if request.channel_id.is_empty() {
            None
        } else {
            Some(channel_id(&request.channel_id)?)
        };
        let page = self
            .store
            .bans(channel, &request.cursor, page_size(request.limit))
            .await
            .map_err(errors::store)?;
        Ok(proto::ListBannedResponse {
            bans: page.items.into_iter().map(ban_to_proto).collect(),
            next_cursor: Bytes::from(page.next_cursor),
        })
    }
}
