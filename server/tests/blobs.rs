//! Blobs over real QUIC: chunked upload of a large blob, range downloads, resumption,
//! hash checks at commit, deduplication, quota and size limits.

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::{TestServer, User, code};
use qpq_runtime::{RpcError, StatusCode};
use qpq_schema::proto;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const CHUNK: usize = 4 * MIB;

/// Deterministic incompressible-looking bytes.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn message<T: std::fmt::Debug>(result: Result<T, RpcError>) -> String {
    match result {
        Err(RpcError::Status(status)) => status.message().to_owned(),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Starts an upload with the first chunk.
async fn start(
    user: &User,
    data: &[u8],
    first: usize,
    declared: [u8; 32],
) -> Result<proto::UploadBlobResponse, RpcError> {
    user.client
        .upload_blob(proto::UploadBlobRequest {
            session_token: user.token(),
            upload_id: Bytes::new(),
            offset: 0,
            chunk: Bytes::copy_from_slice(&data[..first]),
            finish: first == data.len(),
            expected_sha256: Bytes::copy_from_slice(&declared),
            total_size: data.len() as u64,
            mime_type: "application/octet-stream".into(),
        })
        .await
}

async fn chunk(
    user: &User,
    upload_id: &Bytes,
    data: &[u8],
    offset: usize,
    len: usize,
) -> Result<proto::UploadBlobResponse, RpcError> {
    let end = (offset + len).min(data.len());
    user.client
        .upload_blob(proto::UploadBlobRequest {
            session_token: user.token(),
            upload_id: upload_id.clone(),
            offset: offset as u64,
            chunk: Bytes::copy_from_slice(&data[offset..end]),
            finish: end == data.len(),
            ..Default::default()
        })
        .await
}

/// Uploads `data` in `chunk_len` chunks; returns the blob id.
async fn upload(user: &User, data: &[u8], chunk_len: usize) -> Result<Bytes, RpcError> {
    let first = chunk_len.min(data.len());
    let mut state = start(user, data, first, sha256(data)).await?;
    let id = state.upload_id.clone();
    let mut offset = first;
    while offset < data.len() {
        state = chunk(user, &id, data, offset, chunk_len).await?;
        offset = state.bytes_received as usize;
    }
    Ok(state.blob_id)
}

async fn download(
    user: &User,
    blob_id: &Bytes,
    offset: u64,
    length: u64,
) -> Result<proto::DownloadBlobResponse, RpcError> {
    user.client
        .download_blob(proto::DownloadBlobRequest {
            session_token: user.token(),
            blob_id: blob_id.clone(),
            offset,
            length,
        })
        .await
}

#[tokio::test]
async fn a_64_mib_blob_uploads_in_chunks_and_downloads_with_the_same_sha256() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let data = content(64 * MIB, 7);
    let started = Instant::now();
    let expected = sha256(&data);
    let hashed = started.elapsed();

    let started = Instant::now();
    let blob_id = upload(&alice, &data, CHUNK).await.unwrap();
    let uploaded = started.elapsed();
    assert_eq!(&blob_id[..], &expected);

    // Anyone with a session and the id can download it, in ranges of at most 4 MiB.
    let started = Instant::now();
    let mut back = Vec::with_capacity(data.len());
    let mut hasher = Sha256::new();
    while back.len() < data.len() {
        let part = download(&bob, &blob_id, back.len() as u64, 0)
            .await
            .unwrap();
        assert_eq!(part.offset, back.len() as u64);
        assert_eq!(part.total_size, data.len() as u64);
        assert_eq!(&part.sha256[..], &expected);
        assert_eq!(part.mime_type, "application/octet-stream");
        assert!(part.data.len() <= CHUNK, "one range is capped at 4 MiB");
        assert!(!part.data.is_empty());
        hasher.update(&part.data);
        back.extend_from_slice(&part.data);
    }
    let downloaded = started.elapsed();
    let got: [u8; 32] = hasher.finalize().into();
    assert_eq!(got, expected);
    assert!(back == data);
    eprintln!(
        "64 MiB blob: test-side SHA-256 {hashed:?}, upload (16 chunks + commit) {uploaded:?}, download (16 ranges) {downloaded:?}"
    );
}

#[tokio::test]
async fn range_downloads_return_exactly_the_range() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let data = content(3 * MIB + 12_345, 11);
    let blob_id = upload(&alice, &data, CHUNK).await.unwrap();
    let cases: [(usize, usize); 6] = [
        (0, 1),
        (1_000_000, 3_000_000),    // crosses piece boundaries
        (MIB - 1, 2),              // straddles one boundary
        (3 * MIB, 12_345),         // the short last piece exactly
        (3 * MIB + 12_000, 1_000), // asks past the end: gets the tail
        (3 * MIB + 12_345, 0),     // at the end: empty
    ];
    for (offset, len) in cases {
        let part = download(&alice, &blob_id, offset as u64, len as u64)
            .await
            .unwrap();
        let end = if len == 0 {
            data.len()
        } else {
            (offset + len).min(data.len())
        };
        assert_eq!(part.offset, offset as u64);
        assert!(
            part.data[..] == data[offset..end],
            "range {offset}+{len} returned {} bytes",
            part.data.len()
        );
    }
    // Past the end, and unknown or malformed ids.
    let past = download(&alice, &blob_id, data.len() as u64 + 1, 0).await;
    assert_eq!(code(past), StatusCode::BadRequest);
    let unknown = download(&alice, &Bytes::from(vec![9u8; 32]), 0, 0).await;
    assert_eq!(code(unknown), StatusCode::NotFound);
    let short = download(&alice, &Bytes::from_static(b"short"), 0, 0).await;
    assert_eq!(code(short), StatusCode::BadRequest);
}

#[tokio::test]
async fn uploads_resume_and_retried_chunks_are_harmless() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    // Chunks that do not end on the server's 1 MiB pieces.
    let data = content(2 * MIB + 777, 3);
    let first = start(&alice, &data, 700_000, sha256(&data)).await.unwrap();
    let id = first.upload_id.clone();
    assert_eq!(id.len(), 16);
    assert_eq!(first.bytes_received, 700_000);
    assert!(first.blob_id.is_empty());
    let second = chunk(&alice, &id, &data, 700_000, 900_000).await.unwrap();
    assert_eq!(second.bytes_received, 1_600_000);
    // A retry of a stored chunk is ignored and answered with the current state.
    let retry = chunk(&alice, &id, &data, 700_000, 900_000).await.unwrap();
    assert_eq!(retry.bytes_received, 1_600_000);
    // A client that lost track asks where to resume with an empty chunk at offset 0.
    let probe = chunk(&alice, &id, &data, 0, 0).await.unwrap();
    assert_eq!(probe.bytes_received, 1_600_000);
    // A gap or an overlap is refused, naming where to resume.
    let gap = chunk(&alice, &id, &data, 1_700_000, 10).await;
    let text = message(gap);
    assert!(text.contains("resume from offset 1600000"), "{text}");
    let overlap = chunk(&alice, &id, &data, 1_500_000, 200_000).await;
    assert_eq!(code(overlap), StatusCode::BadRequest);
    // Finishing early says how much is missing.
    let early = alice
        .client
        .upload_blob(proto::UploadBlobRequest {
            session_token: alice.token(),
            upload_id: id.clone(),
            offset: 1_600_000,
            chunk: Bytes::new(),
            finish: true,
            ..Default::default()
        })
        .await;
    assert!(message(early).contains("1600000 of its"));
    // Another account cannot touch this upload.
    let bob = server.user("bob").await;
    assert_eq!(
        code(chunk(&bob, &id, &data, 1_600_000, 10).await),
        StatusCode::NotFound
    );
    let done = chunk(&alice, &id, &data, 1_600_000, CHUNK).await.unwrap();
    assert_eq!(&done.blob_id[..], &sha256(&data));
    // A retried finishing call answers the same blob id.
    let again = chunk(&alice, &id, &data, 1_600_000, CHUNK).await.unwrap();
    assert_eq!(again.blob_id, done.blob_id);
    let part = download(&alice, &done.blob_id, 0, 0).await.unwrap();
    assert!(part.data[..] == data[..part.data.len()]);
}

#[tokio::test]
async fn a_corrupted_chunk_is_rejected_at_commit_and_nothing_is_stored() {
    let server = TestServer::start_with(|c| c.blob_quota_bytes = 3 * MIB as u64).await;
    let alice = server.user("alice").await;
    let data = content(2 * MIB + 5, 5);
    let declared = sha256(&data);
    let mut corrupted = data.clone();
    corrupted[MIB + 3] ^= 0x40;
    let first = start(&alice, &corrupted, MIB, declared).await.unwrap();
    let id = first.upload_id;
    let result = chunk(&alice, &id, &corrupted, MIB, CHUNK).await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::BadRequest);
    assert!(
        status
            .message()
            .contains("not the declared expected_sha256")
            && status.message().contains("nothing was stored"),
        "{}",
        status.message()
    );
    // The upload is gone and no blob exists under either hash.
    assert_eq!(
        code(chunk(&alice, &id, &corrupted, MIB, CHUNK).await),
        StatusCode::NotFound
    );
    for id in [declared, sha256(&corrupted)] {
        let missing = download(&alice, &Bytes::copy_from_slice(&id), 0, 0).await;
        assert_eq!(code(missing), StatusCode::NotFound);
    }
    // Its reservation was released: the real content still fits the 3 MiB quota.
    let blob_id = upload(&alice, &data, CHUNK).await.unwrap();
    assert_eq!(&blob_id[..], &declared);
    // A single-call upload with a wrong declared hash is refused the same way.
    let small = content(1000, 9);
    let wrong = start(&alice, &small, small.len(), [0u8; 32]).await;
    assert_eq!(code(wrong), StatusCode::BadRequest);
    let missing = download(&alice, &Bytes::from(vec![0u8; 32]), 0, 0).await;
    assert_eq!(code(missing), StatusCode::NotFound);
}

#[tokio::test]
async fn quota_and_size_limits_answer_clear_errors() {
    let server = TestServer::start_with(|c| {
        c.blob_quota_bytes = 3 * MIB as u64;
        c.blob_max_bytes = 2 * MIB as u64;
    })
    .await;
    let alice = server.user("alice").await;
    let a = content(2 * MIB, 21);
    upload(&alice, &a, CHUNK).await.unwrap();
    // 2 MiB stored; another 2 MiB does not fit in 3 MiB.
    let b = content(2 * MIB, 22);
    let result = start(&alice, &b, MIB, sha256(&b)).await;
    let status = result.unwrap_err().status().cloned().unwrap();
    assert_eq!(status.code(), StatusCode::Forbidden);
    assert!(
        status.message().contains("quota")
            && status.message().contains(&(2 * MIB).to_string())
            && status.message().contains(&(3 * MIB).to_string()),
        "{}",
        status.message()
    );
    // What fits still uploads: 1 MiB more brings alice to exactly her quota.
    let c = content(MIB, 23);
    upload(&alice, &c, CHUNK).await.unwrap();
    // Quotas are per account: bob can store the same 2 MiB (stored once, charged to both).
    let bob = server.user("bob").await;
    let shared = upload(&bob, &a, CHUNK).await.unwrap();
    assert_eq!(&shared[..], &sha256(&a));
    // Over the server's maximum blob size.
    let big = content(2 * MIB + 1, 24);
    let result = start(&bob, &big, 10, sha256(&big)).await;
    let text = message(result);
    assert!(text.contains("maximum blob size"), "{text}");
    // Malformed starts.
    let no_hash = alice
        .client
        .upload_blob(proto::UploadBlobRequest {
            session_token: alice.token(),
            total_size: 10,
            chunk: Bytes::from_static(b"0123456789"),
            finish: true,
            ..Default::default()
        })
        .await;
    assert!(message(no_hash).contains("expected_sha256"));
    let wrong_hash = start(&bob, &content(20, 1), 20, [1; 32]).await;
    assert_eq!(code(wrong_hash), StatusCode::BadRequest);
}

#[tokio::test]
async fn the_same_content_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let data = content(1_500_000, 31);
    let one = upload(&alice, &data, CHUNK).await.unwrap();
    let two = upload(&bob, &data, 600_000).await.unwrap();
    let three = upload(&alice, &data, CHUNK).await.unwrap();
    assert_eq!(one, two);
    assert_eq!(one, three);
    let part = download(&alice, &one, 0, 0).await.unwrap();
    assert!(part.data[..] == data[..]);
    // Deleting one referencing account keeps the blob for the other.
    alice
        .client
        .delete_account(proto::DeleteAccountRequest {
            session_token: alice.token(),
        })
        .await
        .unwrap();
    let part = download(&bob, &one, 0, 0).await.unwrap();
    assert!(part.data[..] == data[..]);
    // When the last reference goes, so does the blob.
    bob.client
        .delete_account(proto::DeleteAccountRequest {
            session_token: bob.token(),
        })
        .await
        .unwrap();
    let carol = server.user("carol").await;
    assert_eq!(
        code(download(&carol, &one, 0, 0).await),
        StatusCode::NotFound
    );
}

#[tokio::test]
async fn an_upload_resumes_after_a_server_restart_and_the_blob_survives() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let data = content(3 * MIB + 100, 41);
    let first = start(&alice, &data, MIB + 50, sha256(&data)).await.unwrap();
    let id = first.upload_id.clone();
    // Every acknowledged chunk is durable: stop the server mid-upload.
    server.restart().await;
    let alice = server.relogin(alice).await;
    // The client asks where to resume and sends the rest.
    let probe = chunk(&alice, &id, &data, 0, 0).await.unwrap();
    assert_eq!(probe.bytes_received, (MIB + 50) as u64);
    let mut state = probe;
    while (state.bytes_received as usize) < data.len() {
        state = chunk(&alice, &id, &data, state.bytes_received as usize, CHUNK)
            .await
            .unwrap();
    }
    assert_eq!(&state.blob_id[..], &sha256(&data));
    let mut back = Vec::new();
    while back.len() < data.len() {
        let part = download(&alice, &state.blob_id, back.len() as u64, 0)
            .await
            .unwrap();
        back.extend_from_slice(&part.data);
    }
    assert!(back == data);
    server.server.take().unwrap().shutdown().await;
}
