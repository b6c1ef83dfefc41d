//! [`FederationStore`] on fjall.
//!
//! # Key layout
//!
//! `peer` in a key is `len(1) ‖ domain`, so one peer's keys are a prefix no other peer's
//! share.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `outbox` | peer ‖ position(8) | `v1 ‖ relay_id(16) ‖ enqueued(8) ‖ ttl(8) ‖ sender_identity(32) ‖ has_channel(1) ‖ channel(16)? ‖ sender(2+n) ‖ recipient(2+n) ‖ payload` |
//! | `outbox_meta` | domain | `v1 ‖ next_position(8) ‖ messages(8) ‖ bytes(8)` |
//! | `relay_ids` | peer ‖ relay_id(16) | `v1 ‖ remember_until(8) ‖ seq(8)` |
//! | `relay_id_expiry` | remember_until(8) ‖ peer ‖ relay_id(16) | empty — sweep order |
//!
//! Invariants, kept by writing related keys in one batch: `outbox_meta.messages`/`bytes`
//! equal the count and payload bytes under the peer's `outbox` prefix and `next_position`
//! only grows; a relay id is written in the batch of the message it stored, and has exactly
//! one `relay_id_expiry` entry.
//!
//! Nothing here is keyed by a local account: outbox entries are messages already sent (like
//! messages in other users' queues, they outlive the sender's account), and a relay id
//! records only a sequence number. Account deletion has nothing to remove.

use fjall::OwnedWriteBatch;

use super::record::{Reader, Writer};
use super::{Engine, FjallStore, engine_err};
use crate::store::federation::{
    FederationStore, OutboxEntry, OutboxLimits, OutboxMessage, RelayId, RelayStored,
    RelayedDelivery,
};
use crate::store::{ChannelId, IdentityKey, NewMessage, QueueDepth, Seq, StoreError};

pub(super) const OUTBOX: &str = "outbox";
pub(super) const OUTBOX_META: &str = "outbox_meta";
pub(super) const RELAY_IDS: &str = "relay_ids";
pub(super) const RELAY_ID_EXPIRY: &str = "relay_id_expiry";

/// Most expired relay ids one purge call forgets.
const PURGE_CHUNK: usize = 1_000;

/// `len(1) ‖ domain`.
fn peer_prefix(peer: &str) -> Result<Vec<u8>, StoreError> {
    let len = u8::try_from(peer.len())
        .ok()
        .filter(|&l| l > 0)
        .ok_or_else(|| StoreError::InvalidArgument("peer domain must be 1 to 255 bytes".into()))?;
    let mut k = Vec::with_capacity(1 + peer.len() + 16);
    k.push(len);
    k.extend_from_slice(peer.as_bytes());
    Ok(k)
}

fn outbox_key(prefix: &[u8], position: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&position.to_be_bytes());
    k
}

fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    key.len()
        .checked_sub(8)
        .and_then(|at| key.get(at..))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("outbox key is too short".into()))
}

fn relay_key(prefix: &[u8], relay_id: &RelayId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(relay_id);
    k
}

fn relay_expiry_key(until_ms: u64, relay_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + relay_key.len());
    k.extend_from_slice(&until_ms.to_be_bytes());
    k.extend_from_slice(relay_key);
    k
}

fn encode_message(m: &OutboxMessage) -> Result<Vec<u8>, StoreError> {
    let mut w = Writer::new(100 + m.sender.len() + m.recipient.len() + m.payload.len());
    w.raw(&m.relay_id)
        .u64(m.enqueued_at_ms)
        .u64(m.ttl_ms)
        .raw(&m.sender_identity_key);
    match &m.channel_id {
        Some(channel) => w.u8(1).raw(&channel.0),
        None => w.u8(0),
    };
    w.bytes16(m.sender.as_bytes())?
        .bytes16(m.recipient.as_bytes())?
        .raw(&m.payload);
    Ok(w.finish())
}

fn decode_message(value: &[u8]) -> Result<OutboxMessage, StoreError> {
    let mut r = Reader::new(value, "outbox entry")?;
    let relay_id = r.array()?;
    let enqueued_at_ms = r.u64()?;
    let ttl_ms = r.u64()?;
    let sender_identity_key = r.array()?;
    let channel_id = match r.u8()? {
        0 => None,
        1 => Some(ChannelId(r.array()?)),
        other => {
            return Err(StoreError::Corrupt(format!(
                "outbox entry: channel flag {other}"
            )));
        }
    };
    let sender = r.string16()?;
    let recipient = r.string16()?;
    let payload = bytes::Bytes::copy_from_slice(r.rest());
    Ok(OutboxMessage {
        relay_id,
        sender,
        sender_identity_key,
        recipient,
        channel_id,
        payload,
        enqueued_at_ms,
        ttl_ms,
    })
}

/// `(next_position, messages, bytes)` of one peer's outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Meta {
    next: u64,
    messages: u64,
    bytes: u64,
}

fn encode_meta(m: Meta) -> Vec<u8> {
    Writer::new(24)
        .u64(m.next)
        .u64(m.messages)
        .u64(m.bytes)
        .finish()
}

fn decode_meta(value: &[u8]) -> Result<Meta, StoreError> {
    let mut r = Reader::new(value, "outbox meta")?;
    let m = Meta {
        next: r.u64()?,
        messages: r.u64()?,
        bytes: r.u64()?,
    };
    r.end()?;
    Ok(m)
}

fn encode_relay(until_ms: u64, seq: Seq) -> Vec<u8> {
    Writer::new(16).u64(until_ms).u64(seq.0).finish()
}

fn decode_relay(value: &[u8]) -> Result<(u64, Seq), StoreError> {
    let mut r = Reader::new(value, "relay id")?;
    let until = r.u64()?;
    let seq = Seq(r.u64()?);
    r.end()?;
    Ok((until, seq))
}

impl Engine {
    /// Messages and payload bytes in every peer's outbox: one counter record per peer.
    pub(super) fn outbox_totals(&self) -> Result<(u64, u64), StoreError> {
        let (mut messages, mut bytes) = (0u64, 0u64);
        for guard in self.ks(OUTBOX_META)?.iter() {
            let meta = decode_meta(&guard.value().map_err(engine_err)?)?;
            messages = messages.saturating_add(meta.messages);
            bytes = bytes.saturating_add(meta.bytes);
        }
        Ok((messages, bytes))
    }

    fn outbox_meta(&self, peer: &str) -> Result<Meta, StoreError> {
        match self
            .ks(OUTBOX_META)?
            .get(peer.as_bytes())
            .map_err(engine_err)?
        {
            Some(v) => decode_meta(&v),
            None => Ok(Meta::default()),
        }
    }

    /// Adds the outbox messages to `batch`, checking each peer's caps.
    fn outbox_into(
        &self,
        batch: &mut OwnedWriteBatch,
        outbox: &[(String, OutboxMessage)],
        limits: OutboxLimits,
    ) -> Result<(), StoreError> {
        // Per peer, in first-seen order: its prefix and meta.
        let mut peers: Vec<(&str, Vec<u8>, Meta)> = Vec::new();
        for (peer, message) in outbox {
            let index = match peers.iter().position(|p| p.0 == peer.as_str()) {
                Some(i) => i,
                None => {
                    peers.push((peer, peer_prefix(peer)?, self.outbox_meta(peer)?));
                    peers.len() - 1
                }
            };
            let (_, prefix, meta) = &mut peers[index];
            let bytes = message.payload.len() as u64;
            let depth = QueueDepth {
                messages: meta.messages,
                bytes: meta.bytes,
            };
            let add = QueueDepth { messages: 1, bytes };
            depth
                .admits(add, limits.max_messages, limits.max_bytes)
                .map_err(|limit| StoreError::QueueFull { limit })?;
            batch.insert(
                self.ks(OUTBOX)?,
                outbox_key(prefix, meta.next),
                encode_message(message)?,
            );
            meta.next = meta
                .next
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("outbox position overflow".into()))?;
            meta.messages += 1;
            meta.bytes = meta.bytes.saturating_add(bytes);
        }
        for (peer, _, meta) in peers {
            // Same batch as the entries: both survive or neither does.
            batch.insert(
                self.ks(OUTBOX_META)?,
                peer.as_bytes().to_vec(),
                encode_meta(meta),
            );
        }
        Ok(())
    }

    fn enqueue_with_outbox(
        &self,
        local: &[(IdentityKey, NewMessage)],
        outbox: &[(String, OutboxMessage)],
        limits: OutboxLimits,
    ) -> Result<(Vec<Seq>, bool), StoreError> {
        let mut batch = self.db.batch();
        let seqs = if local.is_empty() {
            Vec::new()
        } else {
            self.enqueue_into(&mut batch, local)?
        };
        // On any refusal the batch is dropped: nothing is stored.
        self.outbox_into(&mut batch, outbox, limits)?;
        Ok((seqs, self.commit(batch)?))
    }

    fn outbox_remove(&self, peer: &str, positions: &[u64]) -> Result<(u64, bool), StoreError> {
        let prefix = peer_prefix(peer)?;
        let outbox = self.ks(OUTBOX)?;
        let mut meta = self.outbox_meta(peer)?;
        let mut batch = self.db.batch();
        let mut removed = 0;
        let mut seen = std::collections::HashSet::new();
        for &position in positions {
            if !seen.insert(position) {
                continue;
            }
            let key = outbox_key(&prefix, position);
            if let Some(value) = outbox.get(&key).map_err(engine_err)? {
                let message = decode_message(&value)?;
                batch.remove(outbox, key);
                // Saturating: counts that disagree with the data heal as the outbox drains.
                meta.messages = meta.messages.saturating_sub(1);
                meta.bytes = meta.bytes.saturating_sub(message.payload.len() as u64);
                removed += 1;
            }
        }
        if removed > 0 {
            batch.insert(
                self.ks(OUTBOX_META)?,
                peer.as_bytes().to_vec(),
                encode_meta(meta),
            );
        }
        Ok((removed, self.commit(batch)?))
    }

    fn store_relayed(
        &self,
        peer: &str,
        deliveries: &[RelayedDelivery],
    ) -> Result<(Vec<RelayStored>, bool), StoreError> {
        let prefix = peer_prefix(peer)?;
        let relay_ids = self.ks(RELAY_IDS)?;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut wrote = false;
        for d in deliveries {
            let key = relay_key(&prefix, &d.relay_id);
            if let Some(value) = relay_ids.get(&key).map_err(engine_err)? {
                outcomes.push(RelayStored::Duplicate(decode_relay(&value)?.1));
                continue;
            }
            // One batch per delivery: the message and its relay id are atomic together, and
            // a refused delivery (its batch dropped) does not affect the others.
            let mut batch = self.db.batch();
            match self.enqueue_into(&mut batch, &[(d.recipient, d.message.clone())]) {
                Ok(seqs) => {
                    let seq = seqs.first().copied().ok_or_else(|| {
                        StoreError::Corrupt("enqueue returned no sequence number".into())
                    })?;
                    batch.insert(
                        relay_ids,
                        key.clone(),
                        encode_relay(d.remember_until_ms, seq),
                    );
                    batch.insert(
                        self.ks(RELAY_ID_EXPIRY)?,
                        relay_expiry_key(d.remember_until_ms, &key),
                        Vec::new(),
                    );
                    wrote |= self.commit(batch)?;
                    outcomes.push(RelayStored::Stored(seq));
                }
                Err(StoreError::NotFound) => outcomes.push(RelayStored::NoRecipient),
                Err(StoreError::QueueFull { limit }) => {
                    outcomes.push(RelayStored::QueueFull(limit))
                }
                Err(StoreError::InvalidArgument(why)) => outcomes.push(RelayStored::Invalid(why)),
                // Storage failures end the call; what was committed so far is synced by the
                // writer like any write, and the peer's retry finds those relay ids.
                Err(other) => return Err(other),
            }
        }
        Ok((outcomes, wrote))
    }

    fn purge_expired_relay_ids(&self, now_ms: u64) -> Result<((u64, bool), bool), StoreError> {
        let relay_ids = self.ks(RELAY_IDS)?;
        let expiry = self.ks(RELAY_ID_EXPIRY)?;
        let upper = now_ms.saturating_add(1).to_be_bytes();
        let mut batch = self.db.batch();
        let (mut purged, mut more) = (0u64, false);
        for (n, guard) in expiry.range(..upper).enumerate() {
            if n == PURGE_CHUNK {
                more = true;
                break;
            }
            let key = guard.key().map_err(engine_err)?;
            let (Some(until), Some(relay)) = (key.get(..8), key.get(8..)) else {
                return Err(StoreError::Corrupt(
                    "relay id expiry key is too short".into(),
                ));
            };
            let until = u64::from_be_bytes(
                until
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("relay id expiry key".into()))?,
            );
            batch.remove(expiry, key.to_vec());
            if let Some(v) = relay_ids.get(relay).map_err(engine_err)?
                && decode_relay(&v)?.0 == until
            {
                batch.remove(relay_ids, relay.to_vec());
                purged += 1;
            }
        }
        Ok(((purged, more), self.commit(batch)?))
    }
}

impl FederationStore for FjallStore {
    async fn enqueue_with_outbox(
        &self,
        local: Vec<(IdentityKey, NewMessage)>,
        outbox: Vec<(String, OutboxMessage)>,
        limits: OutboxLimits,
    ) -> Result<Vec<Seq>, StoreError> {
        if local.is_empty() && outbox.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |e| e.enqueue_with_outbox(&local, &outbox, limits))
            .await
    }

    async fn outbox_front(&self, peer: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let prefix = peer_prefix(peer)?;
        self.blocking(move |e| {
            let mut out = Vec::new();
            for guard in e.ks(OUTBOX)?.prefix(&prefix) {
                if out.len() >= limit {
                    break;
                }
                let (key, value) = guard.into_inner().map_err(engine_err)?;
                out.push(OutboxEntry {
                    position: position_of(&key)?,
                    message: decode_message(&value)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn outbox_remove(&self, peer: &str, positions: &[u64]) -> Result<u64, StoreError> {
        if positions.is_empty() {
            return Ok(0);
        }
        let peer = peer.to_owned();
        let positions = positions.to_vec();
        self.write(move |e| e.outbox_remove(&peer, &positions))
            .await
    }

    async fn outbox_depth(&self, peer: &str) -> Result<u64, StoreError> {
        self.inline(|e| Ok(e.outbox_meta(peer)?.messages))
    }

    async fn outbox_peers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.blocking(|e| {
            let mut out = Vec::new();
            for guard in e.ks(OUTBOX_META)?.iter() {
                let (key, value) = guard.into_inner().map_err(engine_err)?;
                let meta = decode_meta(&value)?;
                if meta.messages > 0 {
                    let peer = String::from_utf8(key.to_vec())
                        .map_err(|_| StoreError::Corrupt("outbox meta key is not utf-8".into()))?;
                    out.push((peer, meta.messages));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn store_relayed(
        &self,
        peer: &str,
        deliveries: Vec<RelayedDelivery>,
    ) -> Result<Vec<RelayStored>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let peer = peer.to_owned();
        self.write(move |e| e.store_relayed(&peer, &deliveries))
            .await
    }

    async fn purge_expired_relay_ids(&self, now_ms: u64) -> Result<(u64, bool), StoreError> {
        self.write(move |e| e.purge_expired_relay_ids(now_ms)).await
    }
}
