//! What every command shares: the per-invocation context (profile, server, output mode), the
//! login that keeps a session in the profile, the explanation of a failed call, and the parsing
//! of users, channel ids and files named on the command line.
//!
//! It knows the global flags (`args::Cli`) but no command: the modules in `commands/` import
//! it, never the other way round.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use qpq_client::profile::{from_hex, to_hex};
use qpq_client::{
    ClientError, Profile, QpqClient, RpcError, SavedSession, Settings, StatusCode, proto,
};

use crate::args::Cli;

/// Everything a command needs: the profile, where the server is, and output mode.
pub(crate) struct Ctx {
    pub(crate) profile: Profile,
    pub(crate) settings: Settings,
    pub(crate) server: String,
    pub(crate) ca_cert: PathBuf,
    pub(crate) json: bool,
    password_stdin: bool,
}

impl Ctx {
    /// Opens the profile and settles the server and certificate: the flag (or its variable),
    /// else the profile's, else the default.
    pub(crate) fn new(cli: &Cli) -> anyhow::Result<Self> {
        let dir = match &cli.profile {
            Some(dir) => dir.clone(),
            None => {
                let home = std::env::var_os("HOME")
                    .ok_or_else(|| anyhow!("HOME is not set; pass --profile DIR"))?;
                PathBuf::from(home).join(".qpq")
            }
        };
        let profile = Profile::open(&dir)?;
        let settings = profile.settings()?;
        let server = cli
            .server
            .clone()
            .or_else(|| settings.server.clone())
            .unwrap_or_else(|| "127.0.0.1:5001".to_owned());
        let ca_cert = cli
            .ca_cert
            .clone()
            .or_else(|| settings.ca_cert.clone())
            .unwrap_or_else(|| PathBuf::from("data/server-cert.der"));
        Ok(Self {
            profile,
            settings,
            server,
            ca_cert,
            json: cli.json,
            password_stdin: cli.password_stdin,
        })
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<QpqClient> {
        qpq_client::connect(&self.server, &self.ca_cert)
            .await
            .with_context(|| format!("could not connect to {}", self.server))
    }

    pub(crate) fn password(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(password) = std::env::var_os("QPQ_PASSWORD") {
            return Ok(password.into_encoded_bytes());
        }
        if !self.password_stdin {
            eprint!("password: ");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("could not read the password from stdin")?;
        let password = line.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            bail!("the password is empty; set QPQ_PASSWORD or type it");
        }
        Ok(password.as_bytes().to_vec())
    }

    pub(crate) fn session(&self) -> anyhow::Result<(SavedSession, Bytes)> {
        let session = self
            .profile
            .session()?
            .ok_or_else(|| anyhow!("not logged in; run `qpq login <username>` first"))?;
        let token = Bytes::from(session.token()?);
        Ok((session, token))
    }

    /// Remembers where the server is, so later commands need no flags.
    pub(crate) fn remember(&mut self, username: &str) -> anyhow::Result<()> {
        self.settings.username = Some(username.to_owned());
        self.settings.server = Some(self.server.clone());
        self.settings.ca_cert =
            Some(std::fs::canonicalize(&self.ca_cert).unwrap_or_else(|_| self.ca_cert.clone()));
        self.profile.save_settings(&self.settings)?;
        Ok(())
    }

    pub(crate) fn print(&self, value: serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }
}

/// Turns a failed call into a message that says what to do.
pub(crate) fn explain(error: ClientError) -> anyhow::Error {
    let hint = match &error {
        ClientError::Rpc(RpcError::Status(status)) => match status.code() {
            StatusCode::Unauthorized => "; your session may have expired: run `qpq login`",
            StatusCode::RateLimited => "; wait and try again",
            StatusCode::Unavailable => "; the server cannot do this now, try again later",
            StatusCode::Forbidden if status.message().contains("administrator") => {
                "; ask a server administrator (the server's --admin list)"
            }
            _ => "",
        },
        ClientError::Rpc(RpcError::Timeout(_)) | ClientError::Connect(_) => {
            "; is the server running, and are --server and --ca-cert right?"
        }
        _ => "",
    };
    anyhow!("{error}{hint}")
}

pub(crate) fn rpc(error: RpcError) -> anyhow::Error {
    explain(ClientError::Rpc(error))
}

/// Logs in with OPAQUE (asking for the password), keeps the session in the profile and
/// returns it, export key included (callers keep that in memory only). Without `device`,
/// the profile's registered device, if any, is used.
pub(crate) async fn login_session(
    ctx: &mut Ctx,
    client: &QpqClient,
    username: &str,
    device: Option<Vec<u8>>,
) -> anyhow::Result<qpq_client::Login> {
    let device = match device {
        Some(device) => Some(device),
        None => match ctx.profile.device()? {
            Some((info, _)) => Some(info.id()?.to_vec()),
            None => None,
        },
    };
    let password = ctx.password()?;
    let session = qpq_client::login(client, username, &password, device.as_deref())
        .await
        .map_err(explain)?;
    ctx.profile.save_session(&SavedSession {
        username: username.to_owned(),
        token_hex: to_hex(&session.token),
        expires_at_unix_ms: session.expires_at_unix_ms,
    })?;
    ctx.remember(username)?;
    Ok(session)
}

/// A user named on the command line: 64 hex digits are an identity key, anything else a
/// username.
pub(crate) fn recipient(text: &str) -> proto::UserRef {
    use proto::user_ref::Target;
    let target = match from_hex(text) {
        Some(key) if key.len() == 32 => Target::IdentityKey(Bytes::from(key)),
        _ => Target::Username(text.to_owned()),
    };
    proto::UserRef {
        target: Some(target),
    }
}

/// The identity key of `user` (a username, resolved by the server, or 64 hex digits).
pub(crate) async fn identity_of(
    client: &QpqClient,
    token: &Bytes,
    user: &str,
) -> anyhow::Result<[u8; 32]> {
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

/// A channel id given on the command line.
pub(crate) fn channel_id(text: &str) -> anyhow::Result<Bytes> {
    match from_hex(text) {
        Some(id) if id.len() == 16 => Ok(Bytes::from(id)),
        _ => bail!(
            "`{text}` is not a channel id: give the 32 hex digits `qpq channel create` printed"
        ),
    }
}

/// An optional `--channel`: empty bytes when absent (server-wide on the wire).
pub(crate) fn optional_channel_id(text: Option<&str>) -> anyhow::Result<Bytes> {
    text.map_or(Ok(Bytes::new()), channel_id)
}

/// A file named on the command line, read whole.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("could not read {}", path.display()))
}
