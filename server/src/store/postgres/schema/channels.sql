-- Channels (MLS groups): metadata, the epoch the next commit must be for, members and roles.
-- Free text (name, description, settings) is stored as its UTF-8 bytes, so every string is
-- kept as given (TEXT refuses NUL); the settings are two arrays of equal length, in key order.
CREATE TABLE channels (
    id             BYTEA NOT NULL,
    owner          BYTEA NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    epoch          BIGINT NOT NULL,
    name           BYTEA NOT NULL,
    description    BYTEA NOT NULL,
    setting_keys   BYTEA[] NOT NULL,
    setting_values BYTEA[] NOT NULL,
    CONSTRAINT channels_pkey PRIMARY KEY (id)
);

-- One row per member of an existing channel; the owner named in `channels` is a member with
-- role 1 (OWNER). Roles are the protocol's ChannelRole values.
CREATE TABLE channel_members (
    channel_id   BYTEA NOT NULL,
    identity_key BYTEA NOT NULL,
    role         SMALLINT NOT NULL,
    joined_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_id, identity_key)
);
-- Members by join time (pages, the passing of ownership).
CREATE INDEX channel_members_by_join ON channel_members (channel_id, joined_at_ms, identity_key);
-- The channels of an identity.
CREATE INDEX channel_members_by_identity ON channel_members (identity_key, channel_id);
