//! Published P2P endpoints: how to reach a device directly, one per device, with an expiry.

use std::future::Future;

use super::{IdentityKey, StoreError};

/// A published endpoint (an iroh node address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// Device of the publishing session (0-64 bytes; empty when the session had none).
    pub device_id: Vec<u8>,
    /// 32-byte node id.
    pub node_id: [u8; 32],
    /// Home relay URL; may be empty.
    pub relay_url: String,
    /// Direct socket addresses.
    pub direct_addrs: Vec<String>,
    /// Publication time, Unix ms.
    pub published_at_ms: u64,
    /// Expiry, Unix ms; from then on it is not returned.
    pub expires_at_ms: u64,
}

/// Storage of P2P endpoints. Mutations are durable on `Ok`.
pub trait P2pStore: Send + Sync + 'static {
    /// Sets (replaces) the endpoint of `(identity, endpoint.device_id)`.
    /// [`StoreError::NotFound`] when the account does not exist.
    fn publish_endpoint(
        &self,
        identity: &IdentityKey,
        endpoint: EndpointRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The account's endpoints that expire after `now_ms`, newest first.
    fn endpoints_of(
        &self,
        identity: &IdentityKey,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<EndpointRecord>, StoreError>> + Send;

    /// Deletes endpoints that expired at or before `now_ms`; returns how many and whether
    /// more remain (bounded work per call).
    fn purge_expired_endpoints(
        &self,
        now_ms: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send;
}
