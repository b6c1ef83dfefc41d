//! The piece layout of blob content, over any [`BlobStore`]: written once, so no backend
//! and no handler computes with pieces.
//!
//! Content is cut into fixed pieces of [`BLOB_PIECE_BYTES`] (the last may be shorter), so a
//! range read touches at most `range / 1 MiB + 2` pieces and verifies each against the hash
//! recorded at commit. A chunk that does not end on a piece boundary leaves a partial last
//! piece, which the next chunk completes: this module reads it, and the backend stores the
//! completed piece in the same atomic write as the new byte count (at most 1 MiB of extra
//! work per chunk). Appends race safely: [`BlobStore::write_pieces`] writes only if the byte
//! count is still the one read, and a lost race is read again.
//!
//! Hashing runs on the blocking pool, one piece (≤ 1 MiB) at a time; no call holds more than
//! one request chunk or one response range (≤ 4 MiB) in memory.

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{
    BlobError, BlobId, BlobMeta, BlobStore, IdentityKey, NewUpload, Piece, PiecesWritten,
    StoreError, UploadId, UploadState,
};

/// Size of the pieces blobs are stored and verified in (the last piece may be shorter).
pub const BLOB_PIECE_BYTES: u64 = 1 << 20;

/// How often an append re-reads an upload whose byte count moved under it before giving up.
const APPEND_ATTEMPTS: usize = 4;

/// Number of pieces of content of `size` bytes.
pub fn piece_count(size: u64) -> u64 {
    size.div_ceil(BLOB_PIECE_BYTES)
}

/// Length of piece `index` of content of `size` bytes.
pub fn piece_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index.saturating_mul(BLOB_PIECE_BYTES))
        .min(BLOB_PIECE_BYTES)
}

/// The pieces that `data`, starting at byte `start` of the content, makes: each whole, so
/// the first one begins with `head`, the bytes of its piece before `start` (empty when
/// `start` is on a piece boundary).
pub fn cut(start: u64, head: &[u8], data: &Bytes) -> Vec<Piece> {
    debug_assert_eq!(head.len() as u64, start % BLOB_PIECE_BYTES);
    let mut pieces = Vec::with_capacity(data.len() / BLOB_PIECE_BYTES as usize + 2);
    let mut index = start / BLOB_PIECE_BYTES;
    let mut rest = data.clone();
    if !head.is_empty() && !rest.is_empty() {
        let take = ((BLOB_PIECE_BYTES as usize) - head.len()).min(rest.len());
        let mut piece = BytesMut::with_capacity(head.len() + take);
        piece.extend_from_slice(head);
        piece.extend_from_slice(&rest.split_to(take));
        pieces.push((index, piece.freeze()));
        index += 1;
    }
    while !rest.is_empty() {
        let take = (BLOB_PIECE_BYTES as usize).min(rest.len());
        // Zero-copy: a whole piece of the chunk is a slice of it.
        pieces.push((index, rest.split_to(take)));
        index += 1;
    }
    pieces
}

/// Checks a stored piece against the length and SHA-256 recorded at commit.
pub fn check_piece(piece: &[u8], len: u64, expected: Option<[u8; 32]>) -> Result<(), &'static str> {
    if piece.len() as u64 != len {
        return Err("piece has the wrong length");
    }
    let hash: [u8; 32] = Sha256::digest(piece).into();
    if expected != Some(hash) {
        return Err("piece SHA-256 differs from the one recorded at commit");
    }
    Ok(())
}

/// Starts an upload with its first chunk (at offset 0).
pub async fn start<S: BlobStore>(
    store: &S,
    upload: NewUpload,
    quota_bytes: u64,
    first_chunk: Bytes,
) -> Result<UploadState, BlobError> {
    let received = first_chunk.len() as u64;
    if received > upload.total_size {
        return Err(BlobError::PastEnd {
            end: received,
            total_size: upload.total_size,
        });
    }
    let pieces = cut(0, &[], &first_chunk);
    store
        .start_upload(upload, quota_bytes, pieces, received)
        .await
}

/// Appends `chunk` at `offset` to an upload of `owner`, at time `now_ms`. A chunk lying
/// entirely below the bytes received is a retry: ignored, answered with the current state;
/// so is any chunk for a committed upload. An expired upload is not found.
pub async fn append<S: BlobStore>(
    store: &S,
    owner: &IdentityKey,
    id: &UploadId,
    offset: u64,
    chunk: Bytes,
    now_ms: u64,
) -> Result<UploadState, BlobError> {
    for _ in 0..APPEND_ATTEMPTS {
        let state = store
            .upload_state(owner, id)
            .await?
            .ok_or(BlobError::UploadNotFound)?;
        if state.committed.is_some() {
            return Ok(state);
        }
        if state.expires_at_ms <= now_ms {
            return Err(BlobError::UploadNotFound);
        }
        let end = offset
            .checked_add(chunk.len() as u64)
            .ok_or(BlobError::PastEnd {
                end: u64::MAX,
                total_size: state.total_size,
            })?;
        if end <= state.bytes_received {
            // A retry of a chunk stored already.
            return Ok(state);
        }
        if offset != state.bytes_received {
            return Err(BlobError::OffsetMismatch {
                offset,
                bytes_received: state.bytes_received,
            });
        }
        if end > state.total_size {
            return Err(BlobError::PastEnd {
                end,
                total_size: state.total_size,
            });
        }
        let within = offset % BLOB_PIECE_BYTES;
        let head = if within == 0 {
            Bytes::new()
        } else {
            let head = store.blob_piece(id, offset / BLOB_PIECE_BYTES).await?;
            match head {
                Some(head) if head.len() as u64 == within => head,
                // A concurrent chunk may have grown the piece since the state was read.
                _ if moved(store, owner, id, offset).await? => continue,
                Some(_) => {
                    return Err(StoreError::Corrupt(
                        "blob upload: partial piece has the wrong length".into(),
                    )
                    .into());
                }
                None => {
                    return Err(
                        StoreError::Corrupt("blob upload: partial piece missing".into()).into(),
                    );
                }
            }
        };
        let pieces = cut(offset, &head, &chunk);
        match store.write_pieces(owner, id, offset, end, pieces).await? {
            PiecesWritten::Written(state) => return Ok(state),
            // Another chunk got there first: look again.
            PiecesWritten::Moved(_) => continue,
        }
    }
    Err(StoreError::Unavailable(
        "blob upload: concurrent chunks kept moving the upload; retry".into(),
    )
    .into())
}

/// Whether the upload's byte count is no longer `received` (or it is gone or committed).
async fn moved<S: BlobStore>(
    store: &S,
    owner: &IdentityKey,
    id: &UploadId,
    received: u64,
) -> Result<bool, StoreError> {
    Ok(match store.upload_state(owner, id).await? {
        Some(state) => state.committed.is_some() || state.bytes_received != received,
        None => true,
    })
}

/// The SHA-256 of a complete upload's content and of each of its pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentHash {
    /// Of the whole content.
    pub sha256: BlobId,
    /// Of each piece, in order (what [`BlobStore::commit_upload`] records).
    pub pieces: Vec<[u8; 32]>,
}

/// Reads a complete upload back and hashes it, piece by piece.
pub async fn hash_upload<S: BlobStore>(
    store: &S,
    state: &UploadState,
) -> Result<ContentHash, StoreError> {
    let count = piece_count(state.total_size);
    let mut whole = Sha256::new();
    let mut pieces = Vec::with_capacity(count as usize);
    for index in 0..count {
        let piece = store
            .blob_piece(&state.id, index)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("blob upload: piece {index} missing")))?;
        if piece.len() as u64 != piece_len(state.total_size, index) {
            return Err(StoreError::Corrupt(format!(
                "blob upload: piece {index} has {} bytes, not {}",
                piece.len(),
                piece_len(state.total_size, index)
            )));
        }
        // The running hash of the whole content is fed in order, piece by piece.
        let (next, hash) = blocking(move || {
            whole.update(&piece);
            let hash: [u8; 32] = Sha256::digest(&piece).into();
            (whole, hash)
        })
        .await?;
        whole = next;
        pieces.push(hash);
    }
    Ok(ContentHash {
        sha256: whole.finalize().into(),
        pieces,
    })
}

/// Bytes `offset..offset + len` of a committed blob (the caller keeps the range within the
/// blob), each piece read checked against its recorded length and SHA-256: a mismatch is
/// [`StoreError::Corrupt`], never wrong bytes.
pub async fn read_range<S: BlobStore>(
    store: &S,
    meta: &BlobMeta,
    offset: u64,
    len: u64,
) -> Result<Bytes, StoreError> {
    let end = offset.saturating_add(len).min(meta.size);
    if offset >= end {
        return Ok(Bytes::new());
    }
    let first = offset / BLOB_PIECE_BYTES;
    let last = (end - 1) / BLOB_PIECE_BYTES;
    if first == last {
        // One piece: the answer is a slice of it, no copy.
        let piece = verified_piece(store, meta, first).await?;
        let start = first * BLOB_PIECE_BYTES;
        return Ok(piece.slice((offset - start) as usize..(end - start) as usize));
    }
    let mut data = BytesMut::with_capacity((end - offset) as usize);
    for index in first..=last {
        let piece = verified_piece(store, meta, index).await?;
        let start = index * BLOB_PIECE_BYTES;
        let from = offset.max(start) - start;
        let to = end.min(start + piece.len() as u64) - start;
        data.extend_from_slice(&piece[from as usize..to as usize]);
    }
    Ok(data.freeze())
}

/// One piece of a committed blob, checked against its recorded length and SHA-256.
async fn verified_piece<S: BlobStore>(
    store: &S,
    meta: &BlobMeta,
    index: u64,
) -> Result<Bytes, StoreError> {
    let corrupt = |problem: &str| {
        StoreError::Corrupt(format!(
            "blob {}: piece {index}: {problem}",
            qpq_runtime::tls::hex(&meta.id)
        ))
    };
    let piece = store
        .blob_piece(&meta.upload, index)
        .await?
        .ok_or_else(|| corrupt("missing"))?;
    let len = piece_len(meta.size, index);
    let expected = meta.piece_hashes.get(index as usize).copied();
    let (piece, checked) = blocking(move || {
        let checked = check_piece(&piece, len, expected);
        (piece, checked)
    })
    .await?;
    checked.map_err(corrupt)?;
    Ok(piece)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("hashing task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = BLOB_PIECE_BYTES;

    #[test]
    fn piece_lengths() {
        assert_eq!(piece_len(3 * P, 2), P);
        assert_eq!(piece_len(2 * P + 5, 2), 5);
        assert_eq!(piece_len(5, 0), 5);
        assert_eq!(piece_len(5, 1), 0);
        assert_eq!(piece_count(2 * P + 5), 3);
        assert_eq!(piece_count(2 * P), 2);
        assert_eq!(piece_count(0), 0);
    }

    #[test]
    fn corrupted_pieces_are_detected() {
        let piece = vec![7u8; 1000];
        let hash: [u8; 32] = Sha256::digest(&piece).into();
        assert_eq!(check_piece(&piece, 1000, Some(hash)), Ok(()));
        let mut flipped = piece.clone();
        flipped[500] ^= 1;
        assert!(check_piece(&flipped, 1000, Some(hash)).is_err());
        assert!(check_piece(&piece[..999], 1000, Some(hash)).is_err());
        assert!(check_piece(&piece, 1000, None).is_err());
    }

    /// Cutting content in chunks of any size at any offset gives the same pieces as cutting
    /// it whole: each piece is the content's bytes of its range.
    #[test]
    fn cutting_in_chunks_matches_cutting_whole() {
        let content: Vec<u8> = (0..(2 * P + 777)).map(|i| (i % 251) as u8).collect();
        for chunk in [333_333u64, P - 1, P, P + 1, 3 * P] {
            let mut pieces: std::collections::BTreeMap<u64, Bytes> = Default::default();
            let mut at = 0u64;
            while at < content.len() as u64 {
                let end = (at + chunk).min(content.len() as u64);
                let data = Bytes::copy_from_slice(&content[at as usize..end as usize]);
                let head = pieces
                    .get(&(at / P))
                    .filter(|_| !at.is_multiple_of(P))
                    .cloned()
                    .unwrap_or_default();
                for (index, piece) in cut(at, &head, &data) {
                    pieces.insert(index, piece);
                }
                at = end;
            }
            assert_eq!(
                pieces.len() as u64,
                piece_count(content.len() as u64),
                "{chunk}"
            );
            for (index, piece) in &pieces {
                let start = (index * P) as usize;
                let len = piece_len(content.len() as u64, *index) as usize;
                assert_eq!(
                    &piece[..],
                    &content[start..start + len],
                    "chunk {chunk} piece {index}"
                );
            }
        }
    }
}
