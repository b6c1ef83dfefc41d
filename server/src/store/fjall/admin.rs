//! [`AdminStore`] on fjall: reads over the other groups' keyspaces; no keyspace of its own.
//! Also the [`StorageEngine`] capability (commit figures, disk use, online backup).
//!
//! What each figure reads (every one of them off the writer thread, on the blocking pool):
//!
//! | figure | read |
//! |---|---|
//! | accounts | keys of `identities` (32 bytes each) |
//! | live sessions | keys of `session_expiry` from now on (the expired part is skipped by the range) |
//! | queued messages, bytes, non-empty queues | values of `queue_meta` (24 bytes per queue) |
//! | blobs, blob bytes | the head of each `blobs` record (never `blob_chunks`) |
//! | channels | keys of `channels` |
//! | transparency log size | the `size` record of `kt_meta` |
//! | outbox messages, bytes | values of `outbox_meta` (one per peer) |
//! | disk bytes ([`StorageEngine::disk_bytes`]) | the files of the database directory (one metadata read per file) |
//!
//! A page of the account listing is a range read of `accounts` from the key after the
//! cursor, and per account a point read of `server_bans` and `queue_meta` and a prefix read
//! of `devices`.
//!
//! Disk bytes are the blocks the files take (as `du` counts them), not the engine's own
//! figure: that one counts the journal at its preallocated length (64 MiB for an empty
//! database), which says little about the space used.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use qpq_runtime::BoxFuture;

use super::{Engine, FjallStore, engine_err};
use crate::store::admin::{AccountPage, AccountSummary, AdminStore, StorageStats};
use crate::store::{
    BackupStats, QueueDepth, QueueTotals, StorageEngine, StoreError, SyncStats, codec,
};

/// The smallest key greater than `username` (empty for empty: the start of the keyspace).
fn key_after(username: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(username.len() + 1);
    key.extend_from_slice(username.as_bytes());
    if !key.is_empty() {
        key.push(0);
    }
    key
}

/// Bytes the files under `dir` take on disk. Files that vanish during the walk (compaction
/// replaces tables all the time) are skipped.
fn allocated_bytes(dir: &Path) -> io::Result<u64> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if gone(&e) => continue,
            other => other?,
        };
        for entry in entries {
            let entry = entry?;
            // `DirEntry::metadata` does not follow symlinks, so the walk stays inside.
            let meta = match entry.metadata() {
                Err(e) if gone(&e) => continue,
                other => other?,
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    Ok(total)
}

impl Engine {
    fn list_accounts(&self, after: &str, limit: usize) -> Result<AccountPage, StoreError> {
        let limit = limit.max(1);
        let mut page = AccountPage::default();
        for guard in self.accounts.range(key_after(after)..) {
            let (key, value) = guard.into_inner().map_err(engine_err)?;
            if page.accounts.len() >= limit {
                page.next_after = page.accounts.last().map(|a| a.username.clone());
                break;
            }
            let account = codec::decode_account(&key, &value)?;
            let identity = account.identity_key;
            let queue = self.queue_meta(&identity)?;
            page.accounts.push(AccountSummary {
                banned_until_ms: self.active_server_ban(&identity)?.map(|b| b.expires_at_ms),
                queue: QueueDepth {
                    messages: queue.messages,
                    bytes: queue.bytes,
                },
                devices: self.active_devices(&identity)?,
                username: account.username,
                identity_key: identity,
                created_at_ms: account.created_at_ms,
            });
        }
        Ok(page)
    }

    fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        let count_keys = |iter: fjall::Iter| -> Result<u64, StoreError> {
            let mut count = 0;
            for guard in iter {
                guard.key().map_err(engine_err)?;
                count += 1;
            }
            Ok(count)
        };
        // A session expiring at `now` is already expired (see `session_by_token_hash`).
        let live_from = self.clock.unix_ms().saturating_add(1).to_be_bytes();
        let queues = self.queue_totals()?;
        let (blobs, blob_bytes) = self.blob_totals()?;
        let (outbox_messages, outbox_bytes) = self.outbox_totals()?;
        Ok(StorageStats {
            accounts: count_keys(self.identities.iter())?,
            live_sessions: count_keys(self.session_expiry.range(live_from..))?,
            queued_messages: queues.messages,
            queued_bytes: queues.bytes,
            nonempty_queues: queues.nonempty_queues,
            blobs,
            blob_bytes,
            channels: self.channel_count()?,
            kt_log_size: self.kt_size()?,
            outbox_messages,
            outbox_bytes,
        })
    }
}

impl AdminStore for FjallStore {
    async fn list_accounts(&self, after: &str, limit: usize) -> Result<AccountPage, StoreError> {
        let after = after.to_owned();
        self.blocking(move |e| e.list_accounts(&after, limit)).await
    }

    async fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        self.blocking(Engine::storage_stats).await
    }

    async fn queue_totals(&self) -> Result<QueueTotals, StoreError> {
        self.blocking(Engine::queue_totals).await
    }
}

impl StorageEngine for FjallStore {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn commit_stats(&self) -> SyncStats {
        self.inner.engine.health.sync_stats()
    }

    fn disk_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.blocking(|engine| {
            allocated_bytes(&engine.dir).map_err(|e| {
                StoreError::Unavailable(format!(
                    "could not measure the database directory {}: {e}",
                    engine.dir.display()
                ))
            })
        }))
    }

    fn backup_to<'a>(&'a self, target: &'a Path) -> BoxFuture<'a, Result<BackupStats, StoreError>> {
        let target = target.to_owned();
        Box::pin(self.blocking(move |engine| engine.backup_to(&target)))
    }

    fn inject_commit_failure_for_tests(&self) {
        self.inner.engine.health.inject_sync_failure();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_bytes_counts_files_in_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(allocated_bytes(dir.path()).unwrap(), 0);
        std::fs::create_dir(dir.path().join("tables")).unwrap();
        std::fs::write(dir.path().join("tables/1"), vec![1u8; 10_000]).unwrap();
        std::fs::write(dir.path().join("journal"), vec![2u8; 5_000]).unwrap();
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let bytes = allocated_bytes(dir.path()).unwrap();
        assert!(
            (15_000..1 << 20).contains(&bytes),
            "{bytes}: the two written files, not the sparse length"
        );
        assert!(allocated_bytes(&dir.path().join("missing")).unwrap() == 0);
    }

    #[test]
    fn key_after_is_the_next_key_in_byte_order() {
        assert_eq!(key_after(""), b"");
        assert_eq!(key_after("bob"), b"bob\0");
        assert!(key_after("bob").as_slice() > b"bob".as_slice());
        assert!(key_after("bob").as_slice() < b"bob.".as_slice());
        assert!(key_after("bob").as_slice() < b"boba".as_slice());
    }
}
