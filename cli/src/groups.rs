//! The `qpq` subcommand groups: keys, channel, blob, device, recovery, kt, report, admin.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use qpq_client::keys::{HybridSecret, sign_hybrid_key, verify_hybrid_key};
use qpq_client::kt::{KtError, verify_audit};
use qpq_client::profile::{DeviceInfo, KtState, SavedTreeHead, from_hex, to_hex};
use qpq_client::{IdentityKey, QpqClient, StatusCode, proto};
use serde_json::json;

use crate::commands::{Ctx, explain, login_session, recipient, rpc};
use crate::progress::Progress;
use crate::{
    AdminCommand, BlobCommand, ChannelCommand, DeviceCommand, KeysCommand, KtCommand,
    RecoveryCommand,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A channel id given on the command line.
fn channel_id(text: &str) -> anyhow::Result<Bytes> {
    match from_hex(text) {
        Some(id) if id.len() == 16 => Ok(Bytes::from(id)),
        _ => bail!(
            "`{text}` is not a channel id: give the 32 hex digits `qpq channel create` printed"
        ),
    }
}

fn optional_channel_id(text: Option<&str>) -> anyhow::Result<Bytes> {
    text.map_or(Ok(Bytes::new()), channel_id)
}

/// The identity key of `user` (a username, resolved by the server, or 64 hex digits).
async fn identity_of(client: &QpqClient, token: &Bytes, user: &str) -> anyhow::Result<[u8; 32]> {
    if let Some(key) = from_hex(user).and_then(|k| <[u8; 32]>::try_from(k).ok()) {
        return Ok(key);
    }
    let found = client
        .resolve_user(proto::ResolveUserRequest {
            session_token: token.clone(),
            username: user.to_owned(),
        })
        .await
        .map_err(rpc)?;
    if !found.found {
        bail!("no user named {user}; check the spelling with `qpq whois {user}`");
    }
    found
        .identity_key
        .as_ref()
        .try_into()
        .map_err(|_| anyhow!("the server answered an identity key of the wrong size for {user}"))
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("could not read {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("could not make {} private", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", path.display()))
}

fn time_text(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "never".to_owned();
    }
    let age = now_ms().saturating_sub(unix_ms) / 1000;
    match age {
        0..60 => format!("{age} s ago"),
        60..3600 => format!("{} min ago", age / 60),
        3600..86_400 => format!("{} h ago", age / 3600),
        _ => format!("{} days ago", age / 86_400),
    }
}

/// How far ahead `unix_ms` is, for people: "in 59 min".
fn until_text(unix_ms: u64) -> String {
    let left = unix_ms.saturating_sub(now_ms()) / 1000;
    match left {
        0..60 => format!("in {left} s"),
        60..3600 => format!("in {} min", left / 60),
        3600..86_400 => format!("in {} h", left / 3600),
        _ => format!("in {} days", left / 86_400),
    }
}

/// A byte count for people: "1.5 KiB".
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Rows printed as columns, each as wide as its widest cell (the last one unpadded).
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

// ------------------------------------------------------------------------------ keys

/// The profile's hybrid key, generated on first use (or when `fresh`).
fn hybrid_key(ctx: &Ctx, fresh: bool) -> anyhow::Result<(HybridSecret, u64, bool)> {
    if !fresh && let Some((secret, created)) = ctx.profile.hybrid_key()? {
        return Ok((secret, created, false));
    }
    let secret = HybridSecret::generate();
    let created = now_ms();
    ctx.profile.save_hybrid_key(&secret, created)?;
    Ok((secret, created, true))
}

pub(crate) async fn keys(ctx: &mut Ctx, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Upload {
            files,
            last_resort,
            new_hybrid,
        } => {
            if last_resort && files.len() != 1 {
                bail!("--last-resort takes exactly one KeyPackage file");
            }
            let packages = files
                .iter()
                .map(|path| Ok((path, read_file(path)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let identity = ctx.profile.identity()?.ok_or_else(|| {
                anyhow!("this profile has no identity key; run `qpq register <username>` first")
            })?;
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let mut depth = None;
            for (path, bytes) in packages {
                let uploaded = client
                    .upload_key_package(proto::UploadKeyPackageRequest {
                        session_token: token.clone(),
                        key_package: Bytes::from(bytes),
                        last_resort,
                    })
                    .await
                    .map_err(|e| {
                        explain(e.into()).context(format!("uploading {}", path.display()))
                    })?;
                depth = Some(uploaded);
            }
            let (secret, created, generated) = hybrid_key(ctx, new_hybrid)?;
            let key = sign_hybrid_key(
                &identity,
                &secret.x25519_public(),
                &secret.mlkem768_public(),
                created,
            );
            client
                .upload_hybrid_key(proto::UploadHybridKeyRequest {
                    session_token: token,
                    key: Some(key),
                })
                .await
                .map_err(rpc)?;
            ctx.print(
                json!({
                    "key_packages_uploaded": files.len(),
                    "queue_depth": depth.as_ref().map(|d| d.queue_depth),
                    "has_last_resort": depth.as_ref().map(|d| d.has_last_resort),
                    "hybrid_x25519_public": to_hex(&secret.x25519_public()),
                    "hybrid_created_at_unix_ms": created,
                    "hybrid_generated": generated,
                }),
                || {
                    let mut text = String::new();
                    if let Some(d) = &depth {
                        text.push_str(&format!(
                            "uploaded {} KeyPackage(s){}; {} single-use queued{}\n",
                            files.len(),
                            if last_resort { " as last resort" } else { "" },
                            d.queue_depth,
                            if d.has_last_resort {
                                ", last resort stored"
                            } else {
                                ", no last resort"
                            }
                        ));
                    }
                    text.push_str(&format!(
                        "uploaded {} hybrid X25519+ML-KEM-768 key (x25519 {})",
                        if generated { "a new" } else { "your" },
                        to_hex(&secret.x25519_public())
                    ));
                    text
                },
            );
        }
        KeysCommand::Fetch {
            user,
            key_package_out,
            hybrid_out,
            hybrid_only,
        } => {
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let identity = identity_of(&client, &token, &user).await?;
            let key_package = if hybrid_only {
                None
            } else {
                let fetched = client
                    .fetch_key_package(proto::FetchKeyPackageRequest {
                        session_token: token.clone(),
                        identity_key: Bytes::copy_from_slice(&identity),
                    })
                    .await
                    .map_err(rpc)?;
                if fetched.key_package.is_empty() {
                    bail!(
                        "{user} has no KeyPackage left; ask them to run `qpq keys upload` (a --last-resort one never runs out)"
                    );
                }
                if let Some(path) = &key_package_out {
                    std::fs::write(path, &fetched.key_package)
                        .with_context(|| format!("could not write {}", path.display()))?;
                }
                Some(fetched)
            };
            let hybrid = client
                .fetch_hybrid_key(proto::FetchHybridKeyRequest {
                    session_token: token,
                    identity_key: Bytes::copy_from_slice(&identity),
                })
                .await
                .map_err(rpc)?;
            let hybrid = match (hybrid.found, hybrid.key) {
                (true, Some(key)) => {
                    if !verify_hybrid_key(&identity, &key) {
                        bail!(
                            "the server's hybrid key for {user} is not signed by their identity key {}: do not use it (check the identity with `qpq kt audit {user}`)",
                            to_hex(&identity)
                        );
                    }
                    if let Some(path) = &hybrid_out {
                        let mut bytes = key.x25519_public.to_vec();
                        bytes.extend_from_slice(&key.mlkem768_public);
                        std::fs::write(path, bytes)
                            .with_context(|| format!("could not write {}", path.display()))?;
                    }
                    Some(key)
                }
                _ => None,
            };
            let kp_json = key_package.as_ref().map(|k| {
                json!({
                    "len": k.key_package.len(),
                    "last_resort": k.last_resort,
                    "hex": if key_package_out.is_none() { Some(to_hex(&k.key_package)) } else { None },
                    "saved_to": key_package_out.as_ref().map(|p| p.display().to_string()),
                })
            });
            let hybrid_json = hybrid.as_ref().map(|k| {
                json!({
                    "x25519_public": to_hex(&k.x25519_public),
                    "mlkem768_public": to_hex(&k.mlkem768_public),
                    "created_at_unix_ms": k.created_at_unix_ms,
                    "signature_verified": true,
                })
            });
            ctx.print(
                json!({"user": user, "identity_key": to_hex(&identity), "key_package": kp_json, "hybrid_key": hybrid_json}),
                || {
                    let mut text = format!("{user}: identity key {}\n", to_hex(&identity));
                    match (&key_package, &key_package_out) {
                        (Some(k), Some(path)) => text.push_str(&format!(
                            "KeyPackage: {} bytes{}, saved to {}\n",
                            k.key_package.len(),
                            if k.last_resort { " (last resort)" } else { "" },
                            path.display()
                        )),
                        (Some(k), None) => text.push_str(&format!(
                            "KeyPackage: {} bytes{}: {}\n",
                            k.key_package.len(),
                            if k.last_resort { " (last resort)" } else { "" },
                            to_hex(&k.key_package)
                        )),
                        (None, _) => {}
                    }
                    match &hybrid {
                        Some(k) => text.push_str(&format!(
                            "hybrid key: signature verified, created {}, x25519 {}, ml-kem-768 {} bytes{}",
                            time_text(k.created_at_unix_ms),
                            to_hex(&k.x25519_public),
                            k.mlkem768_public.len(),
                            hybrid_out
                                .as_ref()
                                .map(|p| format!(", saved to {}", p.display()))
                                .unwrap_or_default()
                        )),
                        None => text.push_str("hybrid key: none uploaded"),
                    }
                    text
                },
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ channel

fn role_name(role: i32) -> &'static str {
    match proto::ChannelRole::try_from(role) {
        Ok(proto::ChannelRole::Owner) => "owner",
        Ok(proto::ChannelRole::Admin) => "admin",
        Ok(proto::ChannelRole::Member) => "member",
        _ => "unknown",
    }
}

pub(crate) async fn channel(ctx: &Ctx, command: ChannelCommand) -> anyhow::Result<()> {
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

// ------------------------------------------------------------------------------ blob

pub(crate) async fn blob(ctx: &Ctx, command: BlobCommand) -> anyhow::Result<()> {
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    match command {
        BlobCommand::Put {
            file,
            mime,
            chunk_size,
        } => {
            let total = std::fs::metadata(&file)
                .with_context(|| format!("could not read {}", file.display()))?
                .len();
            let mut progress = Progress::new("uploading", total, chunk_size as u64);
            let id = qpq_client::blob::upload_file(
                &client,
                &token,
                &file,
                &mime,
                chunk_size,
                |sent, _| progress.update(sent),
            )
            .await
            .map_err(|e| match e {
                qpq_client::blob::BlobError::Rpc(e) => rpc(e),
                other => anyhow!(other),
            })
            .with_context(|| format!("uploading {} failed", file.display()))?;
            let id = to_hex(&id);
            ctx.print(json!({"blob_id": id, "size": total}), || {
                format!("{id}  {} ({total} bytes)", file.display())
            });
        }
        BlobCommand::Get { id, out } => {
            let blob_id: [u8; 32] =
                from_hex(&id)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        anyhow!(
                            "`{id}` is not a blob id: give the 64 hex digits `qpq blob put` printed"
                        )
                    })?;
            let mut progress: Option<Progress> = None;
            let got = qpq_client::blob::download_to_file(
                &client,
                &token,
                &blob_id,
                &out,
                |have, total| {
                    progress
                        .get_or_insert_with(|| {
                            Progress::new("downloading", total, qpq_client::blob::MAX_CHUNK as u64)
                        })
                        .update(have)
                },
            )
            .await
            .map_err(|e| match e {
                qpq_client::blob::BlobError::Rpc(e) => rpc(e),
                other => anyhow!(other),
            })
            .with_context(|| format!("downloading {id} failed"))?;
            ctx.print(
                json!({"blob_id": id, "out": out.display().to_string(), "size": got.total_size, "resumed_from": got.resumed_from, "sha256_verified": true, "mime_type": got.mime_type}),
                || {
                    let resumed = if got.resumed_from > 0 {
                        format!(", resumed at byte {}", got.resumed_from)
                    } else {
                        String::new()
                    };
                    format!(
                        "saved {} ({} bytes{resumed}); SHA-256 verified",
                        out.display(),
                        got.total_size
                    )
                },
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ device

pub(crate) async fn device(ctx: &Ctx, command: DeviceCommand) -> anyhow::Result<()> {
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    match command {
        DeviceCommand::Register { name } => {
            if let Some((info, _)) = ctx.profile.device()? {
                bail!(
                    "this profile is already the device `{}` ({}); use another --profile for another device",
                    info.name,
                    info.id_hex
                );
            }
            let mut id = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
            let key = IdentityKey::generate();
            let registered = client
                .register_device(proto::RegisterDeviceRequest {
                    session_token: token,
                    device_id: Bytes::copy_from_slice(&id),
                    name: name.clone(),
                    device_key: Bytes::copy_from_slice(&key.public()),
                })
                .await
                .map_err(rpc)?;
            let info = DeviceInfo {
                id_hex: to_hex(&id),
                name: name.clone(),
            };
            ctx.profile.save_device(&info, &key)?;
            ctx.print(
                json!({"device_id": info.id_hex, "name": name, "created_at_unix_ms": registered.created_at_unix_ms}),
                || format!("registered this profile as device `{name}` ({})", info.id_hex),
            );
        }
        DeviceCommand::List => {
            let list = client
                .list_devices(proto::ListDevicesRequest {
                    session_token: token,
                })
                .await
                .map_err(rpc)?;
            if ctx.json {
                for d in &list.devices {
                    println!(
                        "{}",
                        json!({"device_id": to_hex(&d.device_id), "name": d.name, "current": d.current,
                               "created_at_unix_ms": d.created_at_unix_ms, "last_seen_unix_ms": d.last_seen_unix_ms,
                               "has_push_token": d.has_push_token})
                    );
                }
            } else if list.devices.is_empty() {
                println!("(no devices; register this one with `qpq device register NAME`)");
            } else {
                for d in &list.devices {
                    println!(
                        "{} {:<24} seen {}{}{}",
                        to_hex(&d.device_id),
                        d.name,
                        time_text(d.last_seen_unix_ms),
                        if d.has_push_token { ", push" } else { "" },
                        if d.current { "  (this session)" } else { "" }
                    );
                }
            }
        }
        DeviceCommand::Revoke { id } => {
            let device_id = from_hex(&id).filter(|d| d.len() == 16).ok_or_else(|| {
                anyhow!("`{id}` is not a device id: give the 32 hex digits `qpq device list` shows")
            })?;
            let revoked = client
                .revoke_device(proto::RevokeDeviceRequest {
                    session_token: token,
                    device_id: Bytes::from(device_id),
                })
                .await
                .map_err(rpc)?;
            let own = ctx
                .profile
                .device()?
                .is_some_and(|(info, _)| info.id_hex.eq_ignore_ascii_case(&id));
            if own {
                ctx.profile.clear_device()?;
                ctx.profile.clear_session()?;
            }
            ctx.print(
                json!({"revoked": id, "sessions_ended": revoked.sessions_ended, "this_device": own}),
                || {
                    let mut text = format!("revoked device {id}; {} session(s) ended", revoked.sessions_ended);
                    if own {
                        text.push_str("; that was this profile's device: log in again to go on here");
                    }
                    text
                },
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ recovery

pub(crate) async fn recovery(ctx: &mut Ctx, command: RecoveryCommand) -> anyhow::Result<()> {
    let username = match ctx.profile.session()? {
        Some(session) => session.username,
        None => ctx
            .settings
            .username
            .clone()
            .ok_or_else(|| anyhow!("not logged in; run `qpq login <username>` first"))?,
    };
    let client = ctx.connect().await?;
    match command {
        RecoveryCommand::Store { file } => {
            let plaintext = read_file(&file)?;
            if plaintext.len() > qpq_client::recovery::MAX_PLAINTEXT {
                bail!(
                    "{} is {} bytes; a recovery bundle holds at most {} bytes",
                    file.display(),
                    plaintext.len(),
                    qpq_client::recovery::MAX_PLAINTEXT
                );
            }
            // A fresh login gives the export key; it stays in this process's memory only.
            let session = login_session(ctx, &client, &username, None).await?;
            let bundle = qpq_client::recovery::seal(&session.export_key, &plaintext)?;
            let stored = client
                .store_recovery_bundle(proto::StoreRecoveryBundleRequest {
                    session_token: session.token.clone(),
                    bundle: Bytes::from(bundle),
                })
                .await
                .map_err(rpc)?;
            ctx.print(
                json!({"stored": file.display().to_string(), "size": plaintext.len(), "stored_at_unix_ms": stored.stored_at_unix_ms}),
                || {
                    format!(
                        "stored {} ({} bytes), encrypted with a key from your password",
                        file.display(),
                        plaintext.len()
                    )
                },
            );
        }
        RecoveryCommand::Fetch { out } => {
            let session = login_session(ctx, &client, &username, None).await?;
            let fetched = client
                .fetch_recovery_bundle(proto::FetchRecoveryBundleRequest {
                    session_token: session.token.clone(),
                })
                .await
                .map_err(|e| {
                    if e.code() == Some(StatusCode::NotFound) {
                        anyhow!("no recovery bundle is stored for {username}; store one with `qpq recovery store FILE`")
                    } else {
                        rpc(e)
                    }
                })?;
            let plaintext = qpq_client::recovery::open(&session.export_key, &fetched.bundle)?;
            write_private(&out, &plaintext)?;
            ctx.print(
                json!({"out": out.display().to_string(), "size": plaintext.len(), "stored_at_unix_ms": fetched.stored_at_unix_ms}),
                || {
                    format!(
                        "decrypted the bundle stored {} into {} ({} bytes)",
                        time_text(fetched.stored_at_unix_ms),
                        out.display(),
                        plaintext.len()
                    )
                },
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ kt

pub(crate) async fn kt(ctx: &Ctx, command: KtCommand) -> anyhow::Result<()> {
    let KtCommand::Audit { user } = command;
    let (session, token) = ctx.session()?;
    let user = user.unwrap_or_else(|| session.username.clone());
    let client = ctx.connect().await?;
    let state = ctx.profile.kt_state()?;
    let last = match state.as_ref().and_then(|s| s.last.as_ref()) {
        Some(saved) => Some(saved.head()?),
        None => None,
    };
    let response = client
        .audit_key_transparency(proto::AuditKeyTransparencyRequest {
            session_token: token.clone(),
            subject: Some(proto::audit_key_transparency_request::Subject::Username(
                user.clone(),
            )),
            last_seen_tree_size: last.map_or(0, |h| h.tree_size),
        })
        .await
        .map_err(|e| {
            if e.code() == Some(StatusCode::NotFound) {
                anyhow!("the transparency log has no entry for {user}")
            } else {
                rpc(e)
            }
        })?;
    let (log_key, first_use) = match &state {
        Some(state) => (state.log_key()?, false),
        None => (
            <[u8; 32]>::try_from(response.log_public_key.as_ref())
                .map_err(|_| anyhow!("the server sent a log key of the wrong size"))?,
            true,
        ),
    };
    let verified = verify_audit(&response, &log_key, last.as_ref()).map_err(|e| {
        let advice = match e {
            KtError::Inconsistent | KtError::Rollback { .. } => {
                "the server showed a log that does not extend the one it showed before: it may be showing different histories to different people. Do not trust keys from it; keep the profile's kt.toml as evidence"
            }
            KtError::WrongLog | KtError::BadSignature => {
                "the answer is not signed by the log key pinned in this profile (kt.toml): the server's log key changed or the answer is forged"
            }
            _ => "the server's proof does not hold: do not trust this key",
        };
        anyhow!("key transparency check failed: {e}; {advice}")
    })?;
    let Some((index, leaf)) = verified.leaf else {
        bail!("the server answered without the entry for {user}");
    };
    if leaf.username != user {
        bail!(
            "key transparency check failed: asked about {user}, the server proved an entry for {}",
            leaf.username
        );
    }
    let binding = leaf.kind == proto::KtLeafKind::Binding as i32;
    // The key the server hands out for the name must be the one the log proves.
    if binding {
        let resolved = identity_of(&client, &token, &user).await?;
        if resolved[..] != leaf.identity_key[..] {
            bail!(
                "key transparency check failed: the server resolves {user} to {}, but its log binds {user} to {}",
                to_hex(&resolved),
                to_hex(&leaf.identity_key)
            );
        }
        if user == session.username
            && let Some(own) = ctx.profile.identity()?
            && own.public()[..] != leaf.identity_key[..]
        {
            bail!(
                "key transparency check failed: the log binds you ({user}) to {}, which is not this profile's identity key {}",
                to_hex(&leaf.identity_key),
                to_hex(&own.public())
            );
        }
    }
    ctx.profile.save_kt_state(&KtState {
        log_key_hex: to_hex(&log_key),
        last: Some(SavedTreeHead::from(&verified.head)),
    })?;
    let consistent_with = last.map(|h| h.tree_size);
    ctx.print(
        json!({
            "username": user,
            "kind": if binding { "binding" } else { "revocation" },
            "identity_key": to_hex(&leaf.identity_key),
            "leaf_index": index,
            "leaf_timestamp_unix_ms": leaf.timestamp_unix_ms,
            "tree_size": verified.head.tree_size,
            "root_hash": to_hex(&verified.head.root_hash),
            "consistent_with": consistent_with,
            "log_key": to_hex(&log_key),
            "log_key_pinned_now": first_use,
            "verified": true,
        }),
        || {
            let what = if binding {
                "is bound to"
            } else {
                "had this key revoked:"
            };
            let mut text = format!(
                "{user} {what} {} (entry {index} of {}, added {})\nverified: tree head signed by the log key, inclusion proof",
                to_hex(&leaf.identity_key),
                verified.head.tree_size,
                time_text(leaf.timestamp_unix_ms)
            );
            if let Some(size) = consistent_with {
                text.push_str(&format!(
                    ", consistent with the log of {size} entries seen before"
                ));
            }
            if first_use {
                text.push_str(&format!(
                    "\npinned the log key {} in this profile (first use)",
                    to_hex(&log_key)
                ));
            }
            text
        },
    );
    Ok(())
}

// ------------------------------------------------------------------------------ report, admin

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

pub(crate) async fn admin(ctx: &Ctx, command: AdminCommand) -> anyhow::Result<()> {
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
