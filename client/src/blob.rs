//! Blobs (attachments): chunked upload of a file and ranged, resumable download, both checked
//! against the SHA-256 that names the blob.
//!
//! A blob's id is the SHA-256 of its content, so a download can be verified without trusting
//! the server. Upload sends [`DEFAULT_CHUNK`]-byte chunks, each at the offset the server says
//! it has, so a retried chunk is harmless; download asks for ranges from where the output file
//! ends, so an interrupted download resumes. File reads and writes are blocking (small,
//! bounded chunks).
//!
//! ```no_run
//! # async fn run(client: qpq_client::QpqClient, token: bytes::Bytes) -> Result<(), qpq_client::blob::BlobError> {
//! use qpq_client::blob;
//! let id = blob::upload_file(&client, &token, "photo.jpg".as_ref(), "image/jpeg", blob::DEFAULT_CHUNK, |_, _| {}).await?;
//! let got = blob::download_to_file(&client, &token, &id, "copy.jpg".as_ref(), |_, _| {}).await?;
//! assert_eq!(got.sha256, id);
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use qpq_schema::{QpqClient, proto};
use sha2::{Digest, Sha256};

use crate::RpcError;
use crate::profile::to_hex;

/// The chunk size used by default: 1 MiB (the server takes up to 4 MiB per call).
///
/// ```
/// assert!(qpq_client::blob::DEFAULT_CHUNK <= qpq_client::blob::MAX_CHUNK);
/// ```
pub const DEFAULT_CHUNK: usize = 1 << 20;
/// The largest chunk the server accepts in one call.
///
/// ```
/// assert_eq!(qpq_client::blob::MAX_CHUNK, 4 << 20);
/// ```
pub const MAX_CHUNK: usize = 4 << 20;

/// Why a blob transfer failed.
///
/// ```
/// let error = qpq_client::blob::BlobError::Mismatch {
///     path: "out.bin".into(),
///     expected: "aa".into(),
///     got: "bb".into(),
/// };
/// assert!(error.to_string().contains("SHA-256"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The content does not hash to the blob id.
    #[error(
        "{path} has SHA-256 {got}, not the blob id {expected}; the file was kept: if it was a partial download of another blob, delete it and download again"
    )]
    Mismatch {
        /// The output file.
        path: PathBuf,
        /// The blob id, hex.
        expected: String,
        /// What the content hashes to, hex.
        got: String,
    },
    /// The server's answer does not fit the request.
    #[error("the server's answer is inconsistent: {0}")]
    Protocol(String),
    /// The output file is longer than the blob, so it is not a partial download of it.
    #[error(
        "{path} is {len} bytes, longer than the blob ({total} bytes); it is not a partial download of this blob: choose another output file"
    )]
    NotAPrefix {
        /// The output file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The blob's size.
        total: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// SHA-256 and size of a file, read in chunks.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("a.txt");
/// std::fs::write(&path, b"abc").unwrap();
/// let (hash, size) = qpq_client::blob::hash_file(&path).unwrap();
/// assert_eq!(size, 3);
/// assert_eq!(qpq_client::profile::to_hex(&hash)[..8], *"ba7816bf");
/// ```
pub fn hash_file(path: &Path) -> Result<([u8; 32], u64), BlobError> {
    let mut file = fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

fn read_chunk(
    file: &mut fs::File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, BlobError> {
    file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    let mut chunk = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut chunk)
        .map_err(io(path))?;
    if chunk.len() != len {
        return Err(BlobError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank during the upload",
            ),
        });
    }
    Ok(chunk)
}

/// Uploads the file at `path` in chunks of `chunk_size` bytes (at most [`MAX_CHUNK`]) and
/// returns the blob id (its SHA-256). `progress(sent, total)` is called after every chunk.
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient, token: bytes::Bytes) -> Result<(), qpq_client::blob::BlobError> {
/// let id = qpq_client::blob::upload_file(
///     &client, &token, "video.mp4".as_ref(), "video/mp4", 1 << 20,
///     |sent, total| eprintln!("{sent}/{total}"),
/// ).await?;
/// println!("blob {}", qpq_client::profile::to_hex(&id));
/// # Ok(())
/// # }
/// ```
pub async fn upload_file(
    client: &QpqClient,
    token: &Bytes,
    path: &Path,
    mime_type: &str,
    chunk_size: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<[u8; 32], BlobError> {
    let chunk_size = chunk_size.clamp(1, MAX_CHUNK) as u64;
    let (sha256, total) = hash_file(path)?;
    let mut file = fs::File::open(path).map_err(io(path))?;
    let mut upload_id = Bytes::new();
    let mut offset = 0u64;
    loop {
        let len = chunk_size.min(total - offset);
        let finish = offset + len == total;
        let chunk = read_chunk(&mut file, path, offset, len as usize)?;
        let starting = upload_id.is_empty();
        let response = client
            .upload_blob(proto::UploadBlobRequest {
                session_token: token.clone(),
                upload_id: upload_id.clone(),
                offset,
                chunk: Bytes::from(chunk),
                finish,
                expected_sha256: if starting {
                    Bytes::copy_from_slice(&sha256)
                } else {
                    Bytes::new()
                },
                total_size: if starting { total } else { 0 },
                mime_type: if starting {
                    mime_type.to_owned()
                } else {
                    String::new()
                },
            })
            .await?;
        progress(response.bytes_received.min(total), total);
        if !response.blob_id.is_empty() {
            if response.blob_id[..] != sha256 {
                return Err(BlobError::Protocol(format!(
                    "the server stored the upload as {}, but the file's SHA-256 is {}",
                    to_hex(&response.blob_id),
                    to_hex(&sha256)
                )));
            }
            return Ok(sha256);
        }
        if finish {
            return Err(BlobError::Protocol(
                "the finishing chunk was accepted without a blob id".into(),
            ));
        }
        if response.upload_id.is_empty() || response.bytes_received > total {
            return Err(BlobError::Protocol(format!(
                "upload_id {} bytes, bytes_received {} of {total}",
                response.upload_id.len(),
                response.bytes_received
            )));
        }
        upload_id = response.upload_id;
        // The server says where to go on: after a retried chunk that is not offset + len.
        offset = response.bytes_received;
    }
}

/// What [`download_to_file`] did.
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient, token: bytes::Bytes, id: [u8; 32]) -> Result<(), qpq_client::blob::BlobError> {
/// let done = qpq_client::blob::download_to_file(&client, &token, &id, "out".as_ref(), |_, _| {}).await?;
/// if done.resumed_from > 0 {
///     println!("resumed at byte {}", done.resumed_from);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Downloaded {
    /// Size of the blob.
    pub total_size: u64,
    /// Bytes that were already in the output file and were kept.
    pub resumed_from: u64,
    /// The verified SHA-256 of the output file (the blob id).
    pub sha256: [u8; 32],
    /// The media type given at upload.
    pub mime_type: String,
}

/// Downloads blob `blob_id` into `path` in ranges of at most 4 MiB. When `path` already holds
/// the first part of the blob (an interrupted download) it continues from its end. The whole
/// file is checked against `blob_id` at the end. `progress(have, total)` is called after
/// every range.
///
/// ```no_run
/// # async fn run(client: qpq_client::QpqClient, token: bytes::Bytes, id: [u8; 32]) -> Result<(), qpq_client::blob::BlobError> {
/// qpq_client::blob::download_to_file(&client, &token, &id, "photo.jpg".as_ref(), |have, total| {
///     eprintln!("{have}/{total}");
/// }).await?;
/// # Ok(())
/// # }
/// ```
pub async fn download_to_file(
    client: &QpqClient,
    token: &Bytes,
    blob_id: &[u8; 32],
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Downloaded, BlobError> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io(path))?;
    // Hash what is already there; it must be the blob's first bytes.
    let mut hasher = Sha256::new();
    let mut have = 0u64;
    {
        let mut buf = vec![0u8; 256 << 10];
        file.seek(SeekFrom::Start(0)).map_err(io(path))?;
        loop {
            let n = file.read(&mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            have += n as u64;
        }
    }
    let resumed_from = have;
    if have > 0 {
        // Resuming: the file must not be longer than the blob (asking past the end would
        // only say BadRequest).
        let probe = client
            .download_blob(proto::DownloadBlobRequest {
                session_token: token.clone(),
                blob_id: Bytes::copy_from_slice(blob_id),
                offset: 0,
                length: 1,
            })
            .await?;
        if have > probe.total_size {
            return Err(BlobError::NotAPrefix {
                path: path.to_owned(),
                len: have,
                total: probe.total_size,
            });
        }
    }
    let mut total = None;
    let mut mime_type = String::new();
    loop {
        if let Some(total) = total
            && have >= total
        {
            break;
        }
        let response = client
            .download_blob(proto::DownloadBlobRequest {
                session_token: token.clone(),
                blob_id: Bytes::copy_from_slice(blob_id),
                offset: have,
                length: MAX_CHUNK as u64,
            })
            .await?;
        if response.offset != have {
            return Err(BlobError::Protocol(format!(
                "asked for offset {have}, got data at {}",
                response.offset
            )));
        }
        if have > response.total_size {
            return Err(BlobError::NotAPrefix {
                path: path.to_owned(),
                len: have,
                total: response.total_size,
            });
        }
        if response.data.is_empty() && have < response.total_size {
            return Err(BlobError::Protocol(format!(
                "no data at offset {have} of {}",
                response.total_size
            )));
        }
        total = Some(response.total_size);
        mime_type = response.mime_type;
        file.write_all(&response.data).map_err(io(path))?;
        hasher.update(&response.data);
        have += response.data.len() as u64;
        progress(have, response.total_size);
    }
    file.sync_all().map_err(io(path))?;
    let sha256: [u8; 32] = hasher.finalize().into();
    if &sha256 != blob_id {
        return Err(BlobError::Mismatch {
            path: path.to_owned(),
            expected: to_hex(blob_id),
            got: to_hex(&sha256),
        });
    }
    Ok(Downloaded {
        total_size: total.unwrap_or(have),
        resumed_from,
        sha256,
        mime_type,
    })
}
