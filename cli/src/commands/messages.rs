//! `send`, `fetch`, `peek`, `ack` and `watch`: the message queue and the server's pushes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use qpq_client::profile::to_hex;
use qpq_client::{Event, proto};
use serde_json::json;

use crate::context::{Ctx, recipient, rpc};

/// Queues a message (the text, or the contents of `file`) for `to`.
pub(crate) async fn send(
    ctx: &Ctx,
    to: String,
    message: Option<String>,
    file: Option<PathBuf>,
    ttl: u32,
) -> anyhow::Result<()> {
    let payload = match (message, file) {
        (Some(text), None) => Bytes::from(text.into_bytes()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(&path).with_context(|| format!("could not read {}", path.display()))?,
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
    Ok(())
}

/// Takes messages off the queue, waiting up to `wait` seconds when it is empty.
pub(crate) async fn fetch(ctx: &Ctx, limit: u32, wait: Option<u32>) -> anyhow::Result<()> {
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
    print_messages(ctx, &messages, more);
    Ok(())
}

/// Shows queued messages after `after` without removing them.
pub(crate) async fn peek(ctx: &Ctx, limit: u32, after: u64) -> anyhow::Result<()> {
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
    print_messages(ctx, &page.messages, page.more);
    Ok(())
}

/// Removes messages from the queue by sequence number.
pub(crate) async fn ack(ctx: &Ctx, seqs: Vec<u64>) -> anyhow::Result<()> {
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
    Ok(())
}

/// Prints pushes as they arrive, until `count` of them or `timeout` seconds.
pub(crate) async fn watch(
    ctx: &Ctx,
    count: Option<u64>,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
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
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), events.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => events.next().await,
        };
        let Some(event) = next else {
            bail!("the server closed the connection");
        };
        let event = event.map_err(|e| anyhow!("undecodable push: {e}"))?;
        print_event(ctx, &event);
        seen += 1;
    }
    Ok(())
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
