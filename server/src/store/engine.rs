//! What a storage engine can report and do beyond the domain: its own figures (durable
//! commits, disk use), an online backup, and a fault hook for tests.
//!
//! This is an optional capability ([`Store::engine`](super::Store::engine)): the domain
//! traits never mention it, handlers that need its figures ask for it and answer without
//! them when a backend has none, and an operator of a database with its own tools (a
//! PostgreSQL cluster: `pg_dump`, PITR) backs it up with those.

use std::path::Path;

use qpq_runtime::BoxFuture;

use super::{StoreError, SyncStats};

/// What an online backup copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Collections copied (keyspaces, tables).
    pub keyspaces: u64,
    /// Entries copied (key-value pairs, rows).
    pub entries: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
}

/// A storage engine's own figures and operations.
pub trait StorageEngine: Send + Sync + 'static {
    /// The engine's name for logs and errors, e.g. `fjall`.
    fn name(&self) -> &'static str;

    /// Durable commits (journal syncs) since the store was opened: count, time, latency
    /// histogram. Cheap: metrics scrapes read it.
    fn commit_stats(&self) -> SyncStats;

    /// Space the data takes on disk (allocated blocks), bytes. May walk files: not for
    /// every scrape.
    fn disk_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Writes a consistent copy of the database into `target` (absent or empty) while the
    /// store keeps serving; everything acknowledged before the call is in the copy, which is
    /// durable when this returns.
    fn backup_to<'a>(&'a self, target: &'a Path) -> BoxFuture<'a, Result<BackupStats, StoreError>>;

    /// Test hook: the next durable commit fails as if the engine's sync (or the connection
    /// during `COMMIT`) had. The writes it covers answer `Unavailable`. Whether later calls do
    /// too is the engine's policy: fjall refuses everything until restart (the failure is
    /// sticky), PostgreSQL goes on with the next transaction.
    #[doc(hidden)]
    fn inject_commit_failure_for_tests(&self);
}
