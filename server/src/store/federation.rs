//! Federation: the outbox of messages waiting to be relayed to peer servers, and the relay ids
//! of messages received from peers.
//!
//! Outbox: a message for a user of another domain is stored here, per peer domain, in the same
//! durable write as any local deliveries of the same request, so the sender's `Ok` means the
//! message is durable at home. The relay worker reads a peer's outbox front to back and
//! removes an entry only after the peer acknowledged it.
//!
//! Relay ids: the receiving side remembers, per calling peer, the 16-byte relay id of every
//! relayed message it stored, written in the same batch as the message, so a retried relay is
//! recognized and stored never again. Ids are forgotten after a retention time the handler
//! chooses (longer than any relay it still accepts).
//!
//! The store keeps bytes and counts; who may relay what is the handler's decision.

use std::future::Future;

use bytes::Bytes;

use super::{ChannelId, IdentityKey, NewMessage, QueueLimit, Seq, StoreError};

/// The idempotency key of a relayed message: 16 random bytes chosen by the sender's home
/// server when the message enters its outbox.
pub type RelayId = [u8; 16];

/// A message for a user of a peer server, as held in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Idempotency key of the relay.
    pub relay_id: RelayId,
    /// Sender as `name@<this server's domain>`.
    pub sender: String,
    /// Identity key of the sender.
    pub sender_identity_key: IdentityKey,
    /// Recipient as the sender addressed it (`name@<peer domain>`).
    pub recipient: String,
    /// The channel the sender tagged the message with.
    pub channel_id: Option<ChannelId>,
    /// Opaque payload.
    pub payload: Bytes,
    /// When this server accepted the message, Unix ms.
    pub enqueued_at_ms: u64,
    /// Time to live from `enqueued_at_ms`, ms (already defaulted and capped).
    pub ttl_ms: u64,
}

impl OutboxMessage {
    /// When the message expires, Unix ms: relaying it after that is pointless.
    pub fn expires_at_ms(&self) -> u64 {
        self.enqueued_at_ms.saturating_add(self.ttl_ms)
    }
}

/// An outbox entry: its position in the peer's outbox (FIFO order, never reused) and the
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the peer's outbox.
    pub position: u64,
    /// The message.
    pub message: OutboxMessage,
}

/// Caps of each peer's outbox, so a peer that stays down cannot fill the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most messages waiting for one peer.
    pub max_messages: u64,
    /// Most payload bytes waiting for one peer.
    pub max_bytes: u64,
}

/// A message relayed by a peer, to store for a local recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayedDelivery {
    /// The relay id the peer chose.
    pub relay_id: RelayId,
    /// The local recipient.
    pub recipient: IdentityKey,
    /// The message (its TTL counted from now).
    pub message: NewMessage,
    /// Until when the relay id is remembered, Unix ms.
    pub remember_until_ms: u64,
}

/// What [`FederationStore::store_relayed`] did with one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayStored {
    /// Stored now, with its relay id, at this sequence number.
    Stored(Seq),
    /// The relay id was stored before (at this sequence number); nothing was stored now.
    Duplicate(Seq),
    /// The recipient has no account; nothing was stored.
    NoRecipient,
    /// The recipient's queue is full; nothing was stored.
    QueueFull(QueueLimit),
    /// The store cannot keep this message (e.g. a sender name too long); nothing was stored.
    Invalid(String),
}

/// Storage of federation state. Mutations are durable on `Ok`.
pub trait FederationStore: Send + Sync + 'static {
    /// Appends the local deliveries to their queues and the outbox messages to their peers'
    /// outboxes (`(peer domain, message)`), all in one atomic, durable batch: everything is
    /// stored or nothing is. Returns the sequence numbers of the local deliveries in order.
    /// [`StoreError::NotFound`] when a local recipient has no account,
    /// [`StoreError::QueueFull`] when a queue or an outbox would exceed its limit.
    fn enqueue_with_outbox(
        &self,
        local: Vec<(IdentityKey, NewMessage)>,
        outbox: Vec<(String, OutboxMessage)>,
        limits: OutboxLimits,
    ) -> impl Future<Output = Result<Vec<Seq>, StoreError>> + Send;

    /// Up to `limit` entries from the front of a peer's outbox, in FIFO order.
    fn outbox_front(
        &self,
        peer: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send;

    /// Removes the entries at `positions` from a peer's outbox; returns how many were there.
    fn outbox_remove(
        &self,
        peer: &str,
        positions: &[u64],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Messages waiting in a peer's outbox.
    fn outbox_depth(&self, peer: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every peer domain with messages in its outbox, and how many.
    fn outbox_peers(&self) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// Stores messages relayed by `peer`, each atomically with its relay id, and answers
    /// one outcome per delivery in order. A relay id already stored for `peer` (earlier or
    /// earlier in this call) is a [`RelayStored::Duplicate`]. Outcomes are independent: a full
    /// queue refuses its delivery only.
    fn store_relayed(
        &self,
        peer: &str,
        deliveries: Vec<RelayedDelivery>,
    ) -> impl Future<Output = Result<Vec<RelayStored>, StoreError>> + Send;

    /// Forgets relay ids remembered until `now_ms` or before; returns how many and whether
    /// more remain (bounded work per call).
    fn purge_expired_relay_ids(
        &self,
        now_ms: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send;
}
