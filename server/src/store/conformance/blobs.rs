//! Blobs: uploads in chunks of any size, the piece layout, deduplication and reference
//! counting through account deletion, quota reservations, discards and expiry.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{ALICE, BOB, Backend, Fixture, T0, account};
use crate::store::pieces::{self, BLOB_PIECE_BYTES};
use crate::store::{
    BlobError, BlobStore, BlobUsage, Committed, IdentityKey, NewUpload, PurgedUploads, Store,
};

const P: usize = BLOB_PIECE_BYTES as usize;

async fn with_alice_and_bob<B: Backend>(backend: &B) -> Fixture<'_, B> {
    let f = Fixture::with_alice(backend).await;
    f.store.create_account(account("bob", BOB)).await.unwrap();
    f
}

fn upload(id: u8, owner: IdentityKey, data: &[u8]) -> NewUpload {
    NewUpload {
        id: [id; 16],
        owner,
        total_size: data.len() as u64,
        sha256: Sha256::digest(data).into(),
        mime_type: "x/y".into(),
        expires_at_ms: T0 + 1_000,
    }
}

fn hashes(data: &[u8]) -> Vec<[u8; 32]> {
    data.chunks(P).map(|c| Sha256::digest(c).into()).collect()
}

/// Uploads `data` in `chunk` sized parts and commits it.
pub(crate) async fn put<S: Store>(
    s: &S,
    id: u8,
    owner: IdentityKey,
    data: &[u8],
    chunk: usize,
) -> Committed {
    let first = chunk.min(data.len());
    let u = upload(id, owner, data);
    let mut state = pieces::start(s, u, u64::MAX, Bytes::copy_from_slice(&data[..first]))
        .await
        .unwrap();
    while (state.bytes_received as usize) < data.len() {
        let at = state.bytes_received as usize;
        let end = (at + chunk).min(data.len());
        state = pieces::append(
            s,
            &owner,
            &[id; 16],
            at as u64,
            Bytes::copy_from_slice(&data[at..end]),
            T0,
        )
        .await
        .unwrap();
    }
    let hash = pieces::hash_upload(s, &state).await.unwrap();
    assert_eq!(hash.sha256, state.sha256);
    assert_eq!(hash.pieces, hashes(data));
    s.commit_upload(&owner, &[id; 16], hash.pieces)
        .await
        .unwrap()
}

pub async fn unaligned_chunks_fill_fixed_pieces<B: Backend>(backend: &B) {
    let f = with_alice_and_bob(backend).await;
    let data: Vec<u8> = (0..2 * P + 10).map(|i| (i % 251) as u8).collect();
    let done = put(&f.store, 1, ALICE, &data, 300_000).await;
    let meta = f.store.blob_meta(&done.blob_id).await.unwrap().unwrap();
    assert_eq!(
        (meta.size, meta.refs, meta.upload),
        (data.len() as u64, 1, [1; 16])
    );
    assert_eq!(meta.piece_hashes, hashes(&data));
    for (i, expected) in data.chunks(P).enumerate() {
        let piece = f
            .store
            .blob_piece(&meta.upload, i as u64)
            .await
            .unwrap()
            .unwrap();
        assert!(piece[..] == expected[..], "piece {i}");
    }
    // Any range reads back the content's bytes, verified piece by piece.
    for (offset, len) in [(0, 10), (P as u64 - 3, 7), (5, 2 * P as u64), (0, u64::MAX)] {
        let got = pieces::read_range(&f.store, &meta, offset, len)
            .await
            .unwrap();
        let end = (offset.saturating_add(len) as usize).min(data.len());
        assert!(
            got[..] == data[offset as usize..end],
            "range {offset}+{len}"
        );
    }
    let usage = f.store.blob_usage(&ALICE).await.unwrap();
    assert_eq!(
        usage,
        BlobUsage {
            bytes: data.len() as u64,
            blobs: 1,
            reserved: 0
        }
    );
}

/// Chunks of one upload sent at once from several tasks: each byte lands once, in place.
pub async fn racing_chunks_of_one_upload_store_the_content_once<B: Backend>(backend: &B) {
    let f = with_alice_and_bob(backend).await;
    let data: Vec<u8> = (0..P + 500).map(|i| (i % 241) as u8).collect();
    pieces::start(&f.store, upload(7, ALICE, &data), u64::MAX, Bytes::new())
        .await
        .unwrap();
    // Every task sends every chunk in order; offsets that are not next are refused or
    // ignored as retries, so the upload advances exactly once per chunk.
    let chunk = 100_000;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = f.store.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let mut at = 0;
            while at < data.len() {
                let end = (at + chunk).min(data.len());
                let part = Bytes::copy_from_slice(&data[at..end]);
                match pieces::append(&s, &ALICE, &[7; 16], at as u64, part, T0).await {
                    Ok(state) if state.bytes_received as usize >= end => at = end,
                    Ok(_) => {}
                    Err(BlobError::OffsetMismatch { bytes_received, .. }) => {
                        at = bytes_received as usize
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let state = f
        .store
        .upload_state(&ALICE, &[7; 16])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.bytes_received, data.len() as u64);
    let hash = pieces::hash_upload(&f.store, &state).await.unwrap();
    assert_eq!(
        hash.sha256, state.sha256,
        "the content is exactly what was sent"
    );
}

pub async fn dedup_and_reference_counting_through_account_deletion<B: Backend>(backend: &B) {
    let f = with_alice_and_bob(backend).await;
    let s = &f.store;
    let empty = f.census().await;
    let data = vec![5u8; P + 3];
    let first = put(s, 1, ALICE, &data, P).await;
    assert!(!first.deduplicated);
    let once = f.census().await;
    let second = put(s, 2, BOB, &data, 1000).await;
    assert!(second.deduplicated);
    let third = put(s, 3, ALICE, &data, P).await;
    assert!(third.deduplicated);
    let meta = s.blob_meta(&first.blob_id).await.unwrap().unwrap();
    assert_eq!(meta.refs, 2, "one reference per account");
    assert_eq!(
        meta.upload, [1; 16],
        "stored once, as the first upload's pieces"
    );
    assert_eq!(s.blob_usage(&ALICE).await.unwrap().bytes, data.len() as u64);
    assert_eq!(s.blob_usage(&BOB).await.unwrap().bytes, data.len() as u64);
    // The duplicates' pieces are gone.
    for dropped in [[2; 16], [3; 16]] {
        assert_eq!(s.blob_piece(&dropped, 0).await.unwrap(), None);
    }

    s.delete_account("alice").await.unwrap();
    let meta = s.blob_meta(&first.blob_id).await.unwrap().unwrap();
    assert_eq!(meta.refs, 1);
    assert!(
        pieces::read_range(s, &meta, 0, u64::MAX).await.unwrap()[..] == data[..],
        "bob still references it"
    );
    s.delete_account("bob").await.unwrap();
    assert!(s.blob_meta(&first.blob_id).await.unwrap().is_none());
    // Nothing of the blob is left: the same records as a twin whose accounts were created
    // and deleted without any upload.
    let twin = with_alice_and_bob(backend).await;
    twin.store.delete_account("alice").await.unwrap();
    twin.store.delete_account("bob").await.unwrap();
    assert_eq!(f.census().await, twin.census().await);
    assert_ne!(empty, once, "the census counts blob records");
}

pub async fn quota_reservation_discard_and_expiry<B: Backend>(backend: &B) {
    let f = with_alice_and_bob(backend).await;
    let s = &f.store;
    let data = vec![1u8; 2 * P];
    let err = pieces::start(s, upload(1, ALICE, &data), P as u64, Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, BlobError::QuotaExceeded { wanted, .. } if wanted == 2 * P as u64),
        "{err}"
    );
    pieces::start(
        s,
        upload(1, ALICE, &data),
        3 * P as u64,
        Bytes::copy_from_slice(&data[..10]),
    )
    .await
    .unwrap();
    assert_eq!(s.blob_usage(&ALICE).await.unwrap().reserved, 2 * P as u64);
    // The reservation counts: a second upload of the same size does not fit.
    assert!(matches!(
        pieces::start(s, upload(2, ALICE, &data), 3 * P as u64, Bytes::new()).await,
        Err(BlobError::QuotaExceeded { .. })
    ));
    // Offsets other than bytes_received are refused; retries below it are ignored.
    assert!(matches!(
        pieces::append(s, &ALICE, &[1; 16], 11, Bytes::from_static(b"x"), T0).await,
        Err(BlobError::OffsetMismatch {
            bytes_received: 10,
            ..
        })
    ));
    let retry = pieces::append(s, &ALICE, &[1; 16], 0, Bytes::from_static(b"x"), T0)
        .await
        .unwrap();
    assert_eq!(retry.bytes_received, 10);
    assert!(matches!(
        pieces::append(s, &BOB, &[1; 16], 10, Bytes::from_static(b"x"), T0).await,
        Err(BlobError::UploadNotFound)
    ));
    assert!(matches!(
        pieces::append(s, &ALICE, &[1; 16], 10, Bytes::from(vec![0; 2 * P]), T0).await,
        Err(BlobError::PastEnd { .. })
    ));
    assert!(matches!(
        s.commit_upload(&ALICE, &[1; 16], Vec::new()).await,
        Err(BlobError::Incomplete {
            bytes_received: 10,
            ..
        })
    ));
    // Discarding releases the reservation and the pieces.
    assert!(s.discard_upload(&ALICE, &[1; 16]).await.unwrap());
    assert_eq!(s.blob_usage(&ALICE).await.unwrap().reserved, 0);
    // An abandoned upload expires: the sweep deletes it and releases its reservation.
    pieces::start(
        s,
        upload(3, BOB, &data),
        u64::MAX,
        Bytes::copy_from_slice(&data[..P + 1]),
    )
    .await
    .unwrap();
    assert_eq!(
        s.purge_expired_uploads(T0 + 999).await.unwrap(),
        PurgedUploads::default()
    );
    assert!(matches!(
        pieces::append(
            s,
            &BOB,
            &[3; 16],
            (P + 1) as u64,
            Bytes::from_static(b"x"),
            T0 + 1_000
        )
        .await,
        Err(BlobError::UploadNotFound)
    ));
    let purged = s.purge_expired_uploads(T0 + 1_000).await.unwrap();
    assert_eq!((purged.abandoned, purged.more), (1, false));
    assert_eq!(s.blob_usage(&BOB).await.unwrap().reserved, 0);
    assert!(s.upload_state(&BOB, &[3; 16]).await.unwrap().is_none());
    // No piece, upload record or index entry is left, and the usage records hold zeros:
    // the same records as a twin whose accounts each had an upload discarded.
    let twin = with_alice_and_bob(backend).await;
    for (id, owner) in [(1, ALICE), (3, BOB)] {
        pieces::start(
            &twin.store,
            upload(id, owner, &data),
            u64::MAX,
            Bytes::new(),
        )
        .await
        .unwrap();
        twin.store.discard_upload(&owner, &[id; 16]).await.unwrap();
    }
    assert_eq!(f.census().await, twin.census().await);
}
