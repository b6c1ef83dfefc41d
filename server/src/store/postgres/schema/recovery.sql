-- Account recovery bundles: one opaque, client-encrypted blob per account.

CREATE TABLE recovery_bundles (
    identity_key BYTEA PRIMARY KEY,
    bundle       BYTEA NOT NULL,
    stored_at_ms BIGINT NOT NULL
);
