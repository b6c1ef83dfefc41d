//! Blobs (600-601): content-addressed attachments, uploaded in chunks and downloaded in
//! ranges.
//!
//! The content is opaque (clients encrypt attachments); the server only guarantees integrity:
//! the finishing UploadBlob reads every stored piece back and checks the size and SHA-256 of
//! the whole content against what the client declared (a mismatch discards the upload and
//! stores nothing), and every DownloadBlob checks the SHA-256 of each piece it returns
//! against the hash recorded at commit (a mismatch is logged and answered Internal, never
//! with wrong bytes). The piece layout (cutting, hashing, verified range reads) is
//! `store/pieces.rs`; deduplication and quota accounting are described in `store/blobs.rs`.
//!
//! Limits: one chunk and one downloaded range are at most 4 MiB (the protocol's cap); the
//! declared size at most `--blob-max-bytes`; an account's blobs plus its unfinished uploads
//! at most `--blob-quota-bytes`. Unfinished uploads expire after 24 h (the sweeper deletes
//! them and releases their reservation).

use std::time::Duration;

use bytes::Bytes;
use qpq_runtime::tls::hex;
use qpq_runtime::{Ctx, Session, Status};
use qpq_schema::{BlobService, proto};
use rand::RngCore;
use rand::rngs::OsRng;

use crate::auth::identity_of;
use crate::store::pieces;
use crate::store::{
    BlobError, BlobId, IdentityKey, NewUpload, Store, StoreError, UploadId, UploadState,
};
use crate::{Messenger, errors};

/// Largest chunk of one UploadBlob and largest range of one DownloadBlob.
const MAX_CHUNK: u64 = 4 << 20;
/// Longest media type hint, in bytes.
const MAX_MIME: usize = 128;
/// Unfinished uploads are deleted this long after they start.
const UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

fn blob_error(error: BlobError) -> Status {
    match error {
        BlobError::UploadNotFound => Status::not_found(
            "no unfinished upload with this upload_id for your account (uploads expire after 24 h, and a failed hash check discards one); start a new upload with an empty upload_id",
        ),
        BlobError::QuotaExceeded {
            usage,
            quota,
            wanted,
        } => Status::forbidden(format!(
            "blob quota exceeded: your account holds {} bytes in {} blobs and {} bytes of unfinished uploads; an upload of {wanted} bytes does not fit in its quota of {quota} bytes",
            usage.bytes, usage.blobs, usage.reserved
        )),
        BlobError::OffsetMismatch {
            offset,
            bytes_received,
        } => Status::bad_request(format!(
            "chunk offset {offset} does not continue this upload: bytes_received is {bytes_received}; resume from offset {bytes_received}"
        )),
        BlobError::PastEnd { end, total_size } => Status::bad_request(format!(
            "chunk would end at byte {end}, past the declared total_size of {total_size} bytes"
        )),
        BlobError::Incomplete {
            bytes_received,
            total_size,
        } => Status::bad_request(format!(
            "the upload has {bytes_received} of its {total_size} bytes; send the rest from offset {bytes_received} before finishing"
        )),
        BlobError::Store(StoreError::NotFound) => {
            Status::unauthorized("your account no longer exists; log in again")
        }
        BlobError::Store(other) => errors::store(other),
    }
}

fn response(state: &UploadState) -> proto::UploadBlobResponse {
    proto::UploadBlobResponse {
        upload_id: Bytes::copy_from_slice(&state.id),
        bytes_received: state.bytes_received,
        blob_id: state
            .committed
            .map(|id| Bytes::copy_from_slice(&id))
            .unwrap_or_default(),
    }
}

impl<S: Store> Messenger<S> {
    async fn start_upload(
        &self,
        owner: IdentityKey,
        request: proto::UploadBlobRequest,
    ) -> Result<UploadState, Status> {
        let offset = request.offset;
        let sha256: BlobId = request.expected_sha256[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "expected_sha256 must be the 32-byte SHA-256 of the whole content when starting an upload, got {} bytes",
                request.expected_sha256.len()
            ))
        })?;
        if request.total_size == 0 {
            return Err(Status::bad_request(
                "total_size must be the size of the whole content (at least 1 byte) when starting an upload",
            ));
        }
        let max = self.config.blob_max_bytes;
        if request.total_size > max {
            return Err(Status::bad_request(format!(
                "total_size {} exceeds this server's maximum blob size of {max} bytes",
                request.total_size
            )));
        }
        if offset != 0 {
            return Err(Status::bad_request(format!(
                "a new upload (empty upload_id) starts at offset 0, not {offset}"
            )));
        }
        if request.mime_type.len() > MAX_MIME {
            return Err(Status::bad_request(format!(
                "mime_type is {} bytes; at most {MAX_MIME}",
                request.mime_type.len()
            )));
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let upload = NewUpload {
            id,
            owner,
            total_size: request.total_size,
            sha256,
            mime_type: request.mime_type,
            expires_at_ms: self.now_ms().saturating_add(UPLOAD_TTL.as_millis() as u64),
        };
        pieces::start(
            &self.store,
            upload,
            self.config.blob_quota_bytes,
            request.chunk,
        )
        .await
        .map_err(blob_error)
    }

    /// Reads a complete upload back, checks its SHA-256 against the declared one and commits
    /// it with the hashes of its pieces; on a mismatch discards it.
    async fn commit_upload(
        &self,
        owner: &IdentityKey,
        state: &UploadState,
    ) -> Result<BlobId, Status> {
        let hash = pieces::hash_upload(&self.store, state)
            .await
            .map_err(errors::store)?;
        if hash.sha256 != state.sha256 {
            self.store
                .discard_upload(owner, &state.id)
                .await
                .map_err(errors::store)?;
            return Err(Status::bad_request(format!(
                "the uploaded content's SHA-256 is {}, not the declared expected_sha256 {}; the upload was discarded and nothing was stored: start again",
                hex(&hash.sha256),
                hex(&state.sha256)
            )));
        }
        let committed = self
            .store
            .commit_upload(owner, &state.id, hash.pieces)
            .await
            .map_err(blob_error)?;
        tracing::info!(
            blob = %hex(&committed.blob_id),
            size = state.total_size,
            deduplicated = committed.deduplicated,
            "blob committed"
        );
        Ok(committed.blob_id)
    }

    /// Deletes expired unfinished uploads (called by the sweeper).
    pub(crate) async fn sweep_uploads(&self) {
        loop {
            match self.store.purge_expired_uploads(self.now_ms()).await {
                Ok(stats) => {
                    if stats.abandoned > 0 {
                        tracing::info!(uploads = stats.abandoned, "deleted abandoned blob uploads");
                    }
                    if !stats.more {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "blob upload sweep failed");
                    break;
                }
            }
        }
    }
}

impl<S: Store> BlobService for Messenger<S> {
    async fn upload_blob(
        &self,
        ctx: Ctx<Session>,
        request: proto::UploadBlobRequest,
    ) -> Result<proto::UploadBlobResponse, Status> {
        let owner = identity_of(ctx.auth())?;
        if request.chunk.len() as u64 > MAX_CHUNK {
            return Err(Status::bad_request(format!(
                "chunk is {} bytes; one UploadBlob carries at most {MAX_CHUNK} bytes: split it",
                request.chunk.len()
            )));
        }
        let finish = request.finish;
        let state = if request.upload_id.is_empty() {
            self.start_upload(owner, request).await?
        } else {
            let id: UploadId = request.upload_id[..].try_into().map_err(|_| {
                Status::bad_request(format!(
                    "upload_id must be the 16 bytes a previous UploadBlob returned, got {} bytes (leave it empty to start an upload)",
                    request.upload_id.len()
                ))
            })?;
            pieces::append(
                &self.store,
                &owner,
                &id,
                request.offset,
                request.chunk,
                self.now_ms(),
            )
            .await
            .map_err(blob_error)?
        };
        if state.committed.is_some() || !finish {
            return Ok(response(&state));
        }
        if state.bytes_received != state.total_size {
            return Err(Status::bad_request(format!(
                "finish is set but the upload has {} of its {} bytes; send the rest from offset {} before finishing",
                state.bytes_received, state.total_size, state.bytes_received
            )));
        }
        let blob_id = self.commit_upload(&owner, &state).await?;
        Ok(response(&UploadState {
            committed: Some(blob_id),
            ..state
        }))
    }

    async fn download_blob(
        &self,
        _ctx: Ctx<Session>,
        request: proto::DownloadBlobRequest,
    ) -> Result<proto::DownloadBlobResponse, Status> {
        let blob_id: BlobId = request.blob_id[..].try_into().map_err(|_| {
            Status::bad_request(format!(
                "blob_id must be the 32-byte SHA-256 UploadBlob returned, got {} bytes",
                request.blob_id.len()
            ))
        })?;
        let meta = self
            .store
            .blob_meta(&blob_id)
            .await
            .map_err(errors::store)?
            .ok_or_else(|| Status::not_found("no blob with this id on this server"))?;
        let offset = request.offset;
        if offset > meta.size {
            return Err(Status::bad_request(format!(
                "offset {offset} is past the end of the blob ({} bytes)",
                meta.size
            )));
        }
        let available = meta.size - offset;
        let want = match request.length {
            0 => available,
            n => n.min(available),
        }
        .min(MAX_CHUNK);
        let data = pieces::read_range(&self.store, &meta, offset, want)
            .await
            .map_err(errors::store)?;
        Ok(proto::DownloadBlobResponse {
            data,
            offset,
            total_size: meta.size,
            sha256: Bytes::copy_from_slice(&meta.id),
            mime_type: meta.mime_type,
        })
    }
}
