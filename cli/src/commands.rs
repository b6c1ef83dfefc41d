//! The `qpq` subcommands.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use qpq_client::profile::{from_hex, to_hex};
use qpq_client::{
    ClientError, Event, IdentityKey, Profile, QpqClient, RpcError, SavedSession, Settings,
    StatusCode, proto,
};
use serde_json::json;

use crate::{Cli, Command};

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
    fn new(cli: &Cli) -> anyhow::Result<Self> {
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
    fn remember(&mut self, username: &str) -> anyhow::Result<()> {
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

fn message_json(m: &proto::QueuedMessage) -> serde_json::Value {
    json!({
        "seq": m.seq,
        "sender": m.sender,
        "sender_identity_key": to_hex(&m.sender_identity_key),
        "enqueued_at_unix_ms": m.enqueued_at_unix_ms,
        "payload_hex": to_hex(&m.payload),
        "payload_utf8": std::str::from_utf8(&m.payload).ok(),
    })
}

fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("<{} bytes of binary data>", payload.len()),
    }
}

fn print_messages(ctx: &Ctx, messages: &[proto::QueuedMessage], more: bool) {
    for m in messages {
        ctx.print(message_json(m), || {
            format!("#{} from {}: {}", m.seq, m.sender, payload_text(&m.payload))
        });
    }
    if !ctx.json {
        if messages.is_empty() {
            println!("(no messages)");
        } else if more {
            println!("(more messages are waiting)");
        }
    }
}

/// Logs in with OPAQUE (asking for the password), keeps the session in the profile and
/// returns it, export key included (callers keep that in memory only). Without `device`,
/// the profile's registered device, if any, is used.
pub(crate) async fn login_session(
    ctx: &mut Ctx,
    client: &QpqClient,
    username: &str,
    device: Option<Vec<u8>>,
) -> anyhow::Result<qpq_client::LoginSession> {
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

async fn login(
    ctx: &mut Ctx,
    client: &QpqClient,
    username: &str,
    device: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let session = login_session(ctx, client, username, device).await?;
    ctx.print(
        json!({"logged_in": username, "expires_at_unix_ms": session.expires_at_unix_ms}),
        || format!("logged in as {username}"),
    );
    Ok(())
}

/// Runs one command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = Ctx::new(&cli)?;
    match cli.command {
        Command::Register { username } => {
            let client = ctx.connect().await?;
            let identity = match ctx.profile.identity()? {
                Some(identity)
                    if ctx.settings.username.as_deref() != Some(username.as_str())
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
            qpq_client::register(&client, &username, &password, &identity.public())
                .await
                .map_err(explain)?;
            let session = qpq_client::login(&client, &username, &password, None)
                .await
                .map_err(explain)?;
            ctx.profile.save_session(&SavedSession {
                username: username.clone(),
                token_hex: to_hex(&session.token),
                expires_at_unix_ms: session.expires_at_unix_ms,
            })?;
            ctx.remember(&username)?;
            ctx.print(
                json!({"registered": username, "identity_key": to_hex(&identity.public())}),
                || {
                    format!(
                        "registered {username} and logged in; identity key {}",
                        to_hex(&identity.public())
                    )
                },
            );
        }
        Command::Login { username, device } => {
            let username = username
                .or_else(|| ctx.settings.username.clone())
                .ok_or_else(|| anyhow!("which user? run `qpq login <username>`"))?;
            let device = match device {
                Some(hex) => Some(from_hex(&hex).ok_or_else(|| anyhow!("--device must be hex"))?),
                None => None,
            };
            let client = ctx.connect().await?;
            login(&mut ctx, &client, &username, device).await?;
        }
        Command::Logout => {
            ctx.profile.clear_session()?;
            ctx.print(json!({"logged_out": true}), || "logged out".to_owned());
        }
        Command::Send {
            recipient: to,
            message,
            file,
            ttl,
        } => {
            let payload = match (message, file) {
                (Some(text), None) => Bytes::from(text.into_bytes()),
                (None, Some(path)) => Bytes::from(
                    std::fs::read(&path)
                        .with_context(|| format!("could not read {}", path.display()))?,
                ),
                _ => bail!("give the message as an argument or with --file"),
            };
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let sent = client
                .enqueue(proto::EnqueueRequest {
                    session_token: token,
                    recipient: Some(recipient(&to)),
                    payload,
                    ttl_secs: ttl,
                    channel_id: Bytes::new(),
                })
                .await
                .map_err(rpc)?;
            ctx.print(json!({"sent_to": to, "seq": sent.seq}), || {
                format!("sent to {to} (#{} in their queue)", sent.seq)
            });
        }
        Command::Fetch { limit, wait } => {
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let (messages, more) = match wait {
                Some(seconds) => {
                    let page = client
                        .fetch_wait(proto::FetchWaitRequest {
                            session_token: token,
                            limit,
                            timeout_ms: seconds.saturating_mul(1000),
                            peek: false,
                            after_seq: 0,
                        })
                        .await
                        .map_err(rpc)?;
                    (page.messages, page.more)
                }
                None => {
                    let page = client
                        .fetch(proto::FetchRequest {
                            session_token: token,
                            limit,
                        })
                        .await
                        .map_err(rpc)?;
                    (page.messages, page.more)
                }
            };
            print_messages(&ctx, &messages, more);
        }
        Command::Peek { limit, after } => {
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let page = client
                .peek(proto::PeekRequest {
                    session_token: token,
                    limit,
                    after_seq: after,
                })
                .await
                .map_err(rpc)?;
            print_messages(&ctx, &page.messages, page.more);
        }
        Command::Ack { seqs } => {
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let acked = client
                .ack(proto::AckRequest {
                    session_token: token,
                    seqs,
                })
                .await
                .map_err(rpc)?;
            ctx.print(
                json!({"removed": acked.removed, "unknown": acked.unknown}),
                || {
                    let mut text = format!("removed {} message(s)", acked.removed.len());
                    if !acked.unknown.is_empty() {
                        text.push_str(&format!("; not in your queue: {:?}", acked.unknown));
                    }
                    text
                },
            );
        }
        Command::Watch { count, timeout } => {
            let (_, token) = ctx.session()?;
            let client = ctx.connect().await?;
            let mut events = client
                .events()
                .ok_or_else(|| anyhow!("the event stream is already taken"))?;
            // An authenticated call ties this connection to the account, so pushes reach it.
            client
                .peek(proto::PeekRequest {
                    session_token: token,
                    limit: 1,
                    after_seq: u64::MAX,
                })
                .await
                .map_err(rpc)?;
            // On stderr even with --json, so scripts can tell when pushes will be seen.
            eprintln!("watching for pushes (Ctrl-C to stop)");
            let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let next = match deadline {
                    Some(deadline) => {
                        match tokio::time::timeout_at(deadline.into(), events.next()).await {
                            Ok(next) => next,
                            Err(_) => break,
                        }
                    }
                    None => events.next().await,
                };
                let Some(event) = next else {
                    bail!("the server closed the connection");
                };
                let event = event.map_err(|e| anyhow!("undecodable push: {e}"))?;
                print_event(&ctx, &event);
                seen += 1;
            }
        }
        Command::Whois { username } => {
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
        }
        Command::Health => {
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
        }
        Command::DeleteAccount { yes } => {
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
        }
        Command::Keys { command } => crate::groups::keys(&mut ctx, command).await?,
        Command::Channel { command } => crate::groups::channel(&ctx, command).await?,
        Command::Blob { command } => crate::groups::blob(&ctx, command).await?,
        Command::Device { command } => crate::groups::device(&ctx, command).await?,
        Command::Recovery { command } => crate::groups::recovery(&mut ctx, command).await?,
        Command::Kt { command } => crate::groups::kt(&ctx, command).await?,
        Command::Report {
            user,
            seq,
            channel,
            category,
            reason,
            evidence,
        } => crate::groups::report(&ctx, &user, seq, channel, &category, reason, evidence).await?,
        Command::Admin { command } => crate::groups::admin(&ctx, command).await?,
    }
    Ok(())
}

fn print_event(ctx: &Ctx, event: &Event) {
    match event {
        Event::PushNewMessage(m) => ctx.print(
            json!({"event": "new_message", "seq": m.seq, "sender": m.sender, "payload_len": m.payload_len,
                   "payload_utf8": std::str::from_utf8(&m.payload).ok()}),
            || {
                if m.payload.is_empty() {
                    format!("new message #{} from {} ({} bytes; fetch it)", m.seq, m.sender, m.payload_len)
                } else {
                    format!("new message #{} from {}: {}", m.seq, m.sender, payload_text(&m.payload))
                }
            },
        ),
        Event::PushTyping(t) => ctx.print(
            json!({"event": "typing", "channel_id": to_hex(&t.channel_id), "identity_key": to_hex(&t.identity_key), "typing": t.typing}),
            || format!("{} is {}typing in {}", to_hex(&t.identity_key), if t.typing { "" } else { "no longer " }, to_hex(&t.channel_id)),
        ),
        Event::PushPresence(p) => ctx.print(
            json!({"event": "presence", "identity_key": to_hex(&p.identity_key), "online": p.online}),
            || format!("{} is {}", to_hex(&p.identity_key), if p.online { "online" } else { "offline" }),
        ),
        Event::PushMembership(m) => ctx.print(
            json!({"event": "membership", "channel_id": to_hex(&m.channel_id)}),
            || format!("membership changed in channel {}", to_hex(&m.channel_id)),
        ),
        Event::Unknown { event_type, payload } => ctx.print(
            json!({"event": "unknown", "event_type": event_type, "payload_len": payload.len()}),
            || format!("event {event_type} ({} bytes) that this qpq does not know", payload.len()),
        ),
    }
}
