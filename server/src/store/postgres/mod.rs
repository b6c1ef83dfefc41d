//! [`PgStore`]: the [`Store`] on PostgreSQL (the only module that names tokio-postgres).
//!
//! # Layout
//!
//! One table per kind of record; the schema is in `schema/*.sql`, applied by
//! [`migrate`](self::migrate) at start. Identity keys, tokens and payloads are `BYTEA`;
//! times are `BIGINT` milliseconds since the Unix epoch; usernames are `TEXT COLLATE "C"`, so
//! they sort by bytes as on fjall.
//!
//! # Concurrency
//!
//! Every operation is one transaction at READ COMMITTED. Where the fjall writer thread made a
//! read-modify-write safe by running alone, the transaction takes explicit row locks
//! (`SELECT … FOR UPDATE`), **always in this order**, so two transactions never wait on each
//! other in a cycle:
//!
//! 1. account rows (`accounts`, by username order when several),
//! 2. channel rows (`channels`, sorted by id),
//! 3. queue rows (`queues`, sorted by identity key),
//! 4. the peer outbox row (`outbox_meta`),
//! 5. key-package meta (`key_package_meta`),
//! 6. blob rows (`blob_usage`, then `blobs`, then `blob_uploads`),
//! 7. the KT log head (`kt_meta`, one row: the log's total order).
//!
//! A transaction that fails with a serialization failure (40001) or a deadlock (40P01) is
//! run again, a bounded number of times with jitter ([`MAX_ATTEMPTS`]). A connection lost
//! while `COMMIT` was in flight leaves the outcome unknown: the call answers
//! [`StoreError::Unavailable`] and the client retries (delivery is at-least-once).
//!
//! Per-queue `next_seq` is bumped under the queue row's lock in the transaction that inserts
//! the messages, so seqs commit in order: a `peek(after)` cursor never skips a lower seq that
//! commits later, and a seq is never reused (the row only grows; deleting the account deletes
//! it with the queue).
//!
//! The SQL keeps to what CockroachDB also runs: no advisory locks, no LISTEN/NOTIFY.
//!
//! # Group commit
//!
//! Concurrent [`Store::enqueue`] calls of one instance are gathered and written in one
//! transaction (one WAL flush), each call judged on its own against the queue caps: see
//! `enqueue.rs`. Concurrent session look-ups (one per authenticated request) are gathered the
//! same way into one select (`gather.rs`); a look-up still sees every change committed before
//! it was made.

mod admin;
mod blobs;
mod channels;
mod devices;
mod enqueue;
mod federation;
mod gather;
mod keys;
mod kt;
mod migrate;
mod moderation;
mod p2p;
mod recovery;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::engine::BackupStats;
use super::{
    Account, AckOutcome, Clock, DeletedAccount, IdentityKey, NewMessage, PurgeStats, QueueDepth,
    QueueLimits, QueuePage, QueuedMessage, SYNC_BUCKETS_US, Seq, SessionRecord, StorageEngine,
    Store, StoreError, SyncStats,
};

pub(crate) use self::enqueue::enqueue_in;

/// A transaction on a pooled connection.
pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The future a transaction body returns (see [`PgStore::transact`]).
pub(crate) type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, PgError>> + Send + 't>>;

/// The second argument of a transaction body: it says that what the body borrows from its
/// caller (`'env`) outlives the transaction (`'t`), so the body's future may borrow both.
pub(crate) type Env<'t, 'env> = &'t &'env ();

/// How often a transaction is tried when PostgreSQL aborts it for a serialization failure or
/// a deadlock.
pub(crate) const MAX_ATTEMPTS: u32 = 6;

/// Longest username the store accepts (the same sanity bound as the embedded store).
const MAX_USERNAME_BYTES: usize = 1024;

/// Most expired entries of each kind one `purge_expired` call deletes.
const PURGE_CHUNK: i64 = 1_000;

/// Options for [`PgStore::connect`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Queue caps and TTLs.
    pub limits: QueueLimits,
    /// Clock for enqueue times and expiry.
    pub clock: Clock,
    /// Most connections the pool opens.
    pub max_connections: usize,
    /// Longest wait for a pooled connection (or a new one) before a call answers
    /// `Unavailable`.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            limits: QueueLimits::default(),
            clock: Clock::default(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL-backed [`Store`]. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    limits: QueueLimits,
    clock: Clock,
    enqueuer: enqueue::Enqueuer,
    /// Session look-ups by token hash, gathered (one select for all waiting at a time).
    sessions: gather::Gather<[u8; 32], Option<SessionRecord>>,
    /// Where the database is, for messages (host, port, database; never the password).
    target: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.inner.target)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// What the store's handles and its enqueue task share: the pool and the commit figures.
pub(crate) struct Shared {
    pool: Pool,
    commits: CommitStats,
    /// Test hook: the next commit is rolled back and answers `Unavailable`.
    fail_next_commit: AtomicBool,
}

/// Commits (each one WAL flush at `synchronous_commit = on`) since the store was opened.
#[derive(Default)]
struct CommitStats {
    count: AtomicU64,
    micros: AtomicU64,
    last_micros: AtomicU64,
    buckets: [AtomicU64; SYNC_BUCKETS_US.len() + 1],
}

impl CommitStats {
    fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        self.last_micros.store(micros, Ordering::Relaxed);
        let bucket = SYNC_BUCKETS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(SYNC_BUCKETS_US.len());
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> SyncStats {
        SyncStats {
            count: self.count.load(Ordering::Relaxed),
            total_micros: self.micros.load(Ordering::Relaxed),
            last_micros: self.last_micros.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// An error inside a transaction body: from PostgreSQL (classified by
/// [`PgStore::transact`]) or the store's own answer (returned as it is, after a rollback).
#[derive(Debug)]
pub(crate) enum PgError {
    /// PostgreSQL or the connection failed.
    Db(tokio_postgres::Error),
    /// The operation's own outcome (not found, queue full, ...).
    Store(StoreError),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl PgError {
    /// The SQLSTATE of a database error, when PostgreSQL answered one.
    pub(crate) fn code(&self) -> Option<&SqlState> {
        match self {
            PgError::Db(e) => e.code(),
            PgError::Store(_) => None,
        }
    }

    /// Whether this is a unique violation of the named constraint.
    pub(crate) fn violates(&self, constraint: &str) -> bool {
        match self {
            PgError::Db(e) => e.as_db_error().is_some_and(|d| {
                d.code() == &SqlState::UNIQUE_VIOLATION && d.constraint() == Some(constraint)
            }),
            PgError::Store(_) => false,
        }
    }

    fn retryable(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if c == &SqlState::T_R_SERIALIZATION_FAILURE || c == &SqlState::T_R_DEADLOCK_DETECTED
        )
    }
}

/// Maps a database error to the store's: all mean "cannot serve this now" except data the
/// database refused to keep, which is the caller's.
pub(crate) fn db_err(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return StoreError::Unavailable(format!("lost the connection to PostgreSQL: {e}"));
    };
    let code = db.code().code();
    if code.starts_with("22") {
        return StoreError::InvalidArgument(format!(
            "PostgreSQL refused a value: {}",
            db.message()
        ));
    }
    StoreError::Unavailable(format!("PostgreSQL error {code}: {}", db.message()))
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_err(e),
        other => StoreError::Unavailable(format!("no connection to PostgreSQL: {other}")),
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Db(e) => db_err(e),
            PgError::Store(e) => e,
        }
    }
}

/// A `u64` (milliseconds, counters, seqs) as PostgreSQL's `BIGINT`; values past `i64::MAX`
/// (only "never" times) are clamped.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `BIGINT` read back; a negative value is corruption.
pub(crate) fn uint(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("negative counter {v} in the database")))
}

/// A fixed-size byte column read back.
pub(crate) fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not {N}", v.len())))
}

/// A UTF-8 string stored as bytes, read back.
pub(crate) fn text(v: Vec<u8>, what: &str) -> Result<String, StoreError> {
    String::from_utf8(v).map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}

/// Runs one statement (prepared once per connection) and returns its rows.
pub(crate) async fn query<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// Runs one statement that answers at most one row.
pub(crate) async fn query_opt<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

/// Runs one statement that answers exactly one row.
pub(crate) async fn query_one<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_one(&stmt, params).await?)
}

/// Runs one statement and returns how many rows it touched.
pub(crate) async fn execute<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// Whether `url` is a PostgreSQL address the store can use; the error says what is wrong
/// (never echoing a password).
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("the PostgreSQL URL does not parse: {e}"))
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or the
    /// key-value form; a socket directory as `host=/path`), brings its schema up to date and
    /// answers the store.
    ///
    /// Errors name what to fix: an unreachable server, refused credentials, a missing
    /// database, or a schema newer than this binary. Nothing is half-migrated: each migration
    /// is one transaction.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::InvalidArgument(format!("the PostgreSQL address does not parse: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("qpq-server");
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot build the connection pool: {e}"))
            })?;
        {
            let mut client = pool.get().await.map_err(|e| connect_err(e, &target))?;
            migrate::run(&mut client).await?;
        }
        let shared = Arc::new(Shared {
            pool,
            commits: CommitStats::default(),
            fail_next_commit: AtomicBool::new(false),
        });
        let enqueuer =
            enqueue::Enqueuer::start(Arc::clone(&shared), options.limits, options.clock.clone());
        let sessions = {
            let shared = Arc::clone(&shared);
            let clock = options.clock.clone();
            gather::Gather::start(
                "session look-up",
                SESSION_LOOKUPS,
                |_| 32,
                move |batch| {
                    let shared = Arc::clone(&shared);
                    let now = clock.unix_ms();
                    async move { look_up_sessions(&shared, now, batch).await }
                },
            )
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                limits: options.limits,
                clock: options.clock,
                enqueuer,
                sessions,
                target,
            }),
        })
    }

    /// The queue caps and TTLs this store enforces.
    pub fn limits(&self) -> QueueLimits {
        self.inner.limits
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.unix_ms()
    }

    /// Runs `body` in one READ COMMITTED transaction and commits it; runs it again (up to
    /// [`MAX_ATTEMPTS`] times) when PostgreSQL aborted it for a serialization failure or a
    /// deadlock. An `Err` from the body rolls the transaction back. A failed `COMMIT` answers
    /// `Unavailable`: the outcome is unknown.
    ///
    /// The body may run more than once: it must not have effects outside the transaction.
    pub(crate) async fn transact<'env, T, F>(
        &self,
        what: &'static str,
        mut body: F,
    ) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> FnMut(&'t Tx<'t>, Env<'t, 'env>) -> TxFuture<'t, T> + Send,
    {
        transact(&self.inner.shared, what, &mut body).await
    }

    /// Runs `body` on a pooled connection outside a transaction (a single-statement read).
    pub(crate) async fn read<'env, T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'c> FnOnce(&'c deadpool_postgres::Client, Env<'c, 'env>) -> TxFuture<'c, T> + Send,
    {
        let client = self.inner.shared.pool.get().await.map_err(pool_err)?;
        Ok(body(&client, &&()).await?)
    }
}

/// [`PgStore::transact`] on the shared part (the enqueue task has no store handle).
pub(crate) async fn transact<'env, T, F>(
    shared: &Shared,
    what: &'static str,
    body: &mut F,
) -> Result<T, StoreError>
where
    T: Send,
    F: for<'t> FnMut(&'t Tx<'t>, Env<'t, 'env>) -> TxFuture<'t, T> + Send,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = shared.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        // The error that aborted this attempt (dropping `tx` rolls back).
        let e: PgError = match body(&tx, &&()).await {
            Ok(_) if shared.fail_next_commit.swap(false, Ordering::AcqRel) => {
                drop(tx);
                return Err(StoreError::Unavailable(format!(
                    "{what}: the commit's outcome is unknown (injected failure); retry"
                )));
            }
            Ok(value) => match timed_commit(tx, &shared.commits).await {
                Ok(()) => return Ok(value),
                Err(e) => {
                    let e = PgError::Db(e);
                    if !e.retryable() {
                        return Err(StoreError::Unavailable(format!(
                            "{what}: the commit's outcome is unknown ({}); retry",
                            StoreError::from(e)
                        )));
                    }
                    e
                }
            },
            Err(e) => e,
        };
        if !e.retryable() || attempt >= MAX_ATTEMPTS {
            return Err(e.into());
        }
        tracing::debug!(
            what,
            attempt,
            "transaction aborted by PostgreSQL; running it again"
        );
        let jitter = rand::random::<u64>() % (2 << attempt.min(6));
        tokio::time::sleep(Duration::from_millis(jitter)).await;
    }
}

async fn timed_commit(tx: Tx<'_>, stats: &CommitStats) -> Result<(), tokio_postgres::Error> {
    let started = std::time::Instant::now();
    tx.commit().await?;
    stats.record(started.elapsed());
    Ok(())
}

/// Host, port and database of a configuration, for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config
        .get_ports()
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let db = config.get_dbname().unwrap_or("(default database)");
    let user = config.get_user().unwrap_or("(default user)");
    format!(
        "{user}@{host}:{port}/{db}",
        port = if port.is_empty() { "5432".into() } else { port }
    )
}

/// The first connection's failure, in words an operator can act on.
fn connect_err(e: deadpool_postgres::PoolError, target: &str) -> StoreError {
    let e = match e {
        deadpool_postgres::PoolError::Backend(e) => e,
        deadpool_postgres::PoolError::Timeout(_) => {
            return StoreError::Unavailable(format!(
                "PostgreSQL at {target} did not answer in time; is it running and reachable?"
            ));
        }
        other => {
            return StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {target}: {other}"
            ));
        }
    };
    match e.code() {
        Some(c)
            if c == &SqlState::INVALID_PASSWORD
                || c == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            StoreError::Unavailable(format!(
                "PostgreSQL at {target} refused the credentials: check the user and password in the store address"
            ))
        }
        Some(c) if c == &SqlState::INVALID_CATALOG_NAME => StoreError::Unavailable(format!(
            "PostgreSQL at {target}: the database does not exist; create it (createdb) first"
        )),
        Some(_) => StoreError::Unavailable(format!(
            "PostgreSQL at {target} refused the connection: {e}"
        )),
        None => StoreError::Unavailable(format!(
            "cannot reach PostgreSQL at {target}: {e}; is it running, and is the address right?"
        )),
    }
}

fn check_username(username: &str) -> Result<(), StoreError> {
    if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "username must be 1 to {MAX_USERNAME_BYTES} bytes"
        )));
    }
    if username.contains('\0') {
        return Err(StoreError::InvalidArgument(
            "username must not contain a NUL character".into(),
        ));
    }
    Ok(())
}

fn account_of(row: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        username: row.get("username"),
        identity_key: fixed(row.get("identity_key"), "identity key")?,
        password_file: row.get("password_file"),
        created_at_ms: uint(row.get("created_at_ms"))?,
    })
}

const SESSION_COLUMNS: &str =
    "token_hash, username, identity_key, device_id, created_at_ms, expires_at_ms, login_at_ms";

fn session_of(row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        token_hash: fixed(row.get("token_hash"), "session token hash")?,
        username: row.get("username"),
        identity_key: fixed(row.get("identity_key"), "identity key")?,
        device_id: row.get("device_id"),
        created_at_ms: uint(row.get("created_at_ms"))?,
        expires_at_ms: uint(row.get("expires_at_ms"))?,
        login_at_ms: uint(row.get("login_at_ms"))?,
    })
}

/// How session look-ups are gathered: every authenticated request makes one, so under load
/// one indexed select answers up to 256 of them; two run at once.
const SESSION_LOOKUPS: gather::Limits = gather::Limits {
    calls: 256,
    bytes: usize::MAX,
    concurrent: 2,
    waiting: 4096,
};

/// Answers a batch of session look-ups (live sessions only) with one select.
async fn look_up_sessions(
    shared: &Shared,
    now_ms: u64,
    batch: Vec<([u8; 32], gather::Reply<Option<SessionRecord>>)>,
) {
    let hashes: Vec<&[u8]> = batch.iter().map(|(h, _)| h.as_slice()).collect();
    let rows = async {
        let c = shared.pool.get().await.map_err(pool_err)?;
        let rows = query(
            &c,
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions \
                 WHERE token_hash = ANY($1) AND expires_at_ms > $2"
            ),
            &[&hashes, &int(now_ms)],
        )
        .await?;
        Ok::<_, StoreError>(rows)
    }
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return gather::fail_all(batch.into_iter().map(|(_, r)| r), &e),
    };
    let mut found: BTreeMap<&[u8], Result<SessionRecord, StoreError>> = BTreeMap::new();
    for row in &rows {
        let hash: &[u8] = row.get("token_hash");
        found.insert(hash, session_of(row));
    }
    for (hash, reply) in batch {
        let answer = match found.get(hash.as_slice()) {
            None => Ok(None),
            Some(Ok(record)) => Ok(Some(record.clone())),
            Some(Err(e)) => Err(e.clone()),
        };
        let _ = reply.send(answer);
    }
}

const MESSAGE_COLUMNS: &str =
    "seq, sender_identity_key, sender, channel_id, payload, enqueued_at_ms, expires_at_ms";

pub(crate) fn message_of(row: &Row) -> Result<QueuedMessage, StoreError> {
    let channel: Option<Vec<u8>> = row.get("channel_id");
    Ok(QueuedMessage {
        seq: Seq(uint(row.get("seq"))?),
        sender_identity_key: fixed(row.get("sender_identity_key"), "sender identity key")?,
        sender: text(row.get("sender"), "sender")?,
        channel_id: channel
            .map(|c| fixed(&c, "channel id").map(super::ChannelId))
            .transpose()?,
        payload: bytes::Bytes::from(row.get::<_, Vec<u8>>("payload")),
        enqueued_at_ms: uint(row.get("enqueued_at_ms"))?,
        expires_at_ms: uint(row.get("expires_at_ms"))?,
    })
}

/// Locks an account row by username and answers it (lock order: accounts first).
pub(crate) async fn lock_account(tx: &Tx<'_>, username: &str) -> Result<Option<Account>, PgError> {
    let row = query_opt(
        tx,
        "SELECT username, identity_key, password_file, created_at_ms FROM accounts \
         WHERE username = $1 FOR UPDATE",
        &[&username],
    )
    .await?;
    row.map(|r| account_of(&r))
        .transpose()
        .map_err(PgError::from)
}

/// Whether an account holds `identity`; takes a share lock on its row, so the account
/// cannot be deleted before the calling transaction ends (lock order: accounts first).
pub(crate) async fn account_exists(tx: &Tx<'_>, identity: &IdentityKey) -> Result<bool, PgError> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM accounts WHERE identity_key = $1 FOR SHARE",
        &[&identity.as_slice()],
    )
    .await?
    .is_some())
}

/// Deletes expired messages of one locked queue (all of them, or those before `before`),
/// and answers how many and how many payload bytes went.
pub(crate) async fn drop_expired(
    tx: &Tx<'_>,
    identity: &IdentityKey,
    now_ms: u64,
) -> Result<QueueDepth, PgError> {
    let row = query_one(
        tx,
        "WITH gone AS (DELETE FROM messages WHERE identity_key = $1 AND expires_at_ms <= $2 \
         RETURNING octet_length(payload) AS n) \
         SELECT count(*)::int8 AS messages, coalesce(sum(n), 0)::int8 AS bytes FROM gone",
        &[&identity.as_slice(), &int(now_ms)],
    )
    .await?;
    Ok(QueueDepth {
        messages: uint(row.get("messages"))?,
        bytes: uint(row.get("bytes"))?,
    })
}

/// Subtracts `gone` from a queue's counters.
pub(crate) async fn shrink_queue(
    tx: &Tx<'_>,
    identity: &IdentityKey,
    gone: QueueDepth,
) -> Result<(), PgError> {
    if gone.messages == 0 {
        return Ok(());
    }
    execute(
        tx,
        "UPDATE queues SET messages = greatest(messages - $2, 0), bytes = greatest(bytes - $3, 0) \
         WHERE identity_key = $1",
        &[&identity.as_slice(), &int(gone.messages), &int(gone.bytes)],
    )
    .await?;
    Ok(())
}

impl Store for PgStore {
    async fn create_account(&self, account: Account) -> Result<(), StoreError> {
        check_username(&account.username)?;
        if account.password_file.is_empty() {
            return Err(StoreError::InvalidArgument(
                "password file must not be empty".into(),
            ));
        }
        let account = &account;
        self.transact("create_account", |tx, _| {
            Box::pin(async move {
                let inserted = execute(
                    tx,
                    "INSERT INTO accounts (username, identity_key, password_file, created_at_ms) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &account.username,
                        &account.identity_key.as_slice(),
                        &account.password_file,
                        &int(account.created_at_ms),
                    ],
                )
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if e.violates("accounts_pkey") => return Err(StoreError::UsernameTaken.into()),
                    Err(e) if e.violates("accounts_identity_key_key") => {
                        return Err(StoreError::IdentityTaken.into());
                    }
                    Err(e) => return Err(e),
                }
                execute(
                    tx,
                    "INSERT INTO queues (identity_key, next_seq, messages, bytes) VALUES ($1, 1, 0, 0) \
                     ON CONFLICT (identity_key) DO NOTHING",
                    &[&account.identity_key.as_slice()],
                )
                .await?;
                // The binding enters the transparency log in the same transaction.
                kt::append_binding(tx, account).await?;
                Ok(())
            })
        })
        .await
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT username, identity_key, password_file, created_at_ms FROM accounts \
                     WHERE username = $1",
                    &[&username],
                )
                .await?;
                Ok(row.map(|r| account_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn account_by_identity(
        &self,
        identity_key: &IdentityKey,
    ) -> Result<Option<Account>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT username, identity_key, password_file, created_at_ms FROM accounts \
                     WHERE identity_key = $1",
                    &[&identity_key.as_slice()],
                )
                .await?;
                Ok(row.map(|r| account_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn delete_account(&self, username: &str) -> Result<DeletedAccount, StoreError> {
        self.transact("delete_account", |tx, _| {
            Box::pin(async move {
                let account = lock_account(tx, username)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let identity = account.identity_key.as_slice();
                let sessions = query(
                    tx,
                    &format!(
                        "DELETE FROM sessions WHERE identity_key = $1 RETURNING {SESSION_COLUMNS}"
                    ),
                    &[&identity],
                )
                .await?
                .iter()
                .map(session_of)
                .collect::<Result<Vec<_>, _>>()?;
                // Lock order: channels before queues (memberships go first).
                channels::delete_memberships_of(tx, &account.identity_key).await?;
                let queue = query_opt(
                    tx,
                    "DELETE FROM queues WHERE identity_key = $1 RETURNING messages",
                    &[&identity],
                )
                .await?;
                let messages_removed = execute(
                    tx,
                    "DELETE FROM messages WHERE identity_key = $1",
                    &[&identity],
                )
                .await?;
                if queue.is_none() && messages_removed > 0 {
                    return Err(StoreError::Corrupt(
                        "messages of an account without a queue".into(),
                    )
                    .into());
                }
                keys::delete_keys_of(tx, &account.identity_key).await?;
                devices::delete_device_data(tx, &account).await?;
                recovery::delete_recovery_data(tx, &account).await?;
                p2p::delete_p2p_data(tx, &account).await?;
                blobs::delete_blob_data(tx, &account).await?;
                execute(tx, "DELETE FROM accounts WHERE username = $1", &[&username]).await?;
                Ok(DeletedAccount {
                    account,
                    sessions,
                    messages_removed,
                })
            })
        })
        .await
    }

    async fn put_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        if session
            .device_id
            .as_ref()
            .is_some_and(|d| d.len() > usize::from(u16::MAX))
        {
            return Err(StoreError::InvalidArgument(
                "device id longer than 65535 bytes".into(),
            ));
        }
        let session = &session;
        let now = self.now();
        self.transact("put_session", |tx, _| {
            Box::pin(async move {
                let account = query_opt(
                    tx,
                    "SELECT 1 FROM accounts WHERE username = $1 AND identity_key = $2 FOR SHARE",
                    &[&session.username, &session.identity_key.as_slice()],
                )
                .await?;
                if account.is_none() {
                    return Err(StoreError::NotFound.into());
                }
                // A revoked device id never gets a session again; a login racing a
                // server-wide ban cannot outlive it (the ban locks the account row).
                devices::check_device_usable(tx, session).await?;
                moderation::refuse_if_banned(tx, &session.identity_key, now).await?;
                let inserted = execute(
                    tx,
                    "INSERT INTO sessions (token_hash, username, identity_key, device_id, created_at_ms, \
                     expires_at_ms, login_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &session.token_hash.as_slice(),
                        &session.username,
                        &session.identity_key.as_slice(),
                        &session.device_id,
                        &int(session.created_at_ms),
                        &int(session.expires_at_ms),
                        &int(session.login_at_ms),
                    ],
                )
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if e.violates("sessions_pkey") => {
                        return Err(StoreError::InvalidArgument(
                            "a session with this token hash exists".into(),
                        )
                        .into());
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            })
        })
        .await
    }

    async fn session_by_token_hash(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.sessions.call(*token_hash).await
    }

    async fn delete_session(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.transact("delete_session", |tx, _| {
            Box::pin(async move {
                let row = query_opt(
                    tx,
                    &format!(
                        "DELETE FROM sessions WHERE token_hash = $1 RETURNING {SESSION_COLUMNS}"
                    ),
                    &[&token_hash.as_slice()],
                )
                .await?;
                Ok(row.map(|r| session_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn delete_sessions_of(&self, username: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.transact("delete_sessions_of", |tx, _| {
            Box::pin(async move {
                let Some(account) = lock_account(tx, username).await? else {
                    return Ok(Vec::new());
                };
                let rows = query(
                    tx,
                    &format!(
                        "DELETE FROM sessions WHERE identity_key = $1 RETURNING {SESSION_COLUMNS}"
                    ),
                    &[&account.identity_key.as_slice()],
                )
                .await?;
                Ok(rows.iter().map(session_of).collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
    }

    async fn enqueue(
        &self,
        deliveries: Vec<(IdentityKey, NewMessage)>,
    ) -> Result<Vec<Seq>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.enqueuer.enqueue(deliveries).await
    }

    async fn fetch(&self, recipient: &IdentityKey, limit: usize) -> Result<QueuePage, StoreError> {
        let now = self.now();
        self.transact("fetch", |tx, _| {
            Box::pin(async move {
                let identity = recipient.as_slice();
                let locked = query_opt(
                    tx,
                    "SELECT 1 FROM queues WHERE identity_key = $1 FOR UPDATE",
                    &[&identity],
                )
                .await?;
                if locked.is_none() {
                    return Ok(QueuePage::default());
                }
                let gone = drop_expired(tx, recipient, now).await?;
                let take = int(limit as u64).saturating_add(1);
                let rows = query(
                    tx,
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE identity_key = $1 \
                         ORDER BY seq LIMIT $2"
                    ),
                    &[&identity, &take],
                )
                .await?;
                let mut page = QueuePage::default();
                for row in rows.iter() {
                    if page.messages.len() >= limit {
                        page.more = true;
                        break;
                    }
                    page.messages.push(message_of(row)?);
                }
                let mut removed = gone;
                if let Some(last) = page.messages.last() {
                    let taken = query_one(
                        tx,
                        "WITH gone AS (DELETE FROM messages WHERE identity_key = $1 AND seq <= $2 \
                         RETURNING octet_length(payload) AS n) \
                         SELECT count(*)::int8 AS messages, coalesce(sum(n), 0)::int8 AS bytes FROM gone",
                        &[&identity, &int(last.seq.0)],
                    )
                    .await?;
                    removed.messages += uint(taken.get("messages"))?;
                    removed.bytes += uint(taken.get("bytes"))?;
                }
                shrink_queue(tx, recipient, removed).await?;
                Ok(page)
            })
        })
        .await
    }

    async fn peek(
        &self,
        recipient: &IdentityKey,
        after: Seq,
        limit: usize,
    ) -> Result<QueuePage, StoreError> {
        let now = int(self.now());
        let take = int(limit as u64).saturating_add(1);
        self.read(|c, _| {
            Box::pin(async move {
                let rows = query(
                    c,
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE identity_key = $1 AND seq > $2 \
                         AND expires_at_ms > $3 ORDER BY seq LIMIT $4"
                    ),
                    &[&recipient.as_slice(), &int(after.0), &now, &take],
                )
                .await?;
                let mut page = QueuePage::default();
                for row in rows.iter() {
                    if page.messages.len() >= limit {
                        page.more = true;
                        break;
                    }
                    page.messages.push(message_of(row)?);
                }
                Ok(page)
            })
        })
        .await
    }

    async fn ack(&self, recipient: &IdentityKey, seqs: &[Seq]) -> Result<AckOutcome, StoreError> {
        let mut wanted = Vec::with_capacity(seqs.len());
        let mut seen = std::collections::HashSet::with_capacity(seqs.len());
        for &seq in seqs {
            if seen.insert(seq) {
                wanted.push(seq);
            }
        }
        if wanted.is_empty() {
            return Ok(AckOutcome::default());
        }
        let wanted = &wanted;
        self.transact("ack", |tx, _| {
            Box::pin(async move {
                let identity = recipient.as_slice();
                let locked = query_opt(
                    tx,
                    "SELECT 1 FROM queues WHERE identity_key = $1 FOR UPDATE",
                    &[&identity],
                )
                .await?;
                if locked.is_none() {
                    return Ok(AckOutcome {
                        removed: Vec::new(),
                        unknown: wanted.clone(),
                    });
                }
                let numbers: Vec<i64> = wanted.iter().map(|s| int(s.0)).collect();
                let rows = query(
                    tx,
                    "DELETE FROM messages WHERE identity_key = $1 AND seq = ANY($2) \
                     RETURNING seq, octet_length(payload)::int8 AS n",
                    &[&identity, &numbers],
                )
                .await?;
                let mut gone = QueueDepth::default();
                let mut removed = std::collections::HashSet::with_capacity(rows.len());
                for row in &rows {
                    removed.insert(uint(row.get("seq"))?);
                    gone.messages += 1;
                    gone.bytes += uint(row.get("n"))?;
                }
                shrink_queue(tx, recipient, gone).await?;
                let (removed, unknown) = wanted.iter().partition(|s| removed.contains(&s.0));
                Ok(AckOutcome { removed, unknown })
            })
        })
        .await
    }

    async fn queue_depth(&self, recipient: &IdentityKey) -> Result<QueueDepth, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT messages, bytes FROM queues WHERE identity_key = $1",
                    &[&recipient.as_slice()],
                )
                .await?;
                Ok(match row {
                    Some(r) => QueueDepth {
                        messages: uint(r.get("messages"))?,
                        bytes: uint(r.get("bytes"))?,
                    },
                    None => QueueDepth::default(),
                })
            })
        })
        .await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeStats, StoreError> {
        self.transact("purge_expired", |tx, _| {
            Box::pin(async move {
                let now = int(now_ms);
                let mut stats = PurgeStats::default();
                let sessions = execute(
                    tx,
                    "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions \
                     WHERE expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&now, &PURGE_CHUNK],
                )
                .await?;
                stats.sessions = sessions;
                // Expired messages, grouped by queue; the queue rows are locked in identity
                // order before any message goes, as every writer of a queue does.
                let expired = query(
                    tx,
                    "SELECT identity_key, seq FROM messages WHERE expires_at_ms <= $1 \
                     ORDER BY expires_at_ms LIMIT $2",
                    &[&now, &(PURGE_CHUNK + 1)],
                )
                .await?;
                if expired.len() as i64 > PURGE_CHUNK {
                    stats.more = true;
                }
                if sessions as i64 >= PURGE_CHUNK {
                    stats.more = true;
                }
                let mut by_queue: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
                for row in expired.iter().take(PURGE_CHUNK as usize) {
                    by_queue.entry(row.get("identity_key")).or_default().push(row.get("seq"));
                }
                let identities: Vec<&[u8]> = by_queue.keys().map(Vec::as_slice).collect();
                // Queues busy with a user's write are left for the next sweep: the sweeper
                // never makes a fetch or an enqueue wait behind it.
                let locked = query(
                    tx,
                    "SELECT identity_key FROM queues WHERE identity_key = ANY($1) \
                     ORDER BY identity_key FOR UPDATE SKIP LOCKED",
                    &[&identities],
                )
                .await?;
                let locked: std::collections::HashSet<Vec<u8>> =
                    locked.iter().map(|r| r.get("identity_key")).collect();
                if locked.len() < by_queue.len() {
                    stats.more = true;
                }
                for (identity, seqs) in by_queue.iter().filter(|(i, _)| locked.contains(*i)) {
                    let identity: IdentityKey = fixed(identity, "identity key")?;
                    let row = query_one(
                        tx,
                        "WITH gone AS (DELETE FROM messages WHERE identity_key = $1 AND seq = ANY($2) \
                         AND expires_at_ms <= $3 RETURNING octet_length(payload) AS n) \
                         SELECT count(*)::int8 AS messages, coalesce(sum(n), 0)::int8 AS bytes FROM gone",
                        &[&identity.as_slice(), seqs, &now],
                    )
                    .await?;
                    let gone = QueueDepth {
                        messages: uint(row.get("messages"))?,
                        bytes: uint(row.get("bytes"))?,
                    };
                    stats.messages += gone.messages;
                    shrink_queue(tx, &identity, gone).await?;
                }
                Ok(stats)
            })
        })
        .await
    }

    fn engine(&self) -> Option<Arc<dyn StorageEngine>> {
        Some(Arc::new(self.clone()))
    }

    async fn bind_secrets(
        &self,
        secrets: Vec<(String, [u8; 32])>,
    ) -> Result<Vec<String>, StoreError> {
        let now = int(self.now());
        let secrets = &secrets;
        self.transact("bind_secrets", |tx, _| {
            Box::pin(async move {
                let mut differ = Vec::new();
                for (name, fingerprint) in secrets {
                    // Instances starting at once: one insert wins, the others compare with it.
                    execute(
                        tx,
                        "INSERT INTO server_secrets (name, fingerprint, first_at_ms) \
                         VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                        &[name, &fingerprint.as_slice(), &now],
                    )
                    .await?;
                    let stored: Vec<u8> = query_one(
                        tx,
                        "SELECT fingerprint FROM server_secrets WHERE name = $1",
                        &[name],
                    )
                    .await?
                    .get("fingerprint");
                    if stored[..] != fingerprint[..] {
                        differ.push(name.clone());
                    }
                }
                Ok(differ)
            })
        })
        .await
    }
}

impl StorageEngine for PgStore {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn commit_stats(&self) -> SyncStats {
        self.inner.shared.commits.snapshot()
    }

    fn disk_bytes(&self) -> qpq_runtime::BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.read(|c, _| {
            Box::pin(async move {
                let row = query_one(c, "SELECT pg_database_size(current_database())", &[]).await?;
                Ok(uint(row.get(0))?)
            })
        }))
    }

    fn backup_to<'a>(
        &'a self,
        _target: &'a Path,
    ) -> qpq_runtime::BoxFuture<'a, Result<BackupStats, StoreError>> {
        Box::pin(async {
            Err(StoreError::InvalidArgument(
                "the online backup copies the embedded store only; back up PostgreSQL with its own \
                 tools (pg_dump, or base backups with WAL archiving for point-in-time recovery)"
                    .into(),
            ))
        })
    }

    fn inject_commit_failure_for_tests(&self) {
        self.inner
            .shared
            .fail_next_commit
            .store(true, Ordering::Release);
    }
}

/// Stored rows per table, every table of the schema (the conformance suite's census).
#[cfg(test)]
pub(crate) async fn census(store: &PgStore) -> BTreeMap<String, u64> {
    store
        .read(|c, _| {
            Box::pin(async move {
                let tables = query(
                    c,
                    "SELECT table_name::text AS name FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                     AND table_name <> 'qpq_schema' ORDER BY 1",
                    &[],
                )
                .await?;
                let mut out = BTreeMap::new();
                for t in tables {
                    let name: String = t.get("name");
                    let n: i64 = c
                        .query_one(&format!("SELECT count(*) FROM \"{name}\""), &[])
                        .await?
                        .get(0);
                    out.insert(name, uint(n)?);
                }
                Ok(out)
            })
        })
        .await
        .expect("census of the test database")
}

#[cfg(test)]
pub(crate) mod backend;
