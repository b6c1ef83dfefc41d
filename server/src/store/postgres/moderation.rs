//! [`ModerationStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;

impl ModerationStore for PgStore {
    async fn add_report(&self, report: ReportRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "ModerationStore::add_report is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn reports(&self, cursor: &[u8], limit: usize) -> Result<Page<ReportRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "ModerationStore::reports is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn ban(
        &self,
        ban: BanRecord,
        actor: Actor,
    ) -> Result<Result<BanOutcome, Refusal>, StoreError> {
        Err(
            StoreError::Unavailable("ModerationStore::ban is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn unban(
        &self,
        scope: BanScope,
        identity: &IdentityKey,
        actor: Actor,
    ) -> Result<Result<bool, Refusal>, StoreError> {
        Err(
            StoreError::Unavailable("ModerationStore::unban is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn server_ban(&self, identity: &IdentityKey) -> Result<Option<BanRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "ModerationStore::server_ban is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn bans(
        &self,
        channel: Option<ChannelId>,
        cursor: &[u8],
        limit: usize,
    ) -> Result<Page<BanRecord>, StoreError> {
        Err(
            StoreError::Unavailable("ModerationStore::bans is not built on PostgreSQL yet".into())
                .into(),
        )
    }
}

/// Answers `Banned` when a server-wide ban holds for the identity.
pub(super) async fn refuse_if_banned(tx: &Tx<'_>, identity: &IdentityKey) -> Result<(), PgError> {
    Ok(())
}
