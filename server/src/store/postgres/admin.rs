//! [`AdminStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;

impl AdminStore for PgStore {
    async fn list_accounts(&self, after: &str, limit: usize) -> Result<AccountPage, StoreError> {
        Err(StoreError::Unavailable(
            "AdminStore::list_accounts is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        Err(StoreError::Unavailable(
            "AdminStore::storage_stats is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn queue_totals(&self) -> Result<QueueTotals, StoreError> {
        Err(StoreError::Unavailable(
            "AdminStore::queue_totals is not built on PostgreSQL yet".into(),
        )
        .into())
    }
}
