//! Federation: how messages and lookups cross to servers of other domains.
//!
//! - Sending side: Enqueue/BatchEnqueue to `name@<peer domain>` store the message in the
//!   peer's durable outbox (same write as any local deliveries, so `Ok` means durable here)
//!   under a random relay id; `relay.rs` relays it.
//! - Receiving side: relayed messages from a pinned peer are stored atomically with their
//!   relay id, so a retry is a duplicate; the relay ids are swept after their retention.
//! - `link.rs` holds the connections to peers; peers come from `--peer` (see `config.rs`).
//!
//! The federation methods themselves (RelayEnqueue, the Proxy and Peer lookups,
//! FederationHealth) are handlers in `crate::api::federation`.

pub(crate) mod link;
mod relay;

use std::sync::Arc;

use bytes::Bytes;
use qpq_runtime::{CallInfo, FederationPeer, Session, Status, StatusCode, TlsIdentity};
use qpq_schema::proto;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

pub(crate) use self::link::Federation;
use crate::api::auth::check_username;
use crate::auth::identity_of;
use crate::store::{
    IdentityKey, NewMessage, OutboxLimits, OutboxMessage, QueueLimits, RelayStored, Seq, Store,
    StoreError,
};
use crate::{Messenger, errors};

/// Largest relayed payload (the Enqueue limit).
pub(crate) const MAX_PAYLOAD: usize = 1 << 20;
/// Most messages of one RelayBatchEnqueue.
pub(crate) const MAX_RELAY_BATCH: usize = 256;
/// How far in the future a relay's `enqueued_at_unix_ms` may be (clock skew between servers).
pub(crate) const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Oldest relay accepted, by its `enqueued_at_unix_ms`: the longest TTL a message may have.
pub(crate) const MAX_RELAY_AGE_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How long a stored relay id is remembered. A relay id is stored no earlier than
/// `enqueued_at - MAX_CLOCK_SKEW_MS` and forgotten this long after; a replay arriving later is
/// older than [`MAX_RELAY_AGE_MS`] and refused, so no relay is ever stored twice.
pub(crate) const RELAY_ID_RETENTION_MS: u64 = MAX_RELAY_AGE_MS + 2 * MAX_CLOCK_SKEW_MS;
// Relay ids outlive every relay still accepted (see above).
const _: () = assert!(RELAY_ID_RETENTION_MS - MAX_CLOCK_SKEW_MS > MAX_RELAY_AGE_MS);
/// Caps of each peer's outbox.
const OUTBOX_LIMITS: OutboxLimits = OutboxLimits {
    max_messages: 100_000,
    max_bytes: 1 << 30,
};

/// A recipient on a peer server.
pub(crate) struct Remote {
    /// The peer's domain.
    domain: String,
    /// `name@domain`, as the peer resolves it.
    address: String,
}

impl Remote {
    /// A stand-in identity key for the sender→recipient rate limit, which counts local
    /// recipients by identity key.
    fn pair_key(&self) -> IdentityKey {
        let mut key = Sha256::new();
        key.update(b"qpq remote recipient\0");
        key.update(self.address.as_bytes());
        key.finalize().into()
    }
}

/// Where a Proxy lookup goes.
pub(crate) enum Target<'a> {
    /// A user of this server (bare name or `name@<this domain>`).
    Local(&'a str),
    /// A user of a peer.
    Remote(&'a Arc<link::PeerLink>, &'a str),
}

impl<S: Store> Messenger<S> {
    /// Gives the federation links this server's certificate to present to peers.
    pub(crate) fn with_federation_identity(
        mut self,
        identity: &TlsIdentity,
    ) -> anyhow::Result<Self> {
        self.federation = Federation::new(&self.config, Some(identity.clone()))?;
        Ok(self)
    }

    /// Starts one relay worker per peer, and a check for outboxes of domains that are no
    /// longer peers (their messages wait until the peer is configured again).
    pub(crate) fn spawn_relays(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = self
            .federation
            .peers()
            .map(|link| tokio::spawn(relay::run(Arc::clone(self), Arc::clone(link))))
            .collect();
        let messenger = Arc::clone(self);
        tasks.push(tokio::spawn(async move {
            match messenger.store.outbox_peers().await {
                Ok(outboxes) => {
                    for (domain, messages) in outboxes {
                        if messenger.federation.peer(&domain).is_none() {
                            tracing::warn!(
                                %domain,
                                messages,
                                "messages wait in the outbox of a domain that is not a configured peer; they are relayed once it is a --peer again"
                            );
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "could not list the federation outboxes"),
            }
        }));
        tasks
    }

    /// Forgets expired relay ids (called by the sweeper).
    pub(crate) async fn sweep_relay_ids(&self) {
        loop {
            match self.store.purge_expired_relay_ids(self.now_ms()).await {
                Ok((_, true)) => continue,
                Ok((_, false)) => break,
                Err(error) => {
                    tracing::warn!(%error, "relay id sweep failed");
                    break;
                }
            }
        }
    }

    /// The authenticator of `federation` methods: the presented certificate must be a
    /// configured peer's.
    pub(crate) fn federation_caller(&self, call: &CallInfo) -> Result<FederationPeer, Status> {
        let method = call.method();
        let Some(sha256) = call.connection().peer_certificate_sha256() else {
            return Err(Status::unauthorized(format!(
                "{} ({}) is for federation peers: connect with the server certificate this server pins for your domain",
                method.name, method.id
            )));
        };
        match self.federation.domain_of_certificate(&sha256) {
            Some(domain) => Ok(FederationPeer {
                domain: domain.to_owned(),
                certificate_sha256: sha256,
            }),
            None => Err(Status::forbidden(format!(
                "{} ({}) is for federation peers, and the certificate presented (sha256 {}) is not pinned for any peer here",
                method.name,
                method.id,
                qpq_runtime::tls::hex(&sha256)
            ))),
        }
    }

    /// `Some` when `recipient` is `name@<peer domain>`: a user of a configured peer.
    pub(crate) fn remote_recipient(
        &self,
        recipient: Option<&proto::UserRef>,
    ) -> Result<Option<Remote>, Status> {
        let Some(proto::user_ref::Target::Username(address)) =
            recipient.and_then(|r| r.target.as_ref())
        else {
            return Ok(None);
        };
        let Some((name, domain)) = address.split_once('@') else {
            return Ok(None);
        };
        if self.federation.peer(domain).is_none() {
            return Ok(None);
        }
        check_username(name)?;
        Ok(Some(Remote {
            domain: domain.to_owned(),
            address: address.clone(),
        }))
    }

    /// Whether any item of a BatchEnqueue is (or claims to be) for a user of a peer; such a
    /// batch takes [`Messenger::batch_enqueue_with_remote`], which also names a bad address.
    pub(crate) fn any_remote(&self, items: &[proto::EnqueueItem]) -> bool {
        items
            .iter()
            .any(|item| !matches!(self.remote_recipient(item.recipient.as_ref()), Ok(None)))
    }

    /// Enqueue to a user of a peer: into the outbox; `seq` 0 and `relayed`.
    pub(crate) async fn enqueue_remote(
        &self,
        session: &Session,
        remote: Remote,
        request: proto::EnqueueRequest,
    ) -> Result<proto::EnqueueResponse, Status> {
        let message = Self::new_message(
            session,
            request.payload,
            request.ttl_secs,
            &request.channel_id,
        )?;
        self.check_channel_sender(&message).await?;
        self.rate_limits
            .check_pairs(&identity_of(session)?, &[remote.pair_key()])?;
        let entry = self.outbox_message(session, remote, &message)?;
        self.enqueue_with_outbox(Vec::new(), vec![entry]).await?;
        Ok(proto::EnqueueResponse {
            seq: 0,
            relayed: true,
        })
    }

    /// BatchEnqueue with at least one item for a user of a peer: local items to their queues,
    /// remote ones to the outbox, all in one durable write (all or nothing). The item count
    /// was checked by the caller.
    pub(crate) async fn batch_enqueue_with_remote(
        &self,
        session: &Session,
        request: proto::BatchEnqueueRequest,
    ) -> Result<proto::BatchEnqueueResponse, Status> {
        let mut local = Vec::new();
        let mut outbox = Vec::new();
        // Per item: its local seq's index in `local`, or `None` for a relayed item.
        let mut slots = Vec::with_capacity(request.items.len());
        let mut pair_keys = Vec::with_capacity(request.items.len());
        for (i, item) in request.items.into_iter().enumerate() {
            let at = |status: Status| {
                Status::new(status.code(), format!("item {i}: {}", status.message()))
            };
            let remote = self.remote_recipient(item.recipient.as_ref()).map_err(at)?;
            let recipient = match &remote {
                Some(remote) => remote.pair_key(),
                None => self.recipient(item.recipient.as_ref()).await.map_err(at)?,
            };
            let message = Self::new_message(session, item.payload, item.ttl_secs, &item.channel_id)
                .map_err(at)?;
            self.check_channel_sender(&message).await.map_err(at)?;
            pair_keys.push(recipient);
            match remote {
                Some(remote) => {
                    outbox.push(self.outbox_message(session, remote, &message).map_err(at)?);
                    slots.push(None);
                }
                None => {
                    slots.push(Some(local.len()));
                    local.push((recipient, message));
                }
            }
        }
        self.rate_limits
            .check_pairs(&identity_of(session)?, &pair_keys)?;
        let seqs = self.enqueue_with_outbox(local.clone(), outbox).await?;
        for ((recipient, message), seq) in local.iter().zip(&seqs) {
            self.announce(recipient, *seq, message);
        }
        Ok(proto::BatchEnqueueResponse {
            seqs: slots
                .into_iter()
                .map(|slot| slot.and_then(|i| seqs.get(i)).map_or(0, |s| s.0))
                .collect(),
        })
    }

    /// The outbox entry for a message from `session` to a remote recipient.
    pub(crate) fn outbox_message(
        &self,
        session: &Session,
        remote: Remote,
        message: &NewMessage,
    ) -> Result<(String, OutboxMessage), Status> {
        let Some(domain) = self.federation.domain.as_deref() else {
            // Federation::new refuses peers without a domain; a peer can only exist with one.
            return Err(Status::internal());
        };
        let limits = QueueLimits::default();
        let ttl_ms = match message.ttl_ms {
            None | Some(0) => limits.default_ttl_ms,
            Some(ttl) => ttl.min(limits.max_ttl_ms),
        };
        let mut relay_id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut relay_id);
        Ok((
            remote.domain,
            OutboxMessage {
                relay_id,
                sender: format!("{}@{domain}", session.username),
                sender_identity_key: identity_of(session)?,
                recipient: remote.address,
                channel_id: message.channel_id,
                payload: message.payload.clone(),
                enqueued_at_ms: self.now_ms(),
                ttl_ms,
            },
        ))
    }

    /// Stores local deliveries and outbox entries in one durable write and wakes the relay
    /// workers of the peers concerned. Returns the local sequence numbers in order.
    pub(crate) async fn enqueue_with_outbox(
        &self,
        local: Vec<(IdentityKey, NewMessage)>,
        outbox: Vec<(String, OutboxMessage)>,
    ) -> Result<Vec<Seq>, Status> {
        let peers: Vec<String> = outbox.iter().map(|(peer, _)| peer.clone()).collect();
        let seqs = self
            .store
            .enqueue_with_outbox(local, outbox, OUTBOX_LIMITS)
            .await
            .map_err(|error| match error {
                StoreError::NotFound => {
                    Status::not_found("no account has this recipient identity key on this server")
                }
                StoreError::QueueFull { limit } => Status::rate_limited(
                    format!(
                        "a recipient's queue or the outbox to its server is full ({limit}); retry later"
                    ),
                    60_000,
                ),
                other => errors::store(other),
            })?;
        for peer in peers {
            if let Some(link) = self.federation.peer(&peer) {
                link.wake.notify_one();
            }
        }
        Ok(seqs)
    }
}

/// The name part of `sender`, which must be `name@<peer>`; anything else is Forbidden.
pub(crate) fn sender_name<'a>(peer: &str, sender: &'a str) -> Result<&'a str, Status> {
    match sender.split_once('@') {
        Some((name, domain)) if domain == peer => Ok(name),
        _ => Err(Status::forbidden(format!(
            "`{}` is not a user of {peer}: a peer may relay and ask only for users of its own domain",
            sender.chars().take(80).collect::<String>()
        ))),
    }
}

/// The status for a delivery the store refused.
pub(crate) fn refusal(outcome: RelayStored) -> Status {
    match outcome {
        RelayStored::NoRecipient => {
            Status::not_found("the recipient's account no longer exists on this server")
        }
        RelayStored::QueueFull(limit) => Status::rate_limited(
            format!("the recipient's queue is full ({limit}); retry later"),
            60_000,
        ),
        RelayStored::Invalid(why) => Status::bad_request(why),
        RelayStored::Stored(_) | RelayStored::Duplicate(_) => Status::internal(),
    }
}

/// A batch result for a message refused with `status`: retry later when the refusal may
/// pass, rejected for good otherwise.
pub(crate) fn result_of_refusal(relay_id: Bytes, status: &Status) -> proto::RelayResult {
    let outcome = match status.code() {
        StatusCode::RateLimited | StatusCode::Unavailable | StatusCode::Internal => {
            proto::RelayOutcome::RetryLater
        }
        _ => proto::RelayOutcome::Rejected,
    };
    proto::RelayResult {
        relay_id,
        outcome: outcome as i32,
        seq: 0,
        error: status.message().to_owned(),
    }
}

/// A peer's identity key field: empty or 32 bytes.
pub(crate) fn checked_key(key: Bytes) -> Result<Bytes, Status> {
    if key.is_empty() || key.len() == 32 {
        Ok(key)
    } else {
        tracing::warn!(
            len = key.len(),
            "federation peer sent a malformed identity key"
        );
        Err(Status::unavailable(
            "the remote server sent a malformed answer",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_must_be_of_the_calling_peer() {
        assert_eq!(sender_name("b.example", "bob@b.example").unwrap(), "bob");
        for bad in [
            "bob",
            "bob@c.example",
            "bob@b.example.evil",
            "bob@",
            "@b.examplex",
        ] {
            let status = sender_name("b.example", bad).unwrap_err();
            assert_eq!(status.code(), StatusCode::Forbidden, "{bad}");
        }
    }

    #[test]
    fn refusals_that_may_pass_are_retried() {
        let retry = result_of_refusal(Bytes::new(), &Status::rate_limited("full", 1));
        assert_eq!(retry.outcome, proto::RelayOutcome::RetryLater as i32);
        let rejected = result_of_refusal(Bytes::new(), &Status::not_found("nobody"));
        assert_eq!(rejected.outcome, proto::RelayOutcome::Rejected as i32);
        assert_eq!(rejected.error, "nobody");
    }
}
