//! `kt audit`: checks a user's key binding against the server's transparency log, with the
//! log key pinned in the profile on first use.

use anyhow::{anyhow, bail};
use qpq_client::kt::{KtError, verify_audit};
use qpq_client::profile::{KtState, SavedTreeHead, to_hex};
use qpq_client::{StatusCode, proto};
use serde_json::json;

use crate::args::KtCommand;
use crate::context::{Ctx, identity_of, rpc};
use crate::format::time_text;

/// Runs `kt audit`.
pub(crate) async fn run(ctx: &Ctx, command: KtCommand) -> anyhow::Result<()> {
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
