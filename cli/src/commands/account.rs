//! `register`, `login`, `logout` and `delete-account`: the account and the session kept in the
//! profile.

use anyhow::{anyhow, bail};
use qpq_client::profile::{from_hex, to_hex};
use qpq_client::{IdentityKey, SavedSession, proto};
use serde_json::json;

use crate::context::{Ctx, explain, login_session, rpc};

/// Creates the account (and the profile's identity key, on first use) and logs in.
pub(crate) async fn register(ctx: &mut Ctx, username: &str) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let identity = match ctx.profile.identity()? {
        Some(identity)
            if ctx.settings.username.as_deref() != Some(username)
                && ctx.settings.username.is_some() =>
        {
            bail!(
                "this profile already belongs to {}; use another --profile for a second account (its identity key is {})",
                ctx.settings.username.clone().unwrap_or_default(),
                to_hex(&identity.public())
            )
        }
        Some(identity) => identity,
        None => {
            let identity = IdentityKey::generate();
            ctx.profile.save_identity(&identity)?;
            identity
        }
    };
    let password = ctx.password()?;
    qpq_client::register(&client, username, &password, &identity.public())
        .await
        .map_err(explain)?;
    let session = qpq_client::login(&client, username, &password, None)
        .await
        .map_err(explain)?;
    ctx.profile.save_session(&SavedSession {
        username: username.to_owned(),
        token_hex: to_hex(&session.token),
        expires_at_unix_ms: session.expires_at_unix_ms,
    })?;
    ctx.remember(username)?;
    ctx.print(
        json!({"registered": username, "identity_key": to_hex(&identity.public())}),
        || {
            format!(
                "registered {username} and logged in; identity key {}",
                to_hex(&identity.public())
            )
        },
    );
    Ok(())
}

/// Logs in as `username` (default: the profile's), optionally bound to a device id in hex.
pub(crate) async fn login(
    ctx: &mut Ctx,
    username: Option<String>,
    device: Option<String>,
) -> anyhow::Result<()> {
    let username = username
        .or_else(|| ctx.settings.username.clone())
        .ok_or_else(|| anyhow!("which user? run `qpq login <username>`"))?;
    let device = match device {
        Some(hex) => Some(from_hex(&hex).ok_or_else(|| anyhow!("--device must be hex"))?),
        None => None,
    };
    let client = ctx.connect().await?;
    let session = login_session(ctx, &client, &username, device).await?;
    ctx.print(
        json!({"logged_in": username, "expires_at_unix_ms": session.expires_at_unix_ms}),
        || format!("logged in as {username}"),
    );
    Ok(())
}

/// Forgets the session kept in the profile (the server is not asked).
pub(crate) fn logout(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.profile.clear_session()?;
    ctx.print(json!({"logged_out": true}), || "logged out".to_owned());
    Ok(())
}

/// Deletes the account on the server, then the session in the profile; needs `yes`.
pub(crate) async fn delete_account(ctx: &Ctx, yes: bool) -> anyhow::Result<()> {
    if !yes {
        bail!("this deletes your account and all its data for good; add --yes to confirm");
    }
    let (session, token) = ctx.session()?;
    let client = ctx.connect().await?;
    client
        .delete_account(proto::DeleteAccountRequest {
            session_token: token,
        })
        .await
        .map_err(rpc)?;
    ctx.profile.clear_session()?;
    ctx.print(json!({"deleted": session.username}), || {
        format!("account {} deleted", session.username)
    });
    Ok(())
}
