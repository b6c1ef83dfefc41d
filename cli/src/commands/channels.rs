//! `channel create`, `add`, `remove` and `list`: the server's record of MLS groups. The MLS
//! state itself is the user's MLS client's.

use bytes::Bytes;
use qpq_client::profile::to_hex;
use qpq_client::{StatusCode, proto};
use serde_json::json;

use crate::args::ChannelCommand;
use crate::context::{Ctx, channel_id, identity_of, read_file, recipient, rpc};
use crate::format::time_text;

fn role_name(role: i32) -> &'static str {
    match proto::ChannelRole::try_from(role) {
        Ok(proto::ChannelRole::Owner) => "owner",
        Ok(proto::ChannelRole::Admin) => "admin",
        Ok(proto::ChannelRole::Member) => "member",
        _ => "unknown",
    }
}

/// Runs one `channel` subcommand.
pub(crate) async fn run(ctx: &Ctx, command: ChannelCommand) -> anyhow::Result<()> {
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    match command {
        ChannelCommand::Create {
            name,
            members,
            description,
            epoch,
        } => {
            let created = client
                .create_channel(proto::CreateChannelRequest {
                    session_token: token,
                    name: name.clone(),
                    description,
                    initial_members: members.iter().map(|m| recipient(m)).collect(),
                    initial_epoch: epoch,
                    settings: Default::default(),
                })
                .await
                .map_err(rpc)?;
            let id = to_hex(&created.channel_id);
            ctx.print(
                json!({"channel_id": id, "name": name, "members": members, "created_at_unix_ms": created.created_at_unix_ms}),
                || format!("created channel {name}: {id} ({} member(s) besides you)", members.len()),
            );
        }
        ChannelCommand::Add {
            channel,
            user,
            epoch,
            commit,
            welcome,
        } => {
            let id = channel_id(&channel)?;
            let commit = read_file(&commit)?;
            let welcome = read_file(&welcome)?;
            let rotated = client
                .rotate_keys(proto::RotateKeysRequest {
                    session_token: token,
                    channel_id: id,
                    epoch,
                    commit: Bytes::from(commit),
                    welcomes: vec![proto::WelcomeDelivery {
                        recipient: Some(recipient(&user)),
                        welcome: Bytes::from(welcome),
                    }],
                })
                .await
                .map_err(|e| {
                    let conflict = e.code() == Some(StatusCode::Conflict);
                    let error = rpc(e);
                    if conflict {
                        error.context("another commit won: fetch and merge it with your MLS client, make the commit again for the new epoch, then retry")
                    } else {
                        error
                    }
                })?;
            ctx.print(
                json!({"channel_id": channel, "added": user, "new_epoch": rotated.new_epoch}),
                || {
                    format!(
                        "commit accepted: {user} added; the channel is at epoch {}",
                        rotated.new_epoch
                    )
                },
            );
        }
        ChannelCommand::Remove { channel, user } => {
            let id = channel_id(&channel)?;
            let member = identity_of(&client, &token, &user).await?;
            let removed = client
                .remove_member(proto::RemoveMemberRequest {
                    session_token: token,
                    channel_id: id,
                    member_identity_key: Bytes::copy_from_slice(&member),
                })
                .await
                .map_err(rpc)?;
            ctx.print(
                json!({"channel_id": channel, "user": user, "removed": removed.removed}),
                || {
                    if removed.removed {
                        format!("removed {user} from the channel; send the MLS Remove commit with your MLS client")
                    } else {
                        format!("{user} was not a member; nothing changed")
                    }
                },
            );
        }
        ChannelCommand::List { channel } => {
            let id = channel_id(&channel)?;
            let mut cursor = Bytes::new();
            let mut members = Vec::new();
            let info = loop {
                let page = client
                    .list_group_members(proto::ListGroupMembersRequest {
                        session_token: token.clone(),
                        channel_id: id.clone(),
                        limit: 0,
                        cursor,
                    })
                    .await
                    .map_err(rpc)?;
                members.extend(page.members);
                if page.next_cursor.is_empty() {
                    break page.channel.unwrap_or_default();
                }
                cursor = page.next_cursor;
            };
            if ctx.json {
                for m in &members {
                    println!(
                        "{}",
                        json!({"username": m.username, "identity_key": to_hex(&m.identity_key), "role": role_name(m.role), "joined_at_unix_ms": m.joined_at_unix_ms})
                    );
                }
            } else {
                println!(
                    "channel {} ({}), epoch {}, {} member(s):",
                    info.name,
                    channel,
                    info.epoch,
                    members.len()
                );
                for m in &members {
                    println!(
                        "  {:<20} {:<6} {} joined {}",
                        m.username,
                        role_name(m.role),
                        to_hex(&m.identity_key),
                        time_text(m.joined_at_unix_ms)
                    );
                }
            }
        }
    }
    Ok(())
}
