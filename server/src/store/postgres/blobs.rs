//! [`BlobStore`] on PostgreSQL.

#![allow(unused_variables, unused_imports, reason = "not written yet")]

use super::{PgError, PgStore, Tx};
use crate::store::*;
use bytes::Bytes;

impl BlobStore for PgStore {
    async fn start_upload(
        &self,
        upload: NewUpload,
        quota_bytes: u64,
        pieces: Vec<Piece>,
        bytes_received: u64,
    ) -> Result<UploadState, BlobError> {
        Err(StoreError::Unavailable(
            "BlobStore::start_upload is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn upload_state(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> Result<Option<UploadState>, StoreError> {
        Err(StoreError::Unavailable(
            "BlobStore::upload_state is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn write_pieces(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        from_received: u64,
        to_received: u64,
        pieces: Vec<Piece>,
    ) -> Result<PiecesWritten, BlobError> {
        Err(StoreError::Unavailable(
            "BlobStore::write_pieces is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn blob_piece(&self, upload: &UploadId, index: u64) -> Result<Option<Bytes>, StoreError> {
        Err(
            StoreError::Unavailable("BlobStore::blob_piece is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn commit_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        piece_hashes: Vec<[u8; 32]>,
    ) -> Result<Committed, BlobError> {
        Err(StoreError::Unavailable(
            "BlobStore::commit_upload is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn discard_upload(&self, owner: &IdentityKey, id: &UploadId) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "BlobStore::discard_upload is not built on PostgreSQL yet".into(),
        )
        .into())
    }

    async fn blob_meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, StoreError> {
        Err(
            StoreError::Unavailable("BlobStore::blob_meta is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn blob_usage(&self, owner: &IdentityKey) -> Result<BlobUsage, StoreError> {
        Err(
            StoreError::Unavailable("BlobStore::blob_usage is not built on PostgreSQL yet".into())
                .into(),
        )
    }

    async fn purge_expired_uploads(&self, now_ms: u64) -> Result<PurgedUploads, StoreError> {
        Err(StoreError::Unavailable(
            "BlobStore::purge_expired_uploads is not built on PostgreSQL yet".into(),
        )
        .into())
    }
}

/// Removes the uploads and blob usage of a deleted account.
pub(super) async fn delete_blob_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    Ok(())
}
