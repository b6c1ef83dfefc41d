-- Devices of an account. A revoked device stays as a tombstone (revoked_at_ms set, no push
-- token) so its id is never registered or logged in with again.
CREATE TABLE devices (
    identity_key  BYTEA NOT NULL,
    device_id     BYTEA NOT NULL,
    name          BYTEA NOT NULL,
    device_key    BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    -- PushPlatform::as_u8, NULL when the device has no push token.
    push_platform SMALLINT,
    push_token    BYTEA,
    revoked_at_ms BIGINT,
    PRIMARY KEY (identity_key, device_id)
);
