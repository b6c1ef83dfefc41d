//! Blob storage: content-addressed attachments, uploaded in chunks.
//!
//! A blob is stored once per content (its id is the SHA-256 of the content) as numbered
//! pieces, each with its own SHA-256 recorded at commit, so a range read verifies exactly the
//! pieces it touches and never returns bytes that differ from what was committed. An upload
//! in progress owns its pieces under its upload id; committing is a metadata write (no copy):
//! the upload's pieces become the blob's, or, when the same content is already stored, the
//! upload's pieces are dropped and the blob gains a reference.
//!
//! A backend keeps pieces as opaque numbered byte strings and never computes with them: how
//! content is cut into pieces, hashed and read back in ranges is [`super::pieces`], written
//! once for every backend.
//!
//! Quota: every account that holds a reference to a blob is charged its size once (the bytes
//! live on disk once, but each account pays for what it uploaded, so one account cannot fill
//! the disk by uploading content another account happens to hold). An upload in progress
//! reserves its declared size up front, so parallel uploads cannot overcommit. A blob's bytes
//! are deleted when its last reference goes (account deletion).

use std::fmt;
use std::future::Future;

use bytes::Bytes;

use super::{IdentityKey, StoreError};

/// The SHA-256 of a blob's content: its id.
pub type BlobId = [u8; 32];

/// The random id of an upload; after commit, the id of the pieces of the blob it became.
pub type UploadId = [u8; 16];

/// One piece of an upload: its number and its whole content (pieces are rewritten whole).
pub type Piece = (u64, Bytes);

/// An upload to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUpload {
    /// Fresh random id.
    pub id: UploadId,
    /// The account uploading (charged for it).
    pub owner: IdentityKey,
    /// Declared size of the whole content.
    pub total_size: u64,
    /// Declared SHA-256 of the whole content (the blob id it will get).
    pub sha256: BlobId,
    /// Media type hint, at most 255 bytes.
    pub mime_type: String,
    /// When the upload is forgotten if unfinished (and when its commit record goes).
    pub expires_at_ms: u64,
}

/// Where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadState {
    /// The upload id.
    pub id: UploadId,
    /// Declared size of the whole content.
    pub total_size: u64,
    /// Declared SHA-256 of the whole content.
    pub sha256: BlobId,
    /// Bytes stored so far (the offset of the next chunk).
    pub bytes_received: u64,
    /// When the upload is forgotten if unfinished, Unix ms.
    pub expires_at_ms: u64,
    /// Set once the upload is committed: the blob id.
    pub committed: Option<BlobId>,
}

/// Result of [`BlobStore::write_pieces`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PiecesWritten {
    /// The pieces are stored and the upload has `bytes_received` = the new count.
    Written(UploadState),
    /// Nothing was written: the upload is committed, or its byte count is no longer the one
    /// the caller read (a concurrent chunk). The state as it is now.
    Moved(UploadState),
}

/// A stored blob.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// SHA-256 of the content.
    pub id: BlobId,
    /// The upload whose pieces hold the content (committing does not copy them).
    pub upload: UploadId,
    /// Size in bytes.
    pub size: u64,
    /// Media type given at upload.
    pub mime_type: String,
    /// First commit time, Unix ms.
    pub created_at_ms: u64,
    /// Accounts referencing it.
    pub refs: u64,
    /// SHA-256 of each piece, in order.
    pub piece_hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for BlobMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobMeta")
            .field("size", &self.size)
            .field("mime_type", &self.mime_type)
            .field("refs", &self.refs)
            .field("pieces", &self.piece_hashes.len())
            .finish_non_exhaustive()
    }
}

/// An account's blob storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobUsage {
    /// Bytes of the blobs it references.
    pub bytes: u64,
    /// Number of blobs it references.
    pub blobs: u64,
    /// Bytes reserved by its unfinished uploads.
    pub reserved: u64,
}

/// Result of [`BlobStore::commit_upload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The blob id.
    pub blob_id: BlobId,
    /// `true` when the content was stored already (this upload's pieces were dropped).
    pub deduplicated: bool,
}

/// Result of [`BlobStore::purge_expired_uploads`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgedUploads {
    /// Unfinished uploads deleted with their pieces.
    pub abandoned: u64,
    /// Records of committed uploads forgotten.
    pub committed: u64,
    /// `true` when the call stopped at its work bound: call again.
    pub more: bool,
}

/// Why a blob operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// Storage failed (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such upload for this account (never started, expired, or discarded).
    #[error("no such upload")]
    UploadNotFound,
    /// The account's quota cannot hold the upload; nothing was stored.
    #[error("blob quota exceeded")]
    QuotaExceeded {
        /// Usage before the upload.
        usage: BlobUsage,
        /// The account's quota in bytes.
        quota: u64,
        /// Size of the refused upload.
        wanted: u64,
    },
    /// The chunk does not start at `bytes_received` (and is not a retry lying below it).
    #[error("chunk offset {offset} does not continue the upload at {bytes_received}")]
    OffsetMismatch {
        /// The chunk's offset.
        offset: u64,
        /// Where the next chunk must start.
        bytes_received: u64,
    },
    /// The chunk would end past the declared total size.
    #[error("chunk ends at {end}, past the declared total size {total_size}")]
    PastEnd {
        /// Where the chunk would end.
        end: u64,
        /// Declared size.
        total_size: u64,
    },
    /// Commit of an upload that has not received every byte.
    #[error("upload has {bytes_received} of {total_size} bytes")]
    Incomplete {
        /// Bytes stored.
        bytes_received: u64,
        /// Declared size.
        total_size: u64,
    },
}

/// Storage of blobs and uploads. Every mutating method is durable on `Ok` (see the module
/// doc of [`super`]); a finished upload's `Ok` means every piece and the index are synced.
pub trait BlobStore: Send + Sync + 'static {
    /// Starts an upload, reserving `upload.total_size` against `quota_bytes`, with its first
    /// `pieces` holding the first `bytes_received` bytes (none when the first chunk is
    /// empty). [`BlobError::QuotaExceeded`] stores nothing; so does [`StoreError::NotFound`]
    /// (the owner has no account) and [`BlobError::PastEnd`] (more bytes than declared).
    fn start_upload(
        &self,
        upload: NewUpload,
        quota_bytes: u64,
        pieces: Vec<Piece>,
        bytes_received: u64,
    ) -> impl Future<Output = Result<UploadState, BlobError>> + Send;

    /// The state of an upload of `owner` (expired or not; committed ones until their record
    /// is swept). `None` when there is none.
    fn upload_state(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> impl Future<Output = Result<Option<UploadState>, StoreError>> + Send;

    /// Stores `pieces` (each replacing the piece of its number) and moves the upload's byte
    /// count from `from_received` to `to_received`, atomically, if the upload is uncommitted
    /// and its count still is `from_received`; otherwise writes nothing and answers
    /// [`PiecesWritten::Moved`]. [`BlobError::UploadNotFound`] when `owner` has no such upload.
    fn write_pieces(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        from_received: u64,
        to_received: u64,
        pieces: Vec<Piece>,
    ) -> impl Future<Output = Result<PiecesWritten, BlobError>> + Send;

    /// One piece of an upload in progress or of a committed blob ([`BlobMeta::upload`]).
    fn blob_piece(
        &self,
        upload: &UploadId,
        index: u64,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Commits a complete upload whose content hashed to its declared SHA-256 into the blob
    /// it names, with the hashes of its pieces (one per piece, in order). Charges the owner (once per blob) and releases
    /// the reservation. A second commit of the same upload answers the same blob id.
    fn commit_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        piece_hashes: Vec<[u8; 32]>,
    ) -> impl Future<Output = Result<Committed, BlobError>> + Send;

    /// Deletes an unfinished upload with its pieces and releases its reservation. `false`
    /// when there was none (or it is committed, which is left alone).
    fn discard_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A blob's metadata.
    fn blob_meta(
        &self,
        id: &BlobId,
    ) -> impl Future<Output = Result<Option<BlobMeta>, StoreError>> + Send;

    /// An account's usage.
    fn blob_usage(
        &self,
        owner: &IdentityKey,
    ) -> impl Future<Output = Result<BlobUsage, StoreError>> + Send;

    /// Deletes unfinished uploads that expired at or before `now_ms` (with their pieces) and
    /// forgets expired commit records. Bounded work per call; see [`PurgedUploads::more`].
    fn purge_expired_uploads(
        &self,
        now_ms: u64,
    ) -> impl Future<Output = Result<PurgedUploads, StoreError>> + Send;
}
