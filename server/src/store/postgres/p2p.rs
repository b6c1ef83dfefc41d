//! [`P2pStore`] on PostgreSQL.
//!
//! Table (`schema/p2p.sql`): `p2p_endpoints`, keyed by (identity, device id), with an index
//! on the expiry for the sweep. Publishing checks the account under a share lock on its row
//! (lock order: accounts first), so no endpoint outlives a concurrent account deletion.

use tokio_postgres::Row;

use super::{
    PURGE_CHUNK, PgError, PgStore, Tx, account_exists, execute, fixed, int, query, query_one, text,
    uint,
};
use crate::store::{Account, EndpointRecord, IdentityKey, P2pStore, StoreError};

/// Longest device id of an endpoint.
const MAX_DEVICE_ID: usize = 64;

const ENDPOINT_COLUMNS: &str =
    "device_id, node_id, relay_url, direct_addrs, published_at_ms, expires_at_ms";

/// Refuses what the embedded store cannot encode either: a 2-byte length per string and a
/// 1-byte address count.
fn check(endpoint: &EndpointRecord) -> Result<(), StoreError> {
    if endpoint.device_id.len() > MAX_DEVICE_ID {
        return Err(StoreError::InvalidArgument(
            "device id longer than 64 bytes".into(),
        ));
    }
    if u8::try_from(endpoint.direct_addrs.len()).is_err() {
        return Err(StoreError::InvalidArgument(
            "too many direct addresses".into(),
        ));
    }
    let too_long = std::iter::once(&endpoint.relay_url)
        .chain(&endpoint.direct_addrs)
        .any(|s| u16::try_from(s.len()).is_err());
    if too_long {
        return Err(StoreError::InvalidArgument(
            "field longer than 65535 bytes".into(),
        ));
    }
    Ok(())
}

fn endpoint_of(row: &Row) -> Result<EndpointRecord, StoreError> {
    let addrs: Vec<Vec<u8>> = row.get("direct_addrs");
    Ok(EndpointRecord {
        device_id: row.get("device_id"),
        node_id: fixed(row.get("node_id"), "p2p node id")?,
        relay_url: text(row.get("relay_url"), "p2p relay URL")?,
        direct_addrs: addrs
            .into_iter()
            .map(|a| text(a, "p2p direct address"))
            .collect::<Result<_, _>>()?,
        published_at_ms: uint(row.get("published_at_ms"))?,
        expires_at_ms: uint(row.get("expires_at_ms"))?,
    })
}

impl P2pStore for PgStore {
    async fn publish_endpoint(
        &self,
        identity: &IdentityKey,
        endpoint: EndpointRecord,
    ) -> Result<(), StoreError> {
        check(&endpoint)?;
        let endpoint = &endpoint;
        let addrs: Vec<&[u8]> = endpoint.direct_addrs.iter().map(|a| a.as_bytes()).collect();
        let addrs = &addrs;
        self.transact("publish_endpoint", |tx, _| {
            Box::pin(async move {
                if !account_exists(tx, identity).await? {
                    return Err(StoreError::NotFound.into());
                }
                execute(
                    tx,
                    "INSERT INTO p2p_endpoints (identity_key, device_id, node_id, relay_url, direct_addrs, \
                     published_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (identity_key, device_id) DO UPDATE SET node_id = EXCLUDED.node_id, \
                     relay_url = EXCLUDED.relay_url, direct_addrs = EXCLUDED.direct_addrs, \
                     published_at_ms = EXCLUDED.published_at_ms, expires_at_ms = EXCLUDED.expires_at_ms",
                    &[
                        &identity.as_slice(),
                        &endpoint.device_id,
                        &endpoint.node_id.as_slice(),
                        &endpoint.relay_url.as_bytes(),
                        addrs,
                        &int(endpoint.published_at_ms),
                        &int(endpoint.expires_at_ms),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn endpoints_of(
        &self,
        identity: &IdentityKey,
        now_ms: u64,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let now = int(now_ms);
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    &format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM p2p_endpoints WHERE identity_key = $1 \
                         AND expires_at_ms > $2 ORDER BY published_at_ms DESC, device_id"
                    ),
                    &[&identity.as_slice(), &now],
                )
                .await?;
                Ok(rows
                    .iter()
                    .map(endpoint_of)
                    .collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
    }

    async fn purge_expired_endpoints(&self, now_ms: u64) -> Result<(u64, bool), StoreError> {
        let now = int(now_ms);
        self.transact("purge_expired_endpoints", |tx, _| {
            Box::pin(async move {
                let purged = execute(
                    tx,
                    "DELETE FROM p2p_endpoints WHERE (identity_key, device_id) IN \
                     (SELECT identity_key, device_id FROM p2p_endpoints WHERE expires_at_ms <= $1 \
                     ORDER BY expires_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&now, &PURGE_CHUNK],
                )
                .await?;
                let more = query_one(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM p2p_endpoints WHERE expires_at_ms <= $1) AS more",
                    &[&now],
                )
                .await?
                .get("more");
                Ok((purged, more))
            })
        })
        .await
    }
}

/// Removes the endpoints of a deleted account.
/// Removes the endpoint of one device (its revocation).
pub(super) async fn remove_endpoint(
    tx: &Tx<'_>,
    identity: &IdentityKey,
    device_id: &[u8],
) -> Result<(), PgError> {
    execute(
        tx,
        "DELETE FROM p2p_endpoints WHERE identity_key = $1 AND device_id = $2",
        &[&identity.as_slice(), &device_id],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_p2p_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    execute(
        tx,
        "DELETE FROM p2p_endpoints WHERE identity_key = $1",
        &[&account.identity_key.as_slice()],
    )
    .await?;
    Ok(())
}
