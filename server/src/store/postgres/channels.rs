//! [`ChannelStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;

impl ChannelStore for PgStore {
    async fn create_channel(
        &self,
        new: NewChannel,
    ) -> Result<Result<Channel, Refusal>, StoreError> {
        Err(StoreError::Unavailable(
            "ChannelStore::create_channel is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<Channel>, StoreError> {
        Err(
            StoreError::Unavailable("ChannelStore::channel is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn member(
        &self,
        id: &ChannelId,
        identity: &IdentityKey,
    ) -> Result<Option<MemberRecord>, StoreError> {
        Err(
            StoreError::Unavailable("ChannelStore::member is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn members_page(
        &self,
        id: &ChannelId,
        cursor: &[u8],
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        Err(StoreError::Unavailable(
            "ChannelStore::members_page is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn member_identities(&self, id: &ChannelId) -> Result<Vec<IdentityKey>, StoreError> {
        Err(StoreError::Unavailable(
            "ChannelStore::member_identities is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn channels_of(&self, identity: &IdentityKey) -> Result<Vec<ChannelId>, StoreError> {
        Err(StoreError::Unavailable(
            "ChannelStore::channels_of is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn remove_member(
        &self,
        id: &ChannelId,
        actor: Actor,
        target: &IdentityKey,
    ) -> Result<Result<Removal, Refusal>, StoreError> {
        Err(StoreError::Unavailable(
            "ChannelStore::remove_member is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn update_channel(
        &self,
        id: &ChannelId,
        actor: Actor,
        update: ChannelUpdate,
    ) -> Result<Result<(Channel, Vec<IdentityKey>), Refusal>, StoreError> {
        Err(StoreError::Unavailable(
            "ChannelStore::update_channel is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn rotate(
        &self,
        commit: RotateCommit,
    ) -> Result<Result<CommitOutcome, Refusal>, StoreError> {
        Err(
            StoreError::Unavailable("ChannelStore::rotate is not built on PostgreSQL yet".into())
                .into(),
        )
    }
}

/// Removes the memberships of a deleted account (locks its channel rows, in id order).
pub(super) async fn delete_memberships_of(
    tx: &Tx<'_>,
    identity: &IdentityKey,
) -> Result<(), PgError> {
    Ok(())
}
