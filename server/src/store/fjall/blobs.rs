//! [`BlobStore`] on fjall.
//!
//! # Key layout
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `blob_chunks` | upload(16) ‖ piece(8) | `v1 ‖ bytes` (one piece, ≤ 1 MiB; key-value separated) |
//! | `blobs` | blob_id(32) | `v1 ‖ upload(16) ‖ size(8) ‖ created(8) ‖ refs(8) ‖ mime(2+n) ‖ sha256 of each piece (32 each)` |
//! | `blob_refs` | owner(32) ‖ blob_id(32) | `v1 ‖ size(8)` — the account is charged for the blob |
//! | `blob_usage` | owner(32) | `v1 ‖ bytes(8) ‖ blobs(8) ‖ reserved(8)` |
//! | `blob_uploads` | upload_id(16) | `v1 ‖ owner(32) ‖ total(8) ‖ sha256(32) ‖ received(8) ‖ expires(8) ‖ committed(1) ‖ mime(2+n)` |
//! | `blob_upload_expiry` | expires(8) ‖ upload_id(16) | empty — sweep order |
//! | `blob_upload_owner` | owner(32) ‖ upload_id(16) | empty — uploads of an account |
//!
//! # Why pieces in fjall, not files
//!
//! The bytes live in the same database as their index, so an upload step, a commit, a
//! deduplication or an account deletion is one atomic batch made durable by the same group
//! commit as everything else: there is no window in which a file exists without its index
//! entry (or the reverse), no orphan sweep, and a backup is one directory. Pieces are 1 MiB,
//! a size fjall handles well; the `blob_chunks` keyspace uses key-value separation, so the
//! piece bytes go to blob files and compaction moves only the small keys. No value ever holds
//! a whole blob: a 64 MiB blob is 64 pieces, and no call holds more than one request chunk
//! (≤ 4 MiB) or one response range (≤ 4 MiB) in memory.
//!
//! Pieces are opaque here: how content is cut into them, hashed and read in ranges is
//! `store/pieces.rs`, shared by every backend. This file stores what it is given, keyed by
//! upload id and piece number, and removes an upload's pieces by their key prefix.
//!
//! An upload's pieces are keyed by its upload id. Committing does not move them: the upload id
//! becomes the id of the blob's pieces. If the content is stored already, the upload's pieces are
//! deleted in the commit batch instead. A committed upload keeps a small record until its
//! expiry, so a retried finishing call answers the same blob id.

use std::collections::BTreeMap;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, OwnedWriteBatch};

use super::record::{Reader, Writer};
use super::{Engine, FjallStore, engine_err};
use crate::store::{
    Account, BlobError, BlobId, BlobMeta, BlobStore, BlobUsage, Committed, IdentityKey, NewUpload,
    Piece, PiecesWritten, PurgedUploads, StoreError, UploadId, UploadState,
};

/// The keyspace of piece bytes; opened with its own options by [`open_chunks`].
pub(super) const CHUNKS: &str = "blob_chunks";

/// Most uploads one purge call deletes, and most piece deletions it queues.
const PURGE_UPLOADS: usize = 64;
const PURGE_PIECES: u64 = 4_096;

/// Opens the piece keyspace: key-value separated (piece bytes in blob files, so compaction
/// rewrites keys only) with a smaller memtable, so pieces do not sit in memory for long.
pub(super) fn open_chunks(db: &Database) -> Result<Keyspace, StoreError> {
    db.keyspace(CHUNKS, || {
        KeyspaceCreateOptions::default()
            .max_memtable_size(16 << 20)
            .with_kv_separation(Some(KvSeparationOptions::default()))
    })
    .map_err(engine_err)
}

struct Ks<'a> {
    chunks: &'a Keyspace,
    blobs: &'a Keyspace,
    refs: &'a Keyspace,
    usage: &'a Keyspace,
    uploads: &'a Keyspace,
    expiry: &'a Keyspace,
    owner: &'a Keyspace,
}

fn chunk_key(upload: &UploadId, index: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(upload);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

fn expiry_key(expires_at_ms: u64, id: &UploadId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&expires_at_ms.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

fn owner_key(owner: &IdentityKey, id: &UploadId) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(owner);
    k[32..].copy_from_slice(id);
    k
}

fn ref_key(owner: &IdentityKey, blob: &BlobId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(owner);
    k[32..].copy_from_slice(blob);
    k
}

fn key_tail<const N: usize>(key: &[u8], at: usize, what: &str) -> Result<[u8; N], StoreError> {
    key.get(at..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} key has the wrong length")))
}

/// An upload as stored.
struct UploadRecord {
    owner: IdentityKey,
    total: u64,
    sha256: BlobId,
    received: u64,
    expires_at_ms: u64,
    committed: bool,
    mime_type: String,
}

impl UploadRecord {
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut w = Writer::new(100 + self.mime_type.len());
        w.raw(&self.owner)
            .u64(self.total)
            .raw(&self.sha256)
            .u64(self.received)
            .u64(self.expires_at_ms)
            .u8(u8::from(self.committed))
            .bytes16(self.mime_type.as_bytes())?;
        Ok(w.finish())
    }

    fn decode(value: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader::new(value, "blob upload")?;
        let record = UploadRecord {
            owner: r.array()?,
            total: r.u64()?,
            sha256: r.array()?,
            received: r.u64()?,
            expires_at_ms: r.u64()?,
            committed: r.u8()? != 0,
            mime_type: r.string16()?,
        };
        r.end()?;
        Ok(record)
    }

    fn state(&self, id: UploadId) -> UploadState {
        UploadState {
            id,
            total_size: self.total,
            sha256: self.sha256,
            bytes_received: self.received,
            expires_at_ms: self.expires_at_ms,
            committed: self.committed.then_some(self.sha256),
        }
    }
}

fn encode_usage(u: &BlobUsage) -> Vec<u8> {
    let mut w = Writer::new(24);
    w.u64(u.bytes).u64(u.blobs).u64(u.reserved);
    w.finish()
}

fn decode_usage(value: &[u8]) -> Result<BlobUsage, StoreError> {
    let mut r = Reader::new(value, "blob usage")?;
    let usage = BlobUsage {
        bytes: r.u64()?,
        blobs: r.u64()?,
        reserved: r.u64()?,
    };
    r.end()?;
    Ok(usage)
}

fn encode_meta(m: &BlobMeta) -> Result<Vec<u8>, StoreError> {
    let mut w = Writer::new(48 + m.mime_type.len() + 32 * m.piece_hashes.len());
    w.raw(&m.upload)
        .u64(m.size)
        .u64(m.created_at_ms)
        .u64(m.refs)
        .bytes16(m.mime_type.as_bytes())?;
    for h in &m.piece_hashes {
        w.raw(h);
    }
    Ok(w.finish())
}

fn decode_meta(id: &BlobId, value: &[u8]) -> Result<BlobMeta, StoreError> {
    let mut r = Reader::new(value, "blob")?;
    let upload = r.array()?;
    let size = r.u64()?;
    let created_at_ms = r.u64()?;
    let refs = r.u64()?;
    let mime_type = r.string16()?;
    let hashes = r.rest();
    if hashes.len() % 32 != 0 {
        return Err(StoreError::Corrupt(
            "blob: piece hash list is not a list of SHA-256 hashes".into(),
        ));
    }
    Ok(BlobMeta {
        id: *id,
        upload,
        size,
        mime_type,
        created_at_ms,
        refs,
        piece_hashes: hashes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect(),
    })
}

fn piece_value(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(super::record::V1);
    v.extend_from_slice(data);
    v
}

impl Engine {
    /// Committed blobs and their total size: one pass over the `blobs` records (their
    /// piece hashes are skipped, the pieces not read).
    pub(super) fn blob_totals(&self) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for guard in self.ks("blobs")?.iter() {
            let value = guard.value().map_err(engine_err)?;
            let mut r = Reader::new(&value, "blob")?;
            let _upload: UploadId = r.array()?;
            count += 1;
            bytes = bytes.saturating_add(r.u64()?);
        }
        Ok((count, bytes))
    }

    fn blob_ks(&self) -> Result<Ks<'_>, StoreError> {
        Ok(Ks {
            chunks: self.ks(CHUNKS)?,
            blobs: self.ks("blobs")?,
            refs: self.ks("blob_refs")?,
            usage: self.ks("blob_usage")?,
            uploads: self.ks("blob_uploads")?,
            expiry: self.ks("blob_upload_expiry")?,
            owner: self.ks("blob_upload_owner")?,
        })
    }

    fn usage_of(ks: &Ks<'_>, owner: &IdentityKey) -> Result<BlobUsage, StoreError> {
        match ks.usage.get(owner).map_err(engine_err)? {
            Some(v) => decode_usage(&v),
            None => Ok(BlobUsage::default()),
        }
    }

    /// The upload `id` if it exists and belongs to `owner`.
    fn upload_of(
        ks: &Ks<'_>,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> Result<Option<UploadRecord>, StoreError> {
        match ks.uploads.get(id).map_err(engine_err)? {
            Some(v) => {
                let record = UploadRecord::decode(&v)?;
                Ok((record.owner == *owner).then_some(record))
            }
            None => Ok(None),
        }
    }

    /// Adds the pieces of upload `id` to `batch`, each replacing the piece of its number.
    fn put_pieces(ks: &Ks<'_>, batch: &mut OwnedWriteBatch, id: &UploadId, pieces: &[Piece]) {
        for (index, data) in pieces {
            batch.insert(ks.chunks, chunk_key(id, *index).to_vec(), piece_value(data));
        }
    }

    /// Queues the deletion of every piece of `upload` (a prefix read of its keys); answers
    /// how many.
    fn remove_pieces(
        ks: &Ks<'_>,
        batch: &mut OwnedWriteBatch,
        upload: &UploadId,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        for guard in ks.chunks.prefix(upload) {
            batch.remove(ks.chunks, guard.key().map_err(engine_err)?.to_vec());
            removed += 1;
        }
        Ok(removed)
    }

    /// Queues the deletion of an upload record with its index entries, and of its pieces
    /// unless it was committed (then they belong to a blob, or were dropped already).
    /// Answers how many pieces it removed.
    fn remove_upload(
        ks: &Ks<'_>,
        batch: &mut OwnedWriteBatch,
        id: &UploadId,
        record: &UploadRecord,
    ) -> Result<u64, StoreError> {
        batch.remove(ks.uploads, id.to_vec());
        batch.remove(ks.expiry, expiry_key(record.expires_at_ms, id).to_vec());
        batch.remove(ks.owner, owner_key(&record.owner, id).to_vec());
        if record.committed {
            return Ok(0);
        }
        Self::remove_pieces(ks, batch, id)
    }

    fn start_upload(
        &self,
        upload: &NewUpload,
        quota: u64,
        pieces: &[Piece],
        received: u64,
    ) -> Result<(UploadState, bool), BlobError> {
        let ks = self.blob_ks()?;
        if !self
            .identities
            .contains_key(upload.owner)
            .map_err(engine_err)?
        {
            return Err(StoreError::NotFound.into());
        }
        if ks.uploads.contains_key(upload.id).map_err(engine_err)? {
            return Err(StoreError::InvalidArgument("upload id is in use".into()).into());
        }
        if received > upload.total_size {
            return Err(BlobError::PastEnd {
                end: received,
                total_size: upload.total_size,
            });
        }
        let mut usage = Self::usage_of(&ks, &upload.owner)?;
        let needed = usage
            .bytes
            .saturating_add(usage.reserved)
            .saturating_add(upload.total_size);
        if needed > quota {
            return Err(BlobError::QuotaExceeded {
                usage,
                quota,
                wanted: upload.total_size,
            });
        }
        usage.reserved = usage.reserved.saturating_add(upload.total_size);
        let record = UploadRecord {
            owner: upload.owner,
            total: upload.total_size,
            sha256: upload.sha256,
            received,
            expires_at_ms: upload.expires_at_ms,
            committed: false,
            mime_type: upload.mime_type.clone(),
        };
        let mut batch = self.db.batch();
        Self::put_pieces(&ks, &mut batch, &upload.id, pieces);
        batch.insert(ks.uploads, upload.id.to_vec(), record.encode()?);
        batch.insert(
            ks.expiry,
            expiry_key(upload.expires_at_ms, &upload.id).to_vec(),
            Vec::new(),
        );
        batch.insert(
            ks.owner,
            owner_key(&upload.owner, &upload.id).to_vec(),
            Vec::new(),
        );
        batch.insert(ks.usage, upload.owner.to_vec(), encode_usage(&usage));
        Ok((record.state(upload.id), self.commit(batch)?))
    }

    fn write_pieces(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        from: u64,
        to: u64,
        pieces: &[Piece],
    ) -> Result<(PiecesWritten, bool), BlobError> {
        let ks = self.blob_ks()?;
        let mut record = Self::upload_of(&ks, owner, id)?.ok_or(BlobError::UploadNotFound)?;
        if record.committed || record.received != from {
            return Ok((PiecesWritten::Moved(record.state(*id)), false));
        }
        if to < from || to > record.total {
            return Err(BlobError::PastEnd {
                end: to,
                total_size: record.total,
            });
        }
        let mut batch = self.db.batch();
        Self::put_pieces(&ks, &mut batch, id, pieces);
        record.received = to;
        batch.insert(ks.uploads, id.to_vec(), record.encode()?);
        Ok((
            PiecesWritten::Written(record.state(*id)),
            self.commit(batch)?,
        ))
    }

    fn commit_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        piece_hashes: Vec<[u8; 32]>,
    ) -> Result<(Committed, bool), BlobError> {
        let ks = self.blob_ks()?;
        let mut record = Self::upload_of(&ks, owner, id)?.ok_or(BlobError::UploadNotFound)?;
        let blob_id = record.sha256;
        if record.committed {
            let committed = Committed {
                blob_id,
                deduplicated: false,
            };
            return Ok((committed, false));
        }
        if record.received != record.total {
            return Err(BlobError::Incomplete {
                bytes_received: record.received,
                total_size: record.total,
            });
        }
        let mut usage = Self::usage_of(&ks, owner)?;
        usage.reserved = usage.reserved.saturating_sub(record.total);
        let has_ref = ks
            .refs
            .contains_key(ref_key(owner, &blob_id))
            .map_err(engine_err)?;
        let mut batch = self.db.batch();
        let existing = match ks.blobs.get(blob_id).map_err(engine_err)? {
            Some(v) => Some(decode_meta(&blob_id, &v)?),
            None => None,
        };
        let deduplicated = existing.is_some();
        match existing {
            Some(mut meta) => {
                if meta.size != record.total {
                    return Err(StoreError::Corrupt(
                        "blob: stored size differs for the same content hash".into(),
                    )
                    .into());
                }
                if !has_ref {
                    meta.refs = meta.refs.saturating_add(1);
                    batch.insert(ks.blobs, blob_id.to_vec(), encode_meta(&meta)?);
                }
                Self::remove_pieces(&ks, &mut batch, id)?;
            }
            None => {
                let meta = BlobMeta {
                    id: blob_id,
                    upload: *id,
                    size: record.total,
                    mime_type: record.mime_type.clone(),
                    created_at_ms: self.clock.unix_ms(),
                    refs: 1,
                    piece_hashes,
                };
                batch.insert(ks.blobs, blob_id.to_vec(), encode_meta(&meta)?);
            }
        }
        if !has_ref {
            let mut w = Writer::new(8);
            w.u64(record.total);
            batch.insert(ks.refs, ref_key(owner, &blob_id).to_vec(), w.finish());
            usage.bytes = usage.bytes.saturating_add(record.total);
            usage.blobs = usage.blobs.saturating_add(1);
        }
        batch.insert(ks.usage, owner.to_vec(), encode_usage(&usage));
        record.committed = true;
        batch.insert(ks.uploads, id.to_vec(), record.encode()?);
        let committed = Committed {
            blob_id,
            deduplicated,
        };
        Ok((committed, self.commit(batch)?))
    }

    fn discard_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> Result<(bool, bool), StoreError> {
        let ks = self.blob_ks()?;
        let Some(record) = Self::upload_of(&ks, owner, id)? else {
            return Ok((false, false));
        };
        if record.committed {
            return Ok((false, false));
        }
        let mut usage = Self::usage_of(&ks, owner)?;
        usage.reserved = usage.reserved.saturating_sub(record.total);
        let mut batch = self.db.batch();
        Self::remove_upload(&ks, &mut batch, id, &record)?;
        batch.insert(ks.usage, owner.to_vec(), encode_usage(&usage));
        Ok((true, self.commit(batch)?))
    }

    fn purge_expired_uploads(&self, now_ms: u64) -> Result<(PurgedUploads, bool), StoreError> {
        let ks = self.blob_ks()?;
        let mut stats = PurgedUploads::default();
        let mut batch = self.db.batch();
        let mut released: BTreeMap<IdentityKey, u64> = BTreeMap::new();
        let mut pieces = 0u64;
        let upper = now_ms.saturating_add(1).to_be_bytes();
        for (n, guard) in ks.expiry.range(..upper).enumerate() {
            if n == PURGE_UPLOADS || pieces >= PURGE_PIECES {
                stats.more = true;
                break;
            }
            let key = guard.key().map_err(engine_err)?;
            let id: UploadId = key_tail(&key, 8, "upload expiry")?;
            let expires = u64::from_be_bytes(key_tail(&key[..8], 0, "upload expiry")?);
            batch.remove(ks.expiry, key.to_vec());
            let Some(v) = ks.uploads.get(id).map_err(engine_err)? else {
                continue;
            };
            let record = UploadRecord::decode(&v)?;
            if record.expires_at_ms != expires {
                continue;
            }
            pieces += Self::remove_upload(&ks, &mut batch, &id, &record)?;
            if record.committed {
                stats.committed += 1;
            } else {
                stats.abandoned += 1;
                *released.entry(record.owner).or_default() += record.total;
            }
        }
        for (owner, bytes) in released {
            // The account may be gone (its deletion removed its usage): write nothing then.
            if let Some(v) = ks.usage.get(owner).map_err(engine_err)? {
                let mut usage = decode_usage(&v)?;
                usage.reserved = usage.reserved.saturating_sub(bytes);
                batch.insert(ks.usage, owner.to_vec(), encode_usage(&usage));
            }
        }
        Ok((stats, self.commit(batch)?))
    }

    /// Adds the removal of an account's blob references, uploads and usage to its deletion
    /// batch; blobs whose last reference goes are deleted with their pieces.
    pub(super) fn delete_blob_data(
        &self,
        batch: &mut OwnedWriteBatch,
        account: &Account,
    ) -> Result<(), StoreError> {
        let ks = self.blob_ks()?;
        let identity = &account.identity_key;
        for guard in ks.refs.prefix(identity) {
            let key = guard.key().map_err(engine_err)?;
            let blob_id: BlobId = key_tail(&key, 32, "blob reference")?;
            batch.remove(ks.refs, key.to_vec());
            let Some(v) = ks.blobs.get(blob_id).map_err(engine_err)? else {
                continue;
            };
            let mut meta = decode_meta(&blob_id, &v)?;
            meta.refs = meta.refs.saturating_sub(1);
            if meta.refs == 0 {
                batch.remove(ks.blobs, blob_id.to_vec());
                Self::remove_pieces(&ks, batch, &meta.upload)?;
            } else {
                batch.insert(ks.blobs, blob_id.to_vec(), encode_meta(&meta)?);
            }
        }
        for guard in ks.owner.prefix(identity) {
            let key = guard.key().map_err(engine_err)?;
            let id: UploadId = key_tail(&key, 32, "upload owner")?;
            batch.remove(ks.owner, key.to_vec());
            if let Some(v) = ks.uploads.get(id).map_err(engine_err)? {
                let record = UploadRecord::decode(&v)?;
                Self::remove_upload(&ks, batch, &id, &record)?;
            }
        }
        batch.remove(ks.usage, identity.to_vec());
        Ok(())
    }
}

impl FjallStore {
    /// Runs a blob operation on the writer thread. A refusal ([`BlobError`] other than
    /// `Store`) is an answer that wrote nothing; storage failures keep their meaning.
    async fn write_blob<T, F>(&self, op: F) -> Result<T, BlobError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<(T, bool), BlobError> + Send + 'static,
    {
        self.write(move |e| match op(e) {
            Ok((value, wrote)) => Ok((Ok(value), wrote)),
            Err(BlobError::Store(error)) => Err(error),
            Err(refusal) => Ok((Err(refusal), false)),
        })
        .await?
    }
}

impl BlobStore for FjallStore {
    async fn start_upload(
        &self,
        upload: NewUpload,
        quota_bytes: u64,
        pieces: Vec<Piece>,
        bytes_received: u64,
    ) -> Result<UploadState, BlobError> {
        if upload.mime_type.len() > 255 {
            return Err(
                StoreError::InvalidArgument("mime type longer than 255 bytes".into()).into(),
            );
        }
        self.write_blob(move |e| e.start_upload(&upload, quota_bytes, &pieces, bytes_received))
            .await
    }

    async fn upload_state(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> Result<Option<UploadState>, StoreError> {
        self.inline(|e| {
            let ks = e.blob_ks()?;
            Ok(Engine::upload_of(&ks, owner, id)?.map(|record| record.state(*id)))
        })
    }

    async fn write_pieces(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        from_received: u64,
        to_received: u64,
        pieces: Vec<Piece>,
    ) -> Result<PiecesWritten, BlobError> {
        let (owner, id) = (*owner, *id);
        self.write_blob(move |e| e.write_pieces(&owner, &id, from_received, to_received, &pieces))
            .await
    }

    async fn blob_piece(&self, upload: &UploadId, index: u64) -> Result<Option<Bytes>, StoreError> {
        let key = chunk_key(upload, index);
        self.blocking(move |e| {
            let ks = e.blob_ks()?;
            match ks.chunks.get(key).map_err(engine_err)? {
                Some(v) => {
                    let mut r = Reader::new(&v, "blob piece")?;
                    Ok(Some(Bytes::copy_from_slice(r.rest())))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn commit_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        piece_hashes: Vec<[u8; 32]>,
    ) -> Result<Committed, BlobError> {
        let (owner, id) = (*owner, *id);
        self.write_blob(move |e| e.commit_upload(&owner, &id, piece_hashes))
            .await
    }

    async fn discard_upload(&self, owner: &IdentityKey, id: &UploadId) -> Result<bool, StoreError> {
        let (owner, id) = (*owner, *id);
        self.write(move |e| e.discard_upload(&owner, &id)).await
    }

    async fn blob_meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, StoreError> {
        self.inline(|e| {
            let ks = e.blob_ks()?;
            match ks.blobs.get(id).map_err(engine_err)? {
                Some(v) => decode_meta(id, &v).map(Some),
                None => Ok(None),
            }
        })
    }

    async fn blob_usage(&self, owner: &IdentityKey) -> Result<BlobUsage, StoreError> {
        self.inline(|e| Engine::usage_of(&e.blob_ks()?, owner))
    }

    async fn purge_expired_uploads(&self, now_ms: u64) -> Result<PurgedUploads, StoreError> {
        self.write(move |e| e.purge_expired_uploads(now_ms)).await
    }
}
