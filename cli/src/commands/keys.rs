//! `keys upload` and `keys fetch`: MLS KeyPackages and the signed hybrid post-quantum key.

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use qpq_client::keys::{HybridSecret, sign_hybrid_key, verify_hybrid_key};
use qpq_client::profile::to_hex;
use qpq_client::proto;
use serde_json::json;

use crate::args::KeysCommand;
use crate::context::{Ctx, explain, identity_of, read_file, rpc};
use crate::format::{now_ms, time_text};

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

/// Runs one `keys` subcommand.
pub(crate) async fn run(ctx: &mut Ctx, command: KeysCommand) -> anyhow::Result<()> {
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
