//! Operator views across the groups: the account listing and storage statistics
//! (ListUsers, StorageStats). Read-only; nothing here changes stored data.
//!
//! The figures are computed from what is stored when asked, not from counters kept on the
//! side: a counter would have to be updated by every path that creates or removes an account,
//! session, channel or blob, and any path that missed it would drift for good. A count here
//! is a pass over the small index records of one kind (never message payloads or blob
//! pieces), which costs time proportional to the number of such records and nothing on the
//! write path.

use std::future::Future;

use super::{IdentityKey, QueueDepth, StoreError};

/// One account as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    /// The username.
    pub username: String,
    /// The account's identity key.
    pub identity_key: IdentityKey,
    /// Registration time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When a server-wide ban is in force: when it ends, Unix ms (0 = permanent).
    pub banned_until_ms: Option<u64>,
    /// The account's delivery queue.
    pub queue: QueueDepth,
    /// Registered devices that are not revoked.
    pub devices: u64,
}

/// A page of [`AdminStore::list_accounts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountPage {
    /// Accounts in username (byte) order.
    pub accounts: Vec<AccountSummary>,
    /// The last username of this page when more follow; `None` on the last page.
    pub next_after: Option<String>,
}

/// What the store holds, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Registered accounts.
    pub accounts: u64,
    /// Sessions that have not expired.
    pub live_sessions: u64,
    /// Messages queued across all queues (expired ones not yet swept included).
    pub queued_messages: u64,
    /// Payload bytes of those messages.
    pub queued_bytes: u64,
    /// Queues holding at least one message.
    pub nonempty_queues: u64,
    /// Committed blobs (deduplicated: one per content).
    pub blobs: u64,
    /// Total size of those blobs.
    pub blob_bytes: u64,
    /// Channels.
    pub channels: u64,
    /// Leaves in the key transparency log.
    pub kt_log_size: u64,
    /// Messages waiting in federation outboxes, all peers together.
    pub outbox_messages: u64,
    /// Payload bytes of those messages.
    pub outbox_bytes: u64,
}

/// What waits in the delivery queues, all together (the metrics gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Messages queued across all queues (expired ones not yet swept included).
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Queues holding at least one message.
    pub nonempty_queues: u64,
}

/// Operator views. Reads only; they run off the writer, so they never delay a write.
pub trait AdminStore: Send + Sync + 'static {
    /// Up to `limit` accounts whose usernames sort after `after` (exclusive; empty: from the
    /// first), each with its ban, queue depth and device count. Costs a range read of
    /// `limit + 1` account records plus a few point reads and one device prefix per account.
    fn list_accounts(
        &self,
        after: &str,
        limit: usize,
    ) -> impl Future<Output = Result<AccountPage, StoreError>> + Send;

    /// Counts and sizes of everything stored. One pass over the keys of the identity index,
    /// the unexpired part of the session expiry index and the channels, and over the values
    /// of the per-queue and per-peer counters and the blob records; the log size is a single
    /// read. (The engine's own figures, such as disk use, are
    /// [`StorageEngine`](super::StorageEngine)'s.)
    fn storage_stats(&self) -> impl Future<Output = Result<StorageStats, StoreError>> + Send;

    /// Messages, bytes and non-empty queues across all delivery queues: one small record
    /// per queue.
    fn queue_totals(&self) -> impl Future<Output = Result<QueueTotals, StoreError>> + Send;
}
