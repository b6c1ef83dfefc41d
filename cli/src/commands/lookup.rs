//! `whois` and `health`: questions to the server that change nothing.

use anyhow::bail;
use qpq_client::profile::to_hex;
use qpq_client::proto;
use serde_json::json;

use crate::context::{Ctx, rpc};

/// Resolves a username to its identity key.
pub(crate) async fn whois(ctx: &Ctx, username: String) -> anyhow::Result<()> {
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    let user = client
        .resolve_user(proto::ResolveUserRequest {
            session_token: token,
            username: username.clone(),
        })
        .await
        .map_err(rpc)?;
    if !user.found {
        bail!("no user named {username}");
    }
    ctx.print(
        json!({"username": username, "identity_key": to_hex(&user.identity_key)}),
        || format!("{username}: {}", to_hex(&user.identity_key)),
    );
    Ok(())
}

/// Prints the server's status, version and uptime (no session needed).
pub(crate) async fn health(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let health = client.health(proto::HealthRequest {}).await.map_err(rpc)?;
    let status = proto::ServingStatus::try_from(health.status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    ctx.print(
        json!({
            "status": status,
            "version": health.version,
            "uptime_secs": health.uptime_secs,
            "server_time_unix_ms": health.server_time_unix_ms,
        }),
        || {
            format!(
                "{status}: qpq-server {} up {} s",
                health.version, health.uptime_secs
            )
        },
    );
    Ok(())
}
