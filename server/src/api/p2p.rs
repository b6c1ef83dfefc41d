//! P2P (800-801): direct endpoints (iroh node addresses) of devices.
//!
//! Each device (each device-less session slot of an account, too) publishes one endpoint
//! with a time to live (default 1 h, capped at 24 h); publishing again replaces it, revoking
//! the device or deleting the account removes it. ResolveEndpoint returns the unexpired ones,
//! newest first; the sweeper deletes expired ones. Any session may resolve any local identity:
//! the protocol allows restricting this to users who share a channel, which this server does
//! not do yet (endpoints reveal IP addresses; clients publish only when they want to be
//! reachable).

use std::net::SocketAddr;

use bytes::Bytes;
use qpq_runtime::{Anonymous, Ctx, Session, Status};
use qpq_schema::{P2pService, proto};

use crate::auth::identity_of;
use crate::store::{EndpointRecord, IdentityKey, Store, StoreError};
use crate::{Messenger, errors};

/// TTL when the request says 0, in seconds.
const DEFAULT_TTL_SECS: u64 = 3_600;
/// Longest TTL, in seconds (longer requests are capped).
const MAX_TTL_SECS: u64 = 24 * 3_600;
/// Most direct addresses of one endpoint.
const MAX_ADDRS: usize = 16;
/// Longest relay URL, in bytes.
const MAX_RELAY_URL: usize = 1_024;

fn check_endpoint(endpoint: &proto::P2pEndpoint) -> Result<[u8; 32], Status> {
    let node_id: [u8; 32] = endpoint.node_id[..].try_into().map_err(|_| {
        Status::bad_request(format!(
            "endpoint.node_id must be the 32-byte node id (an Ed25519 public key), got {} bytes",
            endpoint.node_id.len()
        ))
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&node_id)
        .map_err(|_| Status::bad_request("endpoint.node_id is not a valid Ed25519 public key"))?;
    let url = &endpoint.relay_url;
    if url.len() > MAX_RELAY_URL {
        return Err(Status::bad_request(format!(
            "endpoint.relay_url is {} bytes; at most {MAX_RELAY_URL}",
            url.len()
        )));
    }
    let lower = url.to_ascii_lowercase();
    if !url.is_empty()
        && (!(lower.starts_with("https://") || lower.starts_with("http://"))
            || url.bytes().any(|b| b.is_ascii_control() || b == b' '))
    {
        return Err(Status::bad_request(
            "endpoint.relay_url must be empty or an http(s):// URL without spaces",
        ));
    }
    if endpoint.direct_addrs.len() > MAX_ADDRS {
        return Err(Status::bad_request(format!(
            "endpoint.direct_addrs has {} addresses; at most {MAX_ADDRS}",
            endpoint.direct_addrs.len()
        )));
    }
    for addr in &endpoint.direct_addrs {
        if addr.parse::<SocketAddr>().is_err() {
            return Err(Status::bad_request(format!(
                "endpoint.direct_addrs entry `{}` is not an `ip:port` or `[ipv6]:port` address",
                addr.chars().take(80).collect::<String>()
            )));
        }
    }
    Ok(node_id)
}

impl<S: Store> Messenger<S> {
    /// Deletes expired endpoints (called by the sweeper).
    pub(crate) async fn sweep_endpoints(&self) {
        loop {
            match self.store.purge_expired_endpoints(self.now_ms()).await {
                Ok((_, true)) => continue,
                Ok((_, false)) => break,
                Err(error) => {
                    tracing::warn!(%error, "endpoint sweep failed");
                    break;
                }
            }
        }
    }
}

impl<S: Store> P2pService for Messenger<S> {
    async fn health(
        &self,
        _ctx: Ctx<Anonymous>,
        _request: proto::HealthRequest,
    ) -> Result<proto::HealthResponse, Status> {
        let status = if self.is_serving() {
            proto::ServingStatus::Serving
        } else {
            proto::ServingStatus::NotServing
        };
        Ok(proto::HealthResponse {
            status: status as i32,
            uptime_secs: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            server_time_unix_ms: self.now_ms(),
            domain: self.config.domain.clone().unwrap_or_default(),
        })
    }

    async fn publish_endpoint(
        &self,
        ctx: Ctx<Session>,
        request: proto::PublishEndpointRequest,
    ) -> Result<proto::PublishEndpointResponse, Status> {
        let identity = identity_of(ctx.auth())?;
        let endpoint = request
            .endpoint
            .ok_or_else(|| Status::bad_request("endpoint is missing"))?;
        let node_id = check_endpoint(&endpoint)?;
        let ttl = match u64::from(request.ttl_secs) {
            0 => DEFAULT_TTL_SECS,
            n => n.min(MAX_TTL_SECS),
        };
        let now = self.now_ms();
        let expires_at_ms = now.saturating_add(ttl * 1_000);
        let record = EndpointRecord {
            device_id: ctx.auth().device_id.as_deref().unwrap_or_default().to_vec(),
            node_id,
            relay_url: endpoint.relay_url,
            direct_addrs: endpoint.direct_addrs,
            published_at_ms: now,
            expires_at_ms,
        };
        match self.store.publish_endpoint(&identity, record).await {
            Ok(()) => Ok(proto::PublishEndpointResponse {
                expires_at_unix_ms: expires_at_ms,
            }),
            Err(StoreError::NotFound) => Err(Status::unauthorized(
                "your account no longer exists; log in again",
            )),
            Err(other) => Err(errors::store(other)),
        }
    }

    async fn resolve_endpoint(
        &self,
        _ctx: Ctx<Session>,
        request: proto::ResolveEndpointRequest,
    ) -> Result<proto::ResolveEndpointResponse, Status> {
        let identity: IdentityKey = request.identity_key[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "identity_key must be 32 bytes, got {}",
                request.identity_key.len()
            ))
        })?;
        let endpoints = self
            .store
            .endpoints_of(&identity, self.now_ms())
            .await
            .map_err(errors::store)?
            .into_iter()
            .map(|e| proto::PublishedEndpoint {
                endpoint: Some(proto::P2pEndpoint {
                    node_id: Bytes::copy_from_slice(&e.node_id),
                    relay_url: e.relay_url,
                    direct_addrs: e.direct_addrs,
                }),
                device_id: Bytes::from(e.device_id),
                expires_at_unix_ms: e.expires_at_ms,
            })
            .collect();
        Ok(proto::ResolveEndpointResponse { endpoints })
    }
}
