-- Blobs: content-addressed attachments stored as numbered pieces, their uploads, references
-- and per-account usage.

-- Per account: bytes and count of the blobs it references, bytes reserved by its unfinished
-- uploads. Created by the account's first upload, deleted with the account.
CREATE TABLE blob_usage (
    identity_key BYTEA PRIMARY KEY,
    bytes        BIGINT NOT NULL,
    blobs        BIGINT NOT NULL,
    reserved     BIGINT NOT NULL
);

-- One row per content; its pieces are those of the upload `upload_id` (committing does not
-- copy them). refs counts the accounts in blob_refs that reference it.
CREATE TABLE blobs (
    blob_id       BYTEA PRIMARY KEY,
    upload_id     BYTEA NOT NULL,
    size          BIGINT NOT NULL,
    mime_type     BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    refs          BIGINT NOT NULL,
    -- The SHA-256 of each piece, in order, concatenated (32 bytes each).
    piece_hashes  BYTEA NOT NULL
);

-- The account is charged `size` for the blob, once.
CREATE TABLE blob_refs (
    identity_key BYTEA NOT NULL,
    blob_id      BYTEA NOT NULL,
    size         BIGINT NOT NULL,
    PRIMARY KEY (identity_key, blob_id)
);

-- Uploads in progress, and committed ones until they expire (so a retried commit answers
-- the same blob id).
CREATE TABLE blob_uploads (
    upload_id      BYTEA NOT NULL,
    owner          BYTEA NOT NULL,
    total_size     BIGINT NOT NULL,
    sha256         BYTEA NOT NULL,
    bytes_received BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    committed      BOOLEAN NOT NULL,
    mime_type      BYTEA NOT NULL,
    CONSTRAINT blob_uploads_pkey PRIMARY KEY (upload_id)
);
CREATE INDEX blob_uploads_by_expiry ON blob_uploads (expires_at_ms);
CREATE INDEX blob_uploads_by_owner ON blob_uploads (owner);

-- One row per piece (at most 1 MiB), keyed by the upload that wrote it.
CREATE TABLE blob_pieces (
    upload_id BYTEA NOT NULL,
    piece     BIGINT NOT NULL,
    data      BYTEA NOT NULL,
    PRIMARY KEY (upload_id, piece)
);
