//! `device register`, `list` and `revoke`: the account's devices and the one this profile is.

use anyhow::{anyhow, bail};
use bytes::Bytes;
use qpq_client::profile::{DeviceInfo, from_hex, to_hex};
use qpq_client::{IdentityKey, proto};
use serde_json::json;

use crate::args::DeviceCommand;
use crate::context::{Ctx, rpc};
use crate::format::time_text;

/// Runs one `device` subcommand.
pub(crate) async fn run(ctx: &Ctx, command: DeviceCommand) -> anyhow::Result<()> {
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
