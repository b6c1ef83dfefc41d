//! Federation (900-908): the methods other servers call (relays and peer lookups, `auth =
//! "federation"`: the authenticator has matched the caller's certificate to a pinned peer)
//! and the proxy lookups local users call to reach users of a peer.
//!
//! How a message reaches a peer (outbox, relay workers, links) is `crate::federation`.

use crate::api::auth::{check_identity_key, check_username};
use crate::auth::identity_of;
use crate::federation::link::PeerLink;
use crate::federation::{
    MAX_CLOCK_SKEW_MS, MAX_PAYLOAD, MAX_RELAY_AGE_MS, MAX_RELAY_BATCH, RELAY_ID_RETENTION_MS,
    Target, checked_key, refusal, result_of_refusal, sender_name,
};
use crate::store::{
    Account, IdentityKey, NewMessage, QueueLimits, RelayStored, RelayedDelivery, Store, StoreError,
};
use crate::{Messenger, errors};
use bytes::Bytes;
use qpq_runtime::{Ctx, FederationPeer, Session, Status};
use qpq_schema::{FederationService, proto};
use sha2::{Digest, Sha256};
use std::sync::Arc;

impl<S: Store> FederationService for Messenger<S> {
    async fn relay_enqueue(
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
        let delivery = self.check_relayed(peer, message, self.now_ms()).await?;
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

    async fn relay_batch_enqueue(
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
        let now = self.now_ms();
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

    async fn proxy_fetch_key_package(
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

    async fn proxy_fetch_hybrid_key(
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

    async fn proxy_resolve_user(
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

    async fn federation_health(
        &self,
        _ctx: Ctx<Session>,
        request: proto::FederationHealthRequest,
    ) -> Result<proto::FederationHealthResponse, Status> {
        let links: Vec<&Arc<PeerLink>> = if request.domain.is_empty() {
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

    async fn peer_fetch_key_package(
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

    async fn peer_fetch_hybrid_key(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerFetchHybridKeyRequest,
    ) -> Result<proto::PeerFetchHybridKeyResponse, Status> {
        sender_name(&ctx.auth().domain, &request.requester)?;
        let name = self.peer_target(&request.target)?;
        self.local_hybrid_key(name).await
    }

    async fn peer_resolve_user(
        &self,
        ctx: Ctx<FederationPeer>,
        request: proto::PeerResolveUserRequest,
    ) -> Result<proto::PeerResolveUserResponse, Status> {
        sender_name(&ctx.auth().domain, &request.requester)?;
        let name = self.peer_target(&request.target)?;
        self.local_resolve(name).await
    }
}

impl<S: Store> Messenger<S> {
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
        let channel_id = crate::api::channel::optional_channel_id(&message.channel_id)?;
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
            .map(crate::api::keys::hybrid_to_proto);
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

    /// `name@<this domain>` of the caller, as peers know it.
    fn requester(&self, session: &Session) -> String {
        match &self.federation.domain {
            Some(domain) => format!("{}@{domain}", session.username),
            None => session.username.clone(),
        }
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
}
