//! Federation (900-908): delivery and lookups between servers of different domains.
//!
//! - Sending side: Enqueue/BatchEnqueue to `name@<peer domain>` store the message in the
//!   peer's durable outbox (same write as any local deliveries, so `Ok` means durable here)
//!   under a random relay id; `relay.rs` relays it.
//! - Receiving side: RelayEnqueue/RelayBatchEnqueue from a pinned peer (the authenticator
//!   maps the presented certificate to the peer's domain), for senders of that domain only;
//!   each message is stored atomically with its relay id, so a retry is a duplicate.
//! - Lookups: ProxyFetchKeyPackage/ProxyFetchHybridKey/ProxyResolveUser (local clients) call
//!   PeerFetchKeyPackage/PeerFetchHybridKey/PeerResolveUser (906-908) on the target's server.
//! - FederationHealth: each peer as the links last saw it, with its outbox depth.
//!
//! `link.rs` holds the connections to peers, `relay.rs` the outbox worker; peers come from
//! `--peer` (see `config.rs`).

mod link;
mod relay;

use std::sync::Arc;

use bytes::Bytes;
use qpq_runtime::{CallInfo, Ctx, FederationPeer, Session, Status, StatusCode, TlsIdentity};
use qpq_schema::proto;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

pub(crate) use self::link::Federation;
use crate::accounts::{check_identity_key, check_username};
use crate::clock::now_ms;
use crate::session::identity_of;
use crate::store::{
    Account, IdentityKey, NewMessage, OutboxLimits, OutboxMessage, QueueLimits, RelayStored,
    RelayedDelivery, Seq, Store, StoreError,
};
use crate::{Messenger, errors};

/// Largest relayed payload (the Enqueue limit).
const MAX_PAYLOAD: usize = 1 << 20;
/// Most messages of one RelayBatchEnqueue.
const MAX_RELAY_BATCH: usize = 256;
/// How far in the future a relay's `enqueued_at_unix_ms` may be (clock skew between servers).
const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Oldest relay accepted, by its `enqueued_at_unix_ms`: the longest TTL a message may have.
const MAX_RELAY_AGE_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How long a stored relay id is remembered. A relay id is stored no earlier than
/// `enqueued_at - MAX_CLOCK_SKEW_MS` and forgotten this long after; a replay arriving later is
/// older than [`MAX_RELAY_AGE_MS`] and refused, so no relay is ever stored twice.
const RELAY_ID_RETENTION_MS: u64 = MAX_RELAY_AGE_MS + 2 * MAX_CLOCK_SKEW_MS;
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
enum Target<'a> {
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
            match self.store.purge_expired_relay_ids(now_ms()).await {
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
                enqueued_at_ms: now_ms(),
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

    /// Checks one relayed message from `peer` and turns it into a delivery. Errors are for
    /// this message alone.
    async fn check_relayed(
        &self,
        peer: &str,
        message: proto::RelayedMessage,
        now: u64,
    ) -> Result<RelayedDelivery, Status> {
        let relay_id: [u8; 16] = message.relay_id[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "relay_id must be 16 bytes, got {}",
                message.relay_id.len()
            ))
        })?;
        let name = sender_name(peer, &message.sender)?;
        check_username(name)?;
        let sender_identity_key = check_identity_key(&message.sender_identity_key)
            .map_err(|s| Status::bad_request(format!("sender_{}", s.message())))?;
        if message.payload.is_empty() || message.payload.len() > MAX_PAYLOAD {
            return Err(Status::bad_request(format!(
                "payload must be 1 to {MAX_PAYLOAD} bytes, got {}",
                message.payload.len()
            )));
        }
        let channel_id = crate::channels::optional_channel_id(&message.channel_id)?;
        let enqueued = message.enqueued_at_unix_ms;
        if enqueued > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(Status::bad_request(format!(
                "enqueued_at_unix_ms is {} ms ahead of this server's clock (at most {MAX_CLOCK_SKEW_MS} accepted)",
                enqueued - now
            )));
        }
        if now.saturating_sub(enqueued) > MAX_RELAY_AGE_MS {
            return Err(Status::bad_request(
                "the message was enqueued more than 30 days ago; relays that old are refused",
            ));
        }
        let ttl_ms = match message.ttl_secs {
            0 => QueueLimits::default().default_ttl_ms,
            secs => u64::from(secs) * 1000,
        };
        let expires = enqueued.saturating_add(ttl_ms);
        if expires <= now {
            return Err(Status::bad_request(
                "the message expired before it arrived; it is not stored",
            ));
        }
        let recipient = self.recipient(message.recipient.as_ref()).await?;
        if self
            .store
            .server_ban(&sender_identity_key)
            .await
            .map_err(errors::store)?
            .is_some()
        {
            return Err(Status::forbidden("the sender is banned from this server"));
        }
        Ok(RelayedDelivery {
            relay_id,
            recipient,
            message: NewMessage {
                sender_identity_key,
                sender: message.sender,
                channel_id,
                payload: message.payload,
                ttl_ms: Some(expires - now),
            },
            remember_until_ms: now.saturating_add(RELAY_ID_RETENTION_MS),
        })
    }

    pub(crate) async fn relay_enqueue(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::RelayEnqueueRequest,
    ) -> Result<proto::RelayEnqueueResponse, Status> {
        let peer = &ctx.auth().domain;
        let message = request
            .message
            .ok_or_else(|| Status::bad_request("message is missing"))?;
        // Checked first and alone: a peer relaying for another domain is refused outright.
        sender_name(peer, &message.sender)?;
        let delivery = self.check_relayed(peer, message, now_ms()).await?;
        let announce = (delivery.recipient, delivery.message.clone());
        let outcome = self
            .store
            .store_relayed(peer, vec![delivery])
            .await
            .map_err(errors::store)?
            .pop()
            .ok_or_else(Status::internal)?;
        match outcome {
            RelayStored::Stored(seq) => {
                self.announce(&announce.0, seq, &announce.1);
                Ok(proto::RelayEnqueueResponse {
                    seq: seq.0,
                    duplicate: false,
                })
            }
            RelayStored::Duplicate(seq) => Ok(proto::RelayEnqueueResponse {
                seq: seq.0,
                duplicate: true,
            }),
            other => Err(refusal(other)),
        }
    }

    pub(crate) async fn relay_batch_enqueue(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::RelayBatchEnqueueRequest,
    ) -> Result<proto::RelayBatchEnqueueResponse, Status> {
        let peer = &ctx.auth().domain;
        if request.messages.is_empty() || request.messages.len() > MAX_RELAY_BATCH {
            return Err(Status::bad_request(format!(
                "messages must hold 1 to {MAX_RELAY_BATCH} messages, got {}",
                request.messages.len()
            )));
        }
        for (i, message) in request.messages.iter().enumerate() {
            sender_name(peer, &message.sender)
                .map_err(|s| Status::new(s.code(), format!("messages[{i}]: {}", s.message())))?;
        }
        let now = now_ms();
        let mut results: Vec<proto::RelayResult> = Vec::with_capacity(request.messages.len());
        // Indexes into `results` of the checked messages, in order.
        let mut checked = Vec::new();
        let mut deliveries = Vec::new();
        for message in request.messages {
            let relay_id = message.relay_id.clone();
            match self.check_relayed(peer, message, now).await {
                Ok(delivery) => {
                    checked.push(results.len());
                    deliveries.push(delivery);
                    results.push(proto::RelayResult {
                        relay_id,
                        ..Default::default()
                    });
                }
                Err(status) => results.push(result_of_refusal(relay_id, &status)),
            }
        }
        let announce: Vec<(IdentityKey, NewMessage)> = deliveries
            .iter()
            .map(|d| (d.recipient, d.message.clone()))
            .collect();
        let outcomes = self
            .store
            .store_relayed(peer, deliveries)
            .await
            .map_err(errors::store)?;
        for ((index, outcome), (recipient, message)) in
            checked.into_iter().zip(outcomes).zip(announce)
        {
            let result = &mut results[index];
            match outcome {
                RelayStored::Stored(seq) => {
                    self.announce(&recipient, seq, &message);
                    result.outcome = proto::RelayOutcome::Stored as i32;
                    result.seq = seq.0;
                }
                RelayStored::Duplicate(seq) => {
                    result.outcome = proto::RelayOutcome::Duplicate as i32;
                    result.seq = seq.0;
                }
                other => {
                    let refused = result_of_refusal(result.relay_id.clone(), &refusal(other));
                    *result = refused;
                }
            }
        }
        Ok(proto::RelayBatchEnqueueResponse { results })
    }

    /// Where a Proxy lookup for `target` goes.
    fn proxy_target<'a>(&'a self, target: &'a str) -> Result<Target<'a>, Status> {
        let Some((name, domain)) = target.split_once('@') else {
            return Ok(Target::Local(target));
        };
        if self.federation.domain.as_deref() == Some(domain) {
            return Ok(Target::Local(name));
        }
        check_username(name)?;
        match self.federation.peer(domain) {
            Some(link) => Ok(Target::Remote(link, name)),
            None => Err(Status::not_found(format!(
                "{domain} is not a federation peer of this server, so `{target}` cannot be reached"
            ))),
        }
    }

    /// `name@<this domain>` of the caller, as peers know it.
    fn requester(&self, session: &Session) -> String {
        match &self.federation.domain {
            Some(domain) => format!("{}@{domain}", session.username),
            None => session.username.clone(),
        }
    }

    /// Takes a KeyPackage fetch token of `requester` (FetchKeyPackage's per-caller limit).
    fn key_fetch_token(&self, requester: &IdentityKey) -> Result<(), Status> {
        self.key_fetches.check(requester).map_err(|wait| {
            Status::rate_limited(
                format!(
                    "too many KeyPackage fetches: at most {} per minute per requester; retry later",
                    self.config.key_package_fetches_per_minute
                ),
                u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1),
            )
        })
    }

    /// The local user `name`, or `None` (invalid names are no user either).
    async fn local_account(&self, name: &str) -> Result<Option<Account>, Status> {
        if check_username(name).is_err() {
            return Ok(None);
        }
        self.store
            .account_by_username(name)
            .await
            .map_err(errors::store)
    }

    /// Pops a KeyPackage of the local user `name` (the requester's token already taken).
    async fn local_key_package(
        &self,
        name: &str,
    ) -> Result<proto::PeerFetchKeyPackageResponse, Status> {
        let Some(account) = self.local_account(name).await? else {
            return Ok(proto::PeerFetchKeyPackageResponse::default());
        };
        let fetched = match self.store.fetch_key_package(&account.identity_key).await {
            Ok(fetched) => fetched,
            // Deleted meanwhile: no such user.
            Err(StoreError::NotFound) => return Ok(proto::PeerFetchKeyPackageResponse::default()),
            Err(other) => return Err(errors::store(other)),
        };
        let (key_package, last_resort) = fetched.unwrap_or_default();
        Ok(proto::PeerFetchKeyPackageResponse {
            identity_key: Bytes::copy_from_slice(&account.identity_key),
            key_package,
            last_resort,
        })
    }

    async fn local_hybrid_key(
        &self,
        name: &str,
    ) -> Result<proto::PeerFetchHybridKeyResponse, Status> {
        let Some(account) = self.local_account(name).await? else {
            return Ok(proto::PeerFetchHybridKeyResponse::default());
        };
        let key = self
            .store
            .hybrid_keys(&[account.identity_key])
            .await
            .map_err(errors::store)?
            .pop()
            .flatten()
            .map(crate::keys::hybrid_to_proto);
        Ok(proto::PeerFetchHybridKeyResponse {
            identity_key: Bytes::copy_from_slice(&account.identity_key),
            found: key.is_some(),
            key,
        })
    }

    async fn local_resolve(&self, name: &str) -> Result<proto::PeerResolveUserResponse, Status> {
        Ok(match self.local_account(name).await? {
            Some(account) => proto::PeerResolveUserResponse {
                identity_key: Bytes::copy_from_slice(&account.identity_key),
                found: true,
            },
            None => proto::PeerResolveUserResponse::default(),
        })
    }

    /// The bare local name of a Peer* target (`name` or `name@<this domain>`).
    fn peer_target<'a>(&self, target: &'a str) -> Result<&'a str, Status> {
        match target.split_once('@') {
            None => Ok(target),
            Some((name, domain)) if self.federation.domain.as_deref() == Some(domain) => Ok(name),
            Some((_, domain)) => Err(Status::bad_request(format!(
                "target `{target}` is a user of {domain}, not of this server"
            ))),
        }
    }

    pub(crate) async fn proxy_fetch_key_package(
        &self,
        ctx: Ctx<Session>,
        request: proto::ProxyFetchKeyPackageRequest,
    ) -> Result<proto::ProxyFetchKeyPackageResponse, Status> {
        let target = self.proxy_target(&request.target)?;
        self.key_fetch_token(&identity_of(ctx.auth())?)?;
        let answer = match target {
            Target::Local(name) => self.local_key_package(name).await?,
            Target::Remote(link, name) => {
                let peer_request = proto::PeerFetchKeyPackageRequest {
                    target: name.to_owned(),
                    requester: self.requester(ctx.auth()),
                };
                link.call(|c| async move { c.peer_fetch_key_package(peer_request).await })
                    .await
                    .map_err(|e| e.to_status(&link.domain))?
            }
        };
        Ok(proto::ProxyFetchKeyPackageResponse {
            identity_key: checked_key(answer.identity_key)?,
            key_package: answer.key_package,
            last_resort: answer.last_resort,
        })
    }

    pub(crate) async fn proxy_fetch_hybrid_key(
        &self,
        ctx: Ctx<Session>,
        request: proto::ProxyFetchHybridKeyRequest,
    ) -> Result<proto::ProxyFetchHybridKeyResponse, Status> {
        let answer = match self.proxy_target(&request.target)? {
            Target::Local(name) => self.local_hybrid_key(name).await?,
            Target::Remote(link, name) => {
                let peer_request = proto::PeerFetchHybridKeyRequest {
                    target: name.to_owned(),
                    requester: self.requester(ctx.auth()),
                };
                link.call(|c| async move { c.peer_fetch_hybrid_key(peer_request).await })
                    .await
                    .map_err(|e| e.to_status(&link.domain))?
            }
        };
        Ok(proto::ProxyFetchHybridKeyResponse {
            identity_key: checked_key(answer.identity_key)?,
            found: answer.found && answer.key.is_some(),
            key: answer.key,
        })
    }

    pub(crate) async fn proxy_resolve_user(
        &self,
        ctx: Ctx<Session>,
        request: proto::ProxyResolveUserRequest,
    ) -> Result<proto::ProxyResolveUserResponse, Status> {
        let answer = match self.proxy_target(&request.target)? {
            Target::Local(name) => self.local_resolve(name).await?,
            Target::Remote(link, name) => {
                let peer_request = proto::PeerResolveUserRequest {
                    target: name.to_owned(),
                    requester: self.requester(ctx.auth()),
                };
                link.call(|c| async move { c.peer_resolve_user(peer_request).await })
                    .await
                    .map_err(|e| e.to_status(&link.domain))?
            }
        };
        let identity_key = checked_key(answer.identity_key)?;
        Ok(proto::ProxyResolveUserResponse {
            found: answer.found && !identity_key.is_empty(),
            identity_key,
        })
    }

    pub(crate) async fn peer_fetch_key_package(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerFetchKeyPackageRequest,
    ) -> Result<proto::PeerFetchKeyPackageResponse, Status> {
        sender_name(&ctx.auth().domain, &request.requester)?;
        let name = self.peer_target(&request.target)?;
        // Per requester, like FetchKeyPackage per caller: a remote user cannot drain a local
        // user's KeyPackages any faster than a local one.
        let mut bucket = Sha256::new();
        bucket.update(b"qpq federation requester\0");
        bucket.update(request.requester.as_bytes());
        self.key_fetch_token(&bucket.finalize().into())?;
        self.local_key_package(name).await
    }

    pub(crate) async fn peer_fetch_hybrid_key(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerFetchHybridKeyRequest,
    ) -> Result<proto::PeerFetchHybridKeyResponse, Status> {
        sender_name(&ctx.auth().domain, &request.requester)?;
        let name = self.peer_target(&request.target)?;
        self.local_hybrid_key(name).await
    }

    pub(crate) async fn peer_resolve_user(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerResolveUserRequest,
    ) -> Result<proto::PeerResolveUserResponse, Status> {
        sender_name(&ctx.auth().domain, &request.requester)?;
        let name = self.peer_target(&request.target)?;
        self.local_resolve(name).await
    }

    pub(crate) async fn federation_health(
        &self,
        _ctx: Ctx<Session>,
        request: proto::FederationHealthRequest,
    ) -> Result<proto::FederationHealthResponse, Status> {
        let links: Vec<&Arc<link::PeerLink>> = if request.domain.is_empty() {
            self.federation.peers().collect()
        } else {
            vec![self.federation.peer(&request.domain).ok_or_else(|| {
                Status::not_found(format!(
                    "{} is not a federation peer of this server",
                    request.domain
                ))
            })?]
        };
        let mut peers = Vec::with_capacity(links.len());
        for link in links {
            let health = link.health();
            peers.push(proto::PeerHealth {
                domain: link.domain.clone(),
                reachable: health.reachable,
                latency_ms: health.latency_ms,
                outbox_depth: self
                    .store
                    .outbox_depth(&link.domain)
                    .await
                    .map_err(errors::store)?,
                last_error: health.last_error,
                last_success_unix_ms: health.last_success_ms,
            });
        }
        Ok(proto::FederationHealthResponse {
            local_domain: self.federation.domain.clone().unwrap_or_default(),
            peers,
        })
    }
}

/// The name part of `sender`, which must be `name@<peer>`; anything else is Forbidden.
fn sender_name<'a>(peer: &str, sender: &'a str) -> Result<&'a str, Status> {
    match sender.split_once('@') {
        Some((name, domain)) if domain == peer => Ok(name),
        _ => Err(Status::forbidden(format!(
            "`{}` is not a user of {peer}: a peer may relay and ask only for users of its own domain",
            sender.chars().take(80).collect::<String>()
        ))),
    }
}

/// The status for a delivery the store refused.
fn refusal(outcome: RelayStored) -> Status {
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
fn result_of_refusal(relay_id: Bytes, status: &Status) -> proto::RelayResult {
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
fn checked_key(key: Bytes) -> Result<Bytes, Status> {
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
