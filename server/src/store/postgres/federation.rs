//! [`FederationStore`] on PostgreSQL.
//!
//! Outboxes: `outbox_meta` has one row per peer (the next position, which only grows, and
//! the counters), `outbox` one row per waiting message. Relay ids: `relay_ids`, one row per
//! (peer, relay id), written in the transaction of the message it stored.
//!
//! Locks, in the order of the module doc of `postgres`: `enqueue_with_outbox` locks the local
//! recipients' queue rows (through [`enqueue_in`]), then the peers' `outbox_meta` rows in
//! peer order; `outbox_remove` locks one `outbox_meta` row. A relayed delivery is one
//! transaction of its own: it first claims its relay id (inserting the row; a concurrent
//! relay of the same id waits on it, then finds it a duplicate), then locks the recipient's
//! queue row. That transaction holds no other lock while it waits on a relay id, and nothing
//! else touches relay ids, so the claim cannot take part in a cycle.
//!
//! Nothing here is keyed by a local account (outbox entries are messages already sent, and a
//! relay id records only a sequence number): account deletion has nothing to remove.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::Row;

use super::{PgStore, enqueue_in, execute, fixed, int, query, query_one, query_opt, text, uint};
use crate::store::federation::{
    FederationStore, OutboxEntry, OutboxLimits, OutboxMessage, RelayStored, RelayedDelivery,
};
use crate::store::{ChannelId, IdentityKey, NewMessage, QueueDepth, Seq, StoreError};

/// Most expired relay ids one purge call forgets.
const PURGE_CHUNK: i64 = 1_000;

/// Longest sender or recipient an outbox entry keeps (the embedded store's record bound).
const MAX_NAME_BYTES: usize = u16::MAX as usize;

fn check_peer(peer: &str) -> Result<(), StoreError> {
    if peer.is_empty() || peer.len() > 255 {
        return Err(StoreError::InvalidArgument(
            "peer domain must be 1 to 255 bytes".into(),
        ));
    }
    Ok(())
}

fn check_names(m: &OutboxMessage) -> Result<(), StoreError> {
    if m.sender.len() > MAX_NAME_BYTES || m.recipient.len() > MAX_NAME_BYTES {
        return Err(StoreError::InvalidArgument(
            "field longer than 65535 bytes".into(),
        ));
    }
    Ok(())
}

fn entry_of(row: &Row) -> Result<OutboxEntry, StoreError> {
    let channel: Option<Vec<u8>> = row.get("channel_id");
    Ok(OutboxEntry {
        position: uint(row.get("position"))?,
        message: OutboxMessage {
            relay_id: fixed(row.get("relay_id"), "relay id")?,
            sender: text(row.get("sender"), "outbox sender")?,
            sender_identity_key: fixed(row.get("sender_identity_key"), "sender identity key")?,
            recipient: text(row.get("recipient"), "outbox recipient")?,
            channel_id: channel
                .map(|c| fixed(&c, "channel id").map(ChannelId))
                .transpose()?,
            payload: bytes::Bytes::from(row.get::<_, Vec<u8>>("payload")),
            enqueued_at_ms: uint(row.get("enqueued_at_ms"))?,
            ttl_ms: uint(row.get("ttl_ms"))?,
        },
    })
}

/// `(next_position, depth)` of one peer's outbox as locked.
#[derive(Clone, Copy, Default)]
struct Meta {
    next: u64,
    depth: QueueDepth,
}

/// Outbox rows to insert, as columns (one multi-row insert).
#[derive(Default)]
struct Entries<'a> {
    peer: Vec<&'a str>,
    position: Vec<i64>,
    relay_id: Vec<&'a [u8]>,
    sender: Vec<&'a [u8]>,
    sender_identity: Vec<&'a [u8]>,
    recipient: Vec<&'a [u8]>,
    channel: Vec<Option<&'a [u8]>>,
    payload: Vec<&'a [u8]>,
    enqueued: Vec<i64>,
    ttl: Vec<i64>,
}

impl FederationStore for PgStore {
    async fn enqueue_with_outbox(
        &self,
        local: Vec<(IdentityKey, NewMessage)>,
        outbox: Vec<(String, OutboxMessage)>,
        limits: OutboxLimits,
    ) -> Result<Vec<Seq>, StoreError> {
        if local.is_empty() && outbox.is_empty() {
            return Ok(Vec::new());
        }
        let mut peers: Vec<&str> = outbox
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| check_peer(p).is_ok())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        let (local, outbox, peers) = (&local, &outbox, &peers);
        let queue_limits = self.limits();
        self.transact("enqueue_with_outbox", |tx, _| {
            Box::pin(async move {
                // Lock order: queues (inside enqueue_in), then outbox_meta.
                let seqs = if local.is_empty() {
                    Vec::new()
                } else {
                    enqueue_in(tx, local, self.now(), queue_limits).await?
                };
                if outbox.is_empty() {
                    return Ok(seqs);
                }
                let mut metas: BTreeMap<&str, Meta> = BTreeMap::new();
                if !peers.is_empty() {
                    execute(
                        tx,
                        "INSERT INTO outbox_meta (peer, next_position, messages, bytes) \
                         SELECT p, 0, 0, 0 FROM UNNEST($1::text[]) AS p \
                         ON CONFLICT (peer) DO NOTHING",
                        &[peers],
                    )
                    .await?;
                    let rows = query(
                        tx,
                        "SELECT peer, next_position, messages, bytes FROM outbox_meta \
                         WHERE peer = ANY($1) ORDER BY peer FOR UPDATE",
                        &[peers],
                    )
                    .await?;
                    for row in &rows {
                        let peer: &str = row.get("peer");
                        let Some(&name) = peers.iter().find(|p| **p == peer) else {
                            return Err(
                                StoreError::Corrupt("outbox meta of another peer".into()).into()
                            );
                        };
                        metas.insert(
                            name,
                            Meta {
                                next: uint(row.get("next_position"))?,
                                depth: QueueDepth {
                                    messages: uint(row.get("messages"))?,
                                    bytes: uint(row.get("bytes"))?,
                                },
                            },
                        );
                    }
                }
                let mut new = Entries::default();
                for (peer, m) in outbox {
                    check_peer(peer)?;
                    let meta = metas
                        .get_mut(peer.as_str())
                        .ok_or_else(|| StoreError::Corrupt("outbox meta row vanished".into()))?;
                    let add = QueueDepth {
                        messages: 1,
                        bytes: m.payload.len() as u64,
                    };
                    meta.depth
                        .admits(add, limits.max_messages, limits.max_bytes)
                        .map_err(|limit| StoreError::QueueFull { limit })?;
                    check_names(m)?;
                    new.peer.push(peer);
                    new.position.push(int(meta.next));
                    new.relay_id.push(&m.relay_id);
                    new.sender.push(m.sender.as_bytes());
                    new.sender_identity.push(&m.sender_identity_key);
                    new.recipient.push(m.recipient.as_bytes());
                    new.channel
                        .push(m.channel_id.as_ref().map(|c| c.0.as_slice()));
                    new.payload.push(&m.payload);
                    new.enqueued.push(int(m.enqueued_at_ms));
                    new.ttl.push(int(m.ttl_ms));
                    meta.next = meta
                        .next
                        .checked_add(1)
                        .filter(|n| i64::try_from(*n).is_ok())
                        .ok_or_else(|| StoreError::Corrupt("outbox position overflow".into()))?;
                    meta.depth.messages += 1;
                    meta.depth.bytes = meta.depth.bytes.saturating_add(add.bytes);
                }
                execute(
                    tx,
                    "INSERT INTO outbox (peer, position, relay_id, sender, sender_identity_key, \
                     recipient, channel_id, payload, enqueued_at_ms, ttl_ms) \
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::bytea[], $4::bytea[], \
                     $5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[], $9::int8[], $10::int8[])",
                    &[
                        &new.peer,
                        &new.position,
                        &new.relay_id,
                        &new.sender,
                        &new.sender_identity,
                        &new.recipient,
                        &new.channel,
                        &new.payload,
                        &new.enqueued,
                        &new.ttl,
                    ],
                )
                .await?;
                let names: Vec<&str> = metas.keys().copied().collect();
                let next: Vec<i64> = metas.values().map(|m| int(m.next)).collect();
                let messages: Vec<i64> = metas.values().map(|m| int(m.depth.messages)).collect();
                let bytes: Vec<i64> = metas.values().map(|m| int(m.depth.bytes)).collect();
                execute(
                    tx,
                    "UPDATE outbox_meta AS o SET next_position = u.next, messages = u.messages, \
                     bytes = u.bytes FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
                     AS u(peer, next, messages, bytes) WHERE o.peer = u.peer",
                    &[&names, &next, &messages, &bytes],
                )
                .await?;
                Ok(seqs)
            })
        })
        .await
    }

    async fn outbox_front(&self, peer: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        check_peer(peer)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let take = int(limit as u64);
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    "SELECT position, relay_id, sender, sender_identity_key, recipient, channel_id, \
                     payload, enqueued_at_ms, ttl_ms FROM outbox WHERE peer = $1 \
                     ORDER BY position LIMIT $2",
                    &[&peer, &take],
                )
                .await?;
                Ok(rows.iter().map(entry_of).collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
    }

    async fn outbox_remove(&self, peer: &str, positions: &[u64]) -> Result<u64, StoreError> {
        check_peer(peer)?;
        let mut seen = HashSet::with_capacity(positions.len());
        let wanted: Vec<i64> = positions
            .iter()
            .filter(|p| seen.insert(**p) && i64::try_from(**p).is_ok())
            .map(|&p| int(p))
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let wanted = &wanted;
        self.transact("outbox_remove", |tx, _| {
            Box::pin(async move {
                let locked = query_opt(
                    tx,
                    "SELECT 1 FROM outbox_meta WHERE peer = $1 FOR UPDATE",
                    &[&peer],
                )
                .await?;
                if locked.is_none() {
                    return Ok(0);
                }
                let gone = query_one(
                    tx,
                    "WITH gone AS (DELETE FROM outbox WHERE peer = $1 AND position = ANY($2) \
                     RETURNING octet_length(payload) AS n) \
                     SELECT count(*)::int8 AS messages, coalesce(sum(n), 0)::int8 AS bytes FROM gone",
                    &[&peer, wanted],
                )
                .await?;
                let removed = uint(gone.get("messages"))?;
                if removed > 0 {
                    // Saturating: counters that disagree with the rows heal as the outbox drains.
                    execute(
                        tx,
                        "UPDATE outbox_meta SET messages = greatest(messages - $2, 0), \
                         bytes = greatest(bytes - $3, 0) WHERE peer = $1",
                        &[&peer, &int(removed), &gone.get::<_, i64>("bytes")],
                    )
                    .await?;
                }
                Ok(removed)
            })
        })
        .await
    }

    async fn outbox_depth(&self, peer: &str) -> Result<u64, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT messages FROM outbox_meta WHERE peer = $1",
                    &[&peer],
                )
                .await?;
                Ok(row
                    .map(|r| uint(r.get("messages")))
                    .transpose()?
                    .unwrap_or(0))
            })
        })
        .await
    }

    async fn outbox_peers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    "SELECT peer, messages FROM outbox_meta WHERE messages > 0 ORDER BY peer",
                    &[],
                )
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    out.push((row.get::<_, String>("peer"), uint(row.get("messages"))?));
                }
                Ok(out)
            })
        })
        .await
    }

    async fn store_relayed(
        &self,
        peer: &str,
        deliveries: Vec<RelayedDelivery>,
    ) -> Result<Vec<RelayStored>, StoreError> {
        check_peer(peer)?;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            outcomes.push(self.store_one_relayed(peer, d).await?);
        }
        Ok(outcomes)
    }

    async fn purge_expired_relay_ids(&self, now_ms: u64) -> Result<(u64, bool), StoreError> {
        let now = int(now_ms);
        self.transact("purge_expired_relay_ids", |tx, _| {
            Box::pin(async move {
                let purged = execute(
                    tx,
                    "WITH doomed AS (SELECT peer, relay_id FROM relay_ids \
                     WHERE remember_until_ms <= $1 ORDER BY remember_until_ms LIMIT $2 \
                     FOR UPDATE SKIP LOCKED) \
                     DELETE FROM relay_ids AS r USING doomed AS d \
                     WHERE r.peer = d.peer AND r.relay_id = d.relay_id",
                    &[&now, &PURGE_CHUNK],
                )
                .await?;
                let more = if purged as i64 >= PURGE_CHUNK {
                    query_opt(
                        tx,
                        "SELECT 1 FROM relay_ids WHERE remember_until_ms <= $1 LIMIT 1",
                        &[&now],
                    )
                    .await?
                    .is_some()
                } else {
                    false
                };
                Ok((purged, more))
            })
        })
        .await
    }
}

impl PgStore {
    /// One relayed delivery in a transaction of its own: the relay id is claimed first, then
    /// the message is stored; a refusal rolls both back.
    async fn store_one_relayed(
        &self,
        peer: &str,
        d: &RelayedDelivery,
    ) -> Result<RelayStored, StoreError> {
        let limits = self.limits();
        let stored = self
            .transact("store_relayed", |tx, _| {
                Box::pin(async move {
                    let relay_id = d.relay_id.as_slice();
                    let seen = "SELECT seq FROM relay_ids WHERE peer = $1 AND relay_id = $2";
                    if let Some(row) = query_opt(tx, seen, &[&peer, &relay_id]).await? {
                        return Ok(RelayStored::Duplicate(Seq(uint(row.get("seq"))?)));
                    }
                    let claimed = execute(
                        tx,
                        "INSERT INTO relay_ids (peer, relay_id, remember_until_ms, seq) \
                         VALUES ($1, $2, $3, 0) ON CONFLICT (peer, relay_id) DO NOTHING",
                        &[&peer, &relay_id, &int(d.remember_until_ms)],
                    )
                    .await?;
                    if claimed == 0 {
                        // A concurrent relay of the same id committed first.
                        return match query_opt(tx, seen, &[&peer, &relay_id]).await? {
                            Some(row) => Ok(RelayStored::Duplicate(Seq(uint(row.get("seq"))?))),
                            None => Err(StoreError::Unavailable(
                                "a relay id was forgotten while it was stored; retry".into(),
                            )
                            .into()),
                        };
                    }
                    let delivery = [(d.recipient, d.message.clone())];
                    let seq = enqueue_in(tx, &delivery, self.now(), limits)
                        .await?
                        .first()
                        .copied()
                        .ok_or_else(|| {
                            StoreError::Corrupt("enqueue returned no sequence number".into())
                        })?;
                    execute(
                        tx,
                        "UPDATE relay_ids SET seq = $3 WHERE peer = $1 AND relay_id = $2",
                        &[&peer, &relay_id, &int(seq.0)],
                    )
                    .await?;
                    Ok(RelayStored::Stored(seq))
                })
            })
            .await;
        // A refused delivery rolled back its relay id too: a retry may store it later.
        match stored {
            Ok(outcome) => Ok(outcome),
            Err(StoreError::NotFound) => Ok(RelayStored::NoRecipient),
            Err(StoreError::QueueFull { limit }) => Ok(RelayStored::QueueFull(limit)),
            Err(StoreError::InvalidArgument(why)) => Ok(RelayStored::Invalid(why)),
            Err(other) => Err(other),
        }
    }
}
