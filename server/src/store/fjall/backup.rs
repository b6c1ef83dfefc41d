//! Online backup: a consistent copy of every keyspace, taken from one cross-keyspace snapshot
//! while the server keeps serving, written into a fresh database and synced.
//!
//! The snapshot holds every batch committed before it was opened; a write whose `Ok` was sent
//! before the backup started is therefore in the copy. Writes after it are not.

use std::path::Path;

use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};

use super::{Engine, engine_err};
use crate::store::{BackupStats, StoreError};

/// Entries per write batch of the copy, so memory stays bounded on large databases.
const BATCH: u64 = 10_000;

impl Engine {
    pub(super) fn backup_to(&self, target: &Path) -> Result<BackupStats, StoreError> {
        if let Ok(mut entries) = std::fs::read_dir(target)
            && entries.next().is_some()
        {
            return Err(StoreError::InvalidArgument(format!(
                "backup target {} is not empty; choose a new directory",
                target.display()
            )));
        }
        let snapshot = self.db.snapshot();
        let copy = Database::builder(target).open().map_err(engine_err)?;
        let mut stats = BackupStats::default();
        for name in self.db.list_keyspace_names() {
            let name: &str = name.as_ref();
            let source = self
                .db
                .keyspace(name, KeyspaceCreateOptions::default)
                .map_err(engine_err)?;
            // Keyspaces created with their own options get them in the copy too.
            let destination = if name == super::blobs::CHUNKS {
                super::blobs::open_chunks(&copy)?
            } else {
                copy.keyspace(name, KeyspaceCreateOptions::default)
                    .map_err(engine_err)?
            };
            let mut batch = copy.batch();
            let mut pending = 0u64;
            for guard in snapshot.iter(&source) {
                let (key, value) = guard.into_inner().map_err(engine_err)?;
                stats.entries += 1;
                stats.bytes += (key.len() + value.len()) as u64;
                batch.insert(&destination, key, value);
                pending += 1;
                if pending == BATCH {
                    batch.commit().map_err(engine_err)?;
                    batch = copy.batch();
                    pending = 0;
                }
            }
            batch.commit().map_err(engine_err)?;
            stats.keyspaces += 1;
        }
        copy.persist(PersistMode::SyncAll).map_err(engine_err)?;
        Ok(stats)
    }
}
