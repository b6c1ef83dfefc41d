//! Durable storage for accounts, sessions and delivery queues, behind the [`Store`] trait.
//!
//! Handlers talk to [`Store`] only, so a second backend can be added without touching them.
//! [`FjallStore`] is the one backend today (`store/fjall.rs` is the only file that names
//! fjall). This module holds the backend-neutral part: domain types, the trait, the error enum
//! and the clock.
//!
//! It is *not* the place for protocol rules (username syntax, who may read which queue,
//! session token generation): handlers and `crate::auth` decide those, the store keeps data.
//!
//! # Durability policy
//!
//! Every mutating operation returns `Ok` only after its effect is durable (the storage
//! engine's journal was synced with `fsync`). Concurrent writers share one sync (group
//! commit, see [`Durability`]). **Any failure to make a write durable answers
//! [`StoreError::Unavailable`], never `Ok`.** Such a failure is sticky: the store then answers
//! `Unavailable` to every later call (reads included), because after a failed `fsync` the
//! on-disk state is unknown; the operator restarts the server, which recovers from the journal.
//! A write that answered `Unavailable` may or may not survive that restart (the client retries).
//!
//! Reads do not wait for syncs: a reader can observe a write whose own `Ok` is still waiting
//! for its sync. If that sync then fails, the writer gets `Unavailable` and the reader may
//! have seen data that a crash loses. Delivery is at-least-once either way.
//!
//! # Time
//!
//! Expiry (message TTLs, session expiry) is judged against the store's [`Clock`] (wall clock,
//! milliseconds since the Unix epoch), injectable for tests. Expired sessions are never
//! returned; expired messages are never returned and are deleted when met by `fetch`, by
//! `enqueue` on a full queue, and by [`Store::purge_expired`], which a periodic sweeper calls.

mod admin;
mod blobs;
mod channels;
mod codec;
pub mod conformance;
mod devices;
mod engine;
mod federation;
mod fjall;
mod keys;
mod kt;
mod moderation;
mod p2p;
pub mod pieces;
mod postgres;
mod recovery;
mod writer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

pub use self::admin::{AccountPage, AccountSummary, AdminStore, QueueTotals, StorageStats};
pub use self::blobs::{
    BlobError, BlobId, BlobMeta, BlobStore, BlobUsage, Committed, NewUpload, Piece, PiecesWritten,
    PurgedUploads, UploadId, UploadState,
};
pub use self::channels::{
    Actor, Channel, ChannelId, ChannelRole, ChannelStore, ChannelUpdate, CommitOutcome, MemberPage,
    MemberRecord, NewChannel, Refusal, Removal, RotateCommit,
};
pub use self::devices::{
    DeviceError, DeviceId, DeviceRecord, DeviceStore, PushPlatform, PushToken, Registered,
};
pub use self::engine::{BackupStats, StorageEngine};
pub use self::federation::{
    FederationStore, OutboxEntry, OutboxLimits, OutboxMessage, RelayId, RelayStored,
    RelayedDelivery,
};
pub use self::fjall::{FjallStore, StoreOptions};
pub use self::keys::{HybridKeyRecord, KeyPackageDepth, KeyPackageUpload, KeyStore};
pub use self::kt::{KtStore, Revocation};
pub use self::moderation::{BanOutcome, BanRecord, BanScope, ModerationStore, Page, ReportRecord};
pub use self::p2p::{EndpointRecord, P2pStore};
pub use self::postgres::{PgOptions, PgStore, check_postgres_url};
pub use self::recovery::RecoveryStore;
pub use self::writer::{SYNC_BUCKETS_US, SyncStats};

/// An Ed25519 identity public key: the address of a queue and the key of an account.
pub type IdentityKey = [u8; 32];

/// A sequence number within one delivery queue.
///
/// Monotonic per queue and never reused for the lifetime of the queue (acks, fetches, expiry
/// and restarts do not free a number). Real sequence numbers start at 1; [`Seq::ZERO`]
/// precedes every message, so `peek(.., Seq::ZERO, ..)` reads from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// Precedes every real sequence number (which start at 1).
    pub const ZERO: Seq = Seq(0);
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Unique username (the OPAQUE credential identifier).
    pub username: String,
    /// Unique Ed25519 identity key bound to the username at registration.
    pub identity_key: IdentityKey,
    /// The serialized OPAQUE `ServerRegistration` (the "password file").
    pub password_file: Vec<u8>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

// The password file is secret-ish material: keep it out of logs.
impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("identity_key", &Hex(&self.identity_key))
            .field("password_file_len", &self.password_file.len())
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// A login session. Only the SHA-256 of the bearer token is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session token (the lookup key).
    pub token_hash: [u8; 32],
    /// The account this session belongs to.
    pub username: String,
    /// The account's identity key (the queue this session may read).
    pub identity_key: IdentityKey,
    /// The device the session is bound to, when the client named one.
    pub device_id: Option<Vec<u8>>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Expiry, milliseconds since the Unix epoch; from then on the session is not returned.
    pub expires_at_ms: u64,
    /// Time of the OPAQUE login that produced the session, milliseconds since the Unix epoch.
    pub login_at_ms: u64,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("token_hash", &Hex(&self.token_hash[..4]))
            .field("username", &self.username)
            .field("identity_key", &Hex(&self.identity_key))
            .field("device_id", &self.device_id.as_deref().map(Hex))
            .field("created_at_ms", &self.created_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("login_at_ms", &self.login_at_ms)
            .finish()
    }
}

/// A message waiting in a recipient's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Position in the recipient's queue.
    pub seq: Seq,
    /// Identity key of the sender (as authenticated by the enqueuing session).
    pub sender_identity_key: IdentityKey,
    /// Username of the sender (`name` or `name@domain` for federated senders).
    pub sender: String,
    /// The channel the sender tagged the message with (checked by the handler).
    pub channel_id: Option<ChannelId>,
    /// Opaque payload (MLS ciphertext); the store never looks inside.
    pub payload: bytes::Bytes,
    /// Enqueue time, milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// Expiry time, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// A message to enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Identity key of the sender.
    pub sender_identity_key: IdentityKey,
    /// Username of the sender (at most 65535 bytes).
    pub sender: String,
    /// The channel the message belongs to, when the sender tagged it with one.
    pub channel_id: Option<ChannelId>,
    /// Opaque payload.
    pub payload: bytes::Bytes,
    /// Requested time to live in milliseconds (see [`QueueLimits::expires_at`]).
    pub ttl_ms: Option<u64>,
}

/// Per-queue limits, checked on every enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages a queue may hold (expired ones count until they are deleted).
    pub max_messages: u64,
    /// Most payload bytes a queue may hold (sum of payload lengths).
    pub max_bytes: u64,
    /// TTL of a message that does not ask for one.
    pub default_ttl_ms: u64,
    /// Longest TTL a message may have; longer requests are clamped.
    pub max_ttl_ms: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        Self {
            max_messages: 10_000,
            max_bytes: 64 * 1024 * 1024,
            default_ttl_ms: 7 * DAY_MS,
            max_ttl_ms: 30 * DAY_MS,
        }
    }
}

impl QueueLimits {
    /// When a message enqueued at `now_ms` that asks for `ttl_ms` expires: no TTL (or 0,
    /// protobuf's "unset") takes [`default_ttl_ms`](Self::default_ttl_ms), a longer one than
    /// [`max_ttl_ms`](Self::max_ttl_ms) is clamped.
    pub fn expires_at(&self, now_ms: u64, ttl_ms: Option<u64>) -> u64 {
        let ttl = match ttl_ms {
            None | Some(0) => self.default_ttl_ms,
            Some(ttl) => ttl.min(self.max_ttl_ms),
        };
        now_ms.saturating_add(ttl)
    }

    /// Whether a delivery queue of `depth` may take `add` more (see [`QueueDepth::admits`]).
    pub fn admit(&self, depth: QueueDepth, add: QueueDepth) -> Result<(), QueueLimit> {
        depth.admits(add, self.max_messages, self.max_bytes)
    }
}

/// Which limit of a queue was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueLimit {
    /// [`QueueLimits::max_messages`].
    Messages(u64),
    /// [`QueueLimits::max_bytes`].
    Bytes(u64),
}

impl fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueLimit::Messages(n) => write!(f, "at most {n} messages"),
            QueueLimit::Bytes(n) => write!(f, "at most {n} payload bytes"),
        }
    }
}

/// One page of a queue read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePage {
    /// Messages in FIFO (sequence) order.
    pub messages: Vec<QueuedMessage>,
    /// `true` when at least one more unexpired message follows this page.
    pub more: bool,
}

/// Result of [`Store::ack`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Sequence numbers that were in the queue and are now removed (request order, deduplicated).
    pub removed: Vec<Seq>,
    /// Sequence numbers that were not in the queue (already acked, fetched, expired or never used).
    pub unknown: Vec<Seq>,
}

/// Size of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages held (including expired ones not yet deleted).
    pub messages: u64,
    /// Payload bytes held (including expired ones not yet deleted).
    pub bytes: u64,
}

impl QueueDepth {
    /// Whether a queue of this depth may grow by `add` and stay within `max_messages` and
    /// `max_bytes`; the limit it would pass otherwise. The one cap rule of every queue (a
    /// recipient's delivery queue, a federation peer's outbox), whatever the backend.
    pub fn admits(
        self,
        add: QueueDepth,
        max_messages: u64,
        max_bytes: u64,
    ) -> Result<(), QueueLimit> {
        if self.messages.saturating_add(add.messages) > max_messages {
            return Err(QueueLimit::Messages(max_messages));
        }
        if self.bytes.saturating_add(add.bytes) > max_bytes {
            return Err(QueueLimit::Bytes(max_bytes));
        }
        Ok(())
    }
}

/// What [`Store::delete_account`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedAccount {
    /// The account as it was.
    pub account: Account,
    /// Its sessions, now gone: the handler ends their live connections and parked waits.
    pub sessions: Vec<SessionRecord>,
    /// How many queued messages were dropped.
    pub messages_removed: u64,
}

/// Result of [`Store::purge_expired`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Expired messages deleted.
    pub messages: u64,
    /// Expired sessions deleted.
    pub sessions: u64,
    /// `true` when the call stopped at its work bound and expired items remain: call again.
    pub more: bool,
}

/// How writes are made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The writer thread runs every write queued so far, then makes all of them durable with
    /// a single `fsync` before answering (group commit). Concurrent writers share syncs, so
    /// throughput grows with concurrency instead of being capped at one write per `fsync`.
    #[default]
    GroupCommit,
    /// The journal is synced after every write before it is answered. Same guarantee, one
    /// `fsync` per write; kept as the baseline for the throughput benchmark.
    SyncEachWrite,
}

/// Errors of the store. Every variant's message is lowercase and fit for logs; handlers map
/// them to wire statuses and must not forward `Unavailable`/`Corrupt` details to peers.
///
/// Policy: a write that could not be made durable, and every call after such a failure,
/// answers [`StoreError::Unavailable`]; never `Ok`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The username is registered already.
    #[error("username is already taken")]
    UsernameTaken,
    /// The identity key is bound to another account already.
    #[error("identity key is already registered to another account")]
    IdentityTaken,
    /// The account (or the recipient's account, for enqueue) does not exist.
    #[error("not found")]
    NotFound,
    /// The recipient's queue would exceed a limit; nothing was stored.
    #[error("recipient queue is full ({limit})")]
    QueueFull {
        /// The limit that was hit.
        limit: QueueLimit,
    },
    /// The account is banned from this server until `until_ms` (0 = permanently); no
    /// session may be created for it.
    #[error("account is banned")]
    Banned {
        /// When the ban ends, Unix ms; 0 = permanent.
        until_ms: u64,
    },
    /// The caller passed a value the store cannot keep (e.g. an empty username).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Storage cannot accept or confirm the operation: a sync failed (sticky), the database
    /// is poisoned or locked, or an I/O error occurred.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes did not decode: a bug or on-disk corruption.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub use qpq_runtime::limits::Clock;

/// Storage used by the RPC handlers.
///
/// All methods are async (they run blocking storage work off the async workers) and every
/// mutating method is durable on `Ok` (see the module doc for the policy). Methods that take
/// a recipient act on that identity's queue only; checking that the caller may touch it is
/// the handler's job.
///
/// The traits of further method groups (keys, channels, blobs, ...) are supertraits, so
/// `S: Store` names every capability a handler needs. A store is a cheap handle: clones share
/// one database.
pub trait Store:
    Clone
    + Send
    + Sync
    + 'static
    + blobs::BlobStore
    + devices::DeviceStore
    + recovery::RecoveryStore
    + p2p::P2pStore
    + keys::KeyStore
    + channels::ChannelStore
    + moderation::ModerationStore
    + kt::KtStore
    + federation::FederationStore
    + admin::AdminStore
{
    /// Registers an account. Fails with [`StoreError::UsernameTaken`] or
    /// [`StoreError::IdentityTaken`] when either is bound already.
    fn create_account(
        &self,
        account: Account,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Looks an account up by username.
    fn account_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// Looks an account up by identity key.
    fn account_by_identity(
        &self,
        identity_key: &IdentityKey,
    ) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    /// Deletes an account with its sessions, its queue and every record keyed by it, in one
    /// atomic, durable batch. [`StoreError::NotFound`] when there is no such account.
    fn delete_account(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<DeletedAccount, StoreError>> + Send;

    /// Stores a session. The account named by `session.username` must exist with
    /// `session.identity_key`, else [`StoreError::NotFound`] (this closes the race with a
    /// concurrent account deletion).
    fn put_session(
        &self,
        session: SessionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Looks a session up by the SHA-256 of its token. Expired sessions are `None`.
    fn session_by_token_hash(
        &self,
        token_hash: &[u8; 32],
    ) -> impl Future<Output = Result<Option<SessionRecord>, StoreError>> + Send;

    /// Deletes one session; returns it if it existed (expired or not).
    fn delete_session(
        &self,
        token_hash: &[u8; 32],
    ) -> impl Future<Output = Result<Option<SessionRecord>, StoreError>> + Send;

    /// Deletes every session of an account; returns the removed records (empty when the
    /// account does not exist).
    fn delete_sessions_of(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Vec<SessionRecord>, StoreError>> + Send;

    /// Appends each message to its recipient's queue, all or nothing (one atomic batch across
    /// queues), and returns their sequence numbers in order. [`StoreError::NotFound`] when a
    /// recipient has no account; [`StoreError::QueueFull`] when a queue would exceed a limit.
    /// Either way nothing is stored.
    fn enqueue(
        &self,
        deliveries: Vec<(IdentityKey, NewMessage)>,
    ) -> impl Future<Output = Result<Vec<Seq>, StoreError>> + Send;

    /// Removes and returns up to `limit` unexpired messages from the front of the queue, in
    /// FIFO order; expired messages met on the way are deleted. The removal is durable before
    /// the page is returned, so a page lost in transit is lost: clients that need
    /// at-least-once use `peek` + `ack`.
    fn fetch(
        &self,
        recipient: &IdentityKey,
        limit: usize,
    ) -> impl Future<Output = Result<QueuePage, StoreError>> + Send;

    /// Returns up to `limit` unexpired messages with sequence numbers greater than `after`,
    /// in FIFO order, without removing anything.
    fn peek(
        &self,
        recipient: &IdentityKey,
        after: Seq,
        limit: usize,
    ) -> impl Future<Output = Result<QueuePage, StoreError>> + Send;

    /// Removes the given messages. Unknown sequence numbers are reported, not an error.
    fn ack(
        &self,
        recipient: &IdentityKey,
        seqs: &[Seq],
    ) -> impl Future<Output = Result<AckOutcome, StoreError>> + Send;

    /// Current size of the queue.
    fn queue_depth(
        &self,
        recipient: &IdentityKey,
    ) -> impl Future<Output = Result<QueueDepth, StoreError>> + Send;

    /// Deletes messages and sessions that expired at or before `now_ms`. Does a bounded amount
    /// of work per call; [`PurgeStats::more`] says whether to call again.
    fn purge_expired(
        &self,
        now_ms: u64,
    ) -> impl Future<Output = Result<PurgeStats, StoreError>> + Send;

    /// The engine's own figures and operations (commit latencies, disk use, online backup),
    /// when the backend has them; see [`StorageEngine`].
    fn engine(&self) -> Option<Arc<dyn StorageEngine>>;

    /// Binds the server's secrets to what is stored: records each `(name, fingerprint)` not
    /// recorded yet, and answers the names whose recorded fingerprint differs (the store was
    /// first served with another OPAQUE setup or log key: by another instance, or before the
    /// file was replaced). Durable on `Ok`.
    fn bind_secrets(
        &self,
        secrets: Vec<(String, [u8; 32])>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// Opens the embedded default store in `dir` with default options and answers its engine
/// (offline backup, and the check that a restored copy opens). Blocking (it recovers the
/// journal).
pub fn open_embedded_engine(dir: &std::path::Path) -> Result<Arc<dyn StorageEngine>, StoreError> {
    Ok(Arc::new(FjallStore::open(dir, StoreOptions::default())?))
}

/// Lowercase hex for `Debug` output.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
