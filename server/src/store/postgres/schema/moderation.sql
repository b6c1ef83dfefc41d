-- Moderation: reports and bans. They are the server's own records: deleting an account keeps
-- the reports it filed or received and the bans on its identity key. Free text (reasons) is
-- stored as its UTF-8 bytes.

-- Listed oldest first: (created_at_ms, id) is the listing order and its cursor.
CREATE TABLE reports (
    created_at_ms     BIGINT NOT NULL,
    id                BYTEA NOT NULL,
    reporter          BYTEA NOT NULL,
    reporter_username TEXT COLLATE "C" NOT NULL,
    reported          BYTEA NOT NULL,
    reported_username TEXT COLLATE "C" NOT NULL,
    channel_id        BYTEA,
    seq               BIGINT NOT NULL,
    category          SMALLINT NOT NULL,
    reason            BYTEA NOT NULL,
    evidence          BYTEA NOT NULL,
    PRIMARY KEY (created_at_ms, id)
);

-- expires_at_ms = 0: permanent. An expired ban stays until replaced or lifted; every reader
-- ignores it.
CREATE TABLE server_bans (
    identity_key  BYTEA PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL,
    reason        BYTEA NOT NULL,
    banned_by     BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- Deleted with their channel.
CREATE TABLE channel_bans (
    channel_id    BYTEA NOT NULL,
    identity_key  BYTEA NOT NULL,
    username      TEXT COLLATE "C" NOT NULL,
    reason        BYTEA NOT NULL,
    banned_by     BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_id, identity_key)
);
