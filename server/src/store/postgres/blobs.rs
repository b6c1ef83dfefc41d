//! [`BlobStore`] on PostgreSQL.
//!
//! | table | row |
//! |---|---|
//! | `blob_pieces` | one piece (≤ 1 MiB) of an upload: upload id, number, bytes |
//! | `blobs` | one per content: the upload whose pieces hold it, size, refs, piece hashes |
//! | `blob_refs` | one per (account, blob): the account is charged the blob's size |
//! | `blob_usage` | one per account that uploaded: bytes, blobs, reserved |
//! | `blob_uploads` | one per upload, kept after its commit until it expires |
//!
//! Pieces are opaque here (see `store/pieces.rs`). Committing does not move them: the upload
//! id becomes the id of the blob's pieces; when the content is stored already, the upload's
//! pieces are deleted in the commit's transaction instead.
//!
//! # Locks
//!
//! In the order of the module doc of `postgres`: the account row (share; so a deletion of
//! the account cannot interleave), then `blob_usage`, then `blobs`, then `blob_uploads`, each
//! kind sorted by key when several. An upload's owner and declared hash never change, so a
//! method may read them first without a lock to learn which rows to lock, and judges the
//! upload only once its row is locked. Chunks of one upload serialize on the upload row:
//! the byte count is compared under the lock, so racing chunks store each byte once.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio_postgres::Row;

use super::{
    PgError, PgStore, Tx, account_exists, execute, fixed, int, query, query_opt, text, uint,
};
use crate::store::pieces::piece_count;
use crate::store::{
    Account, BlobError, BlobId, BlobMeta, BlobStore, BlobUsage, Committed, IdentityKey, NewUpload,
    Piece, PiecesWritten, PurgedUploads, StoreError, UploadId, UploadState,
};

/// Most uploads one purge call deletes, and about the most pieces.
const PURGE_UPLOADS: i64 = 64;
const PURGE_PIECES: u64 = 4_096;

const UPLOAD_COLUMNS: &str =
    "upload_id, owner, total_size, sha256, bytes_received, expires_at_ms, committed, mime_type";

/// An upload as stored.
struct UploadRecord {
    id: UploadId,
    owner: IdentityKey,
    total: u64,
    sha256: BlobId,
    received: u64,
    expires_at_ms: u64,
    committed: bool,
    mime_type: Vec<u8>,
}

impl UploadRecord {
    fn of(row: &Row) -> Result<Self, StoreError> {
        Ok(UploadRecord {
            id: fixed(row.get("upload_id"), "upload id")?,
            owner: fixed(row.get("owner"), "upload owner")?,
            total: uint(row.get("total_size"))?,
            sha256: fixed(row.get("sha256"), "upload sha256")?,
            received: uint(row.get("bytes_received"))?,
            expires_at_ms: uint(row.get("expires_at_ms"))?,
            committed: row.get("committed"),
            mime_type: row.get("mime_type"),
        })
    }

    fn state(&self) -> UploadState {
        UploadState {
            id: self.id,
            total_size: self.total,
            sha256: self.sha256,
            bytes_received: self.received,
            expires_at_ms: self.expires_at_ms,
            committed: self.committed.then_some(self.sha256),
        }
    }
}

fn usage_of(row: &Row) -> Result<BlobUsage, StoreError> {
    Ok(BlobUsage {
        bytes: uint(row.get("bytes"))?,
        blobs: uint(row.get("blobs"))?,
        reserved: uint(row.get("reserved"))?,
    })
}

fn meta_of(row: &Row) -> Result<BlobMeta, StoreError> {
    let hashes: Vec<u8> = row.get("piece_hashes");
    if !hashes.len().is_multiple_of(32) {
        return Err(StoreError::Corrupt(
            "blob: piece hash list is not a list of SHA-256 hashes".into(),
        ));
    }
    Ok(BlobMeta {
        id: fixed(row.get("blob_id"), "blob id")?,
        upload: fixed(row.get("upload_id"), "blob upload id")?,
        size: uint(row.get("size"))?,
        mime_type: text(row.get("mime_type"), "blob mime type")?,
        created_at_ms: uint(row.get("created_at_ms"))?,
        refs: uint(row.get("refs"))?,
        piece_hashes: hashes
            .chunks_exact(32)
            .map(|c| fixed(c, "piece hash"))
            .collect::<Result<Vec<_>, _>>()?,
    })
}

const META_COLUMNS: &str = "blob_id, upload_id, size, mime_type, created_at_ms, refs, piece_hashes";

/// The upload `id` if it exists and belongs to `owner`; `lock` takes its row lock.
async fn upload_of(
    tx: &Tx<'_>,
    owner: &IdentityKey,
    id: &UploadId,
    lock: bool,
) -> Result<Option<UploadRecord>, PgError> {
    let sql = format!(
        "SELECT {UPLOAD_COLUMNS} FROM blob_uploads WHERE upload_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = query_opt(tx, &sql, &[&id.as_slice()]).await?;
    let record = row.map(|r| UploadRecord::of(&r)).transpose()?;
    Ok(record.filter(|r| r.owner == *owner))
}

/// Locks the usage row of `owner` and answers it (`None` when the account has none).
async fn lock_usage(tx: &Tx<'_>, owner: &IdentityKey) -> Result<Option<BlobUsage>, PgError> {
    let row = query_opt(
        tx,
        "SELECT bytes, blobs, reserved FROM blob_usage WHERE identity_key = $1 FOR UPDATE",
        &[&owner.as_slice()],
    )
    .await?;
    Ok(row.map(|r| usage_of(&r)).transpose()?)
}

async fn put_usage(tx: &Tx<'_>, owner: &IdentityKey, u: &BlobUsage) -> Result<(), PgError> {
    execute(
        tx,
        "INSERT INTO blob_usage (identity_key, bytes, blobs, reserved) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (identity_key) DO UPDATE SET bytes = EXCLUDED.bytes, \
         blobs = EXCLUDED.blobs, reserved = EXCLUDED.reserved",
        &[
            &owner.as_slice(),
            &int(u.bytes),
            &int(u.blobs),
            &int(u.reserved),
        ],
    )
    .await?;
    Ok(())
}

/// Stores `pieces` of upload `id`, each replacing the piece of its number.
async fn put_pieces(tx: &Tx<'_>, id: &UploadId, pieces: &[Piece]) -> Result<(), PgError> {
    if pieces.is_empty() {
        return Ok(());
    }
    let mut numbers = Vec::with_capacity(pieces.len());
    for (index, _) in pieces {
        numbers.push(i64::try_from(*index).map_err(|_| {
            StoreError::InvalidArgument(format!("piece number {index} is too large"))
        })?);
    }
    let data: Vec<&[u8]> = pieces.iter().map(|(_, d)| d.as_ref()).collect();
    execute(
        tx,
        "INSERT INTO blob_pieces (upload_id, piece, data) \
         SELECT $1, n, d FROM UNNEST($2::int8[], $3::bytea[]) AS u(n, d) \
         ON CONFLICT (upload_id, piece) DO UPDATE SET data = EXCLUDED.data",
        &[&id.as_slice(), &numbers, &data],
    )
    .await?;
    Ok(())
}

async fn remove_pieces(tx: &Tx<'_>, uploads: &[&[u8]]) -> Result<u64, PgError> {
    if uploads.is_empty() {
        return Ok(0);
    }
    execute(
        tx,
        "DELETE FROM blob_pieces WHERE upload_id = ANY($1)",
        &[&uploads],
    )
    .await
}

/// A refusal is decided before anything is written (or what was written is undone in the
/// same transaction), so its transaction commits nothing.
type Outcome<T> = Result<T, BlobError>;

fn answer<T>(r: Result<Outcome<T>, StoreError>) -> Result<T, BlobError> {
    r?
}

impl BlobStore for PgStore {
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
        let (upload, pieces) = (&upload, &pieces);
        let r = self
            .transact("start_upload", |tx, _| {
                Box::pin(async move {
                    let owner = upload.owner.as_slice();
                    if !account_exists(tx, &upload.owner).await? {
                        return Err(StoreError::NotFound.into());
                    }
                    let in_use = query_opt(
                        tx,
                        "SELECT 1 FROM blob_uploads WHERE upload_id = $1",
                        &[&upload.id.as_slice()],
                    )
                    .await?;
                    if in_use.is_some() {
                        return Err(
                            StoreError::InvalidArgument("upload id is in use".into()).into()
                        );
                    }
                    if bytes_received > upload.total_size {
                        return Ok(Err(BlobError::PastEnd {
                            end: bytes_received,
                            total_size: upload.total_size,
                        }));
                    }
                    // The account's first upload creates its usage row; a refusal removes it
                    // again, so a refused start leaves nothing.
                    let created = execute(
                        tx,
                        "INSERT INTO blob_usage (identity_key, bytes, blobs, reserved) \
                         VALUES ($1, 0, 0, 0) ON CONFLICT (identity_key) DO NOTHING",
                        &[&owner],
                    )
                    .await?;
                    let mut usage = lock_usage(tx, &upload.owner).await?.ok_or_else(|| {
                        StoreError::Corrupt("blob usage row vanished under its lock".into())
                    })?;
                    let needed = usage
                        .bytes
                        .saturating_add(usage.reserved)
                        .saturating_add(upload.total_size);
                    if needed > quota_bytes {
                        if created > 0 {
                            execute(
                                tx,
                                "DELETE FROM blob_usage WHERE identity_key = $1",
                                &[&owner],
                            )
                            .await?;
                        }
                        return Ok(Err(BlobError::QuotaExceeded {
                            usage,
                            quota: quota_bytes,
                            wanted: upload.total_size,
                        }));
                    }
                    usage.reserved = usage.reserved.saturating_add(upload.total_size);
                    let inserted = execute(
                        tx,
                        "INSERT INTO blob_uploads (upload_id, owner, total_size, sha256, \
                         bytes_received, expires_at_ms, committed, mime_type) \
                         VALUES ($1, $2, $3, $4, $5, $6, false, $7)",
                        &[
                            &upload.id.as_slice(),
                            &owner,
                            &int(upload.total_size),
                            &upload.sha256.as_slice(),
                            &int(bytes_received),
                            &int(upload.expires_at_ms),
                            &upload.mime_type.as_bytes(),
                        ],
                    )
                    .await;
                    match inserted {
                        Ok(_) => {}
                        Err(e) if e.violates("blob_uploads_pkey") => {
                            return Err(
                                StoreError::InvalidArgument("upload id is in use".into()).into()
                            );
                        }
                        Err(e) => return Err(e),
                    }
                    put_pieces(tx, &upload.id, pieces).await?;
                    put_usage(tx, &upload.owner, &usage).await?;
                    Ok(Ok(UploadState {
                        id: upload.id,
                        total_size: upload.total_size,
                        sha256: upload.sha256,
                        bytes_received,
                        expires_at_ms: upload.expires_at_ms,
                        committed: None,
                    }))
                })
            })
            .await;
        answer(r)
    }

    async fn upload_state(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
    ) -> Result<Option<UploadState>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    &format!(
                        "SELECT {UPLOAD_COLUMNS} FROM blob_uploads WHERE upload_id = $1 AND owner = $2"
                    ),
                    &[&id.as_slice(), &owner.as_slice()],
                )
                .await?;
                Ok(row
                    .map(|r| UploadRecord::of(&r))
                    .transpose()?
                    .map(|u| u.state()))
            })
        })
        .await
    }

    async fn write_pieces(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        from_received: u64,
        to_received: u64,
        pieces: Vec<Piece>,
    ) -> Result<PiecesWritten, BlobError> {
        let pieces = &pieces;
        let r = self
            .transact("write_pieces", |tx, _| {
                Box::pin(async move {
                    // The upload row's lock orders racing chunks: the count is compared under it.
                    let Some(mut record) = upload_of(tx, owner, id, true).await? else {
                        return Ok(Err(BlobError::UploadNotFound));
                    };
                    if record.committed || record.received != from_received {
                        return Ok(Ok(PiecesWritten::Moved(record.state())));
                    }
                    if to_received < from_received || to_received > record.total {
                        return Ok(Err(BlobError::PastEnd {
                            end: to_received,
                            total_size: record.total,
                        }));
                    }
                    put_pieces(tx, id, pieces).await?;
                    execute(
                        tx,
                        "UPDATE blob_uploads SET bytes_received = $2 WHERE upload_id = $1",
                        &[&id.as_slice(), &int(to_received)],
                    )
                    .await?;
                    record.received = to_received;
                    Ok(Ok(PiecesWritten::Written(record.state())))
                })
            })
            .await;
        answer(r)
    }

    async fn blob_piece(&self, upload: &UploadId, index: u64) -> Result<Option<Bytes>, StoreError> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT data FROM blob_pieces WHERE upload_id = $1 AND piece = $2",
                    &[&upload.as_slice(), &index],
                )
                .await?;
                Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>("data"))))
            })
        })
        .await
    }

    async fn commit_upload(
        &self,
        owner: &IdentityKey,
        id: &UploadId,
        piece_hashes: Vec<[u8; 32]>,
    ) -> Result<Committed, BlobError> {
        let hashes: Vec<u8> = piece_hashes.concat();
        let hashes = &hashes;
        let now = int(self.now());
        let r = self
            .transact("commit_upload", |tx, _| {
                Box::pin(async move {
                    // Owner and declared hash never change: read them to know what to lock.
                    let Some(first) = upload_of(tx, owner, id, false).await? else {
                        return Ok(Err(BlobError::UploadNotFound));
                    };
                    let blob_id = first.sha256;
                    if first.committed {
                        return Ok(Ok(Committed {
                            blob_id,
                            deduplicated: false,
                        }));
                    }
                    // Lock order: account, blob_usage, blobs, blob_uploads.
                    if !account_exists(tx, owner).await? {
                        return Ok(Err(BlobError::UploadNotFound));
                    }
                    let usage = lock_usage(tx, owner).await?;
                    let blob_sql = format!(
                        "SELECT {META_COLUMNS} FROM blobs WHERE blob_id = $1 FOR UPDATE"
                    );
                    let mut existing = query_opt(tx, &blob_sql, &[&blob_id.as_slice()])
                        .await?
                        .map(|r| meta_of(&r))
                        .transpose()?;
                    let Some(record) = upload_of(tx, owner, id, true).await? else {
                        return Ok(Err(BlobError::UploadNotFound));
                    };
                    if record.committed {
                        return Ok(Ok(Committed {
                            blob_id,
                            deduplicated: false,
                        }));
                    }
                    if record.received != record.total {
                        return Ok(Err(BlobError::Incomplete {
                            bytes_received: record.received,
                            total_size: record.total,
                        }));
                    }
                    let mut usage = usage.ok_or_else(|| {
                        StoreError::Corrupt("an upload of an account without blob usage".into())
                    })?;
                    usage.reserved = usage.reserved.saturating_sub(record.total);
                    let has_ref = query_opt(
                        tx,
                        "SELECT 1 FROM blob_refs WHERE identity_key = $1 AND blob_id = $2",
                        &[&owner.as_slice(), &blob_id.as_slice()],
                    )
                    .await?
                    .is_some();
                    if existing.is_none() {
                        let created = execute(
                            tx,
                            "INSERT INTO blobs (blob_id, upload_id, size, mime_type, created_at_ms, \
                             refs, piece_hashes) VALUES ($1, $2, $3, $4, $5, 1, $6) \
                             ON CONFLICT (blob_id) DO NOTHING",
                            &[
                                &blob_id.as_slice(),
                                &id.as_slice(),
                                &int(record.total),
                                &record.mime_type,
                                &now,
                                hashes,
                            ],
                        )
                        .await?;
                        if created == 0 {
                            // A commit of the same content from another upload got there first.
                            existing = query_opt(tx, &blob_sql, &[&blob_id.as_slice()])
                                .await?
                                .map(|r| meta_of(&r))
                                .transpose()?;
                            if existing.is_none() {
                                return Err(StoreError::Unavailable(
                                    "a blob vanished during a commit of its content; retry".into(),
                                )
                                .into());
                            }
                        }
                    }
                    let deduplicated = existing.is_some();
                    if let Some(meta) = existing {
                        if meta.size != record.total {
                            return Err(StoreError::Corrupt(
                                "blob: stored size differs for the same content hash".into(),
                            )
                            .into());
                        }
                        if !has_ref {
                            execute(
                                tx,
                                "UPDATE blobs SET refs = refs + 1 WHERE blob_id = $1",
                                &[&blob_id.as_slice()],
                            )
                            .await?;
                        }
                        remove_pieces(tx, &[id.as_slice()]).await?;
                    }
                    if !has_ref {
                        execute(
                            tx,
                            "INSERT INTO blob_refs (identity_key, blob_id, size) VALUES ($1, $2, $3)",
                            &[&owner.as_slice(), &blob_id.as_slice(), &int(record.total)],
                        )
                        .await?;
                        usage.bytes = usage.bytes.saturating_add(record.total);
                        usage.blobs = usage.blobs.saturating_add(1);
                    }
                    put_usage(tx, owner, &usage).await?;
                    execute(
                        tx,
                        "UPDATE blob_uploads SET committed = true WHERE upload_id = $1",
                        &[&id.as_slice()],
                    )
                    .await?;
                    Ok(Ok(Committed {
                        blob_id,
                        deduplicated,
                    }))
                })
            })
            .await;
        answer(r)
    }

    async fn discard_upload(&self, owner: &IdentityKey, id: &UploadId) -> Result<bool, StoreError> {
        self.transact("discard_upload", |tx, _| {
            Box::pin(async move {
                match upload_of(tx, owner, id, false).await? {
                    Some(r) if !r.committed => {}
                    _ => return Ok(false),
                }
                // Lock order: blob_usage, then blob_uploads.
                let usage = lock_usage(tx, owner).await?;
                let Some(record) = upload_of(tx, owner, id, true).await? else {
                    return Ok(false);
                };
                if record.committed {
                    return Ok(false);
                }
                remove_pieces(tx, &[id.as_slice()]).await?;
                execute(
                    tx,
                    "DELETE FROM blob_uploads WHERE upload_id = $1",
                    &[&id.as_slice()],
                )
                .await?;
                if let Some(mut usage) = usage {
                    usage.reserved = usage.reserved.saturating_sub(record.total);
                    put_usage(tx, owner, &usage).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn blob_meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    &format!("SELECT {META_COLUMNS} FROM blobs WHERE blob_id = $1"),
                    &[&id.as_slice()],
                )
                .await?;
                Ok(row.map(|r| meta_of(&r)).transpose()?)
            })
        })
        .await
    }

    async fn blob_usage(&self, owner: &IdentityKey) -> Result<BlobUsage, StoreError> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT bytes, blobs, reserved FROM blob_usage WHERE identity_key = $1",
                    &[&owner.as_slice()],
                )
                .await?;
                Ok(row.map(|r| usage_of(&r)).transpose()?.unwrap_or_default())
            })
        })
        .await
    }

    async fn purge_expired_uploads(&self, now_ms: u64) -> Result<PurgedUploads, StoreError> {
        let now = int(now_ms);
        self.transact("purge_expired_uploads", |tx, _| {
            Box::pin(async move {
                let mut stats = PurgedUploads::default();
                let candidates = query(
                    tx,
                    &format!(
                        "SELECT {UPLOAD_COLUMNS} FROM blob_uploads WHERE expires_at_ms <= $1 \
                         ORDER BY expires_at_ms, upload_id LIMIT $2"
                    ),
                    &[&now, &(PURGE_UPLOADS + 1)],
                )
                .await?;
                let mut chosen = Vec::new();
                let mut pieces = 0u64;
                for row in &candidates {
                    if chosen.len() as i64 == PURGE_UPLOADS || pieces >= PURGE_PIECES {
                        stats.more = true;
                        break;
                    }
                    let record = UploadRecord::of(row)?;
                    if !record.committed {
                        pieces += piece_count(record.received);
                    }
                    chosen.push(record);
                }
                if chosen.is_empty() {
                    return Ok(stats);
                }
                // Lock order: the owners' usage rows, then the upload rows, each sorted.
                let mut owners: Vec<&[u8]> = chosen
                    .iter()
                    .filter(|r| !r.committed)
                    .map(|r| r.owner.as_slice())
                    .collect();
                owners.sort_unstable();
                owners.dedup();
                if !owners.is_empty() {
                    query(
                        tx,
                        "SELECT 1 FROM blob_usage WHERE identity_key = ANY($1) \
                         ORDER BY identity_key FOR UPDATE",
                        &[&owners],
                    )
                    .await?;
                }
                let mut ids: Vec<&[u8]> = chosen.iter().map(|r| r.id.as_slice()).collect();
                ids.sort_unstable();
                // Judged again under the locks: a row may have been committed or deleted since.
                let locked = query(
                    tx,
                    &format!(
                        "SELECT {UPLOAD_COLUMNS} FROM blob_uploads WHERE upload_id = ANY($1) \
                         ORDER BY upload_id FOR UPDATE"
                    ),
                    &[&ids],
                )
                .await?;
                let mut doomed: Vec<Vec<u8>> = Vec::new();
                let mut abandoned: Vec<Vec<u8>> = Vec::new();
                let mut released: BTreeMap<IdentityKey, u64> = BTreeMap::new();
                for row in &locked {
                    let record = UploadRecord::of(row)?;
                    if record.expires_at_ms > now_ms {
                        continue;
                    }
                    doomed.push(record.id.to_vec());
                    if record.committed {
                        stats.committed += 1;
                    } else {
                        stats.abandoned += 1;
                        abandoned.push(record.id.to_vec());
                        *released.entry(record.owner).or_default() += record.total;
                    }
                }
                let abandoned: Vec<&[u8]> = abandoned.iter().map(Vec::as_slice).collect();
                remove_pieces(tx, &abandoned).await?;
                execute(
                    tx,
                    "DELETE FROM blob_uploads WHERE upload_id = ANY($1)",
                    &[&doomed],
                )
                .await?;
                if !released.is_empty() {
                    // The account may be gone (its deletion removed its usage): no row, no update.
                    let who: Vec<&[u8]> = released.keys().map(|k| k.as_slice()).collect();
                    let bytes: Vec<i64> = released.values().map(|&b| int(b)).collect();
                    execute(
                        tx,
                        "UPDATE blob_usage AS b SET reserved = greatest(b.reserved - u.n, 0) \
                         FROM UNNEST($1::bytea[], $2::int8[]) AS u(identity_key, n) \
                         WHERE b.identity_key = u.identity_key",
                        &[&who, &bytes],
                    )
                    .await?;
                }
                Ok(stats)
            })
        })
        .await
    }
}

/// Removes the uploads, blob references and usage of a deleted account (inside its deletion
/// transaction, which holds the account row); blobs whose last reference goes are deleted
/// with their pieces. Lock order: blob_usage, blobs (sorted), blob_uploads (sorted).
pub(super) async fn delete_blob_data(tx: &Tx<'_>, account: &Account) -> Result<(), PgError> {
    let owner = account.identity_key.as_slice();
    lock_usage(tx, &account.identity_key).await?;
    let refs = query(
        tx,
        "DELETE FROM blob_refs WHERE identity_key = $1 RETURNING blob_id",
        &[&owner],
    )
    .await?;
    let mut blob_ids: Vec<Vec<u8>> = refs.iter().map(|r| r.get("blob_id")).collect();
    if !blob_ids.is_empty() {
        blob_ids.sort_unstable();
        query(
            tx,
            "SELECT 1 FROM blobs WHERE blob_id = ANY($1) ORDER BY blob_id FOR UPDATE",
            &[&blob_ids],
        )
        .await?;
        execute(
            tx,
            "UPDATE blobs SET refs = greatest(refs - 1, 0) WHERE blob_id = ANY($1)",
            &[&blob_ids],
        )
        .await?;
        let gone = query(
            tx,
            "DELETE FROM blobs WHERE blob_id = ANY($1) AND refs = 0 RETURNING upload_id",
            &[&blob_ids],
        )
        .await?;
        let uploads: Vec<Vec<u8>> = gone.iter().map(|r| r.get("upload_id")).collect();
        let uploads: Vec<&[u8]> = uploads.iter().map(Vec::as_slice).collect();
        remove_pieces(tx, &uploads).await?;
    }
    let uploads = query(
        tx,
        "SELECT upload_id, committed FROM blob_uploads WHERE owner = $1 \
         ORDER BY upload_id FOR UPDATE",
        &[&owner],
    )
    .await?;
    if !uploads.is_empty() {
        let mut all: Vec<Vec<u8>> = Vec::with_capacity(uploads.len());
        let mut unfinished: Vec<Vec<u8>> = Vec::new();
        for row in &uploads {
            let id: Vec<u8> = row.get("upload_id");
            // A committed upload's pieces belong to its blob (or were dropped at commit).
            if !row.get::<_, bool>("committed") {
                unfinished.push(id.clone());
            }
            all.push(id);
        }
        let unfinished: Vec<&[u8]> = unfinished.iter().map(Vec::as_slice).collect();
        remove_pieces(tx, &unfinished).await?;
        execute(
            tx,
            "DELETE FROM blob_uploads WHERE upload_id = ANY($1)",
            &[&all],
        )
        .await?;
    }
    execute(
        tx,
        "DELETE FROM blob_usage WHERE identity_key = $1",
        &[&owner],
    )
    .await?;
    Ok(())
}
