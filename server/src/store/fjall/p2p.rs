//! [`P2pStore`] on fjall.
//!
//! # Key layout
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `p2p_endpoints` | identity(32) ‖ device_id(0-64) | `v1 ‖ published(8) ‖ expires(8) ‖ node_id(32) ‖ relay_url(2+n) ‖ count(1) ‖ addr(2+n)…` |
//! | `p2p_expiry` | expires(8) ‖ identity(32) ‖ device_id(0-64) | empty — sweep order |
//!
//! The identity is fixed-width, so the device id is the rest of the key; an empty device id
//! is the slot of sessions without a device.

use fjall::OwnedWriteBatch;

use super::record::{Reader, Writer};
use super::{Engine, FjallStore, engine_err};
use crate::store::{Account, EndpointRecord, IdentityKey, P2pStore, StoreError};

/// Most expired endpoints one purge call deletes.
const PURGE_CHUNK: usize = 1_000;

fn endpoint_key(identity: &IdentityKey, device: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + device.len());
    k.extend_from_slice(identity);
    k.extend_from_slice(device);
    k
}

fn expiry_key(expires_at_ms: u64, identity: &IdentityKey, device: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(40 + device.len());
    k.extend_from_slice(&expires_at_ms.to_be_bytes());
    k.extend_from_slice(identity);
    k.extend_from_slice(device);
    k
}

fn encode(e: &EndpointRecord) -> Result<Vec<u8>, StoreError> {
    let count = u8::try_from(e.direct_addrs.len())
        .map_err(|_| StoreError::InvalidArgument("too many direct addresses".into()))?;
    let mut w = Writer::new(64 + e.relay_url.len() + 48 * e.direct_addrs.len());
    w.u64(e.published_at_ms)
        .u64(e.expires_at_ms)
        .raw(&e.node_id)
        .bytes16(e.relay_url.as_bytes())?
        .u8(count);
    for addr in &e.direct_addrs {
        w.bytes16(addr.as_bytes())?;
    }
    Ok(w.finish())
}

fn decode(key: &[u8], value: &[u8]) -> Result<EndpointRecord, StoreError> {
    let device_id = key
        .get(32..)
        .ok_or_else(|| StoreError::Corrupt("p2p endpoint key is too short".into()))?
        .to_vec();
    let mut r = Reader::new(value, "p2p endpoint")?;
    let published_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let node_id = r.array()?;
    let relay_url = r.string16()?;
    let count = r.u8()?;
    let mut direct_addrs = Vec::with_capacity(count.into());
    for _ in 0..count {
        direct_addrs.push(r.string16()?);
    }
    r.end()?;
    Ok(EndpointRecord {
        device_id,
        node_id,
        relay_url,
        direct_addrs,
        published_at_ms,
        expires_at_ms,
    })
}

impl Engine {
    /// Adds the removal of one device's endpoint (if any) to `batch`.
    pub(super) fn remove_endpoint(
        &self,
        batch: &mut OwnedWriteBatch,
        identity: &IdentityKey,
        device: &[u8],
    ) -> Result<(), StoreError> {
        let endpoints = self.ks("p2p_endpoints")?;
        let key = endpoint_key(identity, device);
        if let Some(v) = endpoints.get(&key).map_err(engine_err)? {
            let old = decode(&key, &v)?;
            batch.remove(
                self.ks("p2p_expiry")?,
                expiry_key(old.expires_at_ms, identity, device),
            );
            batch.remove(endpoints, key);
        }
        Ok(())
    }

    fn publish_endpoint(
        &self,
        identity: &IdentityKey,
        endpoint: &EndpointRecord,
    ) -> Result<((), bool), StoreError> {
        self.account_must_exist(identity)?;
        let mut batch = self.db.batch();
        self.remove_endpoint(&mut batch, identity, &endpoint.device_id)?;
        batch.insert(
            self.ks("p2p_endpoints")?,
            endpoint_key(identity, &endpoint.device_id),
            encode(endpoint)?,
        );
        batch.insert(
            self.ks("p2p_expiry")?,
            expiry_key(endpoint.expires_at_ms, identity, &endpoint.device_id),
            Vec::new(),
        );
        Ok(((), self.commit(batch)?))
    }

    fn purge_expired_endpoints(&self, now_ms: u64) -> Result<((u64, bool), bool), StoreError> {
        let endpoints = self.ks("p2p_endpoints")?;
        let expiry = self.ks("p2p_expiry")?;
        let upper = now_ms.saturating_add(1).to_be_bytes();
        let mut batch = self.db.batch();
        let (mut purged, mut more) = (0u64, false);
        for (n, guard) in expiry.range(..upper).enumerate() {
            if n == PURGE_CHUNK {
                more = true;
                break;
            }
            let key = guard.key().map_err(engine_err)?;
            let (Some(expires), Some(rest)) = (key.get(..8), key.get(8..)) else {
                return Err(StoreError::Corrupt("p2p expiry key is too short".into()));
            };
            let expires = u64::from_be_bytes(
                expires
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("p2p expiry key".into()))?,
            );
            batch.remove(expiry, key.to_vec());
            if let Some(v) = endpoints.get(rest).map_err(engine_err)?
                && decode(rest, &v)?.expires_at_ms == expires
            {
                batch.remove(endpoints, rest.to_vec());
                purged += 1;
            }
        }
        Ok(((purged, more), self.commit(batch)?))
    }

    /// Adds the removal of an account's endpoints to its deletion batch.
    pub(super) fn delete_p2p_data(
        &self,
        batch: &mut OwnedWriteBatch,
        account: &Account,
    ) -> Result<(), StoreError> {
        let endpoints = self.ks("p2p_endpoints")?;
        let expiry = self.ks("p2p_expiry")?;
        for guard in endpoints.prefix(account.identity_key) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            let e = decode(&key, &value)?;
            batch.remove(
                expiry,
                expiry_key(e.expires_at_ms, &account.identity_key, &e.device_id),
            );
            batch.remove(endpoints, key.to_vec());
        }
        Ok(())
    }
}

impl P2pStore for FjallStore {
    async fn publish_endpoint(
        &self,
        identity: &IdentityKey,
        endpoint: EndpointRecord,
    ) -> Result<(), StoreError> {
        if endpoint.device_id.len() > 64 {
            return Err(StoreError::InvalidArgument(
                "device id longer than 64 bytes".into(),
            ));
        }
        let identity = *identity;
        self.write(move |e| e.publish_endpoint(&identity, &endpoint))
            .await
    }

    async fn endpoints_of(
        &self,
        identity: &IdentityKey,
        now_ms: u64,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let identity = *identity;
        self.blocking(move |e| {
            let mut out = Vec::new();
            for guard in e.ks("p2p_endpoints")?.prefix(identity) {
                let (key, value) = guard.into_inner().map_err(engine_err)?;
                let endpoint = decode(&key, &value)?;
                if endpoint.expires_at_ms > now_ms {
                    out.push(endpoint);
                }
            }
            out.sort_by_key(|e| std::cmp::Reverse(e.published_at_ms));
            Ok(out)
        })
        .await
    }

    async fn purge_expired_endpoints(&self, now_ms: u64) -> Result<(u64, bool), StoreError> {
        self.write(move |e| e.purge_expired_endpoints(now_ms)).await
    }
}
