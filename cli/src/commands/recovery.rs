//! `recovery store` and `recovery fetch`: a file kept on the server, encrypted with a key that
//! only a fresh login with the password recreates.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use qpq_client::{StatusCode, proto};
use serde_json::json;

use crate::args::RecoveryCommand;
use crate::context::{Ctx, login_session, read_file, rpc};
use crate::format::time_text;

/// Runs one `recovery` subcommand; both log in afresh, for the export key.
pub(crate) async fn run(ctx: &mut Ctx, command: RecoveryCommand) -> anyhow::Result<()> {
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

/// Writes `bytes` to `path` readable by this user only (mode 0600), synced.
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
