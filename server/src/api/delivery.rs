//! Delivery (200-206): store-and-forward queues of opaque payloads, one per recipient
//! identity. A caller only ever reads and acknowledges its own queue: the queue is chosen by
//! the session, never by the request. SendTyping (206) pushes PushTyping to the other members
//! of a channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{DeliveryService, QpqPush, proto};
use tokio::sync::{Notify, watch};

use crate::api::channel::{channel_id, refusal};
use crate::auth::identity_of;
use crate::live::{Live, SessionId};
use crate::store::{
    IdentityKey, NewMessage, QueuePage, QueuedMessage, Refusal, Seq, Store, StoreError,
};
use crate::{Messenger, bus, errors};

/// Page size when the request says 0.
const DEFAULT_PAGE: usize = 100;
/// Largest page a request may ask for.
const MAX_PAGE: usize = 1_000;
/// Payload bytes per response page (at least one message is always returned).
const PAGE_BYTES: usize = 8 << 20;
/// FetchWait parks this long when the request says 0.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Longest FetchWait park (the method's server timeout is a little longer).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most items of one BatchEnqueue.
const MAX_BATCH: usize = 1_000;
/// Most sequence numbers of one Ack.
const MAX_ACK: usize = 10_000;
/// Payloads up to this size travel inside PushNewMessage; larger ones are fetched.
const PUSH_PAYLOAD_MAX: usize = 16 << 10;

fn page_size(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn to_proto(message: QueuedMessage) -> proto::QueuedMessage {
    proto::QueuedMessage {
        seq: message.seq.0,
        sender_identity_key: Bytes::copy_from_slice(&message.sender_identity_key),
        sender: message.sender,
        payload: message.payload,
        enqueued_at_unix_ms: message.enqueued_at_ms,
        expires_at_unix_ms: message.expires_at_ms,
        channel_id: message
            .channel_id
            .map(|c| Bytes::copy_from_slice(&c.0))
            .unwrap_or_default(),
    }
}

/// Keeps the front of a page within the response byte budget (never less than one message).
fn within_budget(page: &mut QueuePage) {
    let mut used = 0usize;
    let keep = page
        .messages
        .iter()
        .position(|m| {
            used += m.payload.len();
            used > PAGE_BYTES
        })
        .unwrap_or(page.messages.len())
        .max(1)
        .min(page.messages.len());
    if keep < page.messages.len() {
        page.messages.truncate(keep);
        page.more = true;
    }
}

/// Releases FetchWait's registrations however the handler ends (answer, timeout, cancel).
struct Parked<'a> {
    live: &'a Live,
    identity: IdentityKey,
    session: SessionId,
    notify: Option<Arc<Notify>>,
    revoked: Option<watch::Receiver<bool>>,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        drop(self.revoked.take());
        self.live.release_revocation(&self.session);
        if let Some(notify) = self.notify.take() {
            self.live.release_waiter(&self.identity, notify);
        }
    }
}

impl<S: Store> Messenger<S> {
    /// Resolves a recipient to a local identity key.
    pub(crate) async fn recipient(
        &self,
        recipient: Option<&proto::UserRef>,
    ) -> Result<IdentityKey, Status> {
        use proto::user_ref::Target;
        match recipient.and_then(|r| r.target.as_ref()) {
            Some(Target::IdentityKey(key)) => key[..].try_into().map_err(|_| {
                Status::bad_request(format!(
                    "recipient identity_key must be 32 bytes, got {}",
                    key.len()
                ))
            }),
            Some(Target::Username(name)) => {
                let local = self.local_name(name)?;
                match self
                    .store
                    .account_by_username(local)
                    .await
                    .map_err(errors::store)?
                {
                    Some(account) => Ok(account.identity_key),
                    None => Err(Status::not_found(format!("no user named `{name}` here"))),
                }
            }
            None => Err(Status::bad_request(
                "recipient is missing: set its identity_key or username",
            )),
        }
    }

    pub(crate) fn new_message(
        session: &Session,
        payload: Bytes,
        ttl_secs: u32,
        channel_id: &[u8],
    ) -> Result<NewMessage, Status> {
        if payload.is_empty() {
            return Err(Status::bad_request("payload must not be empty"));
        }
        let channel_id = crate::api::channel::optional_channel_id(channel_id)?;
        Ok(NewMessage {
            sender_identity_key: identity_of(session)?,
            sender: session.username.clone(),
            channel_id,
            payload,
            ttl_ms: (ttl_secs > 0).then(|| u64::from(ttl_secs) * 1000),
        })
    }

    /// Maps enqueue failures to statuses a sender can act on.
    fn enqueue_error(error: StoreError) -> Status {
        match error {
            StoreError::NotFound => {
                Status::not_found("no account has this recipient identity key on this server")
            }
            other => errors::store(other),
        }
    }

    /// After a durable enqueue: wake the recipient's FetchWaits and push to its connections.
    pub(crate) fn announce(&self, recipient: &IdentityKey, seq: Seq, message: &NewMessage) {
        self.live.wake(recipient);
        let connections = self.live.connections_of(recipient);
        let shared = self.bus.is_shared();
        if connections.is_empty() {
            // Nobody is connected here: wake the devices that have push tokens.
            self.push.request(*recipient);
            if !shared {
                return;
            }
        }
        let small = message.payload.len() <= PUSH_PAYLOAD_MAX;
        let event = proto::NewMessageEvent {
            seq: seq.0,
            sender_identity_key: Bytes::copy_from_slice(&message.sender_identity_key),
            sender: message.sender.clone(),
            channel_id: message
                .channel_id
                .map(|c| Bytes::copy_from_slice(&c.0))
                .unwrap_or_default(),
            payload_len: message.payload.len() as u32,
            payload: if small {
                message.payload.clone()
            } else {
                Bytes::new()
            },
            enqueued_at_unix_ms: self.now_ms(),
        };
        for connection in connections {
            // A full push buffer only loses the hint; the queue still has the message.
            let _ = connection.push().push_new_message(&event);
        }
        if shared {
            self.bus.publish(bus::Event::Wake {
                identity: *recipient,
                message: event,
            });
        }
    }

    /// Removes and returns the front of the caller's queue. Implemented as peek + ack so a
    /// page cut short by the byte budget loses nothing, and concurrent drains never return the
    /// same message twice (only what this call's ack removed is returned).
    async fn drain(&self, identity: &IdentityKey, limit: usize) -> Result<QueuePage, Status> {
        let mut page = self
            .store
            .peek(identity, Seq::ZERO, limit)
            .await
            .map_err(errors::store)?;
        within_budget(&mut page);
        if page.messages.is_empty() {
            return Ok(page);
        }
        let seqs: Vec<Seq> = page.messages.iter().map(|m| m.seq).collect();
        let outcome = self
            .store
            .ack(identity, &seqs)
            .await
            .map_err(errors::store)?;
        if !outcome.unknown.is_empty() {
            page.messages.retain(|m| outcome.removed.contains(&m.seq));
            page.more = true;
        }
        Ok(page)
    }
}

impl<S: Store> DeliveryService for Messenger<S> {
    async fn enqueue(
        &self,
        ctx: Ctx<Session>,
        request: proto::EnqueueRequest,
    ) -> Result<proto::EnqueueResponse, Status> {
        if let Some(remote) = self.remote_recipient(request.recipient.as_ref())? {
            return self.enqueue_remote(ctx.auth(), remote, request).await;
        }
        let recipient = self.recipient(request.recipient.as_ref()).await?;
        let message = Self::new_message(
            ctx.auth(),
            request.payload,
            request.ttl_secs,
            &request.channel_id,
        )?;
        self.check_channel_sender(&message).await?;
        self.rate_limits
            .check_pairs(&identity_of(ctx.auth())?, &[recipient])?;
        let seqs = self
            .store
            .enqueue(vec![(recipient, message.clone())])
            .await
            .map_err(Self::enqueue_error)?;
        let seq = seqs.first().copied().ok_or_else(Status::internal)?;
        self.announce(&recipient, seq, &message);
        Ok(proto::EnqueueResponse {
            seq: seq.0,
            relayed: false,
        })
    }

    async fn fetch(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchRequest,
    ) -> Result<proto::FetchResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let page = self.drain(&identity, page_size(request.limit)).await?;
        Ok(proto::FetchResponse {
            more: page.more,
            messages: page.messages.into_iter().map(to_proto).collect(),
        })
    }

    async fn fetch_wait(
        &self,
        ctx: Ctx<Session>,
        request: proto::FetchWaitRequest,
    ) -> Result<proto::FetchWaitResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let wait = match request.timeout_ms {
            0 => DEFAULT_WAIT,
            ms => Duration::from_millis(ms.into()).min(MAX_WAIT),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let limit = page_size(request.limit);
        let mut parked = Parked {
            live: &self.live,
            identity,
            session: ctx.auth().session_id,
            notify: Some(self.live.waiter(identity)),
            revoked: Some(self.live.revocation(ctx.auth().session_id)),
        };
        // The session may have been revoked between authentication and subscribing above.
        if self
            .store
            .session_by_token_hash(&ctx.auth().session_id)
            .await
            .map_err(errors::store)?
            .is_none()
        {
            return Err(Status::unauthorized("session was revoked; log in again"));
        }
        let notify = parked.notify.clone().ok_or_else(Status::internal)?;
        loop {
            // Registered before looking at the queue, so an enqueue in between still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let page = if request.peek {
                let mut page = self
                    .store
                    .peek(&identity, Seq(request.after_seq), limit)
                    .await
                    .map_err(errors::store)?;
                within_budget(&mut page);
                page
            } else {
                self.drain(&identity, limit).await?
            };
            if !page.messages.is_empty() {
                return Ok(proto::FetchWaitResponse {
                    more: page.more,
                    messages: page.messages.into_iter().map(to_proto).collect(),
                });
            }
            let revoked = parked.revoked.as_mut().ok_or_else(Status::internal)?;
            // With instances sharing a bus, wake-ups and revocations are hints: re-read the
            // queue and the session at a bounded interval (see `bus`).
            let recheck = if self.bus.is_shared() {
                (tokio::time::Instant::now() + self.recheck_interval()).min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(recheck) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(proto::FetchWaitResponse { messages: Vec::new(), more: false });
                    }
                    if self
                        .store
                        .session_by_token_hash(&ctx.auth().session_id)
                        .await
                        .map_err(errors::store)?
                        .is_none()
                    {
                        return Err(Status::unauthorized("session was revoked; log in again"));
                    }
                }
                _ = revoked.changed() => {
                    return Err(Status::unauthorized("session was revoked; log in again"));
                }
            }
        }
    }

    async fn peek(
        &self,
        ctx: Ctx<Session>,
        request: proto::PeekRequest,
    ) -> Result<proto::PeekResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let mut page = self
            .store
            .peek(&identity, Seq(request.after_seq), page_size(request.limit))
            .await
            .map_err(errors::store)?;
        within_budget(&mut page);
        Ok(proto::PeekResponse {
            more: page.more,
            messages: page.messages.into_iter().map(to_proto).collect(),
        })
    }

    async fn ack(
        &self,
        ctx: Ctx<Session>,
        request: proto::AckRequest,
    ) -> Result<proto::AckResponse, Status> {
        if request.seqs.is_empty() {
            return Err(Status::bad_request("seqs must name at least one message"));
        }
        if request.seqs.len() > MAX_ACK {
            return Err(Status::bad_request(format!(
                "one Ack takes at most {MAX_ACK} sequence numbers, got {}",
                request.seqs.len()
            )));
        }
        let identity = identity_of(ctx.auth())?;
        let seqs: Vec<Seq> = request.seqs.iter().map(|s| Seq(*s)).collect();
        let outcome = self
            .store
            .ack(&identity, &seqs)
            .await
            .map_err(errors::store)?;
        Ok(proto::AckResponse {
            removed: outcome.removed.into_iter().map(|s| s.0).collect(),
            unknown: outcome.unknown.into_iter().map(|s| s.0).collect(),
        })
    }

    async fn batch_enqueue(
        &self,
        ctx: Ctx<Session>,
        request: proto::BatchEnqueueRequest,
    ) -> Result<proto::BatchEnqueueResponse, Status> {
        if request.items.is_empty() {
            return Err(Status::bad_request("items must not be empty"));
        }
        if request.items.len() > MAX_BATCH {
            return Err(Status::bad_request(format!(
                "a batch holds at most {MAX_BATCH} items, got {}",
                request.items.len()
            )));
        }
        if self.any_remote(&request.items) {
            // Local and remote items in one durable write (`federation/`).
            return self.batch_enqueue_with_remote(ctx.auth(), request).await;
        }
        let mut deliveries = Vec::with_capacity(request.items.len());
        for (i, item) in request.items.into_iter().enumerate() {
            let at = |status: Status| {
                Status::new(status.code(), format!("item {i}: {}", status.message()))
            };
            let recipient = self.recipient(item.recipient.as_ref()).await.map_err(at)?;
            let message =
                Self::new_message(ctx.auth(), item.payload, item.ttl_secs, &item.channel_id)
                    .map_err(at)?;
            self.check_channel_sender(&message).await.map_err(at)?;
            deliveries.push((recipient, message));
        }
        let recipients: Vec<IdentityKey> = deliveries.iter().map(|(r, _)| *r).collect();
        self.rate_limits
            .check_pairs(&identity_of(ctx.auth())?, &recipients)?;
        let seqs = self
            .store
            .enqueue(deliveries.clone())
            .await
            .map_err(Self::enqueue_error)?;
        for ((recipient, message), seq) in deliveries.iter().zip(&seqs) {
            self.announce(recipient, *seq, message);
        }
        Ok(proto::BatchEnqueueResponse {
            seqs: seqs.into_iter().map(|s| s.0).collect(),
        })
    }

    async fn send_typing(
        &self,
        ctx: Ctx<Session>,
        request: proto::SendTypingRequest,
    ) -> Result<proto::SendTypingResponse, Status> {
        let caller = identity_of(ctx.auth())?;
        let id = channel_id(&request.channel_id)?;
        if self
            .store
            .member(&id, &caller)
            .await
            .map_err(errors::store)?
            .is_none()
        {
            let exists = self
                .store
                .channel(&id)
                .await
                .map_err(errors::store)?
                .is_some();
            return Err(refusal(if exists {
                Refusal::NotMember
            } else {
                Refusal::NoChannel
            }));
        }
        let members = self
            .store
            .member_identities(&id)
            .await
            .map_err(errors::store)?;
        let event = proto::TypingEvent {
            channel_id: request.channel_id,
            identity_key: Bytes::copy_from_slice(&caller),
            typing: request.typing,
        };
        for member in members.iter().filter(|m| **m != caller) {
            for connection in self.live.connections_of(member) {
                let _ = connection.push().push_typing(&event);
            }
        }
        Ok(proto::SendTypingResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, len: usize) -> QueuedMessage {
        QueuedMessage {
            seq: Seq(seq),
            sender_identity_key: [0; 32],
            sender: "s".into(),
            channel_id: None,
            payload: Bytes::from(vec![0u8; len]),
            enqueued_at_ms: 0,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn budget_keeps_at_least_one_and_marks_more() {
        let mut page = QueuePage {
            messages: vec![message(1, PAGE_BYTES + 5), message(2, 1)],
            more: false,
        };
        within_budget(&mut page);
        assert_eq!(page.messages.len(), 1);
        assert!(page.more);

        let mut page = QueuePage {
            messages: vec![message(1, 10), message(2, PAGE_BYTES), message(3, 1)],
            more: false,
        };
        within_budget(&mut page);
        assert_eq!(page.messages.len(), 1);

        let mut page = QueuePage {
            messages: vec![message(1, 10), message(2, 10)],
            more: false,
        };
        within_budget(&mut page);
        assert_eq!(page.messages.len(), 2);
        assert!(!page.more);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(5), 5);
        assert_eq!(page_size(1_000_000), MAX_PAGE);
    }
}
