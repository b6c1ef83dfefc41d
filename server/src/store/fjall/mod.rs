//! [`FjallStore`]: the [`Store`] on one fjall database (the only file that names fjall).
//!
//! # Key layout
//!
//! All integers are big-endian, so byte order is numeric order and a prefix scan over a
//! queue walks it in FIFO order. Every value starts with a format version byte (`1`); the
//! value encodings live in `store/codec.rs`.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `accounts` | username (UTF-8) | `v1 ‖ identity(32) ‖ created_at(8) ‖ password_file` |
//! | `identities` | identity(32) | username — unique index, also "account exists" |
//! | `sessions` | token_hash(32) | `v1 ‖ identity(32) ‖ created(8) ‖ expires(8) ‖ login(8) ‖ device? ‖ username` |
//! | `session_index` | identity(32) ‖ token_hash(32) | empty — the sessions of an account |
//! | `session_expiry` | expires_at(8) ‖ token_hash(32) | empty — sweep order |
//! | `messages` | identity(32) ‖ seq(8) | `v1 ‖ enqueued(8) ‖ expires(8) ‖ sender_identity(32) ‖ sender_len(2) ‖ sender ‖ payload` |
//! | `queue_meta` | identity(32) | `v1 ‖ next_seq(8) ‖ messages(8) ‖ bytes(8)` |
//! | `message_expiry` | expires_at(8) ‖ identity(32) ‖ seq(8) | empty — sweep order |
//!
//! Invariants, kept by writing every related key in one atomic batch:
//! - `accounts` and `identities` are inverse maps.
//! - a session has exactly one `session_index` and one `session_expiry` entry.
//! - a message has exactly one `message_expiry` entry; `queue_meta.messages`/`bytes` equal the
//!   count and payload bytes under the queue's prefix; `queue_meta.next_seq` is greater than
//!   every seq ever used in the queue (it only grows, so seqs are never reused, across restarts
//!   too). Deleting the account deletes the counter with the queue.
//!
//! # Concurrency
//!
//! Every mutating operation runs on the single writer thread (`store/writer.rs`), one after
//! another, and the thread syncs once per cycle of operations (group commit). So
//! read-modify-write sequences (sequence counters, caps, uniqueness checks, account deletion)
//! need no locks, and concurrent enqueues to one queue share syncs like any others.
//!
//! Reads bypass the writer. Point reads (session and account lookups, queue depth) run inline
//! on the caller's task: they touch the memtable or block cache and cost microseconds, less
//! than a hop to another thread would. Scans (`peek`) run on tokio's blocking pool.

mod admin;
mod backup;
mod blobs;
mod channels;
mod devices;
mod federation;
mod keys;
mod kt;
mod moderation;
mod p2p;
mod record;
mod recovery;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use super::codec::{self, QueueMeta};
use super::writer::{Health, Writer};
use super::{
    Account, AckOutcome, Clock, DeletedAccount, Durability, IdentityKey, NewMessage, PurgeStats,
    QueueDepth, QueueLimits, QueuePage, QueueTotals, Seq, SessionRecord, StorageEngine, Store,
    StoreError,
};

/// Longest username the store accepts (a sanity bound; handlers enforce the real syntax).
const MAX_USERNAME_BYTES: usize = 1024;

/// Most expired entries of each kind one `purge_expired` call deletes: it runs on the writer
/// thread, so a bounded chunk keeps other writes from waiting long.
const PURGE_CHUNK: usize = 1_000;

/// Options for [`FjallStore::open`].
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// How writes are made durable (group commit unless benchmarking the baseline).
    pub durability: Durability,
    /// Queue caps and TTLs.
    pub limits: QueueLimits,
    /// Clock for enqueue times and expiry.
    pub clock: Clock,
}

/// The fjall-backed [`Store`]. Cheap to clone (one `Arc`); all clones share one database and
/// one writer thread, which stops when the last clone is dropped (after finishing queued
/// writes).
///
/// Only one process may open a data directory: a second `open` fails with
/// [`StoreError::Unavailable`].
#[derive(Clone)]
pub struct FjallStore {
    inner: Arc<Inner>,
}

/// Field order is drop order: the writer goes first, so its thread has finished and released
/// the engine before the last database handle is dropped.
struct Inner {
    writer: Writer<Engine>,
    engine: Arc<Engine>,
}

/// Pages of at most this many messages are read on the caller's task (see `peek`).
const INLINE_PEEK_LIMIT: usize = 64;

/// Keyspaces of the method groups beyond accounts, sessions and queues, opened by name.
/// A group's file (a child module of this one, e.g. `fjall/keys.rs`) adds its names here and
/// reaches them with [`Engine::ks`].
const GROUP_KEYSPACES: &[&str] = &[
    // mod.rs: fingerprints of the server's secrets (`bind_secrets`)
    "server_secrets",
    // blobs.rs (blob_chunks is opened with its own options)
    "blobs",
    "blob_refs",
    "blob_usage",
    "blob_uploads",
    "blob_upload_expiry",
    "blob_upload_owner",
    // devices.rs
    "devices",
    // recovery.rs
    "recovery_bundles",
    // p2p.rs
    "p2p_endpoints",
    "p2p_expiry",
    // keys.rs
    keys::KEY_PACKAGES,
    keys::KEY_PACKAGE_META,
    keys::LAST_RESORT_KEY_PACKAGES,
    keys::HYBRID_KEYS,
    // channels.rs
    channels::CHANNELS,
    channels::CHANNEL_MEMBERS,
    channels::CHANNEL_MEMBER_ORDER,
    channels::MEMBER_CHANNELS,
    // moderation.rs
    moderation::REPORTS,
    moderation::SERVER_BANS,
    moderation::CHANNEL_BANS,
    // kt.rs
    kt::KT_LEAVES,
    kt::KT_NODES,
    kt::KT_META,
    kt::KT_BY_USERNAME,
    kt::KT_BY_IDENTITY,
    kt::KT_REVOKED,
    // federation.rs (nothing keyed by an account: see its module doc)
    federation::OUTBOX,
    federation::OUTBOX_META,
    federation::RELAY_IDS,
    federation::RELAY_ID_EXPIRY,
];

/// The database and its keyspaces; shared by the writer thread and the readers.
struct Engine {
    /// Group keyspaces by name (see [`GROUP_KEYSPACES`]).
    groups: BTreeMap<&'static str, Keyspace>,
    health: Arc<Health>,
    accounts: Keyspace,
    identities: Keyspace,
    sessions: Keyspace,
    session_index: Keyspace,
    session_expiry: Keyspace,
    messages: Keyspace,
    queue_meta: Keyspace,
    message_expiry: Keyspace,
    db: Database,
    /// The database directory (StorageStats measures it).
    dir: PathBuf,
    limits: QueueLimits,
    clock: Clock,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("limits", &self.inner.engine.limits)
            .field("syncs", &self.sync_count())
            .finish_non_exhaustive()
    }
}

/// Maps an engine error; all of them mean "cannot serve this now", none is the caller's fault.
fn engine_err(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Poisoned => {
            StoreError::Unavailable("database is poisoned by an earlier write failure".into())
        }
        fjall::Error::Locked => {
            StoreError::Unavailable("data directory is locked by another process".into())
        }
        other => StoreError::Unavailable(format!("storage engine error: {other:?}")),
    }
}

impl FjallStore {
    /// Opens (creating if needed) the database in `dir` and starts the writer thread.
    ///
    /// Blocking (it recovers the journal): call it before serving, or in `spawn_blocking`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = Database::builder(dir).open().map_err(engine_err)?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(engine_err)
        };
        let health = Arc::new(Health::default());
        let mut groups = BTreeMap::new();
        for name in GROUP_KEYSPACES {
            groups.insert(*name, keyspace(name)?);
        }
        groups.insert(blobs::CHUNKS, blobs::open_chunks(&db)?);
        let engine = Arc::new(Engine {
            groups,
            health: Arc::clone(&health),
            accounts: keyspace("accounts")?,
            identities: keyspace("identities")?,
            sessions: keyspace("sessions")?,
            session_index: keyspace("session_index")?,
            session_expiry: keyspace("session_expiry")?,
            messages: keyspace("messages")?,
            queue_meta: keyspace("queue_meta")?,
            message_expiry: keyspace("message_expiry")?,
            db: db.clone(),
            dir: dir.to_path_buf(),
            limits: options.limits,
            clock: options.clock,
        });
        let writer = Writer::start(
            Arc::clone(&engine),
            health,
            options.durability,
            Box::new(move || {
                db.persist(PersistMode::SyncAll)
                    .map_err(|e| format!("{e:?}"))
            }),
        )?;
        Ok(FjallStore {
            inner: Arc::new(Inner { writer, engine }),
        })
    }

    /// Journal syncs performed since open (for tests, benchmarks and metrics): with group
    /// commit, concurrent writes share syncs, so this grows slower than the write count.
    pub fn sync_count(&self) -> u64 {
        self.inner.engine.health.sync_count()
    }

    /// The queue limits in force.
    pub fn limits(&self) -> QueueLimits {
        self.inner.engine.limits
    }

    /// Runs a mutating operation on the writer thread; `Ok` once it is durable.
    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<(T, bool), StoreError> + Send + 'static,
    {
        self.inner
            .writer
            .write(move |engine: &Engine| {
                engine.health.check()?;
                op(engine)
            })
            .await
    }

    /// Runs a scan on the blocking pool, after the sticky-failure check.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, StoreError> + Send + 'static,
    {
        let engine = Arc::clone(&self.inner.engine);
        let task = tokio::task::spawn_blocking(move || {
            engine.health.check()?;
            f(&engine)
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Unavailable(format!("storage task failed: {e}"))),
        }
    }

    /// Runs a point read inline (see the module doc), after the sticky-failure check.
    fn inline<T>(&self, f: impl FnOnce(&Engine) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.inner.engine.health.check()?;
        f(&self.inner.engine)
    }
}

impl Engine {
    /// A group keyspace by name; its absence from [`GROUP_KEYSPACES`] is a bug.
    fn ks(&self, name: &'static str) -> Result<&Keyspace, StoreError> {
        self.groups
            .get(name)
            .ok_or_else(|| StoreError::Corrupt(format!("keyspace {name} was not opened")))
    }

    /// Removes what the method groups keep for an account (keys, devices, ...) as part of
    /// its deletion batch. Each group adds its call here.
    fn delete_group_data(
        &self,
        batch: &mut OwnedWriteBatch,
        account: &Account,
    ) -> Result<(), StoreError> {
        self.delete_blob_data(batch, account)?;
        self.delete_device_data(batch, account)?;
        self.delete_recovery_data(batch, account)?;
        self.delete_p2p_data(batch, account)?;
        self.delete_keys_of(batch, &account.identity_key)?;
        self.delete_memberships_of(batch, &account.identity_key)?;
        Ok(())
    }

    /// Commits `batch`; `true` if it held anything (the writer then syncs for it).
    fn commit(&self, batch: OwnedWriteBatch) -> Result<bool, StoreError> {
        if batch.is_empty() {
            return Ok(false);
        }
        // A failed commit poisons fjall; make the failure ours too, so reads stop as well.
        batch
            .commit()
            .map_err(|e| self.health.fail(format!("batch commit failed: {e:?}")))?;
        Ok(true)
    }

    fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        match self.accounts.get(username.as_bytes()).map_err(engine_err)? {
            Some(v) => codec::decode_account(username.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn account_by_identity(&self, identity: &IdentityKey) -> Result<Option<Account>, StoreError> {
        let Some(username) = self.identities.get(identity).map_err(engine_err)? else {
            return Ok(None);
        };
        let username = std::str::from_utf8(&username)
            .map_err(|_| StoreError::Corrupt("identity index value is not utf-8".into()))?;
        match self.account_by_username(username)? {
            Some(a) if a.identity_key == *identity => Ok(Some(a)),
            _ => Err(StoreError::Corrupt(
                "identity index points at a missing or different account".into(),
            )),
        }
    }

    /// Messages, payload bytes and non-empty queues, from the per-queue counters.
    fn queue_totals(&self) -> Result<QueueTotals, StoreError> {
        let (mut messages, mut bytes, mut queues) = (0u64, 0u64, 0u64);
        for guard in self.queue_meta.iter() {
            let meta = codec::decode_queue_meta(&guard.value().map_err(engine_err)?)?;
            if meta.messages > 0 {
                queues += 1;
            }
            messages = messages.saturating_add(meta.messages);
            bytes = bytes.saturating_add(meta.bytes);
        }
        Ok(QueueTotals {
            messages,
            bytes,
            nonempty_queues: queues,
        })
    }

    fn queue_meta(&self, identity: &IdentityKey) -> Result<QueueMeta, StoreError> {
        match self.queue_meta.get(identity).map_err(engine_err)? {
            Some(v) => codec::decode_queue_meta(&v),
            None => Ok(QueueMeta::default()),
        }
    }

    fn put_queue_meta(
        &self,
        batch: &mut OwnedWriteBatch,
        identity: &IdentityKey,
        meta: &QueueMeta,
    ) {
        batch.insert(
            &self.queue_meta,
            identity.to_vec(),
            codec::encode_queue_meta(meta),
        );
    }

    /// Adds the removal of one message (and its expiry entry) to `batch` and updates `meta`.
    fn remove_message(
        &self,
        batch: &mut OwnedWriteBatch,
        meta: &mut QueueMeta,
        identity: &IdentityKey,
        seq: Seq,
        header: &codec::MessageHeader,
    ) {
        batch.remove(&self.messages, codec::message_key(identity, seq).to_vec());
        batch.remove(
            &self.message_expiry,
            codec::message_expiry_key(header.expires_at_ms, identity, seq).to_vec(),
        );
        // Saturating: totals that disagree with the data must not panic; they heal as the
        // queue drains to zero.
        meta.messages = meta.messages.saturating_sub(1);
        meta.bytes = meta.bytes.saturating_sub(header.payload_len);
    }

    /// Adds the removal of one session and its index entries to `batch`.
    fn remove_session(&self, batch: &mut OwnedWriteBatch, s: &SessionRecord) {
        batch.remove(&self.sessions, s.token_hash.to_vec());
        batch.remove(
            &self.session_index,
            codec::session_index_key(&s.identity_key, &s.token_hash).to_vec(),
        );
        batch.remove(
            &self.session_expiry,
            codec::session_expiry_key(s.expires_at_ms, &s.token_hash).to_vec(),
        );
    }

    /// Adds the removal of every session of `identity` to `batch`; returns the records.
    fn remove_sessions_of(
        &self,
        batch: &mut OwnedWriteBatch,
        identity: &IdentityKey,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut out = Vec::new();
        for guard in self.session_index.prefix(identity) {
            let key = guard.key().map_err(engine_err)?;
            let token = codec::token_of_session_index_key(&key)?;
            // The index entry goes even if the session is somehow missing.
            batch.remove(&self.session_index, key.to_vec());
            if let Some(v) = self.sessions.get(token).map_err(engine_err)? {
                let s = codec::decode_session(&token, &v)?;
                self.remove_session(batch, &s);
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Adds the removal of every expired message of the queue to `batch`.
    fn drop_expired(
        &self,
        batch: &mut OwnedWriteBatch,
        meta: &mut QueueMeta,
        identity: &IdentityKey,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        for guard in self.messages.prefix(identity) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            let header = codec::decode_message_header(&value)?;
            if header.expires_at_ms <= now_ms {
                let seq = codec::seq_of_message_key(&key)?;
                self.remove_message(batch, meta, identity, seq, &header);
            }
        }
        Ok(())
    }

    fn create_account(&self, account: &Account) -> Result<((), bool), StoreError> {
        if self
            .accounts
            .contains_key(account.username.as_bytes())
            .map_err(engine_err)?
        {
            return Err(StoreError::UsernameTaken);
        }
        if self
            .identities
            .contains_key(account.identity_key)
            .map_err(engine_err)?
        {
            return Err(StoreError::IdentityTaken);
        }
        let mut batch = self.db.batch();
        batch.insert(
            &self.accounts,
            account.username.as_bytes().to_vec(),
            codec::encode_account(account),
        );
        batch.insert(
            &self.identities,
            account.identity_key.to_vec(),
            account.username.as_bytes().to_vec(),
        );
        // The binding enters the transparency log in the same batch as the account.
        self.kt_append_binding(&mut batch, account)?;
        Ok(((), self.commit(batch)?))
    }

    fn delete_account(&self, username: &str) -> Result<(DeletedAccount, bool), StoreError> {
        let account = self
            .account_by_username(username)?
            .ok_or(StoreError::NotFound)?;
        let identity = account.identity_key;
        let mut batch = self.db.batch();
        batch.remove(&self.accounts, account.username.as_bytes().to_vec());
        batch.remove(&self.identities, identity.to_vec());
        let sessions = self.remove_sessions_of(&mut batch, &identity)?;
        let mut meta = QueueMeta::default();
        let mut messages_removed = 0;
        for guard in self.messages.prefix(identity) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            let seq = codec::seq_of_message_key(&key)?;
            let header = codec::decode_message_header(&value)?;
            self.remove_message(&mut batch, &mut meta, &identity, seq, &header);
            messages_removed += 1;
        }
        batch.remove(&self.queue_meta, identity.to_vec());
        self.delete_group_data(&mut batch, &account)?;
        let committed = self.commit(batch)?;
        Ok((
            DeletedAccount {
                account,
                sessions,
                messages_removed,
            },
            committed,
        ))
    }

    fn put_session(
        &self,
        session: &SessionRecord,
        value: Vec<u8>,
    ) -> Result<((), bool), StoreError> {
        // Checked here, on the writer thread, so a session can never outlive a concurrent
        // account deletion.
        match self.account_by_username(&session.username)? {
            Some(a) if a.identity_key == session.identity_key => {}
            _ => return Err(StoreError::NotFound),
        }
        // A revoked device id never gets a session again.
        self.check_device_usable(session)?;
        // Also here, so a login racing a server-wide ban cannot outlive it.
        if let Some(ban) = self.active_server_ban(&session.identity_key)? {
            return Err(StoreError::Banned {
                until_ms: ban.expires_at_ms,
            });
        }
        if self
            .sessions
            .contains_key(session.token_hash)
            .map_err(engine_err)?
        {
            return Err(StoreError::InvalidArgument(
                "a session with this token hash exists".into(),
            ));
        }
        let mut batch = self.db.batch();
        batch.insert(&self.sessions, session.token_hash.to_vec(), value);
        batch.insert(
            &self.session_index,
            codec::session_index_key(&session.identity_key, &session.token_hash).to_vec(),
            Vec::new(),
        );
        batch.insert(
            &self.session_expiry,
            codec::session_expiry_key(session.expires_at_ms, &session.token_hash).to_vec(),
            Vec::new(),
        );
        Ok(((), self.commit(batch)?))
    }

    fn delete_session(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<(Option<SessionRecord>, bool), StoreError> {
        let Some(v) = self.sessions.get(token_hash).map_err(engine_err)? else {
            return Ok((None, false));
        };
        let s = codec::decode_session(token_hash, &v)?;
        let mut batch = self.db.batch();
        self.remove_session(&mut batch, &s);
        Ok((Some(s), self.commit(batch)?))
    }

    fn delete_sessions_of(&self, username: &str) -> Result<(Vec<SessionRecord>, bool), StoreError> {
        let Some(account) = self.account_by_username(username)? else {
            return Ok((Vec::new(), false));
        };
        let mut batch = self.db.batch();
        let sessions = self.remove_sessions_of(&mut batch, &account.identity_key)?;
        Ok((sessions, self.commit(batch)?))
    }

    /// Appends every delivery in one batch: all are stored or none is. Deliveries to the same
    /// recipient keep their order and get consecutive sequence numbers.
    fn enqueue(
        &self,
        deliveries: &[(IdentityKey, NewMessage)],
    ) -> Result<(Vec<Seq>, bool), StoreError> {
        let mut batch = self.db.batch();
        let seqs = self.enqueue_into(&mut batch, deliveries)?;
        Ok((seqs, self.commit(batch)?))
    }

    /// Adds the deliveries to `batch` (see [`Engine::enqueue`]), so another group can store
    /// messages atomically with its own change (RotateKeys: the epoch and the commit). The
    /// batch must not already hold changes to these queues. On error the caller drops the
    /// batch, so nothing is stored.
    fn enqueue_into(
        &self,
        batch: &mut OwnedWriteBatch,
        deliveries: &[(IdentityKey, NewMessage)],
    ) -> Result<Vec<Seq>, StoreError> {
        let now = self.clock.unix_ms();
        let limits = self.limits;
        // Per recipient, in first-seen order: its queue meta and what this call adds.
        let mut queues: Vec<(IdentityKey, QueueMeta, u64, u64)> = Vec::new();
        for (recipient, message) in deliveries {
            match queues.iter_mut().find(|q| &q.0 == recipient) {
                Some(queue) => {
                    queue.2 += 1;
                    queue.3 += message.payload.len() as u64;
                }
                None => {
                    if !self
                        .identities
                        .contains_key(recipient)
                        .map_err(engine_err)?
                    {
                        return Err(StoreError::NotFound);
                    }
                    let meta = self.queue_meta(recipient)?;
                    queues.push((*recipient, meta, 1, message.payload.len() as u64));
                }
            }
        }
        let fits = |meta: &QueueMeta, add_messages: u64, add_bytes: u64| {
            let depth = QueueDepth {
                messages: meta.messages,
                bytes: meta.bytes,
            };
            let add = QueueDepth {
                messages: add_messages,
                bytes: add_bytes,
            };
            limits
                .admit(depth, add)
                .map_err(|limit| StoreError::QueueFull { limit })
        };

        for (recipient, meta, add_messages, add_bytes) in &mut queues {
            if fits(meta, *add_messages, *add_bytes).is_err() {
                // Expired messages still count until deleted; clear them before refusing.
                self.drop_expired(batch, meta, recipient, now)?;
            }
            // On refusal the batch (with any expiry deletions) is dropped: nothing is stored.
            fits(meta, *add_messages, *add_bytes)?;
        }

        let mut seqs = Vec::with_capacity(deliveries.len());
        for (recipient, m) in deliveries {
            let Some(queue) = queues.iter_mut().find(|q| &q.0 == recipient) else {
                return Err(StoreError::Corrupt(
                    "enqueue lost track of a recipient".into(),
                ));
            };
            let meta = &mut queue.1;
            let seq = Seq(meta.next_seq);
            meta.next_seq = meta
                .next_seq
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("queue sequence number overflow".into()))?;
            let expires = limits.expires_at(now, m.ttl_ms);
            let value = codec::encode_message(
                now,
                expires,
                &m.sender_identity_key,
                &m.sender,
                m.channel_id.as_ref(),
                &m.payload,
            )?;
            batch.insert(
                &self.messages,
                codec::message_key(recipient, seq).to_vec(),
                value,
            );
            batch.insert(
                &self.message_expiry,
                codec::message_expiry_key(expires, recipient, seq).to_vec(),
                Vec::new(),
            );
            seqs.push(seq);
        }
        for (recipient, meta, add_messages, add_bytes) in &mut queues {
            meta.messages = meta.messages.saturating_add(*add_messages);
            meta.bytes = meta.bytes.saturating_add(*add_bytes);
            // The counter goes in the same batch as the messages: both survive or neither does.
            self.put_queue_meta(batch, recipient, meta);
        }
        Ok(seqs)
    }

    fn fetch(
        &self,
        recipient: &IdentityKey,
        limit: usize,
    ) -> Result<(QueuePage, bool), StoreError> {
        let now = self.clock.unix_ms();
        let mut meta = self.queue_meta(recipient)?;
        let mut batch = self.db.batch();
        let mut page = QueuePage::default();
        for guard in self.messages.prefix(recipient) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            let seq = codec::seq_of_message_key(&key)?;
            let header = codec::decode_message_header(&value)?;
            if header.expires_at_ms <= now {
                self.remove_message(&mut batch, &mut meta, recipient, seq, &header);
                continue;
            }
            if page.messages.len() >= limit {
                page.more = true;
                break;
            }
            page.messages.push(codec::decode_message(seq, &value)?);
            self.remove_message(&mut batch, &mut meta, recipient, seq, &header);
        }
        if !batch.is_empty() {
            self.put_queue_meta(&mut batch, recipient, &meta);
        }
        Ok((page, self.commit(batch)?))
    }

    fn peek(
        &self,
        recipient: &IdentityKey,
        after: Seq,
        limit: usize,
    ) -> Result<QueuePage, StoreError> {
        let now = self.clock.unix_ms();
        let mut page = QueuePage::default();
        let Some(first) = after.0.checked_add(1) else {
            return Ok(page);
        };
        let start = codec::message_key(recipient, Seq(first));
        let end = codec::message_key(recipient, Seq(u64::MAX));
        for guard in self.messages.range(start..=end) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            let header = codec::decode_message_header(&value)?;
            if header.expires_at_ms <= now {
                continue;
            }
            if page.messages.len() >= limit {
                page.more = true;
                break;
            }
            let seq = codec::seq_of_message_key(&key)?;
            page.messages.push(codec::decode_message(seq, &value)?);
        }
        Ok(page)
    }

    fn ack(&self, recipient: &IdentityKey, seqs: &[Seq]) -> Result<(AckOutcome, bool), StoreError> {
        let mut meta = self.queue_meta(recipient)?;
        let mut batch = self.db.batch();
        let mut outcome = AckOutcome::default();
        let mut seen = HashSet::with_capacity(seqs.len());
        for &seq in seqs {
            if !seen.insert(seq) {
                continue;
            }
            match self
                .messages
                .get(codec::message_key(recipient, seq))
                .map_err(engine_err)?
            {
                Some(value) => {
                    let header = codec::decode_message_header(&value)?;
                    self.remove_message(&mut batch, &mut meta, recipient, seq, &header);
                    outcome.removed.push(seq);
                }
                None => outcome.unknown.push(seq),
            }
        }
        if !outcome.removed.is_empty() {
            self.put_queue_meta(&mut batch, recipient, &meta);
        }
        Ok((outcome, self.commit(batch)?))
    }

    /// Deletes up to [`PURGE_CHUNK`] expired sessions and as many expired messages, in one
    /// batch. Index entries whose record is gone or was rewritten are dropped alone.
    fn purge_expired(&self, now_ms: u64) -> Result<(PurgeStats, bool), StoreError> {
        let mut stats = PurgeStats::default();
        let mut batch = self.db.batch();
        // Keys below `now + 1` (big-endian prefix) are the ones expired at or before `now`.
        let upper = now_ms.saturating_add(1).to_be_bytes();

        for (n, guard) in self.session_expiry.range(..upper).enumerate() {
            if n == PURGE_CHUNK {
                stats.more = true;
                break;
            }
            let key = guard.key().map_err(engine_err)?;
            let (expires, token) = codec::parse_session_expiry_key(&key)?;
            batch.remove(&self.session_expiry, key.to_vec());
            if let Some(v) = self.sessions.get(token).map_err(engine_err)? {
                let s = codec::decode_session(&token, &v)?;
                if s.expires_at_ms == expires {
                    self.remove_session(&mut batch, &s);
                    stats.sessions += 1;
                }
            }
        }

        // Group by queue so each queue's totals are read and written once.
        let mut expired: BTreeMap<IdentityKey, Vec<(u64, Seq)>> = BTreeMap::new();
        for (n, guard) in self.message_expiry.range(..upper).enumerate() {
            if n == PURGE_CHUNK {
                stats.more = true;
                break;
            }
            let key = guard.key().map_err(engine_err)?;
            let (expires, identity, seq) = codec::parse_message_expiry_key(&key)?;
            expired.entry(identity).or_default().push((expires, seq));
        }
        for (identity, items) in expired {
            let mut meta = self.queue_meta(&identity)?;
            let mut changed = false;
            for (expires, seq) in items {
                let header = match self
                    .messages
                    .get(codec::message_key(&identity, seq))
                    .map_err(engine_err)?
                {
                    Some(v) => Some(codec::decode_message_header(&v)?),
                    None => None,
                };
                match header {
                    Some(h) if h.expires_at_ms == expires => {
                        self.remove_message(&mut batch, &mut meta, &identity, seq, &h);
                        stats.messages += 1;
                        changed = true;
                    }
                    _ => batch.remove(
                        &self.message_expiry,
                        codec::message_expiry_key(expires, &identity, seq).to_vec(),
                    ),
                }
            }
            if changed {
                self.put_queue_meta(&mut batch, &identity, &meta);
            }
        }
        Ok((stats, self.commit(batch)?))
    }
}

fn check_username(username: &str) -> Result<(), StoreError> {
    if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "username must be 1 to {MAX_USERNAME_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Store for FjallStore {
    async fn create_account(&self, account: Account) -> Result<(), StoreError> {
        check_username(&account.username)?;
        if account.password_file.is_empty() {
            return Err(StoreError::InvalidArgument("password file is empty".into()));
        }
        self.write(move |e| e.create_account(&account)).await
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.inline(|e| e.account_by_username(username))
    }

    async fn account_by_identity(
        &self,
        identity_key: &IdentityKey,
    ) -> Result<Option<Account>, StoreError> {
        self.inline(|e| e.account_by_identity(identity_key))
    }

    async fn delete_account(&self, username: &str) -> Result<DeletedAccount, StoreError> {
        let username = username.to_owned();
        self.write(move |e| e.delete_account(&username)).await
    }

    async fn put_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        check_username(&session.username)?;
        let value = codec::encode_session(&session)?;
        self.write(move |e| e.put_session(&session, value)).await
    }

    async fn session_by_token_hash(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inline(|e| {
            let Some(v) = e.sessions.get(token_hash).map_err(engine_err)? else {
                return Ok(None);
            };
            let s = codec::decode_session(token_hash, &v)?;
            Ok((s.expires_at_ms > e.clock.unix_ms()).then_some(s))
        })
    }

    async fn delete_session(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError> {
        let token_hash = *token_hash;
        self.write(move |e| e.delete_session(&token_hash)).await
    }

    async fn delete_sessions_of(&self, username: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let username = username.to_owned();
        self.write(move |e| e.delete_sessions_of(&username)).await
    }

    async fn enqueue(
        &self,
        deliveries: Vec<(IdentityKey, NewMessage)>,
    ) -> Result<Vec<Seq>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |e| e.enqueue(&deliveries)).await
    }

    async fn fetch(&self, recipient: &IdentityKey, limit: usize) -> Result<QueuePage, StoreError> {
        let recipient = *recipient;
        self.write(move |e| e.fetch(&recipient, limit)).await
    }

    async fn peek(
        &self,
        recipient: &IdentityKey,
        after: Seq,
        limit: usize,
    ) -> Result<QueuePage, StoreError> {
        let recipient = *recipient;
        // A short page is a few memtable or block-cache reads, cheaper than a hop to the
        // blocking pool and back (this is on the FetchWait wake-up path); long pages go there.
        if limit <= INLINE_PEEK_LIMIT {
            return self.inline(|e| e.peek(&recipient, after, limit));
        }
        self.blocking(move |e| e.peek(&recipient, after, limit))
            .await
    }

    async fn ack(&self, recipient: &IdentityKey, seqs: &[Seq]) -> Result<AckOutcome, StoreError> {
        let recipient = *recipient;
        let seqs = seqs.to_vec();
        self.write(move |e| e.ack(&recipient, &seqs)).await
    }

    async fn queue_depth(&self, recipient: &IdentityKey) -> Result<QueueDepth, StoreError> {
        self.inline(|e| {
            let meta = e.queue_meta(recipient)?;
            Ok(QueueDepth {
                messages: meta.messages,
                bytes: meta.bytes,
            })
        })
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeStats, StoreError> {
        self.write(move |e| e.purge_expired(now_ms)).await
    }

    fn engine(&self) -> Option<Arc<dyn StorageEngine>> {
        Some(Arc::new(self.clone()))
    }

    async fn bind_secrets(
        &self,
        secrets: Vec<(String, [u8; 32])>,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |e| {
            let ks = e.ks("server_secrets")?;
            let mut differ = Vec::new();
            let mut batch = e.db.batch();
            let mut new = false;
            for (name, fingerprint) in &secrets {
                match ks.get(name.as_bytes()).map_err(engine_err)? {
                    Some(stored) if stored[..] == fingerprint[..] => {}
                    Some(_) => differ.push(name.clone()),
                    None => {
                        batch.insert(ks, name.as_bytes().to_vec(), fingerprint.to_vec());
                        new = true;
                    }
                }
            }
            if !new {
                return Ok((differ, false));
            }
            Ok((differ, e.commit(batch)?))
        })
        .await
    }
}

/// The fjall backend as the conformance suite drives it: a temp directory per store.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FjallBackend;

#[cfg(test)]
impl crate::store::conformance::Backend for FjallBackend {
    type Store = FjallStore;
    type Place = tempfile::TempDir;
    const PURGE_BOUND: usize = PURGE_CHUNK;

    async fn place(&self) -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    async fn open(
        &self,
        place: &tempfile::TempDir,
        options: &crate::store::conformance::Options,
    ) -> FjallStore {
        let dir = place.path().to_owned();
        let options = StoreOptions {
            durability: Durability::GroupCommit,
            limits: options.limits,
            clock: options.clock.clone(),
        };
        tokio::task::spawn_blocking(move || FjallStore::open(&dir, options))
            .await
            .unwrap()
            .unwrap()
    }

    async fn census(&self, store: &FjallStore) -> BTreeMap<String, u64> {
        let engine = Arc::clone(&store.inner.engine);
        tokio::task::spawn_blocking(move || {
            engine
                .db
                .list_keyspace_names()
                .into_iter()
                .map(|name| {
                    let keyspace = engine
                        .db
                        .keyspace(&name, KeyspaceCreateOptions::default)
                        .unwrap();
                    (name.to_string(), keyspace.iter().count() as u64)
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

#[cfg(test)]
mod conformance {
    use super::FjallBackend;

    crate::store_conformance_suite!(FjallBackend);
}

/// What only this engine has: its directory lock, group-commit sync sharing and the
/// sync-each-write mode.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{ALICE, Backend, Fixture, account, msg};

    #[tokio::test]
    async fn a_failed_commit_is_sticky_until_restart() {
        let f = Fixture::with_alice(&FjallBackend).await;
        f.store.engine().unwrap().inject_commit_failure_for_tests();
        let r = f.store.enqueue(vec![(ALICE, msg("lost"))]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        let r = f.store.enqueue(vec![(ALICE, msg("later"))]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(matches!(
            f.store.peek(&ALICE, Seq::ZERO, 1).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            f.store.session_by_token_hash(&[0; 32]).await,
            Err(StoreError::Unavailable(_))
        ));
        let f = f.reopen().await;
        assert!(f.store.peek(&ALICE, Seq::ZERO, 1).await.is_ok());
    }

    async fn enqueue_one(store: &FjallStore, payload: &str) {
        store.enqueue(vec![(ALICE, msg(payload))]).await.unwrap();
    }

    #[tokio::test]
    async fn second_open_of_a_directory_is_refused() {
        let f = Fixture::new(&FjallBackend).await;
        let again = FjallStore::open(f.place.path(), StoreOptions::default());
        assert!(
            matches!(again, Err(StoreError::Unavailable(_))),
            "{again:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_enqueues_share_syncs() {
        let f = Fixture::with_alice(&FjallBackend).await;
        let before = f.store.sync_count();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = f.store.clone();
            tasks.push(tokio::spawn(async move {
                enqueue_one(&s, &format!("{i}")).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let syncs = f.store.sync_count() - before;
        assert!(
            syncs < 100,
            "group commit must share syncs: {syncs} syncs for 200 writes"
        );
    }

    fn sync_each_write(dir: &Path) -> FjallStore {
        FjallStore::open(
            dir,
            StoreOptions {
                durability: Durability::SyncEachWrite,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn sync_each_write_syncs_once_per_write() {
        let place = FjallBackend.place().await;
        let store = sync_each_write(place.path());
        store.create_account(account("alice", ALICE)).await.unwrap();
        let before = store.sync_count();
        for _ in 0..5 {
            enqueue_one(&store, "a").await;
        }
        assert_eq!(store.sync_count() - before, 5);
        // Reads do not sync.
        store.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
        assert_eq!(store.sync_count() - before, 5);
    }

    #[tokio::test]
    async fn a_failed_sync_in_sync_each_write_mode_answers_unavailable_never_ok() {
        let place = FjallBackend.place().await;
        let store = sync_each_write(place.path());
        store.create_account(account("alice", ALICE)).await.unwrap();
        enqueue_one(&store, "kept").await;
        store.inject_commit_failure_for_tests();
        let r = store.enqueue(vec![(ALICE, msg("lost"))]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        let r = store.peek(&ALICE, Seq::ZERO, 1).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        drop(store);
        let store = sync_each_write(place.path());
        let p = store.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
        assert_eq!(&p.messages[0].payload[..], b"kept");
    }
}
