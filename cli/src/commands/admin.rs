//! `report` (any user, to the administrators) and `admin`: bans, reports, the account list and
//! the storage figures, for the usernames the server lists with `--admin`.

use anyhow::bail;
use bytes::Bytes;
use qpq_client::profile::to_hex;
use qpq_client::proto;
use serde_json::json;

use crate::args::AdminCommand;
use crate::context::{Ctx, identity_of, optional_channel_id, recipient, rpc};
use crate::format::{print_table, size_text, time_text, until_text};

fn category(text: &str) -> anyhow::Result<proto::ReportCategory> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "spam" => proto::ReportCategory::Spam,
        "abuse" => proto::ReportCategory::Abuse,
        "illegal" => proto::ReportCategory::Illegal,
        "other" => proto::ReportCategory::Other,
        _ => bail!("unknown category `{text}`: use spam, abuse, illegal or other"),
    })
}

fn category_name(value: i32) -> &'static str {
    match proto::ReportCategory::try_from(value) {
        Ok(proto::ReportCategory::Spam) => "spam",
        Ok(proto::ReportCategory::Abuse) => "abuse",
        Ok(proto::ReportCategory::Illegal) => "illegal",
        _ => "other",
    }
}

/// Reports `user` (and optionally one of their messages) to the administrators.
pub(crate) async fn report(
    ctx: &Ctx,
    user: &str,
    seq: u64,
    channel: Option<String>,
    category_text: &str,
    reason: String,
    evidence: Option<String>,
) -> anyhow::Result<()> {
    let category = category(category_text)?;
    let channel = optional_channel_id(channel.as_deref())?;
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    let reported = identity_of(&client, &token, user).await?;
    let made = client
        .report_message(proto::ReportMessageRequest {
            session_token: token,
            channel_id: channel,
            reported_identity_key: Bytes::copy_from_slice(&reported),
            seq,
            category: category as i32,
            reason,
            evidence: evidence
                .map(|e| Bytes::from(e.into_bytes()))
                .unwrap_or_default(),
        })
        .await
        .map_err(rpc)?;
    let id = to_hex(&made.report_id);
    ctx.print(json!({"report_id": id, "reported": user}), || {
        format!("reported {user} to the administrators (report {id})")
    });
    Ok(())
}

/// Runs one `admin` subcommand.
pub(crate) async fn run(ctx: &Ctx, command: AdminCommand) -> anyhow::Result<()> {
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    match command {
        AdminCommand::Ban {
            user,
            channel,
            reason,
            duration,
        } => {
            let channel_bytes = optional_channel_id(channel.as_deref())?;
            let banned = client
                .ban_user(proto::BanUserRequest {
                    session_token: token,
                    target: Some(recipient(&user)),
                    channel_id: channel_bytes,
                    reason,
                    duration_secs: duration,
                })
                .await
                .map_err(rpc)?;
            let scope = channel
                .as_ref()
                .map_or("server-wide".to_owned(), |c| format!("from channel {c}"));
            ctx.print(
                json!({"banned": user, "channel_id": channel, "expires_at_unix_ms": banned.expires_at_unix_ms}),
                || {
                    let until = if banned.expires_at_unix_ms == 0 {
                        "permanently".to_owned()
                    } else {
                        format!("for {duration} s")
                    };
                    format!("banned {user} {scope} {until}")
                },
            );
        }
        AdminCommand::Unban { user, channel } => {
            let channel_bytes = optional_channel_id(channel.as_deref())?;
            let unbanned = client
                .unban_user(proto::UnbanUserRequest {
                    session_token: token,
                    target: Some(recipient(&user)),
                    channel_id: channel_bytes,
                })
                .await
                .map_err(rpc)?;
            ctx.print(
                json!({"unbanned": user, "channel_id": channel, "was_banned": unbanned.was_banned}),
                || {
                    if unbanned.was_banned {
                        format!("lifted the ban on {user}")
                    } else {
                        format!("{user} was not banned; nothing changed")
                    }
                },
            );
        }
        AdminCommand::Reports { limit } => {
            let page = client
                .list_reports(proto::ListReportsRequest {
                    session_token: token,
                    limit,
                    cursor: Bytes::new(),
                })
                .await
                .map_err(rpc)?;
            for r in &page.reports {
                ctx.print(
                    json!({
                        "report_id": to_hex(&r.report_id),
                        "reporter": r.reporter_username,
                        "reported": r.reported_username,
                        "reported_identity_key": to_hex(&r.reported_identity_key),
                        "channel_id": (!r.channel_id.is_empty()).then(|| to_hex(&r.channel_id)),
                        "seq": r.seq,
                        "category": category_name(r.category),
                        "reason": r.reason,
                        "evidence_utf8": std::str::from_utf8(&r.evidence).ok(),
                        "created_at_unix_ms": r.created_at_unix_ms,
                    }),
                    || {
                        format!(
                            "{} {}: {} reported {} ({}): {}",
                            to_hex(&r.report_id),
                            time_text(r.created_at_unix_ms),
                            r.reporter_username,
                            r.reported_username,
                            category_name(r.category),
                            if r.reason.is_empty() {
                                "(no reason given)"
                            } else {
                                &r.reason
                            }
                        )
                    },
                );
            }
            if !ctx.json {
                if page.reports.is_empty() {
                    println!("(no reports)");
                } else if !page.next_cursor.is_empty() {
                    println!("(more reports: raise --limit)");
                }
            }
        }
        AdminCommand::Bans { channel } => {
            let page = client
                .list_banned(proto::ListBannedRequest {
                    session_token: token,
                    channel_id: optional_channel_id(channel.as_deref())?,
                    limit: 0,
                    cursor: Bytes::new(),
                })
                .await
                .map_err(rpc)?;
            for b in &page.bans {
                ctx.print(
                    json!({
                        "username": b.username,
                        "identity_key": to_hex(&b.identity_key),
                        "channel_id": (!b.channel_id.is_empty()).then(|| to_hex(&b.channel_id)),
                        "reason": b.reason,
                        "expires_at_unix_ms": b.expires_at_unix_ms,
                    }),
                    || {
                        format!(
                            "{} {}{}",
                            b.username,
                            if b.channel_id.is_empty() {
                                "server-wide".to_owned()
                            } else {
                                format!("from channel {}", to_hex(&b.channel_id))
                            },
                            if b.reason.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", b.reason)
                            }
                        )
                    },
                );
            }
            if !ctx.json && page.bans.is_empty() {
                println!("(no bans)");
            }
        }
        AdminCommand::Users { after, limit } => {
            let page = client
                .list_users(proto::ListUsersRequest {
                    session_token: token,
                    limit,
                    after: after.clone(),
                })
                .await
                .map_err(rpc)?;
            print_users(ctx, &page, &after, limit);
        }
        AdminCommand::Stats => {
            let stats = client
                .storage_stats(proto::StorageStatsRequest {
                    session_token: token,
                })
                .await
                .map_err(rpc)?;
            print_stats(ctx, &stats);
        }
    }
    Ok(())
}

fn print_users(ctx: &Ctx, page: &proto::ListUsersResponse, after: &str, limit: u32) {
    if ctx.json {
        for u in &page.users {
            println!(
                "{}",
                json!({
                    "username": u.username,
                    "identity_key": to_hex(&u.identity_key),
                    "created_at_unix_ms": u.created_at_unix_ms,
                    "banned": u.banned,
                    "banned_until_unix_ms": u.banned_until_unix_ms,
                    "queued_messages": u.queued_messages,
                    "queued_bytes": u.queued_bytes,
                    "devices": u.devices,
                    "online": u.online,
                })
            );
        }
        if !page.next_after.is_empty() {
            println!("{}", json!({"next_after": page.next_after}));
        }
        return;
    }
    if page.users.is_empty() {
        if after.is_empty() {
            println!("(no users)");
        } else {
            println!("(no users after {after})");
        }
        return;
    }
    let mut rows = vec![
        [
            "USER",
            "IDENTITY KEY",
            "REGISTERED",
            "QUEUED",
            "DEVICES",
            "STATE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for u in &page.users {
        let key = to_hex(&u.identity_key);
        let state = match (u.banned, u.banned_until_unix_ms) {
            (true, 0) => "banned permanently".to_owned(),
            (true, until) => format!("banned, ends {}", until_text(until)),
            (false, _) if u.online => "online".to_owned(),
            (false, _) => "offline".to_owned(),
        };
        rows.push(vec![
            u.username.clone(),
            format!("{}…", key.get(..16).unwrap_or(&key)),
            time_text(u.created_at_unix_ms),
            format!("{} ({})", u.queued_messages, size_text(u.queued_bytes)),
            u.devices.to_string(),
            state,
        ]);
    }
    print_table(&rows);
    if !page.next_after.is_empty() {
        let limit = if limit == 0 {
            String::new()
        } else {
            format!(" --limit {limit}")
        };
        println!(
            "(more users: qpq admin users --after {}{limit})",
            page.next_after
        );
    }
}

fn print_stats(ctx: &Ctx, s: &proto::StorageStatsResponse) {
    let ms = |micros: u64| format!("{:.2} ms", micros as f64 / 1000.0);
    ctx.print(
        json!({
            "accounts": s.accounts,
            "live_sessions": s.live_sessions,
            "online_users": s.online_users,
            "queued_messages": s.queued_messages,
            "queued_bytes": s.queued_bytes,
            "nonempty_queues": s.nonempty_queues,
            "blobs": s.blobs,
            "blob_bytes": s.blob_bytes,
            "channels": s.channels,
            "kt_log_size": s.kt_log_size,
            "federation_outbox_messages": s.federation_outbox_messages,
            "federation_outbox_bytes": s.federation_outbox_bytes,
            "disk_bytes": s.disk_bytes,
            "journal_syncs": s.journal_syncs,
            "mean_sync_micros": s.mean_sync_micros,
            "last_sync_micros": s.last_sync_micros,
        }),
        || {
            let rows: [(&str, String); 10] = [
                ("accounts", s.accounts.to_string()),
                ("live sessions", s.live_sessions.to_string()),
                ("online users", s.online_users.to_string()),
                (
                    "queued messages",
                    format!(
                        "{} ({}) in {} queue(s)",
                        s.queued_messages,
                        size_text(s.queued_bytes),
                        s.nonempty_queues
                    ),
                ),
                (
                    "blobs",
                    format!("{} ({})", s.blobs, size_text(s.blob_bytes)),
                ),
                ("channels", s.channels.to_string()),
                ("kt log size", format!("{} leaves", s.kt_log_size)),
                (
                    "federation outbox",
                    format!(
                        "{} message(s) ({})",
                        s.federation_outbox_messages,
                        size_text(s.federation_outbox_bytes)
                    ),
                ),
                ("disk use", size_text(s.disk_bytes)),
                (
                    "journal syncs",
                    format!(
                        "{} (mean {}, latest {})",
                        s.journal_syncs,
                        ms(s.mean_sync_micros),
                        ms(s.last_sync_micros)
                    ),
                ),
            ];
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            rows.iter()
                .map(|(k, v)| format!("{k:<width$}  {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
}
