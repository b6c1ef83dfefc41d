-- Accounts, sessions and delivery queues.

CREATE TABLE accounts (
    username      TEXT COLLATE "C" PRIMARY KEY,
    identity_key  BYTEA NOT NULL,
    password_file BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT accounts_identity_key_key UNIQUE (identity_key)
);

-- Only the SHA-256 of a session token is stored.
CREATE TABLE sessions (
    token_hash    BYTEA PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL,
    identity_key  BYTEA NOT NULL,
    device_id     BYTEA,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    login_at_ms   BIGINT NOT NULL
);
CREATE INDEX sessions_by_identity ON sessions (identity_key);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);

-- One row per account: next_seq only grows (seqs are never reused); messages and bytes equal
-- the count and payload bytes of the queue's rows in `messages`.
CREATE TABLE queues (
    identity_key BYTEA PRIMARY KEY,
    next_seq     BIGINT NOT NULL,
    messages     BIGINT NOT NULL,
    bytes        BIGINT NOT NULL
);

CREATE TABLE messages (
    identity_key        BYTEA NOT NULL,
    seq                 BIGINT NOT NULL,
    sender_identity_key BYTEA NOT NULL,
    sender              BYTEA NOT NULL,
    channel_id          BYTEA,
    payload             BYTEA NOT NULL,
    enqueued_at_ms      BIGINT NOT NULL,
    expires_at_ms       BIGINT NOT NULL,
    PRIMARY KEY (identity_key, seq)
);
CREATE INDEX messages_by_expiry ON messages (expires_at_ms);
